"""Hostile input, round 2: the scripts check what they need at the end (Hub repo id and token, demo sizes) before the
work starts, and never delete a user's file inside their own earlier output."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import REFERENCE_DIR
from PIL import Image
from script_helpers import COMMON, TINY_MODEL, load_script, run_in_process

CHECKPOINT = REFERENCE_DIR / "agent_swin_aaab_upernet.weights.safetensors"
OFFICIAL_CONFIG = REFERENCE_DIR / "agent_swin_aaab_upernet.json"


@pytest.mark.parametrize(
    ("hub_args", "expected"),
    [
        (["--hub_model_id", "not a repo id"], "Invalid repo_id 'not a repo id'"),
        (["--hub_model_id", "user/model"], "offline mode is enabled"),  # the tests run with HF_HUB_OFFLINE=1
    ],
)
def test_conversion_checks_the_hub_before_converting(tmp_path, monkeypatch, hub_args, expected):
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    script = load_script("convert_official_checkpoint")
    start = time.monotonic()
    code, stderr, output = run_in_process(
        script,
        ["--checkpoint", CHECKPOINT, "--official_config", OFFICIAL_CONFIG, "--output_dir", tmp_path / "out",
         "--push_to_hub", *hub_args],
    )  # fmt: skip
    assert code == 1 and expected in stderr and stderr.startswith("error: --push_to_hub"), stderr
    assert not (tmp_path / "out").exists() and "wrote" not in output
    assert time.monotonic() - start < 5


def test_training_checks_the_hub_before_training(tmp_path):
    script = load_script("run_semantic_segmentation")
    code, stderr, _ = run_in_process(
        script,
        [*TINY_MODEL, *COMMON, "--max_steps", "1", "--do_train", "--output_dir", tmp_path / "out", "--push_to_hub",
         "--hub_model_id", "user/not valid!"],
    )  # fmt: skip
    assert code == 1 and stderr.startswith("error: --push_to_hub: Invalid repo_id 'user/not valid!'"), stderr
    assert not (tmp_path / "out").exists()


DEMO = ["--max_steps", "1", "--batch_size", "2", "--num_train", "2"]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--max_steps", "0"], "--max_steps must be at least 1"),
        (["--batch_size", "0"], "--batch_size must be at least 2"),
        (["--batch_size", "1"], "--batch_size must be at least 2"),
        (["--num_threads", "0"], "--num_threads must be at least 1"),
        (["--num_val", "0"], "--num_val must be at least 1"),
        (["--num_train", "2", "--batch_size", "4"], "--num_train (2) must be at least --batch_size (4)"),
        (["--learning_rate", "nan"], "--learning_rate must be a positive number"),
    ],
)
def test_demo_sizes_are_checked_before_training(tmp_path, arguments, expected):
    start = time.monotonic()
    code, stderr, _ = run_in_process(load_script("demo"), ["--output_dir", tmp_path / "demo", *arguments])
    assert code == 1 and expected in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "demo").exists() and time.monotonic() - start < 5


def test_demo_with_two_validation_images_and_a_user_file_in_its_model(tmp_path):
    demo = load_script("demo")
    out = tmp_path / "demo"
    code, stderr, _ = run_in_process(demo, ["--output_dir", out, *DEMO, "--num_val", "2"])
    assert code == 0, stderr
    panel = Image.open(out / "prediction.png")
    assert panel.height > 0 and json.loads((out / "demo_run.json").read_text())["model_files"]

    notes = out / "model" / "my_notes.txt"
    notes.write_text("mine")
    code, stderr, _ = run_in_process(demo, ["--output_dir", out, *DEMO, "--num_val", "2"])
    assert code == 1 and "is not empty" in stderr and notes.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]

    # An output of an earlier version (no manifest): still recognized, unless a user's file is in it.
    record = json.loads((out / "demo_run.json").read_text())
    del record["model_files"]
    (out / "demo_run.json").write_text(json.dumps(record))
    demo_module = demo
    assert not demo_module.is_demo_output(out)
    notes.unlink()
    assert demo_module.is_demo_output(out)
    assert not demo_module.is_demo_output(Path(tmp_path))
