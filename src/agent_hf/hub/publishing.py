"""Publishing a model folder to the Hub: the model files in one commit, then the model card in a last commit.

Why two commits, with the card last: transformers' ``Trainer.push_to_hub`` (and ``save_pretrained(push_to_hub=True)``)
regenerate ``README.md`` and drop the card metadata (``model-index``, license details). Uploading the model files
first and the card strictly afterwards guarantees that nothing published by this module overwrites the card.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard, constants, get_token
from huggingface_hub.errors import OfflineModeIsEnabled

from .folder_cards import card_for_folder
from .folder_checks import check_repo_id, validate_model_folder

__all__ = [
    "CardPushError",
    "HubConnectionError",
    "HubTokenMissingError",
    "PushResult",
    "check_repo_id",
    "push_card_to_hub",
    "push_folder_to_hub",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


class HubTokenMissingError(RuntimeError):
    """No Hugging Face token was given and none is configured (``HF_TOKEN`` or ``hf auth login``)."""


class HubConnectionError(ConnectionError):
    """The Hub endpoint could not be reached (no network, wrong ``HF_ENDPOINT``, proxy, ...)."""


class CardPushError(RuntimeError):
    """The model files were published but the model card commit failed.

    Attributes:
        repo_id: the repository.
        model_commit: the commit that published the model files (without the card).
        revision: where to push the card when retrying (a branch, or ``refs/pr/N`` when a PR was opened).
    """

    def __init__(self, message: str, *, repo_id: str, model_commit: CommitInfo, revision: str | None) -> None:
        super().__init__(message)
        self.repo_id = repo_id
        self.model_commit = model_commit
        self.revision = revision


@dataclass(frozen=True)
class PushResult:
    """Outcome of :func:`push_folder_to_hub`.

    Attributes:
        repo_url: URL of the repository.
        uploaded_files: files of the model commit (POSIX paths in the repo); ``README.md`` is pushed separately.
        model_commit: commit with the model files.
        card_commit: commit with ``README.md`` (the last one).
    """

    repo_url: str
    uploaded_files: tuple[str, ...]
    model_commit: CommitInfo
    card_commit: CommitInfo

    @property
    def commit_urls(self) -> tuple[str, str]:
        """URLs of the two commits, model files first."""
        return (self.model_commit.commit_url, self.card_commit.commit_url)

    @property
    def pr_url(self) -> str | None:
        """URL of the pull request when ``create_pr=True``, else ``None``."""
        return self.model_commit.pr_url


def _resolve_token(token: str | None) -> str:
    token = token or get_token()
    if not token:
        raise HubTokenMissingError(
            "No Hugging Face token found, nothing was uploaded. Log in with `hf auth login` (or "
            "`huggingface_hub.login()`), set the HF_TOKEN environment variable, or pass a token with write access "
            "(`--token` / `token=`); create one at https://huggingface.co/settings/tokens."
        )
    return token


def _endpoint() -> str:
    """Hub endpoint, read at call time: ``HF_ENDPOINT`` if set, else huggingface_hub's configured endpoint."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _api(token: str) -> HfApi:
    endpoint = _endpoint()
    if constants.is_offline_mode():
        raise OfflineModeIsEnabled(
            f"Cannot publish to {endpoint}: offline mode is enabled (HF_HUB_OFFLINE=1); nothing was uploaded. "
            "Unset HF_HUB_OFFLINE to push."
        )
    return HfApi(endpoint=endpoint, token=token, library_name="agent-hf")


def check_publishable(repo_id: str, token: str | None = None) -> None:
    """What publishing will need, checked before the work that produces the folder (no network): a valid
    ``repo_id``, a token (``token``, ``HF_TOKEN`` or the stored login) and online mode.

    Raises:
        ValueError: an invalid repo id. HubTokenMissingError: no token. OfflineModeIsEnabled: ``HF_HUB_OFFLINE``.
    """
    check_repo_id(repo_id)
    _api(_resolve_token(token))


def _is_connection_error(error: BaseException) -> bool:
    """Whether `error` is a connection-level failure of huggingface_hub's HTTP client (httpx in huggingface_hub 1.x,
    httpx2 in 2.x; a status error from the Hub is not one)."""
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    return any(
        cls.__name__ == "TransportError" and cls.__module__.split(".")[0] in ("httpx", "httpx2")
        for cls in type(error).__mro__
    )


def _connection_error(error: BaseException, step: str, outcome: str) -> HubConnectionError:
    """A one-line message: where, while doing what, why, and what was (not) uploaded."""
    reason = " ".join(str(error).split()) or type(error).__name__
    return HubConnectionError(
        f"Could not reach the Hub at {_endpoint()} while {step} ({type(error).__name__}: {reason}); {outcome}. "
        "Check the network, the HF_ENDPOINT variable and the proxy settings, then retry."
    )


def load_card(card: ModelCard | PathLike) -> ModelCard:
    """A :class:`huggingface_hub.ModelCard`, or one read from a ``.md`` file (clear errors naming the file)."""
    if isinstance(card, ModelCard):
        return card
    path = Path(card)
    if not path.is_file():
        raise FileNotFoundError(f"Model card file '{path}' does not exist.")
    try:
        return ModelCard(path.read_text(encoding="utf-8"))
    except Exception as err:  # yaml errors, invalid model-index, ...
        raise ValueError(f"Model card '{path}' has invalid metadata (YAML front matter): {err}") from err


def _push_card(
    api: HfApi, card: ModelCard, repo_id: str, *, revision: str | None, create_pr: bool, commit_message: str | None
) -> CommitInfo:
    return api.upload_file(
        path_or_fileobj=str(card).encode("utf-8"),
        path_in_repo=constants.REPOCARD_NAME,
        repo_id=repo_id,
        repo_type="model",
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message or "Add model card",
    )


def _needs_branch(revision: str | None) -> bool:
    return bool(revision) and revision != constants.DEFAULT_REVISION and not revision.startswith("refs/")


def push_card_to_hub(
    repo_id: str,
    card: ModelCard | PathLike,
    *,
    token: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
) -> CommitInfo:
    """Pushes only ``README.md`` to an existing repository (e.g. after a :class:`CardPushError`).

    Args:
        repo_id: ``"namespace/name"``.
        card: a :class:`huggingface_hub.ModelCard` or the path of a ``.md`` file.
        token: Hub token; defaults to ``HF_TOKEN`` / the stored login.
        revision: branch (or ``refs/pr/N``) to commit to; defaults to ``main``.
        create_pr: open a pull request instead of committing directly.
        commit_message: defaults to ``"Add model card"``.

    Raises:
        HubConnectionError: the endpoint could not be reached (nothing was pushed).
    """
    check_repo_id(repo_id)
    card = load_card(card)
    api = _api(_resolve_token(token))
    try:
        return _push_card(api, card, repo_id, revision=revision, create_pr=create_pr, commit_message=commit_message)
    except Exception as err:
        if _is_connection_error(err):
            raise _connection_error(err, "uploading the model card", "the card was not uploaded") from err
        raise


def push_folder_to_hub(
    folder: PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    card: ModelCard | PathLike | None = None,
    commit_message: str | None = None,
) -> PushResult:
    """Publishes a ``save_pretrained`` folder to the Hub: model files in one commit, then the model card, last.

    Everything that can be checked locally is checked before the first request (repo id, folder contents, card
    metadata, token), so a mistake never leaves a half-published repository.

    Args:
        folder: the model folder (``config.json`` with ``auto_map``, its ``.py`` modules, ``model.safetensors`` or a
            sharded index, ``preprocessor_config.json``); see :func:`validate_model_folder`.
        repo_id: ``"namespace/name"``; the repository is created if needed.
        token: Hub token with write access; defaults to ``HF_TOKEN`` / the stored login (``hf auth login``).
        private: create the repository as private (ignored if it already exists; otherwise the Hub's default
            visibility applies).
        revision: branch to push to; created from ``main`` if missing. Defaults to ``main``.
        create_pr: open a pull request (against ``revision`` or ``main``) instead of committing directly; the card is
            then added to the same pull request.
        card: a :class:`huggingface_hub.ModelCard` or a ``.md`` path; defaults to the card the folder's provenance
            calls for (:func:`agent_hf.hub.card_for_folder`). A ``README.md`` inside ``folder`` is never uploaded.
        commit_message: message of the model-files commit.

    Returns:
        A :class:`PushResult` (``commit_urls``, ``pr_url``, ``uploaded_files``).

    Raises:
        ValueError / FileNotFoundError: invalid repo id, incomplete folder or invalid card (nothing sent).
        HubTokenMissingError: no token available (nothing sent).
        huggingface_hub.errors.OfflineModeIsEnabled: ``HF_HUB_OFFLINE`` is set (nothing sent).
        HubConnectionError: the endpoint could not be reached before the model files were published.
        CardPushError: the model files were published but the card commit failed; retry with
            :func:`push_card_to_hub` (``--card_only`` in ``scripts/push_to_hub.py``).
        huggingface_hub.errors.HfHubHTTPError: the Hub rejected the repository creation or the model commit.
    """
    check_repo_id(repo_id)
    folder = Path(folder)
    files = validate_model_folder(folder)
    card = load_card(card) if card is not None else card_for_folder(folder, repo_id)
    api = _api(_resolve_token(token))

    step = "creating the repository"
    try:
        repo_url = api.create_repo(repo_id, repo_type="model", private=True if private else None, exist_ok=True)
        if _needs_branch(revision):
            step = f"creating the branch {revision!r}"
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        # One explicit `create_commit` rather than `upload_folder`: with hf_xet installed, `upload_folder` streams
        # large folders in several commits, while a model must appear atomically.
        step = "uploading the model files"
        model_commit = api.create_commit(
            repo_id,
            operations=[CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in files],
            commit_message=commit_message or f"Upload {folder.resolve().name} with agent-hf",
            commit_description="Files: " + ", ".join(files),
            repo_type="model",
            revision=revision,
            create_pr=create_pr,
        )
    except Exception as err:
        if _is_connection_error(err):
            raise _connection_error(err, step, "nothing was uploaded") from err
        raise
    logger.info("Uploaded %d file(s) to %s: %s", len(files), repo_id, model_commit.commit_url)

    # When a PR was opened, the card goes into the same PR (refs/pr/N), not into a second one. If the model files
    # were all unchanged (no commit, hence no PR), the card gets its own PR, never a direct commit.
    if create_pr and model_commit.pr_revision:
        card_revision, card_create_pr = model_commit.pr_revision, False
    else:
        card_revision, card_create_pr = revision, create_pr
    try:
        card_commit = _push_card(
            api, card, repo_id, revision=card_revision, create_pr=card_create_pr, commit_message=None
        )
    except Exception as err:
        retry = f"--model_dir {folder} --repo_id {repo_id} --card_only"
        if card_revision:
            retry += f" --revision {card_revision}"
        if card_create_pr:
            retry += " --create_pr"
        raise CardPushError(
            f"The model files were published to {repo_id} ({model_commit.commit_url}) but the model card (README.md) "
            f"could not be uploaded: {err}\nThe repository now has the weights WITHOUT the model card. Retry only the "
            f"card with:\n  python scripts/push_to_hub.py {retry}\nor `agent_hf.hub.push_card_to_hub(...)`.",
            repo_id=repo_id,
            model_commit=model_commit,
            revision=card_revision,
        ) from err

    return PushResult(
        repo_url=str(repo_url),
        uploaded_files=tuple(files),
        model_commit=model_commit,
        card_commit=card_commit,
    )
