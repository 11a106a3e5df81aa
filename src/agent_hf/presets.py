"""The seven published Agent Attention segmentation models (ADE20K, 150 classes) and the ten ImageNet-1k classifiers
they start from, by name.

Each preset is the official config file's model, expressed as an agent_hf config. The facts (architecture,
results, recipe) live in `agent_hf.model_zoo`; this module turns them into config objects. Importing it registers
the models with transformers' Auto classes.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

from . import register_auto_classes
from .argument_checks import mistyped_preset, unknown_preset_message
from .data.ade20k import ade20k_id2label
from .data.imagenet import imagenet_id2label
from .families import get_family
from .model_zoo import IMAGENET_MODELS, MODELS, get_imagenet_model_spec, get_model_spec

# Whoever builds preset configs builds models from them through the Auto classes.
register_auto_classes()

PRESETS: tuple[str, ...] = tuple(MODELS)
#: The ImageNet-1k classification presets (`AutoModelForImageClassification`), e.g. ``"agent-swin-t-in1k-224"``.
IMAGENET_PRESETS: tuple[str, ...] = tuple(IMAGENET_MODELS)


def preset_config(name: str, **overrides) -> PreTrainedConfig:
    """Config of a published model (of its family's config class, e.g. `AgentSwinConfig`), e.g.
    `preset_config("agent-swin-t-upernet-ade20k")`, or of an ImageNet classifier,
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
    return get_family(spec.model_type).config_class()(**{**kwargs, **spec.config_kwargs, **overrides})


def imagenet_preset_config(name: str, **overrides) -> PreTrainedConfig:
    """Config of a published ImageNet-1k classifier, e.g. `imagenet_preset_config("agent-swin-t-in1k-224")` (also
    reached through `preset_config`): the official classification model's architecture at its resolution
    (`pretrain_image_size`), the 1000 ImageNet class names, the preset's name in `agent_hf_preset`."""
    spec = get_imagenet_model_spec(name)
    id2label = imagenet_id2label()
    kwargs = dict(id2label=id2label, label2id={v: k for k, v in id2label.items()}, agent_hf_preset=name)
    return get_family(spec.model_type).config_class()(**{**kwargs, **spec.config_kwargs, **overrides})


__all__ = [
    "IMAGENET_PRESETS",
    "PRESETS",
    "imagenet_preset_config",
    "mistyped_preset",
    "preset_config",
    "unknown_preset_message",
]
