"""Scaling out with accelerate: docs/training.md's `accelerate launch` commands, at tiny scale on CPU processes (gloo).

One process with gradient accumulation (the docs' `--num_processes 1`, i.e. one plain process: run in pytest's) and two
"machines" of one process each on 127.0.0.1 (the several-machines command), with the same global batch of 4 images,
log the same losses at every step (same samples, augmentations and gradients), and the two machines' evaluation over
their processes equals a single-process evaluation of their weights. (The single-process run's evaluation differs
slightly: without SyncBatchNorm, which needs CUDA, DDP keeps process 0's BatchNorm running statistics while one
process accumulates them over every micro-batch.) The CPU command (2 processes on one machine) trains a streamed
dataset, its evaluation still exact. The two distributed runs are the same DDP arithmetic behind two launchers: a
third run of it (the CPU command on the in-memory data) would check accelerate again, not the script.

The runs are independent and single-threaded: they start side by side (the `runs` fixture) and each test waits for
its own.
"""

import contextlib
import shlex
import subprocess
import sys
from pathlib import Path

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


class Launch:
    """One `accelerate launch` of the training script, its output going to ``log`` (a file: several launches run side
    by side, and a pipe nobody reads would stall one once it filled up)."""

    def __init__(self, launcher: list[str], args: list, tmp_path, log: Path):
        env = script_env(HF_HOME=str(tmp_path / "hf_home"))  # no user-level accelerate config
        command = [*ACCELERATE, *launcher, str(TRAIN_SCRIPT), *map(str, args)]
        self.log = log
        with log.open("w") as output:
            self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)

    def finish(self, timeout: int = 400) -> None:
        """Waits for the launch and asserts that it succeeded (showing the end of its output if not)."""
        try:
            self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        assert self.process.returncode == 0, self.log.read_text()[-5000:]


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


@pytest.fixture(scope="module")
def runs(readme_commands, tmp_path_factory):
    """Every run of the two tests below, started side by side: the launches (2 machines of 1 process; a streamed
    dataset on 2 processes) and, meanwhile, the one-process run in this process. Each process is
    single-threaded, and one after another they would leave a core idle while each launcher starts and while each
    streamed epoch ends (datasets waits 5 s for Arrow's reader threads). Yields the folder, the launches by name (each
    test finishes its own, so that the first one's checks run while the streamed launch goes on) and the one-process
    run's ``(exit code, stderr)``."""
    root = tmp_path_factory.mktemp("launch")
    ade = save_as_image_folders(make_synthetic_scene_parsing(8, 4, num_classes=5, max_size=96), root / "ade")
    prepared = run_in_process(
        load_script("prepare_ade20k"),
        ["--ade_dir", ade, "--output_dir", root / "parquet", "--max_shard_size", "0.02"],
    )
    assert prepared[0] == 0, prepared[1]
    cpu, _ = readme_commands["CPU only"]
    machines, _ = readme_commands["several machines"]
    ports = set()
    while len(ports) < 2:  # one each for the launches running at the same time
        ports.add(free_port())
    machine_port, streamed_port = map(str, ports)
    launches = {
        f"machine{rank}": Launch(
            [*substitute(machines, RANK=str(rank), MAIN_IP="127.0.0.1"), "--num_processes", "2",
             "--main_process_port", machine_port],
            [*RUN, "--output_dir", root / f"machine{rank}"], root, root / f"machine{rank}.log",
        )
        for rank in (0, 1)
    }  # fmt: skip
    launches["streamed"] = Launch(
        [*cpu, "--main_process_port", streamed_port],
        [*TINY_MODEL, *COMMON, "--dataset_name", root / "parquet", "--do_reduce_labels", "--streaming",
         "--max_steps", "3", "--do_train", "--do_eval", "--output_dir", root / "streamed"],
        root, root / "streamed.log",
    )  # fmt: skip
    try:
        # `accelerate launch --num_processes 1` runs the script in one plain process: run it in this one (one
        # thread, as each launched process), which spares two interpreter start-ups; the launched runs must match it.
        with one_thread():
            one = run_in_process(
                load_script("run_semantic_segmentation"),
                [*RUN, "--gradient_accumulation_steps", "2", "--output_dir", root / "one"],
            )
        yield root, launches, one[:2]  # each test waits for its own launches
    finally:
        for launch in launches.values():
            with contextlib.suppress(AssertionError):
                launch.finish()


def test_readme_commands_scale_from_one_process_to_two_machines(readme_commands, runs, tmp_path):
    one_gpu, _ = readme_commands["one GPU"]
    eight_gpus, _ = readme_commands["8 GPUs x 2 images"]
    cpu, _ = readme_commands["CPU only"]
    assert eight_gpus == ["--multi_gpu", "--num_processes", "8"] and cpu == ["--multi_gpu", "--num_processes", "2"]
    assert one_gpu == ["--num_processes", "1"]
    root, launches, (code, stderr) = runs
    assert code == 0, stderr
    for name in ("machine0", "machine1"):
        launches[name].finish()

    expected = losses(root / "one")
    assert len(expected) == 4
    np.testing.assert_allclose(losses(root / "machine0"), expected, rtol=1e-4)
    assert read_json(root / "machine0" / "eval_per_class.json")["world_size"] == 2
    assert read_json(root / "one" / "eval_per_class.json")["world_size"] == 1
    assert not (root / "machine1" / "model.safetensors").exists(), "only the main process saves"

    # The distributed evaluation is exact: one process evaluating the same weights finds the same numbers.
    code, stderr, _ = run_in_process(
        load_script("run_semantic_segmentation"),
        [*COMMON, "--model_name_or_path", root / "machine0", "--do_eval", "--output_dir", tmp_path / "eval"],
    )
    assert code == 0, stderr
    results, single_process = (
        read_json(root / "machine0" / "all_results.json"),
        read_json(tmp_path / "eval" / "all_results.json"),
    )
    for key in METRICS:
        assert results[key] == single_process[key], key


def test_a_streamed_dataset_trains_and_evaluates_on_two_processes(runs, tmp_path):
    """A parquet dataset (written by scripts/prepare_ade20k.py) streamed by 2 processes (the README's CPU command: two
    processes, where accelerate's own `--cpu` would run one, whatever it is told): each reads its part of the stream,
    and a new epoch restarts it; the evaluation over the two parts equals one process's evaluation of the whole
    split."""
    root, launches, _ = runs
    launches["streamed"].finish()
    assert len(list((root / "parquet" / "data").glob("validation-*.parquet"))) >= 2
    report = read_json(root / "streamed" / "eval_per_class.json")
    assert report["world_size"] == 2 and report["num_images"] == 4
    assert read_json(root / "streamed" / "trainer_state.json")["global_step"] == 3  # 2 steps an epoch

    with one_thread():  # as each launched process (the comparison is of the same arithmetic)
        code, stderr, _ = run_in_process(
            load_script("run_semantic_segmentation"),
            [*COMMON, "--model_name_or_path", root / "streamed", "--dataset_name", root / "parquet",
             "--do_reduce_labels", "--do_eval", "--output_dir", tmp_path / "eval"],
        )  # fmt: skip
    assert code == 0, stderr
    streamed, whole = (
        read_json(root / "streamed" / "all_results.json"),
        read_json(tmp_path / "eval" / "all_results.json"),
    )
    assert read_json(tmp_path / "eval" / "eval_per_class.json")["num_images"] == 4
    for key in METRICS:
        assert streamed[key] == whole[key], key
