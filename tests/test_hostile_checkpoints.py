"""Hostile input, round 2: checkpoints and official configs from elsewhere. The restricted unpickler calls nothing
that allocates by argument, refuses a zip bomb from its directory, and every odd or unreadable file gives one line
naming the file and the problem."""

from __future__ import annotations

import json
import resource
import time
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import REFERENCE_DIR
from script_helpers import load_script, run_in_process

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
