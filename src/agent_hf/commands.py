"""The console commands (``[project.scripts]`` in ``pyproject.toml``): ``agent-hf-train``, ``agent-hf-evaluate``,
``agent-hf-convert``, ... run ``scripts/*.py`` exactly as ``python scripts/NAME.py`` does.

The scripts stay where the README shows them (``scripts/``); a wheel ships them as ``agent_hf/scripts/`` (see
``setup.py``), an editable install (``pip install -e .``) runs the checkout's. Imports nothing but the standard library
until a command runs.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

__all__ = ["COMMANDS", "is_script_run", "script_path"]

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
# A checkout's scripts/ (editable install), else the copy a wheel installs next to this module.
_SCRIPTS_DIRS = (Path(__file__).resolve().parents[2] / "scripts", Path(__file__).resolve().parent / "scripts")


def script_path(command: str) -> Path:
    """The script that ``command`` runs; :class:`SystemExit` with one line if this installation lacks it."""
    name = f"{COMMANDS[command]}.py"
    for folder in _SCRIPTS_DIRS:
        if (folder / name).is_file():
            return folder / name
    raise SystemExit(
        f"error: {command} runs {name}, which this installation of agent-hf does not have: reinstall it "
        "(`pip install agent-hf` from its wheel, or `pip install -e .` in a checkout)"
    )


def is_script_run(program: str) -> bool:
    """Whether ``program`` (``sys.argv[0]``) is one of these commands or the script it runs."""
    path = Path(program)
    if path.name.startswith("agent-hf-"):
        return True
    return path.stem in COMMANDS.values() and path.suffix == ".py" and path.resolve().parent in _SCRIPTS_DIRS


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
