"""The model a training run starts from, and the image processor saved with it.

* :func:`load_model_to_train`: a preset (random weights, or an official ImageNet / mmseg checkpoint in its backbone)
  or a pretrained folder / Hub model, with the data's classes;
* :func:`load_image_processor`: the processor of the model (the agent_hf one for a preset), with the run's
  evaluation settings, so that the saved folder serves what was evaluated.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from transformers import AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation

from ..argument_checks import ScriptError
from ..official import load_official_checkpoint
from ..presets import PRESETS, preset_config
from ..saving import make_image_processor

__all__ = ["config_overrides", "load_image_processor", "load_model_to_train"]

logger = logging.getLogger(__name__)


def config_overrides(text: str | None) -> dict[str, Any]:
    """The config fields of ``--config_overrides`` (a JSON object)."""
    if not text:
        return {}
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as error:
        raise ScriptError(f"--config_overrides is not valid JSON: {error}") from error
    if not isinstance(overrides, dict):
        raise ScriptError("--config_overrides must be a JSON object of config fields")
    return overrides


def load_model_to_train(
    name: str,
    id2label: dict[int, str] | None,
    *,
    config_name: str | None = None,
    overrides: str | None = None,
    backbone_checkpoint: str | None = None,
    ignore_mismatched_sizes: bool = False,
    do_train: bool = True,
    **hub_kwargs: Any,
):
    """The model to train: a preset (random init or ``backbone_checkpoint``) or a pretrained folder / Hub model.

    Args:
        name: a preset, a local model folder or a Hub model id.
        id2label: the data's classes (``None``: the model's own).
        config_name: a config to use instead of the model's.
        overrides: a JSON object of config fields to change (``--config_overrides``).
        backbone_checkpoint: an official checkpoint (or converted ImageNet classifier folder) for a preset's backbone.
        ignore_mismatched_sizes: allow a model whose number of classes differs from the data's (new classifiers).
        do_train: whether the model will be trained (else a warning says what new classifiers measure).
        hub_kwargs: ``cache_dir``, ``revision``, ``token``, ``trust_remote_code`` for ``from_pretrained``.

    Raises:
        ScriptError: ``backbone_checkpoint`` without a preset, or classes that do not fit the data.
    """
    fields = config_overrides(overrides)
    labels = {} if id2label is None else {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    if name in PRESETS:
        config = preset_config(name, **labels, **fields)
        if backbone_checkpoint:
            return load_official_checkpoint(backbone_checkpoint, config).train()
        return AutoModelForSemanticSegmentation.from_config(config)
    if backbone_checkpoint:
        raise ScriptError("--backbone_checkpoint needs a preset as --model_name_or_path")
    config = AutoConfig.from_pretrained(config_name or name, **hub_kwargs, **fields)
    relabel = id2label is not None and len(id2label) != config.num_labels
    if relabel:
        mismatch = f"{name} has {config.num_labels} classes, the dataset {len(id2label)}"
        if not ignore_mismatched_sizes:
            raise ScriptError(
                f"{mismatch}: its classifiers do not fit the data (pass --ignore_mismatched_sizes to train new ones)"
            )
        logger.warning(
            f"{mismatch}: the classifiers start from random weights (--ignore_mismatched_sizes)"
            + ("" if do_train else "; evaluated without training, they measure nothing about the model")
        )
    for key, value in labels.items():
        setattr(config, key, value)
    return AutoModelForSemanticSegmentation.from_pretrained(
        name, config=config, ignore_mismatched_sizes=relabel, **hub_kwargs
    )


def load_image_processor(name: str, do_reduce_labels: bool, inference: dict[str, Any], **hub_kwargs: Any):
    """The image processor saved with the model: the agent_hf one for a preset, else the model's own. An agent_hf
    processor gets ``inference``, the run's evaluation settings (``scale``, ``mode``, ``ratios``, ``flip``,
    ``crop_size``, ``stride``; see :func:`~agent_hf.saving.make_image_processor`), keeping its mean and std.

    Args:
        name: a preset, or the folder / Hub id of the model or of its processor.
        do_reduce_labels: whether the model predicts reduced labels (ADE20K's convention).
        inference: the evaluation settings.
        hub_kwargs: ``cache_dir``, ``revision``, ``token``, ``trust_remote_code`` for ``from_pretrained``.
    """
    saved = None
    if name not in PRESETS:
        saved = AutoImageProcessor.from_pretrained(name, do_reduce_labels=do_reduce_labels, **hub_kwargs)
        if type(saved).__name__ != "AgentImageProcessor":  # another model's processor, or remote code's class
            return saved
    return make_image_processor(do_reduce_labels, source=saved, **inference)
