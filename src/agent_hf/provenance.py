"""Where a model's weights come from, recorded in its config when a model folder is written.

The record is `config.agent_hf_provenance`, a JSON object saved in ``config.json``. It decides the model card
(`agent_hf.hub.card_for_folder`): only converted official weights with a preset's exact architecture get the paper's
card; a trained or modified model gets a card with its own architecture, size and measured results.

Fields:

* ``version``: 1.
* ``origin``: ``"official-checkpoint"`` (every weight from an official mmsegmentation segmentation checkpoint),
  ``"initialized"`` (not trained by agent-hf: random weights, or a backbone from an official ImageNet checkpoint with
  fresh heads) or ``"trained"`` (trained by agent-hf's training script).
* ``preset``: the preset the model was built from (or whose architecture it has), else ``None``.
* ``architecture_matches_preset``: the config has exactly the preset's architecture
  (`agent_hf.model_zoo.architecture_differences`).
* ``checkpoint``: file name of the official checkpoint that was loaded (no directory), else ``None``;
  ``checkpoint_kind``: ``"segmentation"`` or ``"imagenet"``.
* ``num_parameters``: parameters of the model (auxiliary head included).
* ``weights_sha256``: :func:`weights_digest` of the weights the record describes. A folder whose weights no longer
  have this digest (e.g. fine-tuned afterwards by other code) is treated as of unknown origin.
* ``training`` (origin ``"trained"``): ``base`` (what the run started from), ``dataset``, ``steps`` and ``recipe``
  (optimizer and schedule values); ``init``: the provenance of the starting weights (origin, preset, checkpoint).
* ``eval_results`` (origin ``"trained"``, when evaluated): ``dataset``, ``split`` and the measured ``mean_iou``,
  ``mean_accuracy``, ``overall_accuracy`` in %, added to the saved folder by :func:`add_eval_results`.
* ``agent_hf_version``: the version that wrote the record.

Folders written by agent-hf 0.1.0 have no record: their origin is unknown.

This module imports neither torch nor transformers (the Hub tools read records without them); the functions that
take a model only call its methods.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .model_zoo import IMAGENET_MODELS, MODELS, architecture_differences
from .output_folders import add_files

__all__ = [
    "ORIGINS",
    "PROVENANCE_KEY",
    "add_eval_results",
    "combine_tensor_digests",
    "eval_results_from_metrics",
    "official_checkpoint_provenance",
    "read_provenance",
    "record_provenance",
    "trained_provenance",
    "weights_digest",
]

PROVENANCE_KEY = "agent_hf_provenance"
ORIGINS = ("official-checkpoint", "initialized", "trained")
_VERSION = 1

# metric name of the training script -> key of `eval_results`
_METRICS = {"eval_mIoU": "mean_iou", "eval_mAcc": "mean_accuracy", "eval_aAcc": "overall_accuracy"}


def _config_dict(config: Any) -> dict[str, Any]:
    """A config object (anything with ``to_dict``) or a ``config.json`` dict, as a dict."""
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def _package_version() -> str:
    from . import __version__

    return __version__


def _preset_of(config: Mapping[str, Any]) -> tuple[str | None, bool]:
    """``(preset, architecture matches it)``: the config's `agent_hf_preset`, else the preset (segmentation or
    ImageNet) it is identical to."""
    presets = (*MODELS, *IMAGENET_MODELS)
    preset = config.get("agent_hf_preset")
    if preset in presets:
        return preset, not architecture_differences(config, preset)
    for name in presets:
        if not architecture_differences(config, name):
            return name, True
    return None, False


def combine_tensor_digests(digests: Iterable[str]) -> str:
    """One digest from the SHA-256 of each tensor's bytes: independent of tensor names and order, so that a folder
    and the model it was saved from agree even when saving renames keys."""
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


def weights_digest(model: Any) -> str:
    """Digest of a model's weights (every tensor of its ``state_dict``, as ``model.safetensors`` stores them).

    Args:
        model: a torch module.
    """
    import torch

    digests = []
    for tensor in model.state_dict().values():
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        digests.append(hashlib.sha256(data).hexdigest())
    return combine_tensor_digests(digests)


def _json_value(value: Any) -> Any:
    """`value` as plain JSON data: tuples become lists, other objects their `str` (a record never fails to save)."""
    return json.loads(json.dumps(value, default=str))


def _base_record(model: Any, origin: str) -> dict[str, Any]:
    config = _config_dict(model.config)
    preset, matches = _preset_of(config)
    return {
        "version": _VERSION,
        "origin": origin,
        "preset": preset,
        "architecture_matches_preset": matches,
        "checkpoint": None,
        "checkpoint_kind": None,
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "weights_sha256": weights_digest(model),
        "agent_hf_version": _package_version(),
    }


def official_checkpoint_provenance(model: Any, checkpoint: str | None, kind: str) -> dict[str, Any]:
    """The record of a model just loaded from an official checkpoint.

    Args:
        model: the segmentation model with the checkpoint's weights.
        checkpoint: path of the checkpoint file (only its file name is kept), or ``None`` for an in-memory state dict.
        kind: ``"segmentation"`` (every weight from the checkpoint: origin ``"official-checkpoint"``),
            ``"imagenet"`` (backbone only, fresh heads: origin ``"initialized"``) or ``"classification"`` (an image
            classifier with every weight of an official ImageNet checkpoint: origin ``"official-checkpoint"``).
    """
    if kind not in ("segmentation", "imagenet", "classification"):
        raise ValueError(f"checkpoint kind must be 'segmentation', 'imagenet' or 'classification', got {kind!r}")
    record = _base_record(model, "initialized" if kind == "imagenet" else "official-checkpoint")
    record["checkpoint"] = None if checkpoint is None else str(checkpoint).replace("\\", "/").rsplit("/", 1)[-1]
    record["checkpoint_kind"] = kind
    return record


def eval_results_from_metrics(
    metrics: Mapping[str, float], dataset: str, split: str = "validation"
) -> dict[str, Any] | None:
    """``eval_results`` from the training script's metrics (``eval_mIoU``, ``eval_mAcc``, ``eval_aAcc`` as
    fractions); ``None`` when there is no (finite) mIoU.

    Args:
        metrics: the metrics of ``Trainer.evaluate`` (other keys are ignored).
        dataset: the evaluation dataset (a Hub dataset id, a folder name or ``"synthetic"``).
        split: the evaluated split.
    """
    results: dict[str, Any] = {"dataset": str(dataset), "split": split}
    for name, key in _METRICS.items():
        value = metrics.get(name)
        if value is not None and math.isfinite(value):
            results[key] = round(100 * float(value), 2)
    return results if "mean_iou" in results else None


def trained_provenance(
    model: Any,
    *,
    base: str,
    dataset: str,
    steps: int,
    recipe: Mapping[str, Any] | None = None,
    eval_results: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of a model trained by agent-hf.

    Args:
        model: the trained model; its current record (if any) becomes ``training.init``.
        base: what training started from (a preset name, a folder or a Hub id).
        dataset: the training dataset.
        steps: optimizer steps taken.
        recipe: optimizer and schedule values, e.g. the fields of `agent_hf.training.Recipe`.
        eval_results: measured results, see :func:`eval_results_from_metrics`.
    """
    record = _base_record(model, "trained")
    previous = read_provenance(_config_dict(model.config))
    record["training"] = {
        "base": str(base),
        "dataset": str(dataset),
        "steps": int(steps),
        "recipe": _json_value(dict(recipe)) if recipe else None,
        "init": None
        if previous is None
        else {key: previous.get(key) for key in ("origin", "preset", "checkpoint", "checkpoint_kind")},
    }
    record["eval_results"] = _json_value(dict(eval_results)) if eval_results else None
    return record


def record_provenance(model_or_config: Any, record: Mapping[str, Any]) -> None:
    """Stores `record` in the config (of a model, or a config itself) so that ``save_pretrained`` writes it."""
    config = getattr(model_or_config, "config", model_or_config)
    setattr(config, PROVENANCE_KEY, _json_value(dict(record)))


def read_provenance(config: Mapping[str, Any], source: str = "config.json") -> dict[str, Any] | None:
    """The record of a ``config.json`` dict, ``None`` when it has none (folders of agent-hf 0.1.0).

    Raises:
        ValueError: the record exists but is not one this version understands (names `source`).
    """
    record = config.get(PROVENANCE_KEY)
    if record is None:
        return None
    if not isinstance(record, Mapping) or record.get("origin") not in ORIGINS:
        origin = record.get("origin") if isinstance(record, Mapping) else record
        raise ValueError(
            f"{source}: `{PROVENANCE_KEY}` has origin {origin!r}, expected one of {', '.join(ORIGINS)}; remove the "
            "entry to treat the model as of unknown origin."
        )
    return dict(record)


def add_eval_results(folder: str | os.PathLike, metrics: Mapping[str, float], dataset: str) -> bool:
    """Adds measured results to the record in ``folder/config.json`` of a model trained by agent-hf, so that its
    model card reports them. Only the record's ``eval_results`` changes (the file is replaced atomically).

    Args:
        folder: the model folder the training run wrote.
        metrics: the metrics of ``Trainer.evaluate`` (see :func:`eval_results_from_metrics`).
        dataset: the evaluation dataset.

    Returns:
        Whether the results were added: not when the folder's model was not trained by agent-hf or has no mIoU.
    """
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    record = config.get(PROVENANCE_KEY)
    results = eval_results_from_metrics(metrics, dataset)
    if not isinstance(record, Mapping) or record.get("origin") != "trained" or results is None:
        return False
    config[PROVENANCE_KEY] = {**record, "eval_results": results}
    with add_files(folder) as staging:  # the format of `PretrainedConfig.save_pretrained`
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return True
