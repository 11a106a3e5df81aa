"""Scaling out with accelerate: docs/training.md's `accelerate launch` commands, at tiny scale on CPU processes (gloo).

One process with gradient accumulation (the docs' `--num_processes 1`, i.e. one plain process: run in pytest's),
two processes and two "machines" on 127.0.0.1, all with the same global batch of 4 images, log the same losses at
every step (same samples, augmentations and gradients). Two processes and two machines end with the same weights and
metrics, and a run's evaluation over its processes equals a single-process evaluation of its weights. (The
single-process run's evaluation differs slightly: without SyncBatchNorm, which needs CUDA, DDP keeps process 0's
BatchNorm running statistics while one process accumulates them over every micro-batch.)
A streamed dataset trains and evaluates on 2 processes, the evaluation still exact.
"""

import contextlib
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from script_helpers import (
    COMMON,
    TINY_MODEL,
    TRAIN_SCRIPT,
    free_port,
    load_script,
    losses,
    read_json,
    run_in_process,
    script_env,
)

from agent_hf.data import make_synthetic_scene_parsing, save_as_image_folders

ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
SCRIPT_NAME = "scripts/run_semantic_segmentation.py"
METRICS = ("eval_mIoU", "eval_mAcc", "eval_aAcc")


def readme_launch_commands() -> dict[str, tuple[list[str], list[str]]]:
    """docs/training.md's `accelerate launch` commands: ``{comment: (launcher arguments, script arguments)}``."""
    text = (REPO_ROOT / "docs" / "training.md").read_text()
    block = text[text.index("## Launching") :]
    block = block[block.index("```bash") + 7 : block.index("```", block.index("```bash") + 7)]
    commands, comment = {}, None
    for line in block.replace("\\\n", " ").splitlines():
        if line.startswith("#"):
            comment = line[1:].strip()
        elif line.startswith("accelerate launch"):
            launcher, script_args = line.split(SCRIPT_NAME)
            extra = [arg for arg in shlex.split(script_args) if arg != "$ARGS"]
            commands[comment] = (shlex.split(launcher)[2:], extra)
    return commands


@pytest.fixture(scope="module")
def readme_commands():
    commands = readme_launch_commands()
    assert len(commands) == 4, commands
    return {key.split(":")[0].split(",")[0].split("(")[0].strip(): value for key, value in commands.items()}


def launch(launcher: list[str], args: list, tmp_path, **kwargs) -> subprocess.Popen:
    env = script_env(HF_HOME=str(tmp_path / "hf_home"))  # no user-level accelerate config
    command = [*ACCELERATE, *launcher, str(TRAIN_SCRIPT), *map(str, args)]
    return subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs
    )


def finish(*processes: subprocess.Popen, timeout: int = 400) -> None:
    outputs = [process.communicate(timeout=timeout)[0] for process in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-5000:]


@contextlib.contextmanager
def one_thread():
    """torch on one thread, as in every launched process (OMP_NUM_THREADS=1), whatever an earlier test set."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def substitute(launcher: list[str], **values: str) -> list[str]:
    return [values.get(arg.lstrip("$"), arg) if arg.startswith("$") else arg for arg in launcher]


# Global batch of 4 images over 2 steps per epoch (8 images), 4 steps.
RUN = [*TINY_MODEL, *COMMON, "--max_steps", "4", "--do_train", "--do_eval"]


def test_readme_commands_scale_from_one_process_to_two_machines(readme_commands, tmp_path):
    one_gpu, _ = readme_commands["one GPU"]
    eight_gpus, _ = readme_commands["8 GPUs x 2 images"]
    machines, _ = readme_commands["several machines"]
    cpu, _ = readme_commands["CPU only"]
    assert eight_gpus == ["--multi_gpu", "--num_processes", "8"] and cpu == ["--multi_gpu", "--num_processes", "2"]
    assert one_gpu == ["--num_processes", "1"]
    port = ["--main_process_port", free_port()]

    # `accelerate launch --num_processes 1` runs the script in one plain process: run it in this one (one thread,
    # as each launched process), which spares two interpreter start-ups; the launched runs below must match it.
    train = load_script("run_semantic_segmentation")
    with one_thread():
        code, stderr, _ = run_in_process(
            train, [*RUN, "--gradient_accumulation_steps", "2", "--output_dir", tmp_path / "one"]
        )
    assert code == 0, stderr
    finish(launch([*cpu, *port], [*RUN, "--output_dir", tmp_path / "two"], tmp_path))
    # Two "machines" on this one, one process each (the README's 2 x 8 GPUs at tiny scale).
    machine_port = free_port()
    ranks = [
        launch(
            [*substitute(machines, RANK=str(rank), MAIN_IP="127.0.0.1"), "--num_processes", "2",
             "--main_process_port", machine_port],
            [*RUN, "--output_dir", tmp_path / f"machine{rank}"],
            tmp_path,
        )
        for rank in (0, 1)
    ]  # fmt: skip
    finish(*ranks)

    expected = losses(tmp_path / "one")
    assert len(expected) == 4
    # The README's CPU command runs two processes (accelerate's own `--cpu` would run one, whatever it is told).
    for run_dir in ("two", "machine0"):
        np.testing.assert_allclose(losses(tmp_path / run_dir), expected, rtol=1e-4, err_msg=run_dir)
        assert read_json(tmp_path / run_dir / "eval_per_class.json")["world_size"] == 2
    assert read_json(tmp_path / "one" / "eval_per_class.json")["world_size"] == 1
    assert not (tmp_path / "machine1" / "model.safetensors").exists(), "only the main process saves"

    two_processes = read_json(tmp_path / "two" / "all_results.json")
    for run_dir in ("two", "machine0"):
        results = read_json(tmp_path / run_dir / "all_results.json")
        # The distributed evaluation is exact: one process evaluating the same weights finds the same numbers.
        code, stderr, _ = run_in_process(
            train,
            [*COMMON, "--model_name_or_path", tmp_path / run_dir, "--do_eval",
             "--output_dir", tmp_path / f"{run_dir}-eval"],
        )  # fmt: skip
        assert code == 0, stderr
        single_process = read_json(tmp_path / f"{run_dir}-eval" / "all_results.json")
        for key in METRICS:
            assert results[key] == single_process[key], (run_dir, key)
            assert results[key] == two_processes[key], (run_dir, key)


def test_a_streamed_dataset_trains_and_evaluates_on_two_processes(readme_commands, tmp_path):
    """A parquet dataset (written by scripts/prepare_ade20k.py) streamed by 2 processes: each reads its part of the
    stream; the evaluation over the two parts equals one process's evaluation of the whole split."""
    ade = save_as_image_folders(make_synthetic_scene_parsing(8, 4, num_classes=5, max_size=96), tmp_path / "ade")
    code, stderr, _ = run_in_process(
        load_script("prepare_ade20k"),
        ["--ade_dir", ade, "--output_dir", tmp_path / "parquet", "--max_shard_size", "0.02"],
    )
    assert code == 0, stderr
    assert len(list((tmp_path / "parquet" / "data").glob("validation-*.parquet"))) >= 2
    cpu, _ = readme_commands["CPU only"]
    data = ["--dataset_name", tmp_path / "parquet", "--do_reduce_labels", "--streaming"]
    process = launch(
        [*cpu, "--main_process_port", free_port()],
        [*TINY_MODEL, *COMMON, *data, "--max_steps", "3", "--do_train", "--do_eval", "--output_dir", tmp_path / "run"],
        tmp_path,
    )
    finish(process)
    report = read_json(tmp_path / "run" / "eval_per_class.json")
    assert report["world_size"] == 2 and report["num_images"] == 4
    assert read_json(tmp_path / "run" / "trainer_state.json")["global_step"] == 3

    with one_thread():  # as each launched process (the comparison is of the same arithmetic)
        code, stderr, _ = run_in_process(
            load_script("run_semantic_segmentation"),
            [*COMMON, "--model_name_or_path", tmp_path / "run", "--dataset_name", tmp_path / "parquet",
             "--do_reduce_labels", "--do_eval", "--output_dir", tmp_path / "eval"],
        )  # fmt: skip
    assert code == 0, stderr
    streamed, whole = (
        read_json(tmp_path / "run" / "all_results.json"),
        read_json(tmp_path / "eval" / "all_results.json"),
    )
    assert read_json(tmp_path / "eval" / "eval_per_class.json")["num_images"] == 4
    for key in METRICS:
        assert streamed[key] == whole[key], key
