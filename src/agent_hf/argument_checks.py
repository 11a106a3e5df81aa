"""What the scripts share: user errors reported in one line, tracebacks only for the unexpected (or with ``--debug``),
and the argument checks answered before torch is imported (:func:`check_arguments_early`).

Used by ``scripts/*.py``; part of the package, not of the model code shipped to the Hub. Imports neither torch nor
transformers.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .model_zoo import IMAGENET_MODELS, MODELS
from .output_folders import OutputFolderError, check_output_folder

# Every preset name: the segmentation models and the ImageNet classifiers.
_PRESET_NAMES: tuple[str, ...] = (*MODELS, *IMAGENET_MODELS)

__all__ = [
    "ArgumentChecks",
    "ArgumentParser",
    "ScriptError",
    "check_arguments",
    "check_arguments_early",
    "check_eval_results",
    "folder_error",
    "mistyped_preset",
    "pop_debug_flag",
    "run_script",
    "unknown_preset_message",
    "user_errors",
]


class ScriptError(Exception):
    """A problem with the user's arguments, config, data or output folder: printed as ``error: <message>``."""


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are :class:`ScriptError` (one line, exit code 1)."""

    def error(self, message: str):
        raise ScriptError(message)


def folder_error(error: Exception, overwrite_flag: str = "--overwrite_output_dir") -> ScriptError:
    """The :class:`ScriptError` for an :class:`~agent_hf.output_folders.OutputFolderError`, naming the flag that allows
    replacing a folder that is merely not empty."""
    hint = f" ({overwrite_flag} replaces it)" if getattr(error, "reason", None) == "not_empty" else ""
    return ScriptError(f"{error}{hint}")


@contextmanager
def user_errors(context: str, errors: tuple[type[BaseException], ...] = (OSError, ValueError)) -> Iterator[None]:
    """Reports ``errors`` raised inside the block as a one-line :class:`ScriptError` starting with ``context``."""
    try:
        yield
    except ScriptError:
        raise
    except errors as error:
        raise ScriptError(f"{context}: {error}") from error


def pop_debug_flag(argv: Sequence[str]) -> tuple[list[str], bool]:
    """Removes a bare ``--debug`` (one not followed by a value) from ``argv``; returns ``(argv, found)``.

    ``TrainingArguments`` has a ``--debug OPTION`` of its own, which is left in place.
    """
    argv = list(argv)
    for position, token in enumerate(argv):
        if token == "--debug" and (position + 1 == len(argv) or argv[position + 1].startswith("-")):
            return argv[:position] + argv[position + 1 :], True
    return argv, os.environ.get("AGENT_HF_DEBUG", "").lower() in ("1", "true", "yes")


def run_script(main: Callable[[list[str]], object], argv: Sequence[str] | None = None) -> int:
    """Runs ``main(argv)`` and returns the exit code: 0, or 1 after printing a :class:`ScriptError` in one line.

    Unexpected exceptions propagate (with their traceback); with ``--debug`` (or ``AGENT_HF_DEBUG=1``) so do
    :class:`ScriptError`\\ s.
    """
    argv, debug = pop_debug_flag(sys.argv[1:] if argv is None else argv)
    try:
        main(argv)
    except ScriptError as error:
        if debug:
            raise
        rank = os.environ.get("RANK")
        prefix = f"[rank {rank}] " if rank is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        print(f"{prefix}error: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        _end_process_group()
    return 0


def _end_process_group() -> None:
    # A launched process that exits with its process group alive can abort in the backend's threads at interpreter
    # exit ("terminate called without an active exception", SIGABRT) after its work is done: end it first.
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


# ------------------------------------------------------------------------------------- checks before heavy imports
def unknown_preset_message(name: str) -> str:
    """``Unknown preset 'X' (did you mean 'Y'?); the presets are: ...`` (with the closest preset name, if any)."""
    close = difflib.get_close_matches(name, _PRESET_NAMES, n=1, cutoff=0.6)
    suggestion = f" (did you mean {close[0]!r}?)" if close else ""
    return f"Unknown preset {name!r}{suggestion}; the presets are: {', '.join(_PRESET_NAMES)}"


def mistyped_preset(name: str) -> str | None:
    """The error message for a model name that looks like a mistyped preset (not a preset, not an existing path, no
    ``namespace/`` of a Hub id, and close to a preset name or starting with ``agent-``), else ``None``: such a name is
    answered at once instead of after a failed Hub request."""
    if name in _PRESET_NAMES or os.path.exists(name) or "/" in name:
        return None
    if name.startswith("agent-") or difflib.get_close_matches(name, _PRESET_NAMES, n=1, cutoff=0.6):
        return unknown_preset_message(name)
    return None


@dataclass(frozen=True)
class ArgumentChecks:
    """What :func:`check_arguments` checks in a script's command line (options by their flag)."""

    files: tuple[str, ...] = ()  # a local file that must exist
    folders: tuple[str, ...] = ()  # a local folder that must exist
    presets: tuple[str, ...] = ()  # must name a preset
    models: tuple[str, ...] = ()  # a preset, folder or Hub id: a near miss of a preset name is refused
    output_dir: str | None = None  # the output folder's option (see agent_hf.output_folders.check_output_folder)
    default_output_dir: str | None = None
    overwrite: tuple[str, ...] = ("--overwrite_output_dir", "--overwrite")
    inputs: tuple[str, ...] = ()  # options naming what the run reads: an output folder holding one is refused
    is_own_output: Callable[[Path], bool] | None = None  # a folder this script wrote, replaced without overwrite
    training_output: bool = False  # the training script's rules (resume a folder of checkpoints, add eval results)


def _option(argv: Sequence[str], flag: str) -> str | None:
    """The (last) value of ``flag`` in ``argv``, given as ``--flag VALUE`` or ``--flag=VALUE``."""
    value = None
    for position, token in enumerate(argv):
        if token == flag and position + 1 < len(argv):
            value = argv[position + 1]
        elif token.startswith(f"{flag}="):
            value = token.split("=", 1)[1]
    return value


def _switch(argv: Sequence[str], *flags: str) -> bool:
    """Whether a boolean option is on: given bare, or with a true value (``--flag true``, ``--flag=True``)."""
    on = False
    for position, token in enumerate(argv):
        name, equals, attached = token.partition("=")
        if name not in flags:
            continue
        following = argv[position + 1] if position + 1 < len(argv) else "-"
        value = attached if equals else ("true" if following.startswith("-") else following)
        on = value.lower() in ("true", "1", "yes", "y")
    return on


# What an evaluation-only run of the training script writes that a training run does not (all_results.json, which
# both write, is merged).
EVAL_RESULT_FILES = ("eval_per_class.json", "eval_results.json")


def check_eval_results(output_dir: Path, overwrite: bool) -> None:
    """An evaluation-only run adds its result files to a folder, but replaces earlier ones only with overwrite."""
    existing = [name for name in EVAL_RESULT_FILES if (output_dir / name).exists()]
    if existing and not overwrite:
        raise ScriptError(
            f"{output_dir} already holds evaluation results ({', '.join(existing)}): choose another "
            "--output_dir or pass --overwrite_output_dir to replace them"
        )


def _check_training_output(argv: Sequence[str], output_dir: Path, overwrite: bool) -> None:
    """The training script's output-folder rules that need no model or data: an evaluation adds its results beside
    others only with overwrite; a training run resumes a folder of checkpoints or starts in an empty one."""
    if not _switch(argv, "--do_train"):
        check_eval_results(output_dir, overwrite)
        return
    try:
        check_output_folder(output_dir, overwrite=True, inputs=[])  # not a file, not the current directory
    except OutputFolderError as error:
        if error.reason != "current_directory" or overwrite:
            raise folder_error(error) from error
    resumes = _option(argv, "--resume_from_checkpoint") not in (None, "False", "false")
    if overwrite or resumes or not output_dir.is_dir():
        return
    entries = list(output_dir.iterdir())
    if entries and not any(entry.name.startswith("checkpoint-") for entry in entries):
        raise ScriptError(
            f"output folder {output_dir} is not empty and holds no checkpoint to resume: choose another "
            "--output_dir, or pass --overwrite_output_dir to replace it"
        )


def check_arguments(argv: Sequence[str], checks: ArgumentChecks) -> None:
    """Raises :class:`ScriptError` (one line naming the option) for what ``checks`` finds wrong in ``argv``: a missing
    file or folder, a mistyped preset, an output folder that may not be written. The script's own parser checks the
    rest later; a command line asking for help, or a training script's JSON file of arguments, is left to it."""
    if {"-h", "--help", "--help_all", "--write_help"} & set(argv) or (len(argv) == 1 and argv[0].endswith(".json")):
        return
    for flag in checks.files:
        path = _option(argv, flag)
        if path is not None and not os.path.isfile(path):
            raise ScriptError(f"{flag}: no {flag.lstrip('-').replace('_', ' ')} file at {path}")
    for flag in checks.folders:
        path = _option(argv, flag)
        if path is not None and not os.path.isdir(path):
            raise ScriptError(f"{flag}: no folder at {path}")
    for flag in checks.presets:
        name = _option(argv, flag)
        if name is not None and name not in _PRESET_NAMES:
            raise ScriptError(f"{flag}: {unknown_preset_message(name)}")
    for flag in checks.models:
        mistyped = mistyped_preset(_option(argv, flag) or "")
        if _option(argv, flag) and mistyped:
            raise ScriptError(f"{flag}: {mistyped}")
    output_dir = (_option(argv, checks.output_dir) if checks.output_dir else None) or checks.default_output_dir
    if output_dir is None:
        return
    overwrite = _switch(argv, *checks.overwrite)
    if checks.training_output:
        _check_training_output(argv, Path(output_dir), overwrite)
        return
    try:
        inputs = [_option(argv, flag) for flag in checks.inputs]
        check_output_folder(output_dir, overwrite=overwrite, inputs=inputs, is_own_output=checks.is_own_output)
    except OutputFolderError as error:
        raise folder_error(error, checks.overwrite[0]) from error


def check_arguments_early(checks: ArgumentChecks, argv: Sequence[str] | None = None) -> None:
    """Answers :func:`check_arguments`' errors in one line (exit code 1) before a script imports torch, then
    registers the models with the Auto classes, which a script run starts without (see ``agent_hf/__init__.py``;
    a tool that sets ``AGENT_HF_LAZY_IMPORT`` registers on first use instead)."""
    code = run_script(lambda args: check_arguments(args, checks), argv)
    if code:
        sys.exit(code)
    from . import LAZY_IMPORT_ENV, register_auto_classes

    if os.environ.get(LAZY_IMPORT_ENV, "").strip().lower() not in ("1", "true", "yes"):
        register_auto_classes()
