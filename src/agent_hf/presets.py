"""The seven published Agent Attention segmentation models (ADE20K, 150 classes) and the ten ImageNet-1k classifiers
they start from, by name.

Each preset is the official config file's model, expressed as an agent_hf config. The facts (architecture,
results, recipe) live in `agent_hf.registry`; this module turns them into config objects. Importing it registers
the models with transformers' Auto classes.
"""

from __future__ import annotations

import difflib
import os

from . import register_auto_classes
from .configuration_agent_pvt import AgentPvtConfig
from .configuration_agent_swin import AgentSwinConfig
from .data.ade20k import ade20k_id2label
from .data.imagenet import imagenet_id2label
from .registry import IMAGENET_MODELS, MODELS, get_imagenet_model_spec, get_model_spec

# Whoever builds preset configs builds models from them through the Auto classes.
register_auto_classes()

PRESETS: tuple[str, ...] = tuple(MODELS)
#: The ImageNet-1k classification presets (`AutoModelForImageClassification`), e.g. ``"agent-swin-t-in1k-224"``.
IMAGENET_PRESETS: tuple[str, ...] = tuple(IMAGENET_MODELS)

_CONFIG_CLASSES = {"agent_swin": AgentSwinConfig, "agent_pvt": AgentPvtConfig}


def preset_config(name: str, **overrides) -> AgentSwinConfig | AgentPvtConfig:
    """Config of a published model, e.g. `preset_config("agent-swin-t-upernet-ade20k")`, or of an ImageNet classifier,
    e.g. `preset_config("agent-swin-t-in1k-224")` (see `imagenet_preset_config`).

    `overrides` replace any field (e.g. `id2label=...` for another dataset, `drop_path_rate=0.0`).
    The preset's name is kept in the config as `agent_hf_preset`. The backbone returns all four stage maps
    (`out_features`), as the official one; pass `out_features=[...]` to select others.
    """
    if name in IMAGENET_MODELS:
        return imagenet_preset_config(name, **overrides)
    try:
        spec = get_model_spec(name)
    except ValueError:
        raise ValueError(unknown_preset_message(name)) from None
    id2label = ade20k_id2label()
    kwargs = dict(
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        agent_hf_preset=name,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return _CONFIG_CLASSES[spec.model_type](**{**kwargs, **spec.config_kwargs, **overrides})


def unknown_preset_message(name: str) -> str:
    """``Unknown preset 'X' (did you mean 'Y'?); the presets are: ...`` (with the closest preset name, if any)."""
    close = difflib.get_close_matches(name, PRESETS + IMAGENET_PRESETS, n=1, cutoff=0.6)
    suggestion = f" (did you mean {close[0]!r}?)" if close else ""
    return f"Unknown preset {name!r}{suggestion}; the presets are: {', '.join(PRESETS + IMAGENET_PRESETS)}"


def mistyped_preset(name: str) -> str | None:
    """The error message for a model name that looks like a mistyped preset (not a preset, not an existing path, no
    ``namespace/`` of a Hub id, and close to a preset name or starting with ``agent-``), else ``None``: such a name is
    answered at once instead of after a failed Hub request."""
    if name in PRESETS or name in IMAGENET_PRESETS or os.path.exists(name) or "/" in name:
        return None
    if name.startswith("agent-") or difflib.get_close_matches(name, PRESETS + IMAGENET_PRESETS, n=1, cutoff=0.6):
        return unknown_preset_message(name)
    return None


def imagenet_preset_config(name: str, **overrides) -> AgentSwinConfig | AgentPvtConfig:
    """Config of a published ImageNet-1k classifier, e.g. `imagenet_preset_config("agent-swin-t-in1k-224")` (also
    reached through `preset_config`): the official classification model's architecture at its resolution
    (`pretrain_image_size`), the 1000 ImageNet class names, the preset's name in `agent_hf_preset`."""
    spec = get_imagenet_model_spec(name)
    id2label = imagenet_id2label()
    kwargs = dict(id2label=id2label, label2id={v: k for k, v in id2label.items()}, agent_hf_preset=name)
    return _CONFIG_CLASSES[spec.model_type](**{**kwargs, **spec.config_kwargs, **overrides})


__all__ = [
    "IMAGENET_PRESETS",
    "PRESETS",
    "imagenet_preset_config",
    "mistyped_preset",
    "preset_config",
    "unknown_preset_message",
]
