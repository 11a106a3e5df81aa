"""Hostile input, round 2: checkpoints and official configs from elsewhere. The restricted unpickler calls nothing
that allocates by argument, refuses a zip bomb from its directory, and every odd or unreadable file gives one line
naming the file and the problem."""

from __future__ import annotations

import json
import resource
import shutil
import time
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import REFERENCE_DIR, TINY_PVT, TINY_SWIN
from script_helpers import COMMON, TINY_MODEL, load_script, run_in_process

import agent_hf
from agent_hf.restricted_pickle import CheckpointReadError, UnpickledObject, load_checkpoint_file

SWIN_CHECKPOINT = REFERENCE_DIR / "agent_swin_aaab_upernet.weights.safetensors"
SWIN_CONFIG = json.loads((REFERENCE_DIR / "agent_swin_aaab_upernet.json").read_text())


class Call:
    """Pickles as ``function(*args)``: what a crafted file asks the unpickler to call."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(
    "payload",
    [
        Call(list, Call(range, 150_000_000)),
        Call(list, Call(range, 10**10)),
        Call(bytearray, 10**10),  # torch's weights_only loader builds this one
        Call(bytes, 10**10),
    ],
    ids=["list-range", "list-range-1e10", "bytearray", "bytes"],
)
def test_no_call_allocates_by_argument(tmp_path, payload):
    path = tmp_path / "small.pth"
    torch.save({"state_dict": {"weight": torch.ones(2)}, "payload": payload}, path)
    assert path.stat().st_size < 2000
    before, start = peak_mib(), time.monotonic()
    loaded = load_checkpoint_file(path)
    assert time.monotonic() - start < 2 and peak_mib() - before < 100
    assert isinstance(loaded["payload"], UnpickledObject)  # recorded, not called
    assert torch.equal(loaded["state_dict"]["weight"], torch.ones(2))


def test_sets_and_complex_numbers_still_load(tmp_path):
    path = tmp_path / "literals.pth"
    value = {"tags": {"a", "b"}, "frozen": frozenset({1, 2}), "z": 1 + 2j, "weight": torch.arange(3.0)}
    torch.save(value, path, pickle_protocol=2)  # protocol 2 stores sets and complex numbers as calls
    loaded = load_checkpoint_file(path)
    assert loaded["tags"] == {"a", "b"} and loaded["frozen"] == frozenset({1, 2}) and loaded["z"] == 1 + 2j
    assert torch.equal(loaded["weight"], torch.arange(3.0))
    torch.save({"tags": Call(set, Call(range, 10**10))}, path, pickle_protocol=2)
    with pytest.raises(CheckpointReadError, match="only literal items are read"):
        load_checkpoint_file(path)


def test_a_zip_bomb_is_refused_before_decompressing(tmp_path):
    path = tmp_path / "bomb.pth"
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("bomb/data.pkl", "w", force_zip64=True) as entry,
    ):
        for _ in range(200):  # 200 MiB of zeros, about 200 KB compressed
            entry.write(bytes(2**20))
    assert path.stat().st_size < 1_000_000
    before, start = peak_mib(), time.monotonic()
    with pytest.raises(CheckpointReadError) as info:
        load_checkpoint_file(path)
    assert time.monotonic() - start < 1 and peak_mib() - before < 50
    message = str(info.value)
    assert str(path) in message and "would decompress to 209715200 bytes" in message and "\n" not in message


def odd_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    files = {
        "list": ([torch.ones(2)], "holds a list, not a state dict"),
        "tensor": (torch.ones(3, 4), "holds a single tensor of shape (3, 4), not a state dict"),
        "integer-keys": ({0: torch.ones(2), 1: torch.ones(2)}, "keys that are not parameter names (e.g. 0)"),
        "nested-integer-keys": ({"state_dict": {7: torch.ones(2)}}, "keys that are not parameter names (e.g. 7)"),
        "placeholder": (Call(Call, print), "holds Call <not loaded:"),
        "no-tensors": ({"state_dict": {"epoch": 3}}, "holds no tensors"),
        "list-range": (Call(list, Call(range, 10**10)), "not a state dict"),
    }
    written = {}
    for name, (value, message) in files.items():
        torch.save(value, tmp_path / f"{name}.pth")
        written[name] = (tmp_path / f"{name}.pth", message)
    (tmp_path / "empty.pth").write_bytes(b"")
    written["empty"] = (tmp_path / "empty.pth", "the file is empty")
    (tmp_path / "garbage.pth").write_bytes(b"\x80\x04garbage")
    written["garbage"] = (tmp_path / "garbage.pth", "could not read")
    (tmp_path / "text.pth").write_text("<html>404 Not Found</html>\n")
    written["text"] = (tmp_path / "text.pth", "not a PyTorch checkpoint")
    return written


def test_odd_checkpoints_give_one_line_naming_the_file(tmp_path):
    for name, (path, expected) in odd_files(tmp_path).items():
        with pytest.raises(ValueError) as info:
            agent_hf.load_official_checkpoint(path, SWIN_CONFIG)
        message = str(info.value)
        assert str(path) in message and expected in message, (name, message)
        assert "\n" not in message and not message.rstrip().endswith(":"), (name, message)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ([1, 2], "expected an mmseg model dict (a JSON object), got list"),
        ({"model": {"backbone": {"type": "AgentSwinTransformer", "depths": 5}}}, "TypeError"),
        ({"model": {"backbone": {"type": "AgentPVT", "embed_dims": "wide"}}}, "wrong type or value"),
        (
            {"model": {"backbone": {"type": "AgentSwinTransformer"}, "decode_head": [1]}},
            "'decode_head' must be a dict, got list",
        ),
        ({"model": {"backbone": {"type": "AgentSwinTransformer", "window_size": None}}}, "wrong type or value"),
    ],
)
def test_odd_official_configs_give_one_line(config, expected):
    with pytest.raises(ValueError) as info:
        agent_hf.config_from_official(config)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_the_conversion_script_reports_odd_inputs_in_one_line(tmp_path):
    script = load_script("convert_official_checkpoint")
    config = tmp_path / "config.json"
    config.write_text(json.dumps([SWIN_CONFIG]))
    code, stderr, _ = run_in_process(
        script, ["--checkpoint", SWIN_CHECKPOINT, "--official_config", config, "--output_dir", tmp_path / "out"]
    )
    assert code == 1 and str(config) in stderr and "got list" in stderr and len(stderr.strip().splitlines()) == 1
    files = odd_files(tmp_path)
    for name in ("tensor", "empty", "integer-keys"):
        path, expected = files[name]
        code, stderr, _ = run_in_process(
            script, ["--checkpoint", path, "--preset", "agent-swin-t-upernet-ade20k", "--output_dir", tmp_path / name]
        )
        assert code == 1 and expected in stderr and len(stderr.strip().splitlines()) == 1, stderr
        assert not (tmp_path / name).exists()


# ------------------------------------------------------------------------------------------------------ resuming
RESUMABLE = [*COMMON, "--synthetic_train_samples", "4", "--save_strategy", "steps", "--save_steps", "2", "--do_train"]


@pytest.fixture(scope="module")
def swin_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint of a tiny Agent-Swin run (step 2)."""
    out = tmp_path_factory.mktemp("resume") / "run"
    code, stderr, _ = run_in_process(
        load_script("run_semantic_segmentation"), [*TINY_MODEL, *RESUMABLE, "--max_steps", "2", "--output_dir", out]
    )
    assert code == 0, stderr
    return out / "checkpoint-2"


def resume(checkpoint: Path, out: Path, model: list[str]) -> tuple[int, str]:
    code, stderr, _ = run_in_process(
        load_script("run_semantic_segmentation"),
        [*model, *RESUMABLE, "--max_steps", "4", "--output_dir", out, "--resume_from_checkpoint", checkpoint],
    )
    return code, stderr


def test_a_crafted_rng_state_is_refused_before_training(swin_checkpoint, tmp_path):
    import os

    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(swin_checkpoint, checkpoint)
    torch.save({"python": Call(os.system, f"touch {tmp_path / 'pwned'}")}, checkpoint / "rng_state.pth")
    code, stderr = resume(checkpoint, tmp_path / "out", TINY_MODEL)
    assert code == 1 and len(stderr.strip().splitlines()) == 1, stderr
    assert f"cannot resume from {checkpoint}: rng_state.pth names posix.system" in stderr
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out" / "checkpoint-4").exists()

    torch.save({"python": Call(bytearray, 10**10)}, checkpoint / "rng_state.pth")  # weights_only would build it
    code, stderr = resume(checkpoint, tmp_path / "out", TINY_MODEL)
    assert code == 1 and "bytearray, which a checkpoint never holds" in stderr


def test_a_checkpoint_of_another_architecture_is_refused_before_training(swin_checkpoint, tmp_path):
    pvt = ["--model_name_or_path", "agent-pvt-t-fpn-ade20k", "--config_overrides", json.dumps(TINY_PVT)]
    code, stderr = resume(swin_checkpoint, tmp_path / "pvt", pvt)
    assert code == 1 and "it holds a 'agent_swin' model, and this run trains a 'agent_pvt' model" in stderr
    wider = ["--model_name_or_path", "agent-swin-t-upernet-ade20k", "--config_overrides",
             json.dumps({**TINY_SWIN, "embed_dim": 24})]  # fmt: skip
    code, stderr = resume(swin_checkpoint, tmp_path / "wider", wider)
    assert code == 1 and "weights differ in shape from this run's model" in stderr and len(stderr.splitlines()) == 1
    assert not (tmp_path / "pvt" / "checkpoint-4").exists() and not (tmp_path / "wider" / "checkpoint-4").exists()
