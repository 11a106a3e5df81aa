"""Running the scripts in tests: as real subprocesses (launchers, kills, exit codes) or in-process (fast)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import helpers
from conftest import REPO_ROOT, TINY_SWIN
from helpers import subprocess_env

SCRIPTS = REPO_ROOT / "scripts"
TRAIN_SCRIPT = SCRIPTS / "run_semantic_segmentation.py"

# A tiny Agent-Swin without stochastic layers (drop path, head dropout): runs on different process counts compute the
# same thing.
TINY_MODEL = [
    "--model_name_or_path", "agent-swin-t-upernet-ade20k",
    "--config_overrides", json.dumps({**TINY_SWIN, "drop_path_rate": 0.0, "classifier_dropout": 0.0}),
]  # fmt: skip
COMMON = [
    "--synthetic_train_samples", "8",
    "--synthetic_validation_samples", "5",
    "--crop_size", "64",
    "--scale", "256", "64",
    "--eval_scale", "256", "64",
    "--per_device_train_batch_size", "2",
    "--learning_rate", "1e-3",
    "--warmup_steps", "0",
    "--logging_steps", "1",
    "--save_strategy", "no",
    "--dataloader_pin_memory", "False",
    "--disable_tqdm", "True",
    "--report_to", "none",
]  # fmt: skip


def script_env(**overrides: str) -> dict[str, str]:
    """The environment of a script subprocess (`helpers.subprocess_env`): this checkout's ``src`` first, one thread
    per process (the test machine has two cores and may be shared)."""
    return subprocess_env(**overrides)


def run(command: list[str], env: dict[str, str] | None = None, timeout: int = 300, check: bool = True):
    """Runs ``command`` (a list) in a subprocess; with ``check`` asserts exit code 0 (showing the output if not)."""
    result = subprocess.run(
        [str(part) for part in command], env=script_env(**(env or {})), capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def run_train_script(args: list[str], launcher: tuple[str, ...] = (sys.executable,), **kwargs):
    return run([*launcher, str(TRAIN_SCRIPT), *args], **kwargs)


def load_script(name: str) -> ModuleType:
    """``scripts/{name}.py`` imported as a module (its ``main(argv)`` runs in-process)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def run_in_process(module: ModuleType, argv: list[str]) -> tuple[int, str, str]:
    """``module.main(argv)`` through the scripts' error handling (``agent_hf.argument_checks.run_script``).

    Returns:
        ``(exit code, stderr, everything printed or logged)``.
    """
    from agent_hf.argument_checks import run_script

    stderr, output = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(output)
    logging.getLogger().addHandler(handler)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(output):
            code = run_script(module.main, [str(arg) for arg in argv])
    finally:
        logging.getLogger().removeHandler(handler)
    return code, stderr.getvalue(), output.getvalue() + stderr.getvalue()


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def losses(run_dir: str | os.PathLike) -> list[float]:
    """The logged training loss of every step, from ``trainer_state.json``."""
    return [
        entry["loss"] for entry in read_json(Path(run_dir) / "trainer_state.json")["log_history"] if "loss" in entry
    ]


def free_port() -> str:
    """`helpers.free_port` as a command-line argument."""
    return str(helpers.free_port())
