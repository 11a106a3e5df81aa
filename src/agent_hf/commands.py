"""The console commands (``[project.scripts]`` in ``pyproject.toml``): ``agent-hf-train``, ``agent-hf-evaluate``,
``agent-hf-convert``, ... run the checkout's ``scripts/*.py`` exactly as ``python scripts/NAME.py`` does.

The scripts stay where the README shows them (``scripts/``); an editable install (``pip install -e .``) puts these
commands on the ``PATH`` of its environment. Imports nothing but the standard library until a command runs.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

__all__ = ["COMMANDS", "script_path"]

#: Command name -> script in ``scripts/`` (``agent-hf-evaluate`` is the training script with ``--do_eval``).
COMMANDS: dict[str, str] = {
    "agent-hf-train": "run_semantic_segmentation",
    "agent-hf-evaluate": "run_semantic_segmentation",
    "agent-hf-convert": "convert_official_checkpoint",
    "agent-hf-prepare-ade20k": "prepare_ade20k",
    "agent-hf-push": "push_to_hub",
    "agent-hf-upgrade": "upgrade_model_folder",
    "agent-hf-demo": "demo",
    "agent-hf-benchmark": "benchmark",
}
_SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "scripts"


def script_path(command: str) -> Path:
    """The script that ``command`` runs; :class:`SystemExit` with one line if this is not a checkout's install."""
    path = _SCRIPTS_DIR / f"{COMMANDS[command]}.py"
    if not path.is_file():
        raise SystemExit(
            f"error: {command} runs {path.name} of the agent-hf repository, which this installation does not "
            "have: install from a checkout with `pip install -e .`"
        )
    return path


def _run(command: str, argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    path = script_path(command)
    sys.argv = [command, *argv]
    runpy.run_path(str(path), run_name="__main__")  # the script ends with sys.exit(its exit code)


def train() -> None:
    _run("agent-hf-train")


def evaluate() -> None:
    """The training script; ``--do_eval`` is added unless ``--do_train`` or ``--do_eval`` is given."""
    argv = sys.argv[1:]
    if not {"--do_train", "--do_eval", "-h", "--help"} & set(argv):
        argv = ["--do_eval", *argv]
    _run("agent-hf-evaluate", argv)


def convert() -> None:
    _run("agent-hf-convert")


def prepare_ade20k() -> None:
    _run("agent-hf-prepare-ade20k")


def push() -> None:
    _run("agent-hf-push")


def upgrade() -> None:
    _run("agent-hf-upgrade")


def demo() -> None:
    _run("agent-hf-demo")


def benchmark() -> None:
    _run("agent-hf-benchmark")
