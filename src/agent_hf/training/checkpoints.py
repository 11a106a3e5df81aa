"""Which ``checkpoint-N`` folders of a training run are complete.

The ``Trainer`` writes a checkpoint file by file (weights, optimizer, scheduler, RNG states, ``trainer_state.json``
last), so a run killed while saving leaves a half-written ``checkpoint-N``. :func:`scan_checkpoints` tells the
complete ones from the partial ones without loading them: ``trainer_state.json`` must parse and name step ``N``, the
weights must be there with an intact safetensors header covering the file, and every ``.pt``/``.pth`` file (torch's
zip format) must end with its zip directory.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CheckpointScan", "resume_problem", "scan_checkpoints"]

# What the Trainer's own rng_state.pth legitimately names besides tensors (numpy's random state), as torch.load
# (weights_only) with transformers' safe_globals accepts it.
_NUMPY_RNG_NAMES = re.compile(r"numpy\.(_?core\.multiarray\._reconstruct|ndarray|dtype|dtypes\.\w+DType)")

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass
class CheckpointScan:
    """The ``checkpoint-N`` folders of a run folder, by step.

    Attributes:
        complete: complete checkpoints, oldest first.
        partial: ``(folder, what is wrong)`` for the incomplete ones, oldest first.
    """

    complete: list[Path] = field(default_factory=list)
    partial: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def last(self) -> Path | None:
        """The newest complete checkpoint, if any."""
        return self.complete[-1] if self.complete else None

    def skipped_after(self, checkpoint: Path | None) -> list[tuple[Path, str]]:
        """The partial checkpoints newer than ``checkpoint`` (all of them for ``None``)."""
        step = _step(checkpoint) if checkpoint is not None else -1
        return [(folder, problem) for folder, problem in self.partial if _step(folder) > step]


def _step(folder: Path) -> int:
    return int(_CHECKPOINT.match(folder.name).group(1))


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    try:
        with open(path, "rb") as file:
            (header_size,) = struct.unpack("<Q", file.read(8))
            if 8 + header_size > size:
                return f"{path.name} is truncated"
            header = json.loads(file.read(header_size))
    except (struct.error, ValueError, UnicodeDecodeError):
        return f"{path.name} has no valid safetensors header"
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    return f"{path.name} is truncated" if 8 + header_size + end > size else None


def _weights_problem(folder: Path) -> str | None:
    present = [name for name in _WEIGHTS if (folder / name).is_file()]
    if not present:
        return "no model weights"
    name = present[0]
    if name.endswith(".index.json"):
        try:
            shards = set(json.loads((folder / name).read_text())["weight_map"].values())
        except (ValueError, KeyError):
            return f"{name} is not a valid index"
        missing = sorted(shard for shard in shards if not (folder / shard).is_file())
        if missing:
            return f"weight shard(s) {', '.join(missing)} missing"
        files = [folder / shard for shard in sorted(shards)]
    else:
        files = [folder / name]
    for file in files:
        problem = (
            _safetensors_problem(file)
            if file.suffix == ".safetensors"
            else (None if zipfile.is_zipfile(file) else f"{file.name} is truncated")
        )
        if problem:
            return problem
    return None


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """What makes ``folder`` an incomplete checkpoint, or ``None`` when it is complete."""
    folder = Path(folder)
    state_file = folder / "trainer_state.json"
    if not state_file.is_file():
        return "no trainer_state.json (it is written last)"
    try:
        state = json.loads(state_file.read_text())
    except ValueError:
        return "trainer_state.json is truncated"
    match = _CHECKPOINT.match(folder.name)
    if match and state.get("global_step") != int(match.group(1)):
        return f"trainer_state.json is at step {state.get('global_step')}"
    problem = _weights_problem(folder)
    if problem:
        return problem
    for file in sorted(folder.glob("*.pt*")):
        if file.suffix in (".pt", ".pth") and not zipfile.is_zipfile(file):
            return f"{file.name} is truncated"
    return None


def scan_checkpoints(run_dir: str | os.PathLike) -> CheckpointScan:
    """The complete and the partial ``checkpoint-N`` folders of ``run_dir`` (empty if it does not exist)."""
    scan = CheckpointScan()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return scan
    folders = sorted((p for p in run_dir.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)), key=_step)
    for folder in folders:
        problem = checkpoint_problem(folder)
        if problem is None:
            scan.complete.append(folder)
        else:
            scan.partial.append((folder, problem))
    return scan


def _architecture_problem(folder: Path, model) -> str | None:
    config_file = folder / "config.json"
    if config_file.is_file():
        try:
            saved = json.loads(config_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            return "its config.json is not valid JSON"
        if not isinstance(saved, dict):
            return "its config.json is not a JSON object"
        model_type = getattr(model.config, "model_type", None)
        if saved.get("model_type") != model_type:
            return f"it holds a {saved.get('model_type')!r} model, and this run trains a {model_type!r} model"
    weights = folder / "model.safetensors"
    if not weights.is_file():
        return None
    from safetensors import safe_open

    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    with safe_open(weights, framework="pt") as file:
        saved_shapes = {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}  # noqa: SIM118
    differ = [name for name, shape in saved_shapes.items() if name in expected and expected[name] != shape]
    missing = [name for name in expected if name not in saved_shapes]
    if differ:
        name = differ[0]
        return (
            f"{len(differ)} of its weights differ in shape from this run's model (e.g. {name}: checkpoint "
            f"{saved_shapes[name]} vs model {expected[name]}); it was trained with another configuration"
        )
    if missing and len(missing) == len(expected):
        return "none of its weights belong to this run's model; it was trained with another configuration"
    return None


def resume_problem(folder: str | os.PathLike, model) -> str | None:
    """Why the checkpoint ``folder`` cannot be resumed into ``model``, or ``None``; checked before training.

    A checkpoint of another architecture (``config.json``'s ``model_type``, the weights' shapes) would end in a
    size-mismatch traceback; a ``.pt``/``.pth`` file that names anything but tensors, plain values and numpy's random
    state (a crafted ``rng_state.pth``) in an ``UnpicklingError`` traceback, or worse. Each file is read by
    :func:`agent_hf.restricted_pickle.load_tensors` (no code of it runs, nothing allocated by argument, zip bombs
    refused), its tensors mapped rather than read.
    """
    from ..restricted_pickle import CheckpointReadError, load_tensors

    folder = Path(folder)
    problem = _architecture_problem(folder, model)
    if problem:
        return problem
    for file in sorted(folder.glob("*.pt*")):
        if file.suffix not in (".pt", ".pth"):
            continue
        try:
            _, replaced = load_tensors(file, mmap=zipfile.is_zipfile(file))
        except CheckpointReadError as error:
            return str(error)
        foreign = [name for name in replaced if not _NUMPY_RNG_NAMES.fullmatch(name)]
        if foreign:
            return f"{file.name} names {', '.join(foreign)}, which a checkpoint never holds; it was not loaded"
    return None
