"""End-to-end tests of `agent_hf.hub` publishing and `scripts/push_to_hub.py`.

The real `huggingface_hub` client talks to a real local HTTP server (`tests/hub_server.py`) on 127.0.0.1: nothing of
huggingface_hub is mocked. `HF_ENDPOINT` points at the server (the environment variable for subprocesses and
`agent_hf.hub`, `huggingface_hub.constants.ENDPOINT` for the library's own module-level lookups), and the token store
is redirected to an empty temporary folder so that a developer's own login can never leak into the tests.

`make_model_folder` copies real model folders written by agent_hf (`save_model_folder`: a tiny Agent-Swin, or one
with a preset's architecture where the paper's card is asked for), without their provenance record as agent-hf 0.1.0
wrote them; which card a real converted or trained folder gets is tested end to end in
tests/test_provenance.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import free_port
from huggingface_hub import HfApi, ModelCard, constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from agent_hf.hub import (
    PAPER_RESULTS,
    CardPushError,
    HubConnectionError,
    HubTokenMissingError,
    card_for_folder,
    push_card_to_hub,
    push_folder_to_hub,
    render_model_card,
    validate_model_folder,
)

try:  # tests/ as a package or as a plain folder on sys.path
    from .hub_server import LocalHubServer
except ImportError:
    from hub_server import LocalHubServer


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "push_to_hub.py"
TOKEN = "hf_test_write_token"
PRESET = "agent-swin-t-upernet-ade20k"
REPO_ID = "test-user/agent-swin-t-upernet-ade20k"
REQUIRED_TAGS = {"agent-attention", "semantic-segmentation", "upernet", "agent-swin", "custom_code"}

# Files a Trainer output folder typically contains next to the model, that must NOT be uploaded.
NOT_UPLOADED = (
    "README.md",
    "checkpoint-500/model.safetensors",
    "checkpoint-500/optimizer.pt",
    "trainer_state.json",
    "training_args.bin",
    "runs/events.out.tfevents.1.host",
    "__pycache__/modeling_tiny.cpython-311.pyc",
)


_WRITTEN: dict[str, Path] = {}


def written_folder(kind: str) -> Path:
    """A model folder written by agent_hf (`save_model_folder`), once per session, as agent-hf 0.1.0 left them (no
    provenance record): "tiny" (a tiny Agent-Swin with ADE20K's 150 classes, 0.7M parameters), "sharded" (the same,
    in two weight shards) or "preset" (`PRESET`'s architecture in bf16, 116 MB: only where the paper's card is asked
    for)."""
    if kind not in _WRITTEN:
        import torch
        from conftest import tiny_swin_config
        from transformers import AutoModelForSemanticSegmentation

        from agent_hf import preset_config
        from agent_hf.data.ade20k import ade20k_id2label
        from agent_hf.saving import save_model_folder

        folder = Path(tempfile.mkdtemp(prefix=f"hub-{kind}-", dir=os.environ["AGENT_HF_TEST_CACHES"])) / "model"
        id2label = ade20k_id2label()
        labels = dict(num_labels=150, id2label=id2label, label2id={name: i for i, name in id2label.items()})
        torch.manual_seed(0)
        config = preset_config(PRESET) if kind == "preset" else tiny_swin_config(**labels)
        model = AutoModelForSemanticSegmentation.from_config(config)
        if kind == "preset":
            model.to(torch.bfloat16)
        save_model_folder(model, folder, **({"max_shard_size": "1MB"} if kind == "sharded" else {}))
        config = json.loads((folder / "config.json").read_text())
        config.pop("agent_hf_provenance", None)
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        _WRITTEN[kind] = folder
    return _WRITTEN[kind]


def make_model_folder(path: Path, kind: str = "tiny", *, preset: str | None = PRESET) -> Path:
    """A copy of `written_folder(kind)` at `path` (the weights hard-linked: the tests never rewrite them in place),
    saying `agent_hf_preset: preset` as 0.1.0 did, plus Trainer leftovers that must be filtered out."""
    link_weights = lambda source, destination: (  # noqa: E731
        os.link(source, destination) if source.endswith(".safetensors") else shutil.copy2(source, destination)
    )
    shutil.copytree(written_folder(kind), path, copy_function=link_weights)
    if preset:
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, "agent_hf_preset": preset}, indent=2))
    for name in NOT_UPLOADED:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(b"stale README written by Trainer\n" if name == "README.md" else b"state")
    return path


BUFFER = re.compile(r"\.(running_mean|running_var|num_batches_tracked)$")


def parameter_count(folder: Path) -> int:
    """The parameters among a folder's tensors (not BatchNorm's statistics, which are buffers)."""
    from safetensors import safe_open

    total = 0
    for shard in folder.glob("*.safetensors"):
        with safe_open(str(shard), "np") as weights:
            shapes = [weights.get_slice(key).get_shape() for key in weights.keys() if not BUFFER.search(key)]  # noqa: SIM118
            total += sum(int(np.prod(shape)) for shape in shapes)
    return total


def local_files(folder: Path) -> dict[str, bytes]:
    """Files of `folder` that are expected on the Hub (everything but the Trainer leftovers)."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    return {name: content for name, content in files.items() if name not in NOT_UPLOADED}


@pytest.fixture
def isolated_hf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No token anywhere (env or stored login) and a private HF_HOME."""
    home = tmp_path / "hf_home"
    home.mkdir()
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / ".agent_harnesses.json"))
    return home


def _serve(monkeypatch: pytest.MonkeyPatch, server: LocalHubServer) -> LocalHubServer:
    """Starts `server` and points huggingface_hub at it. Offline mode (set suite-wide by conftest.py) is lifted for
    this endpoint only: it is 127.0.0.1, so the real network is still never reached."""
    server.start()
    assert server.endpoint.startswith("http://127.0.0.1:")
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return server


@pytest.fixture
def hub(isolated_hf: Path, monkeypatch: pytest.MonkeyPatch):
    server = _serve(monkeypatch, LocalHubServer(tokens={TOKEN}))
    yield server
    server.stop()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return make_model_folder(tmp_path / "model")


@pytest.fixture
def preset_model_dir(tmp_path: Path) -> Path:
    """A folder with `PRESET`'s architecture: where the paper's card is asked for."""
    return make_model_folder(tmp_path / "preset-model", "preset")


@pytest.fixture(scope="module")
def push_cli():
    """`main` of scripts/push_to_hub.py, imported in-process (a subprocess costs seconds of imports)."""
    spec = importlib.util.spec_from_file_location("push_to_hub_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def cli(push_cli, capsys: pytest.CaptureFixture[str]):
    """Runs the CLI in-process: `cli(*args) -> (exit code, stdout, stderr)`."""

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = push_cli(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def cli_env(hf_token: str | None = None, **overrides: str) -> dict[str, str]:
    """The environment of a CLI subprocess: the endpoint/home set by the fixtures, this checkout's agent_hf."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])),
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
        **overrides,
    )
    if hf_token:
        env["HF_TOKEN"] = hf_token
    return env


def run_cli(*args: str, hf_token: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """Runs scripts/push_to_hub.py in a subprocess against the endpoint/home set by the fixtures."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env=cli_env(hf_token, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_card_metadata(readme: bytes, repo_id: str = REPO_ID, preset: str = PRESET) -> ModelCard:
    card = ModelCard(readme.decode("utf-8"))
    data = card.data
    assert data.pipeline_tag == "image-segmentation"
    assert data.library_name == "transformers"
    assert set(data.tags) >= REQUIRED_TAGS
    assert data.datasets == ["scene_parse_150"]
    assert data.license == "other" and data.license_name and "LICENSE" in data.license_details
    assert getattr(data, "widget", None) is None  # the hosted widget does not run custom code
    paper = {r.metric_type: r.metric_value for r in data.eval_results if r.source_name.endswith("(reported)")}
    assert paper == {"mean_iou": PAPER_RESULTS[preset].mean_iou, "mean_accuracy": PAPER_RESULTS[preset].mean_accuracy}
    assert all(r.dataset_type == "scene_parse_150" and r.dataset_split == "validation" for r in data.eval_results)
    assert all(r.task_type == "semantic-segmentation" for r in data.eval_results)
    return card


# ---------------------------------------------------------------------------------------------------------------------
# Happy paths
# ---------------------------------------------------------------------------------------------------------------------


def test_cli_pushes_model_files_then_card_last(hub: LocalHubServer, preset_model_dir: Path) -> None:
    model_dir = preset_model_dir
    # The real CLI in a subprocess (HF_ENDPOINT from the environment). Token from HF_TOKEN (no --token). The folder
    # has no provenance (0.1.0): --preset asks for the paper's card, granted as the architecture is the preset's.
    proc = run_cli("--model_dir", str(model_dir), "--repo_id", REPO_ID, "--preset", PRESET, hf_token=TOKEN)
    assert proc.returncode == 0, proc.stderr

    expected = local_files(model_dir)
    remote = hub.files(REPO_ID)
    for name, content in expected.items():
        assert remote[name] == content, f"{name} differs"
    assert set(remote) == set(expected) | {"README.md", ".gitattributes"}

    _initial, model_commit, card_commit = hub.commits(REPO_ID)
    assert set(model_commit.added) == set(expected)  # all model files in ONE commit
    assert list(card_commit.added) == ["README.md"]  # the card alone, LAST
    assert not model_commit.create_pr and not card_commit.create_pr
    assert card_commit.added["README.md"] != (model_dir / "README.md").read_bytes()  # Trainer's README ignored
    card = assert_card_metadata(remote["README.md"])
    assert "from_pretrained(repo_id, trust_remote_code=True)" in card.text and REPO_ID in card.text
    assert {"handler.py", "requirements.txt", "image_processing_agent.py", "image_ops.py"} <= set(model_commit.added)

    assert not hub.repo(REPO_ID).private
    assert all(r.authorized for r in hub.requests if r.path not in ("/api/validate-yaml", "/api/agent-harnesses"))
    assert "model.safetensors" in proc.stdout and card_commit.oid in proc.stdout


def test_function_push_with_explicit_card(hub: LocalHubServer, model_dir: Path) -> None:
    measured = {"mean_iou": 46.61, "mean_accuracy": 58.47, "note": "fp32, single-scale, scene_parse_150"}
    card = render_model_card(PRESET, repo_id=REPO_ID, measured=measured, demo_url="https://huggingface.co/spaces/x/y")

    result = push_folder_to_hub(model_dir, REPO_ID, token=TOKEN, card=card, commit_message="Add converted weights")

    assert result.uploaded_files == tuple(sorted(local_files(model_dir)))
    commits = hub.commits(REPO_ID)
    assert result.commit_urls == tuple(f"{hub.endpoint}/{REPO_ID}/commit/{c.oid}" for c in commits[1:])
    assert commits[1].message == "Add converted weights"
    readme = hub.files(REPO_ID)["README.md"]
    assert readme == str(card).encode("utf-8")
    data = assert_card_metadata(readme).data
    ours = {r.metric_type: r.metric_value for r in data.eval_results if r.source_name == "agent-hf (measured)"}
    assert ours == {"mean_iou": 46.61, "mean_accuracy": 58.47}


def test_private_repo(hub: LocalHubServer, model_dir: Path, cli) -> None:
    code, _, err = cli("--model_dir", str(model_dir), "--repo_id", REPO_ID, "--token", TOKEN, "--private")
    assert code == 0, err
    assert hub.repo(REPO_ID).private


def test_revision_creates_branch_and_repush_is_a_no_op(hub: LocalHubServer, model_dir: Path, cli) -> None:
    code, _, err = cli("--model_dir", str(model_dir), "--repo_id", REPO_ID, "--token", TOKEN, "--revision", "v1.0")
    assert code == 0, err

    repo = hub.repo(REPO_ID)
    assert set(repo.branches) == {"main", "v1.0"}
    assert set(hub.files(REPO_ID)) == {".gitattributes"}  # main untouched
    on_branch = hub.files(REPO_ID, revision="v1.0")
    assert {n: on_branch[n] for n in local_files(model_dir)} == local_files(model_dir)
    assert [c.revision for c in hub.commits(REPO_ID)[1:]] == ["v1.0", "v1.0"]
    assert list(hub.commits(REPO_ID)[-1].added) == ["README.md"]

    # Same folder again: branch exists (exist_ok), unchanged files are detected by the Hub -> no new commits.
    push_folder_to_hub(model_dir, REPO_ID, token=TOKEN, revision="v1.0")
    assert len(hub.commits(REPO_ID)) == 3


def test_create_pr_puts_model_and_card_in_one_pull_request(hub: LocalHubServer, model_dir: Path, cli) -> None:
    code, out, err = cli("--model_dir", str(model_dir), "--repo_id", REPO_ID, "--token", TOKEN, "--create_pr")
    assert code == 0, err

    _, model_commit, card_commit = hub.commits(REPO_ID)
    assert model_commit.create_pr and model_commit.pr_num == 1 and model_commit.revision == "refs/pr/1"
    assert card_commit.revision == "refs/pr/1" and not card_commit.create_pr  # same PR, not a second one
    assert set(hub.files(REPO_ID)) == {".gitattributes"}  # main untouched until the PR is merged
    assert set(hub.files(REPO_ID, revision="refs/pr/1")) >= {"README.md", "model.safetensors"}
    assert f"{REPO_ID}/discussions/1" in out


def test_create_pr_with_unchanged_files_still_never_commits_to_main(hub: LocalHubServer, model_dir: Path) -> None:
    push_folder_to_hub(model_dir, REPO_ID, token=TOKEN)
    main_head = hub.repo(REPO_ID).refs["main"]
    new_card = render_model_card(PRESET, repo_id=REPO_ID, flops=1.9e12)

    result = push_folder_to_hub(model_dir, REPO_ID, token=TOKEN, create_pr=True, card=new_card)

    assert hub.repo(REPO_ID).refs["main"] == main_head  # model files unchanged -> no PR for them...
    last = hub.commits(REPO_ID)[-1]
    assert last.create_pr and last.revision == "refs/pr/1" and list(last.added) == ["README.md"]  # ...card in a PR
    assert result.card_commit.pr_url.endswith("/discussions/1")


def test_sharded_weights(hub: LocalHubServer, tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "sharded", "sharded")
    result = push_folder_to_hub(folder, REPO_ID, token=TOKEN)
    shards = {path.name for path in folder.glob("model-*-of-*.safetensors")}
    assert len(shards) >= 2 and {"model.safetensors.index.json", *shards} <= set(result.uploaded_files)
    remote = hub.files(REPO_ID)
    for name, content in local_files(folder).items():
        assert remote[name] == content


@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")  # huggingface_hub's LFS PUT, upstream
def test_lfs_upload_path(isolated_hf: Path, monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> None:
    # Large files go through the LFS batch API + pre-signed PUT (Xet disabled: the local server has no Xet).
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    server = _serve(monkeypatch, LocalHubServer(tokens={TOKEN}, lfs_threshold=64 * 1024))
    try:
        push_folder_to_hub(model_dir, REPO_ID, token=TOKEN)
        model_commit = server.commits(REPO_ID)[1]
        large = {name for name, content in local_files(model_dir).items() if len(content) >= 64 * 1024}
        assert "model.safetensors" in large and model_commit.lfs_paths == large
        assert server.files(REPO_ID)["model.safetensors"] == (model_dir / "model.safetensors").read_bytes()
        assert any(r.path.startswith("/__lfs_upload__/") and not r.authorized for r in server.requests)
    finally:
        server.stop()


def test_card_only_with_preset(hub: LocalHubServer, model_dir: Path, cli) -> None:
    push_folder_to_hub(model_dir, REPO_ID, token=TOKEN, card=render_model_card(PRESET, repo_id=REPO_ID, flops=1.9e12))
    code, _, err = cli("--repo_id", REPO_ID, "--token", TOKEN, "--card_only", "--preset", PRESET)
    assert code == 0, err
    last = hub.commits(REPO_ID)[-1]
    assert list(last.added) == ["README.md"] and "GMACs" not in last.added["README.md"].decode()


# ---------------------------------------------------------------------------------------------------------------------
# Errors: clear message, and nothing sent when the problem is local
# ---------------------------------------------------------------------------------------------------------------------


def test_missing_token_is_a_clear_error_and_nothing_is_sent(hub: LocalHubServer, model_dir: Path, cli) -> None:
    code, _, err = cli("--model_dir", str(model_dir), "--repo_id", REPO_ID)
    assert code == 1
    assert "No Hugging Face token found" in err and "hf auth login" in err and "HF_TOKEN" in err
    with pytest.raises(HubTokenMissingError, match="hf auth login"):
        push_folder_to_hub(model_dir, REPO_ID)
    assert hub.requests == []


def test_offline_mode_is_a_clear_error_and_nothing_is_sent(
    hub: LocalHubServer, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OfflineModeIsEnabled, match="HF_HUB_OFFLINE"):
        push_folder_to_hub(model_dir, REPO_ID, token=TOKEN)
    assert hub.requests == []


def test_stored_login_token_is_used(hub: LocalHubServer, model_dir: Path, isolated_hf: Path) -> None:
    (isolated_hf / "token").write_text(TOKEN)
    push_folder_to_hub(model_dir, REPO_ID)
    assert "README.md" in hub.files(REPO_ID)


def test_wrong_token_is_rejected_by_the_server(hub: LocalHubServer, model_dir: Path) -> None:
    with pytest.raises(HfHubHTTPError) as excinfo:
        push_folder_to_hub(model_dir, REPO_ID, token="hf_wrong")
    assert excinfo.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as excinfo:  # no Authorization header at all
        HfApi(endpoint=hub.endpoint, token=False).create_repo(REPO_ID)
    assert excinfo.value.response.status_code == 401
    assert hub.repos == {}


@pytest.mark.parametrize("repo_id", ["no-namespace", "a/b/c", "user/bad name", "user/double--dash", "user/-x"])
def test_invalid_repo_id(hub: LocalHubServer, model_dir: Path, repo_id: str) -> None:
    with pytest.raises(ValueError, match="Invalid repo_id"):
        push_folder_to_hub(model_dir, repo_id, token=TOKEN)
    assert hub.requests == []


def test_invalid_repo_id_cli(hub: LocalHubServer, model_dir: Path, cli) -> None:
    code, _, err = cli("--model_dir", str(model_dir), "--repo_id", "a/b/c", "--token", TOKEN)
    assert code == 1 and "Invalid repo_id 'a/b/c'" in err
    assert hub.requests == []


@pytest.mark.parametrize(
    "missing",
    [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "modeling_agent_swin.py",
        "heads.py",
        "image_processing_agent.py",
        "image_ops.py",
    ],
)
def test_incomplete_folder_names_the_missing_file(hub: LocalHubServer, model_dir: Path, missing: str) -> None:
    # heads.py is not in auto_map: it is only imported by modeling_agent_swin.py (`from .heads import ...`);
    # image_processing_agent.py is in preprocessor_config.json's auto_map, and imports image_ops.py.
    (model_dir / missing).unlink()
    with pytest.raises(FileNotFoundError) as excinfo:
        push_folder_to_hub(model_dir, REPO_ID, token=TOKEN)
    assert missing in str(excinfo.value) and str(model_dir) in str(excinfo.value)
    assert hub.requests == []


def test_a_real_model_folder_needs_its_pipeline_and_processor_code(hub: LocalHubServer, tmp_path: Path) -> None:
    from conftest import tiny_pvt_config

    from agent_hf import AgentPvtForSemanticSegmentation
    from agent_hf.saving import save_model_folder

    folder = tmp_path / "model"
    save_model_folder(AgentPvtForSemanticSegmentation(tiny_pvt_config()), folder)
    files = validate_model_folder(folder)
    assert {"pipeline_agent.py", "image_processing_agent.py", "handler.py", "requirements.txt"} <= set(files)
    for name in ("pipeline_agent.py", "image_processing_agent.py"):  # named by custom_pipelines / auto_map
        content = (folder / name).read_bytes()
        (folder / name).unlink()
        with pytest.raises(FileNotFoundError, match=name):
            push_folder_to_hub(folder, REPO_ID, token=TOKEN)
        (folder / name).write_bytes(content)
    assert hub.requests == []


def test_incomplete_folder_cli(hub: LocalHubServer, model_dir: Path, cli) -> None:
    (model_dir / "model.safetensors").unlink()
    code, _, err = cli("--model_dir", str(model_dir), "--repo_id", REPO_ID, "--token", TOKEN)
    assert code == 1
    assert "model.safetensors" in err and str(model_dir) in err and "nothing was uploaded" in err
    assert hub.requests == []


def test_missing_shard_and_missing_auto_map(hub: LocalHubServer, tmp_path: Path) -> None:
    sharded = make_model_folder(tmp_path / "sharded", "sharded")
    last_shard = max(sharded.glob("model-*-of-*.safetensors")).name
    (sharded / last_shard).unlink()
    with pytest.raises(FileNotFoundError, match=last_shard.replace(".", r"\.")):
        push_folder_to_hub(sharded, REPO_ID, token=TOKEN)

    no_auto_map = make_model_folder(tmp_path / "no_auto_map")
    config = json.loads((no_auto_map / "config.json").read_text())
    del config["auto_map"]
    (no_auto_map / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="auto_map"):
        push_folder_to_hub(no_auto_map, REPO_ID, token=TOKEN)

    with pytest.raises(FileNotFoundError, match="does not exist"):
        push_folder_to_hub(tmp_path / "nope", REPO_ID, token=TOKEN)
    assert hub.requests == []


def test_folder_without_provenance_gets_no_paper_numbers(
    preset_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = preset_model_dir
    # A 0.1.0 folder says `agent_hf_preset` and has the preset's architecture, but nothing proves its weights are the
    # authors': without --preset its card claims no results (the card the CLI pushes: test_cli_pushes_... above).
    card = card_for_folder(model_dir, REPO_ID)
    assert card.data.eval_results is None and card.data.license is None
    assert "46.68" not in card.text and "(reported)" not in card.text  # the paper's mIoU, its reported numbers
    assert "no provenance record" in card.text and "no results are claimed" in card.text
    assert f"| Parameters | {parameter_count(model_dir):,} (counted from the weights) |" in card.text
    assert "has no provenance record" in caplog.text  # the publisher is told how to get the paper's card


def test_preset_is_refused_when_the_architecture_differs(hub: LocalHubServer, tmp_path: Path, cli) -> None:
    folder = make_model_folder(tmp_path / "small")  # the tiny Agent-Swin: embed_dim 16, depths 2-2-2-2
    code, _, err = cli("--model_dir", str(folder), "--repo_id", REPO_ID, "--token", TOKEN, "--preset", PRESET)
    assert code == 1
    assert "does not have the architecture of agent-swin-t-upernet-ade20k" in err
    assert "embed_dim 16 (preset: 96)" in err and "depths [2, 2, 2, 2] (preset: [2, 2, 6, 2])" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert hub.requests == []


def test_folder_of_another_model_type_gets_its_own_card(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "other", preset=None)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "tiny_agent"}))  # another model's code
    card = card_for_folder(folder, REPO_ID)
    assert card.data.eval_results is None and "`tiny_agent`" in card.text
    with pytest.raises(ValueError, match="does not have the architecture"):
        card_for_folder(folder, REPO_ID, preset=PRESET)


def test_validate_model_folder_skips_training_state(model_dir: Path) -> None:
    files = validate_model_folder(model_dir)
    assert files == sorted(local_files(model_dir))
    assert not set(files) & set(NOT_UPLOADED)
    assert {"handler.py", "requirements.txt", "image_processing_agent.py"} <= set(files)


def test_endpoint_handler_is_checked(hub: LocalHubServer, model_dir: Path) -> None:
    (model_dir / "handler.py").write_text("from .handler_utils import decode\n\n\nclass EndpointHandler:\n    pass\n")
    with pytest.raises(FileNotFoundError, match=r"handler_utils\.py"):
        push_folder_to_hub(model_dir, REPO_ID, token=TOKEN)
    (model_dir / "handler.py").write_text("def handle(data):\n    return []\n")
    with pytest.raises(ValueError, match="defines no `EndpointHandler`"):
        push_folder_to_hub(model_dir, REPO_ID, token=TOKEN)
    assert hub.requests == []


def test_model_code_transformers_could_not_read_is_named(model_dir: Path) -> None:
    """transformers reads remote code as UTF-8 and imports it: other bytes and broken syntax are named with their
    file. The modules' imports are remembered by content, never by path: an edited module is read again."""
    validate_model_folder(model_dir)  # the folder's modules, as written
    module = model_dir / "blocks.py"
    assert module.is_file()
    code = module.read_text(encoding="utf-8")
    for content, message in (
        (b"# caf\xe9\n" + code.encode(), r"blocks\.py is not UTF-8 text .*byte 5"),
        (b"def (:\n" + code.encode(), r"blocks\.py is not valid Python: invalid syntax \(line 1\)"),
        (code.encode() + b"\nx = '\x00'\n", r"blocks\.py is not valid Python: .*null"),
    ):
        module.write_bytes(content)
        with pytest.raises(ValueError, match=message):
            validate_model_folder(model_dir)
    module.write_text(code + "\nfrom .helpers_gone import helper  # noqa\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"helpers_gone\.py"):
        validate_model_folder(model_dir)
    module.write_bytes(b"\xef\xbb\xbf" + code.encode())  # a byte-order mark: Python and transformers read it
    assert "blocks.py" in validate_model_folder(model_dir)


def test_failed_card_commit_says_weights_are_published_without_card(
    isolated_hf: Path, monkeypatch: pytest.MonkeyPatch, model_dir: Path, cli
) -> None:
    server = _serve(monkeypatch, LocalHubServer(tokens={TOKEN}, fail_commits_adding={"README.md"}))
    try:
        with pytest.raises(CardPushError) as excinfo:
            push_folder_to_hub(model_dir, REPO_ID, token=TOKEN)
        message = str(excinfo.value)
        assert "published" in message and "WITHOUT the model card" in message and "--card_only" in message
        assert excinfo.value.model_commit.oid == server.commits(REPO_ID)[-1].oid
        assert "model.safetensors" in server.files(REPO_ID) and "README.md" not in server.files(REPO_ID)
        assert len(server.failed_commits) == 1

        # The CLI reports it the same way...
        code, _, err = cli("--model_dir", str(model_dir), "--repo_id", REPO_ID, "--token", TOKEN)
        assert code == 1 and "WITHOUT the model card" in err

        # ... and the suggested `--card_only` retry fixes the repo once the Hub is healthy again.
        server.fail_commits_adding.clear()
        code, _, err = cli("--model_dir", str(model_dir), "--repo_id", REPO_ID, "--token", TOKEN, "--card_only")
        assert code == 0, err
        assert list(server.commits(REPO_ID)[-1].added) == ["README.md"]
        assert server.files(REPO_ID)["README.md"] == str(card_for_folder(model_dir, REPO_ID)).encode()
    finally:
        server.stop()


def test_push_card_to_hub_accepts_a_markdown_file(hub: LocalHubServer, model_dir: Path, tmp_path: Path) -> None:
    push_folder_to_hub(model_dir, REPO_ID, token=TOKEN)
    card_path = tmp_path / "card.md"
    render_model_card(PRESET, repo_id=REPO_ID, flops=1.9e12).save(card_path)
    commit = push_card_to_hub(REPO_ID, card_path, token=TOKEN)
    assert hub.files(REPO_ID)["README.md"] == card_path.read_bytes()
    assert commit.oid == hub.commits(REPO_ID)[-1].oid

    bad = tmp_path / "bad.md"
    bad.write_text("---\ntags: [unclosed\n---\n# x\n")
    with pytest.raises(ValueError, match=r"bad\.md"):
        push_card_to_hub(REPO_ID, bad, token=TOKEN)


# ---------------------------------------------------------------------------------------------------------------------
# The CLI: one-line errors, and no torch
# ---------------------------------------------------------------------------------------------------------------------


def closed_port_endpoint() -> str:
    """An http://127.0.0.1 endpoint on which nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


def test_unreachable_endpoint_is_one_line(isolated_hf: Path, preset_model_dir: Path) -> None:
    model_dir = preset_model_dir
    endpoint = closed_port_endpoint()
    proc = run_cli(
        "--model_dir", str(model_dir), "--repo_id", REPO_ID, "--preset", PRESET,
        hf_token=TOKEN, HF_ENDPOINT=endpoint, HF_HUB_OFFLINE="0",
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: Could not reach the Hub at {endpoint} while creating the repository")
    assert "nothing was uploaded" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_unreachable_endpoint_for_the_card(isolated_hf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", closed_port_endpoint())
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(HubConnectionError, match="while uploading the model card.*the card was not uploaded"):
        push_card_to_hub(REPO_ID, render_model_card(PRESET, repo_id=REPO_ID), token=TOKEN)


def test_bad_measured_json_is_one_line(preset_model_dir: Path, tmp_path: Path, cli) -> None:
    model_dir = preset_model_dir
    bad = tmp_path / "measured.json"
    bad.write_text("{mean_iou: 46}")
    code, _, err = cli("--model_dir", str(model_dir), "--repo_id", REPO_ID, "--measured_json", str(bad))
    assert code == 1 and err.startswith(f"error: --measured_json {bad} is not valid JSON")
    bad.write_text('{"mean_iou": 0.46}')
    code, _, err = cli(
        "--model_dir", str(model_dir), "--repo_id", REPO_ID, "--preset", PRESET, "--measured_json", str(bad)
    )
    assert code == 1 and "look like fractions" in err and len(err.strip().splitlines()) == 1


# Runs the CLI in a fresh interpreter and reports its exit code and whether torch / transformers were imported.
_PROBE = """
import json, runpy, sys
sys.argv = ["push_to_hub.py", *sys.argv[1:]]
try:
    runpy.run_path({script!r}, run_name="__main__")
    code = 0
except SystemExit as exit:
    code = exit.code
print(json.dumps({{"code": code, "imported": sorted(m for m in ("torch", "transformers") if m in sys.modules)}}))
"""


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--model_dir", "no/such/folder", "--repo_id", REPO_ID]],
    ids=["help", "validation-error"],
)
def test_cli_starts_without_torch(isolated_hf: Path, args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(script=str(SCRIPT)), *args],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["imported"] == [], proc.stderr
    if args == ["--help"]:
        assert report["code"] == 0 and "--model_dir" in proc.stdout
    else:
        assert report["code"] == 1 and "no/such/folder" in proc.stderr and "Traceback" not in proc.stderr
