"""The training script's runs: nothing lost (data checked before the first step, the model saved before evaluation,
complete checkpoints resumed with the same batches), one-line errors, and the batch arithmetic it prints."""

import ast
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from PIL import Image
from script_helpers import (
    COMMON,
    TINY_MODEL,
    TRAIN_SCRIPT,
    load_script,
    losses,
    read_json,
    run,
    run_in_process,
    script_env,
)
from transformers import AutoModelForSemanticSegmentation

from agent_hf.argument_checks import ScriptError
from agent_hf.data import make_synthetic_scene_parsing, save_as_image_folders, synthetic_id2label
from agent_hf.training import InvalidSampleError, scan_checkpoints


@pytest.fixture(scope="module")
def train():
    return load_script("run_semantic_segmentation")


# 6 training images in batches of 2: 3 steps per epoch, so the runs below cross epochs.
RESUMABLE = [*TINY_MODEL, *COMMON, "--synthetic_train_samples", "6", "--save_strategy", "steps", "--save_steps", "2",
             "--do_train"]  # fmt: skip


# ------------------------------------------------------------------------------------------------------- resuming
def test_a_killed_run_resumes_from_its_last_checkpoint_with_the_same_batches(train, tmp_path):
    """A run killed after a checkpoint and rerun (same command, now with 2 dataloader workers) logs the losses of the
    uninterrupted run: the same samples, the same augmentations, across epochs."""
    args = [*RESUMABLE, "--max_steps", "8"]
    code, stderr, log = run_in_process(train, [*args, "--output_dir", tmp_path / "uninterrupted"])
    assert code == 0, stderr

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, str(TRAIN_SCRIPT), *args, "--output_dir", str(killed)],
        env=script_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 240
        while not (killed / "checkpoint-2" / "trainer_state.json").is_file():
            assert process.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (killed / "model.safetensors").exists(), "the run finished before it was killed"
    interrupted_at = read_json(scan_checkpoints(killed).last / "trainer_state.json")["global_step"]
    assert interrupted_at < 8

    code, stderr, log = run_in_process(train, [*args, "--output_dir", killed, "--dataloader_num_workers", "2"])
    assert code == 0, stderr
    expected, resumed = losses(tmp_path / "uninterrupted"), losses(killed)
    assert len(expected) == len(resumed) == 8
    np.testing.assert_allclose(resumed, expected, rtol=1e-5)
    assert AutoModelForSemanticSegmentation.from_pretrained(killed).config.embed_dim == 16


def half_written(source: Path, step: int, damage: str) -> Path:
    """A copy of checkpoint ``source`` as ``checkpoint-{step}``, damaged as a kill during the save would leave it."""
    target = source.parent / f"checkpoint-{step}"
    shutil.copytree(source, target)
    state = read_json(target / "trainer_state.json")
    (target / "trainer_state.json").write_text(json.dumps({**state, "global_step": step}))
    if damage == "no state":
        (target / "trainer_state.json").unlink()
    else:
        file = target / damage
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    return target


def test_resume_skips_half_written_checkpoints_and_says_so(train, tmp_path):
    out = tmp_path / "run"
    code, stderr, log = run_in_process(train, [*RESUMABLE, "--max_steps", "4", "--output_dir", out])
    assert code == 0, stderr
    half_written(out / "checkpoint-4", 6, "no state")
    half_written(out / "checkpoint-4", 8, "model.safetensors")
    half_written(out / "checkpoint-4", 10, "optimizer.pt")
    scan = scan_checkpoints(out)
    assert [p.name for p in scan.complete] == ["checkpoint-2", "checkpoint-4"]
    assert {p.name: problem for p, problem in scan.partial} == {
        "checkpoint-6": "no trainer_state.json (it is written last)",
        "checkpoint-8": "model.safetensors is truncated",
        "checkpoint-10": "optimizer.pt is truncated",
    }

    # --resume_from_checkpoint True (`last`): the newest complete checkpoint, naming the ones skipped.
    code, stderr, log = run_in_process(train, [*RESUMABLE, "--max_steps", "6", "--output_dir", out,
                                               "--resume_from_checkpoint", "last"])  # fmt: skip
    assert code == 0, log
    assert f"Resuming from {out / 'checkpoint-4'}, the newest complete checkpoint" in log
    for name in ("checkpoint-6 (no trainer_state.json", "checkpoint-8 (model.safetensors is truncated)"):
        assert name in log
    state = read_json(out / "trainer_state.json")
    assert state["global_step"] == 6 and [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4, 5, 6]

    # A rerun of the command into a folder with checkpoints resumes by itself (no silent restart).
    code, stderr, log = run_in_process(train, [*RESUMABLE, "--max_steps", "6", "--output_dir", out])
    assert code == 0 and f"Resuming from {out / 'checkpoint-6'}: {out} holds this run's checkpoints" in log

    # A named checkpoint that is incomplete is refused, pointing at the newest complete one.
    code, stderr, log = run_in_process(train, [*RESUMABLE, "--output_dir", out, "--resume_from_checkpoint",
                                          out / "checkpoint-10"])  # fmt: skip
    assert code == 1 and "is not a complete checkpoint: optimizer.pt is truncated" in stderr


def test_resume_last_without_a_complete_checkpoint_is_an_error(train, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint-2").mkdir(parents=True)
    code, stderr, log = run_in_process(train, [*RESUMABLE, "--output_dir", out, "--resume_from_checkpoint", "True"])
    assert code == 1 and f"{out} holds no complete checkpoint" in stderr and "checkpoint-2" in stderr


# --------------------------------------------------------------------------------------------------- bad data
@pytest.fixture
def broken_folders(tmp_path):
    """ADE-layout folders with four bad samples: a truncated validation JPEG, a training mask of the wrong size, a
    training mask with an unknown class and a training image without mask."""
    root = save_as_image_folders(
        make_synthetic_scene_parsing(6, 3, num_classes=5, max_size=96),
        tmp_path / "ade",
        id2label=synthetic_id2label(5),
    )
    images, masks = root / "images", root / "annotations"
    jpeg = images / "validation" / "synthetic_validation_00000002.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    Image.new("L", (20, 10)).save(masks / "training" / "synthetic_train_00000003.png")
    Image.fromarray(np.full((40, 40), 9, np.uint8)).resize((96, 96)).save(masks / "training" / "big.png")
    shutil.copy(images / "training" / "synthetic_train_00000004.jpg", images / "training" / "big.jpg")
    Image.open(images / "training" / "big.jpg").resize((96, 96)).save(images / "training" / "big.jpg")
    (masks / "training" / "synthetic_train_00000005.png").unlink()
    return root


def test_bad_samples_stop_the_run_before_the_first_step_naming_each(train, broken_folders, tmp_path):
    out = tmp_path / "run"
    data = ["--train_dir", broken_folders, "--validation_dir", broken_folders]
    code, stderr, log = run_in_process(
        train, [*TINY_MODEL, *COMMON, *data, "--max_steps", "2", "--do_train", "--do_eval", "--output_dir", out]
    )
    assert code == 1 and "Nothing was trained" in stderr
    assert "3 of 7 train samples cannot be used" in stderr and "1 of 3 validation samples cannot be used" in stderr
    assert "train[0] (big.jpg): label value(s) [8] are outside the 5 classes" in stderr
    assert "train[3] (synthetic_train_00000003.jpg): image is" in stderr and "but its annotation 20x10" in stderr
    assert "train[5] (synthetic_train_00000005.jpg): has no annotation (mask)" in stderr
    assert "hint: check --do_reduce_labels" in stderr and "--skip_invalid_samples" in stderr
    assert not out.exists() or not any(out.iterdir()), "nothing was written"

    assert "validation[1] (synthetic_validation_00000002.jpg): image does not decode" in stderr


def test_skip_invalid_samples_trains_without_them_and_lists_them(train, broken_folders, tmp_path):
    out = tmp_path / "run"
    code, stderr, log = run_in_process(
        train,
        [*TINY_MODEL, *COMMON, "--train_dir", broken_folders, "--validation_dir", broken_folders,
         "--skip_invalid_samples", "--max_steps", "2", "--do_train", "--do_eval", "--output_dir", out],
    )  # fmt: skip
    assert code == 0, stderr
    assert "Skipping 3 of 7 train samples" in log and "Skipping 1 of 3 validation samples" in log
    for name in ("train[0] (big.jpg)", "train[3] (synthetic_train_00000003.jpg)", "train[5] (synthetic_train_0000",
                 "validation[1] (synthetic_validation_00000002.jpg)"):  # fmt: skip
        assert name in log
    assert read_json(out / "eval_per_class.json")["num_images"] == 2
    assert read_json(out / "trainer_state.json")["global_step"] == 2


def test_the_model_is_saved_before_evaluation(train, tmp_path):
    """An evaluation that fails after training (here a validation file broken after the checks) loses nothing: the
    trained model is already in the output folder."""
    from agent_hf.data import TrainTransform
    from agent_hf.saving import make_image_processor
    from agent_hf.training import EvalDataset, EvalSettings, SegmentationTrainer, TrainDataset, pad_collate, recipe_for
    from agent_hf.training.model_setup import load_model_to_train
    from agent_hf.training.run_folder import plan_output

    data = make_synthetic_scene_parsing(4, 2, num_classes=5, max_size=96)
    root = save_as_image_folders(data, tmp_path / "ade")
    (root / "images" / "validation" / "synthetic_validation_00000001.jpg").write_bytes(b"broken after the checks")
    model_args, data_args, training_args, output_args, explicit = train.parse_arguments(
        [*TINY_MODEL, *COMMON, "--validation_dir", str(root), "--max_steps", "1", "--do_train", "--do_eval",
         "--output_dir", str(tmp_path / "run")]
    )  # fmt: skip
    plan = plan_output(
        training_args.output_dir, do_train=True, overwrite=False, resume_from_checkpoint=None, inputs=[]
    )
    model = load_model_to_train(
        model_args.model_name_or_path, synthetic_id2label(5), overrides=model_args.config_overrides
    )
    processor = make_image_processor(scale=(256, 64))
    transform = dict(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), reduce_labels=True)
    validation = train.load_data(data_args, model_args, 0).splits["validation"]
    trainer = SegmentationTrainer(
        model,
        training_args,
        recipe=recipe_for(model.config).with_overrides(training_args, explicit),
        train_dataset=TrainDataset(data["train"], TrainTransform((64, 64), (256, 64), **transform), 5),
        eval_dataset=EvalDataset(validation, EvalSettings(scale=(256, 64), **transform)),
        data_collator=pad_collate((64, 64)),
    )
    with pytest.raises(InvalidSampleError, match=r"validation\[0\] \(synthetic_validation_00000001.jpg\)"):
        train.train_and_evaluate(trainer, plan, processor, "agent-swin-t-upernet-ade20k", "synthetic")
    saved = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "run")
    torch.testing.assert_close(saved.state_dict(), model.state_dict())


# ------------------------------------------------------------------------------------------- one-line errors
def test_errors_are_one_line_with_exit_code_1(train, tmp_path):
    """The real command line: an empty images/validation is reported as empty (not missing), in one line, exit code
    1; with --debug the error propagates (the interpreter prints its traceback). The other errors in-process."""
    root = save_as_image_folders(make_synthetic_scene_parsing(2, 1, max_size=96), tmp_path / "ade")
    for image in (root / "images" / "validation").iterdir():
        image.unlink()
    args = [*TINY_MODEL, "--validation_dir", root, "--do_eval", "--output_dir", tmp_path / "out"]
    result = run([sys.executable, TRAIN_SCRIPT, *args], check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: could not load the dataset: {root}/images/validation is empty: it holds no image file "
        "(.jpg, .jpeg, .png, .bmp, .tif, .tiff, .webp)"
    ]
    with pytest.raises(ScriptError, match="could not load the dataset: .* is empty"):
        run_in_process(train, [*args, "--debug"])

    for argv, message in (
        (["--output_dir", tmp_path / "o", "--model_name_or_path"], "--model-name-or-path: expected one argument"),
        ([*TINY_MODEL, "--output_dir", tmp_path / "o", "--do_train", "--bogus"], "not used by the HfArgumentParser"),
        ([*TINY_MODEL, "--output_dir", tmp_path / "o"], "nothing to do: pass --do_train and/or --do_eval"),
        (["--model_name_or_path", "agent-swin-t-upernet-ade20k", "--config_overrides", "{bad", *COMMON, "--do_train",
          "--output_dir", tmp_path / "o"], "--config_overrides is not valid JSON"),
        ([*TINY_MODEL, *COMMON, "--per_device_train_batch_size", "1", "--do_train", "--output_dir", tmp_path / "o"],
         "one image per device cannot train the UperNet heads without SyncBatchNorm"),
        ([*TINY_MODEL, "--dataset_name", "synthetic", "--streaming", "--num_train_epochs", "1", "--do_train",
          "--output_dir", tmp_path / "o"], "a streamed dataset has no length: give --max_steps"),
    ):  # fmt: skip
        code, stderr, log = run_in_process(train, argv)
        assert code == 1 and stderr.startswith("error: ") and message in stderr, stderr


def test_the_batch_arithmetic_is_printed_against_the_recipe(train, tmp_path):
    code, stderr, out = run_in_process(train, [*TINY_MODEL, *COMMON, "--max_steps", "1", "--do_train",
                                               "--output_dir", tmp_path / "run"])  # fmt: skip
    assert code == 0, stderr
    assert "Batch: 1 process x 2 images x 1 accumulation step = 2 images per iteration (recipe: 16)." in out
    assert "The recipe 'paper' uses 16 images per iteration: pass --gradient_accumulation_steps 8." in out
    assert "BatchNorm: a single process: the heads normalize over the 2 image(s) of each forward pass" in out
    assert "statistics differ from the paper's" in out

    code, stderr, out = run_in_process(
        train, [*TINY_MODEL, *COMMON, "--max_steps", "1", "--do_train", "--gradient_accumulation_steps", "8",
                "--output_dir", tmp_path / "run8"],
    )  # fmt: skip
    assert code == 0 and "= 16 images per iteration (recipe: 16)." in out and "The recipe" not in out


# ------------------------------------------------------------------------------------------------- code shape
def test_the_training_script_keeps_the_examples_shape():
    """Argument dataclasses and a main that reads top-down, as transformers' example: its library parts live in
    agent_hf (transformers' run_semantic_segmentation.py is ~480 lines)."""
    script = REPO_ROOT / "scripts" / "run_semantic_segmentation.py"
    lines = script.read_text().splitlines()
    assert len(lines) <= 600, f"{script.name} has {len(lines)} lines: move library logic into agent_hf"
    tree = ast.parse(script.read_text())
    assert any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body)


LIBRARY = REPO_ROOT / "src" / "agent_hf"
# The training script's parts in the library (its output-folder and resume policy, data loading, sample and batch
# checks, model setup, argument parsing and launch checks): like agent_hf.argument_checks, they speak the script's
# language, and their messages name its options.
SCRIPT_PARTS = [
    *(
        LIBRARY / "training" / name
        for name in ("run_folder.py", "validation.py", "model_setup.py", "script_support.py")
    ),
    LIBRARY / "data" / "loading.py",
]
LIBRARY_MODULES = [
    *sorted(set((LIBRARY / "training").glob("*.py")) - set(SCRIPT_PARTS)),
    LIBRARY / "output_folders.py",
    LIBRARY / "data" / "ade20k.py",
    LIBRARY / "restricted_pickle.py",
]


def message_texts(path: Path) -> list[str]:
    """The string constants of a module that are not docstrings (its messages)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node) is not None
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


@pytest.mark.parametrize("path", LIBRARY_MODULES, ids=lambda p: p.name)
def test_library_messages_name_no_script_or_flag(path):
    """The scripts translate library errors into their flags; the library's messages name neither."""
    texts = message_texts(path)
    offending = [text for text in texts if " --" in f" {text}" and any(c.isalpha() for c in text.split("--")[1][:1])]
    offending += [text for text in texts if "scripts/" in text or "run_semantic_segmentation" in text]
    assert not offending, offending


@pytest.mark.parametrize("path", SCRIPT_PARTS, ids=lambda p: p.name)
def test_the_training_scripts_parts_name_only_its_options(path, train):
    """A renamed or removed option leaves no message of the script's library parts naming it."""
    from transformers import TrainingArguments

    from agent_hf.training.script_support import ArgumentDataclassParser

    groups = (train.ModelArguments, train.DataTrainingArguments, TrainingArguments, train.OutputArguments)
    options = {option for action in ArgumentDataclassParser(groups)._actions for option in action.option_strings}
    named = {flag for text in message_texts(path) for flag in re.findall(r"--[a-z][a-z_]*", text)}
    assert named - options == set()
    scripts = {name for text in message_texts(path) for name in re.findall(r"scripts/(\w+\.py)", text)}
    assert all((REPO_ROOT / "scripts" / name).is_file() for name in scripts), scripts
