"""Official Agent Attention checkpoints -> agent_hf models.

`load_official_checkpoint(checkpoint, config)` loads an mmseg segmentation checkpoint (`{'state_dict': ...}`, keys
`backbone.`/`decode_head.`/`auxiliary_head.`/`neck.`) or an ImageNet classification checkpoint of the official code
(`{'model': ...}`, the paper's starting point) into a segmentation model; `load_official_classifier(checkpoint,
config)` loads the latter into the image classifier. The key renaming comes from each family's model classes
(`_checkpoint_key_mapping`) and the facts of `agent_hf.families`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch

from ..families import FAMILIES, get_family
from ..models.checkpoint_keys import rename_key
from ..provenance import official_checkpoint_provenance, record_provenance
from .configs import config_from_official

# The package's logger (`agent_hf.official`), the name users configure.
logger = logging.getLogger(__package__)

__all__ = [
    "load_official_checkpoint",
    "load_official_classifier",
    "official_classifier_state_dict",
    "official_to_hf_state_dict",
]


def _key_mapping(config, suffix: str) -> dict[str, str]:
    """The official per-stage names (`norm{i}`, `block{i}`, `patch_embed{i}`, `pos_embed{i}`) -> ours (`norms.{i}`,
    `stages.{i-1}.blocks`, ...), of the family's model class `suffix`."""
    return get_family(config.model_type).model_class(suffix)._checkpoint_key_mapping()


def _read_checkpoint(checkpoint) -> tuple[dict, str]:
    """Returns (state dict, where it came from) from a path (.pth/.pt/.bin/.safetensors) or a mapping.

    Pickled files are read with ``weights_only=True``; one that also holds other objects (the official classification
    code stores a yacs ``CfgNode`` under ``config``) is read again by a restricted unpickler that builds only tensors
    and plain containers and leaves inert placeholders for the rest, running no code of the file.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        path = os.fspath(checkpoint)
        if os.path.isdir(path):  # a model folder (e.g. a converted ImageNet classifier): its weights
            weights = os.path.join(path, "model.safetensors")
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"load_official_checkpoint: the folder {path} has no model.safetensors")
            path = weights
        if not os.path.isfile(path):
            raise FileNotFoundError(f"load_official_checkpoint: no checkpoint file at {path}")
        try:
            if path.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(path), path
            from ..restricted_pickle import load_checkpoint_file

            return load_checkpoint_file(path), path
        except Exception as error:  # unreadable / corrupt
            message = " ".join(str(error).split()) or type(error).__name__
            if not message.startswith("could not read"):
                message = f"could not read {path}: {type(error).__name__}: {message}"
            raise ValueError(f"load_official_checkpoint: {message}") from error
    if isinstance(checkpoint, Mapping):
        return dict(checkpoint), "the given state dict"
    raise TypeError(f"load_official_checkpoint: expected a path or a state dict, got {type(checkpoint).__name__}")


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a single tensor of shape {tuple(value.shape)}"
    return (
        f"{type(value).__name__} {value!r}"[:80]
        if not isinstance(value, (list, tuple))
        else f"a {type(value).__name__}"
    )


def check_state_dict(raw, source: str) -> None:
    """Refuses, in one line naming ``source``, what is not an official checkpoint: a mapping (possibly under
    ``state_dict`` or ``model``) of string names to tensors."""
    if not isinstance(raw, Mapping):
        raise ValueError(
            f"load_official_checkpoint: {source} holds {_describe(raw)}, not a state dict (names -> tensors)"
        )
    for mapping in (raw, next((raw[k] for k in ("state_dict", "model") if isinstance(raw.get(k), Mapping)), raw)):
        odd = [key for key in mapping if not isinstance(key, str)]
        if odd:
            raise ValueError(
                f"load_official_checkpoint: {source} has keys that are not parameter names (e.g. {odd[0]!r})"
            )
    inner = mapping
    if not any(isinstance(value, torch.Tensor) for value in inner.values()):
        raise ValueError(f"load_official_checkpoint: {source} holds no tensors")


def _is_imagenet_key(key: str) -> bool:
    return not key.startswith(("backbone.", "decode_head.", "auxiliary_head.", "neck."))


def official_to_hf_state_dict(state_dict: Mapping, config) -> tuple[dict, str]:
    """Renames official keys to ours (backbone prefix, then the per-stage module names).
    Returns (renamed state dict, "segmentation" | "imagenet")."""
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    elif "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    prefix = get_family(config.model_type).backbone_prefix
    keys = [k for k in state_dict if isinstance(state_dict[k], torch.Tensor)]
    kind = "imagenet" if all(_is_imagenet_key(k) for k in keys) else "segmentation"
    renamed = {}
    mapping = _key_mapping(config, "ForSemanticSegmentation")
    for key in keys:
        tensor = state_dict[key]
        if _dropped_key(key, kind, config):
            continue
        if kind == "imagenet":
            # An agent_hf classification folder keeps the backbone under `agent_swin.` / `agent_pvt.`.
            key = key.removeprefix(f"{config.model_type}.")
            renamed[rename_key(prefix + key, mapping)] = tensor
        elif key.startswith("backbone."):
            renamed[rename_key(prefix + key[len("backbone.") :], mapping)] = tensor
        else:
            renamed[key] = tensor
    return renamed, kind


def _dropped_key(key: str, kind: str, config) -> bool:
    """Whether an official key is left out: a derived buffer (recomputed by the model) or, in an ImageNet checkpoint,
    the classification head and what the classifier keeps beside it (Agent-Swin's final norm), which are not part of
    the segmentation backbone."""
    if key.endswith("relative_position_index"):
        return True
    return kind == "imagenet" and (
        key.startswith(("head.", "classifier.", *get_family(config.model_type).classifier_top_level_keys))
    )


def _checkpoint_family(state_dict: Mapping) -> str | None:
    """Which backbone family a (renamed) state dict holds, from its module names."""
    return next(
        (
            family.model_type
            for family in FAMILIES.values()
            if any(family.checkpoint_signature in key for key in state_dict)
        ),
        None,
    )


def _check_fit(state_dict: Mapping, expected: Mapping, config, what: str, allowed_missing=None) -> None:
    """Raise a `ValueError` listing the missing (except `allowed_missing(key)`), unexpected and mis-shaped keys of a
    renamed checkpoint `state_dict` against a model's `expected` state dict; `what` names the checkpoint."""
    missing = [k for k in expected if k not in state_dict and not (allowed_missing and allowed_missing(k))]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state_dict
        if k in expected and state_dict[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or mis_shaped):
        return
    arch = f"{type(config).__name__}(attn_type={config.attn_type!r}, depths={config.depths})"
    lines = [f"load_official_checkpoint: {what} does not fit {arch}:"]
    family = _checkpoint_family(state_dict)
    if family and family != config.model_type:
        lines.append(
            f"  it holds an {FAMILIES[family].name} backbone, but the config is for "
            f"{get_family(config.model_type).name}."
        )
    for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped)):
        if items:
            shown = ", ".join(items[:20]) + (f", ... ({len(items) - 20} more)" if len(items) > 20 else "")
            lines.append(f"  {len(items)} {title} keys: {shown}")
    lines.append("  Check that the config (preset / official model dict) is the one this checkpoint was trained with.")
    raise ValueError("\n".join(lines))


def load_official_checkpoint(checkpoint, config=None):
    """The segmentation model of `config` with the weights of an official checkpoint.

    Args:
        checkpoint: path to a `.pth` (read with `torch.load(weights_only=True)`) or `.safetensors` file, or a
            state dict: an mmseg segmentation checkpoint (`{'state_dict': ...}` or its bare state dict) or an
            official ImageNet checkpoint (`{'model': ...}`), whose classification head is dropped and whose
            segmentation heads keep their fresh initialization.
        config: the config of a family (`AgentSwinConfig`, `AgentPvtConfig`), an official mmseg `model` dict, or a
            preset name.

    Raises `ValueError` listing missing, unexpected and mis-shaped keys when the checkpoint does not fit.
    The model's config records where its weights come from (`config.agent_hf_provenance`, see
    `agent_hf.provenance`): origin "official-checkpoint" for a segmentation checkpoint, "initialized" for an
    ImageNet one.
    """
    if config is None:
        raise ValueError(
            "load_official_checkpoint: pass the config (an agent_hf config, official model dict or preset name)"
        )
    if isinstance(config, str):
        from ..presets import preset_config

        config = preset_config(config)
    elif isinstance(config, Mapping):
        config = config_from_official(config)
    raw, source = _read_checkpoint(checkpoint)
    check_state_dict(raw, source)
    state_dict, kind = official_to_hf_state_dict(raw, config)
    family = get_family(config.model_type)
    model = family.model_class("ForSemanticSegmentation")(config)
    expected = model.state_dict()
    allowed_missing = None
    if kind == "imagenet":
        prefix, new_modules = family.backbone_prefix, family.imagenet_missing_backbone_keys
        # Heads are trained from scratch; modules the classifier has not (Swin's per-stage output norms) are new
        # (LayerNorm 1/0 init).
        allowed_missing = lambda k: not k.startswith(prefix) or k[len(prefix) :].startswith(new_modules)  # noqa: E731
    _check_fit(state_dict, expected, config, f"{source} ({kind} checkpoint)", allowed_missing)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state_dict.items()}, strict=False)
    model.eval()
    logger.info(_load_summary(source, kind, raw, config, state_dict, expected))
    # Where the weights come from, saved in config.json: it decides the model card (agent_hf.provenance).
    checkpoint_path = os.fspath(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else None
    record_provenance(model, official_checkpoint_provenance(model, checkpoint_path, kind))
    return model


def _load_summary(source, kind: str, raw: Mapping, config, loaded: Mapping, expected: Mapping) -> str:
    """One line: what a checkpoint load kept, dropped and left to its fresh initialization."""
    inner = next((raw[name] for name in ("state_dict", "model") if isinstance(raw.get(name), Mapping)), raw)
    keys = [key for key, value in inner.items() if isinstance(value, torch.Tensor)]
    dropped = [key for key in keys if _dropped_key(key, kind, config)]
    dropped_groups = sorted(
        {key.rsplit(".", 1)[-1] if key.endswith("_index") else key.split(".")[0] for key in dropped}
    )
    fresh = [key for key in expected if key not in loaded and not key.endswith("relative_position_index")]
    fresh_groups = sorted({key.split(".")[0] for key in fresh})
    return (
        f"Loaded {len(loaded)} of the {len(keys)} tensors of {source} ({kind} checkpoint); dropped {len(dropped)}"
        + (f" ({', '.join(dropped_groups)})" if dropped else "")
        + f"; {len(fresh)} of the model's start from their initialization"
        + (f" ({', '.join(fresh_groups)})" if fresh else "")
    )


# ----------------------------------------------------------------------------------------------------------------
# ImageNet classification (`agent_transformer`: models/agent_{swin,pvt}.py)
# ----------------------------------------------------------------------------------------------------------------


def official_classifier_state_dict(state_dict: Mapping, config) -> dict:
    """An official classification state dict (`{'model': ...}` or bare) renamed to the keys of the family's
    `...ForImageClassification`: `head.` -> `classifier.`, the family's `classifier_top_level_keys` (Swin's final
    `norm.`) kept, the rest under the base model with the current module names."""
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    top_level = get_family(config.model_type).classifier_top_level_keys
    prefix, mapping = f"{config.model_type}.", _key_mapping(config, "ForImageClassification")
    renamed = {}
    for key, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor) or key.endswith("relative_position_index"):
            continue  # a derived buffer, recomputed by the model
        if key.startswith("head."):
            renamed["classifier." + key[len("head.") :]] = tensor
        elif key.startswith(top_level):
            renamed[key] = tensor
        else:
            renamed[rename_key(prefix + key, mapping)] = tensor
    return renamed


def load_official_classifier(checkpoint, config):
    """The image classifier of `config` with the weights of an official ImageNet checkpoint.

    Args:
        checkpoint: path to the official `.pth` (`{'model': state_dict, ...}`, read without running pickled code) or
            a state dict.
        config: the config of a family (`AgentSwinConfig`, `AgentPvtConfig`; e.g. from
            `official_classification_config`) or an ImageNet preset name (`agent_hf.IMAGENET_PRESETS`).

    Raises `ValueError` listing missing, unexpected and mis-shaped keys when the checkpoint does not fit.
    """
    if isinstance(config, str):
        from ..presets import imagenet_preset_config

        config = imagenet_preset_config(config)
    raw, source = _read_checkpoint(checkpoint)
    state_dict = official_classifier_state_dict(raw, config)
    model = get_family(config.model_type).model_class("ForImageClassification")(config)
    expected = model.state_dict()
    _check_fit(state_dict, expected, config, f"{source} (ImageNet classification checkpoint)")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state_dict.items()})
    model.eval()
    checkpoint_path = os.fspath(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else None
    record_provenance(model, official_checkpoint_provenance(model, checkpoint_path, "classification"))
    return model
