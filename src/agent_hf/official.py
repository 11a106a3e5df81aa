"""Official Agent Attention (mmsegmentation 0.x) configs and checkpoints -> agent_hf.

`config_from_official(model_dict)` reads the `model` dict of an official config file (after its
`_base_` files are merged); `load_official_checkpoint(checkpoint, config)` loads an mmseg segmentation
checkpoint (`{'state_dict': ...}`, keys `backbone.`/`decode_head.`/`auxiliary_head.`/`neck.`) or an
ImageNet classification checkpoint of the official code (`{'model': ...}`, the paper's starting point).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch

from .models.checkpoint_keys import rename_key
from .models.configuration_agent_pvt import AgentPvtConfig
from .models.configuration_agent_swin import AgentSwinConfig
from .models.modeling_agent_pvt import AgentPvtForImageClassification, AgentPvtForSemanticSegmentation
from .models.modeling_agent_swin import AgentSwinForImageClassification, AgentSwinForSemanticSegmentation
from .provenance import official_checkpoint_provenance, record_provenance

logger = logging.getLogger(__name__)

_BACKBONE_PREFIX = {"agent_swin": "backbone.agent_swin.", "agent_pvt": "backbone.agent_pvt."}
# The official per-stage names (`norm{i}`, `block{i}`, `patch_embed{i}`, `pos_embed{i}`) -> ours (`norms.{i}`,
# `stages.{i-1}.blocks`, ...).
_KEY_MAPPING = {
    "agent_swin": AgentSwinForSemanticSegmentation._checkpoint_key_mapping(),
    "agent_pvt": AgentPvtForSemanticSegmentation._checkpoint_key_mapping(),
}


def _all_stages(depths) -> list[str]:
    return [f"stage{i}" for i in range(1, len(depths) + 1)]


def _head_kwargs(model: Mapping) -> dict:
    head = model.get("decode_head") or {}
    kwargs = {}
    if "num_classes" in head:
        kwargs["num_labels"] = int(head["num_classes"])
    if "channels" in head:
        kwargs["decoder_hidden_size"] = int(head["channels"])
    if "dropout_ratio" in head:
        kwargs["classifier_dropout"] = float(head["dropout_ratio"])
    if "align_corners" in head:
        kwargs["align_corners"] = bool(head["align_corners"])
    if "ignore_index" in head:
        kwargs["loss_ignore_index"] = int(head["ignore_index"])
    return kwargs


def config_from_official(model: Mapping, **overrides) -> AgentSwinConfig | AgentPvtConfig:
    """Config equivalent to an official mmseg `model` dict (e.g. `cfg.model` of
    `upernet_agent_swin_t_9-12-14-7.py`). Accepts the dict itself or `{'model': dict}`.
    `overrides` (e.g. `id2label`) are applied last.

    Raises:
        ValueError: in one line, for anything that is not such a dict (a list, `depths: 5`, a string for a number).
    """
    if not isinstance(model, Mapping):
        raise ValueError(
            f"config_from_official: expected an mmseg model dict (a JSON object), got {type(model).__name__}"
        )
    try:
        return _config_from_official(model, **overrides)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as error:
        message = " ".join(str(error).split())
        if message.startswith("config_from_official:"):
            raise ValueError(message) from error
        raise ValueError(
            f"config_from_official: a field of the model dict has the wrong type or value ({type(error).__name__}: "
            f"{message})"
        ) from error


def _config_from_official(model: Mapping, **overrides) -> AgentSwinConfig | AgentPvtConfig:
    if "model" in model and "backbone" not in model:
        model = model["model"]
    backbone = model.get("backbone")
    if not isinstance(backbone, Mapping) or "type" not in backbone:
        raise ValueError("config_from_official: expected an mmseg model dict with a 'backbone' dict that has a 'type'")
    for part in ("decode_head", "neck", "auxiliary_head"):
        if model.get(part) is not None and not isinstance(model[part], Mapping):
            raise ValueError(f"config_from_official: '{part}' must be a dict, got {type(model[part]).__name__}")
    kind = backbone["type"]
    kwargs = _head_kwargs(model)
    if kind == "AgentSwinTransformer":
        if backbone.get("patch_norm") is False:
            kwargs["patch_norm"] = False
        ws = int(backbone.get("window_size", 56))
        out_indices = list(backbone.get("out_indices", (0, 1, 2, 3)))
        if out_indices != [0, 1, 2, 3]:
            raise ValueError(f"config_from_official: out_indices={out_indices}; only all four stages are supported")
        kwargs.update(
            _swin_backbone_kwargs(backbone, img_size=int(backbone.get("img_size", 224)), window_size=ws),
            downstream_agent_shapes=[
                list(s) for s in backbone.get("downstream_agent_shapes", ((3, 3), (4, 4), (7, 7), (7, 7)))
            ],
            agent_kernel_size=int(backbone.get("kernel_size", 3)),
            attention_scale_exponent=float(backbone.get("scale", -0.5)),
        )
        head = model.get("decode_head") or {}
        if "pool_scales" in head:
            kwargs["pool_scales"] = list(head["pool_scales"])
        aux = model.get("auxiliary_head")
        kwargs["use_auxiliary_head"] = bool(aux)
        if aux:
            kwargs.update(
                auxiliary_in_index=int(aux.get("in_index", 2)),
                auxiliary_channels=int(aux.get("channels", 256)),
                auxiliary_num_convs=int(aux.get("num_convs", 1)),
                auxiliary_concat_input=bool(aux.get("concat_input", False)),
            )
            weight = (aux.get("loss_decode") or {}).get("loss_weight")
            if weight is not None:
                kwargs["auxiliary_loss_weight"] = float(weight)
        kwargs["out_features"] = _all_stages(kwargs["depths"])  # the official backbone returns all four maps
        kwargs.update(overrides)
        return AgentSwinConfig(**kwargs)
    if kind == "AgentPVT":
        neck = model.get("neck") or {}
        head = model.get("decode_head") or {}
        kwargs.update(
            _pvt_backbone_kwargs(backbone, img_size=int(backbone.get("img_size", 224)), default_patch_size=4),
            downstream_agent_shapes=[
                list(s) for s in backbone.get("downstream_agent_shapes", ((3, 3), (4, 4), (7, 7), (7, 7)))
            ],
            agent_kernel_size=int(backbone.get("kernel_size", 3)),
            attention_scale_exponent=float(backbone.get("scale", -0.5)),
        )
        if int(backbone.get("num_stages", 4)) != len(kwargs["depths"]):
            raise ValueError("config_from_official: num_stages does not match the length of depths")
        if "out_channels" in neck:
            kwargs["fpn_hidden_size"] = int(neck["out_channels"])
        if "feature_strides" in head:
            kwargs["feature_strides"] = list(head["feature_strides"])
        kwargs["out_features"] = _all_stages(kwargs["depths"])  # the official backbone returns all four maps
        kwargs.update(overrides)
        return AgentPvtConfig(**kwargs)
    raise ValueError(
        f"config_from_official: backbone type {kind!r} is not an Agent Attention backbone "
        "(expected 'AgentSwinTransformer' or 'AgentPVT')"
    )


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
            from .restricted_pickle import load_checkpoint_file

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
    prefix = _BACKBONE_PREFIX[config.model_type]
    keys = [k for k in state_dict if isinstance(state_dict[k], torch.Tensor)]
    kind = "imagenet" if all(_is_imagenet_key(k) for k in keys) else "segmentation"
    renamed = {}
    mapping = _KEY_MAPPING[config.model_type]
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
    the classification head and (Agent-Swin) the final norm, which are not part of the segmentation backbone."""
    if key.endswith("relative_position_index"):
        return True
    return kind == "imagenet" and (
        key.startswith(("head.", "classifier.")) or (config.model_type == "agent_swin" and key.startswith("norm."))
    )


def _checkpoint_family(state_dict: Mapping) -> str | None:
    """Which backbone family a (renamed) state dict holds, from its module names."""
    if any(".layers.0.blocks." in k for k in state_dict):
        return "agent_swin"
    if any(".stages.0.blocks.0." in k for k in state_dict):
        return "agent_pvt"
    return None


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
        names = {"agent_swin": "Agent-Swin", "agent_pvt": "Agent-PVT"}
        lines.append(f"  it holds an {names[family]} backbone, but the config is for {names[config.model_type]}.")
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
        config: an `AgentSwinConfig`/`AgentPvtConfig`, an official mmseg `model` dict, or a preset name.

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
        from .presets import preset_config

        config = preset_config(config)
    elif isinstance(config, Mapping):
        config = config_from_official(config)
    raw, source = _read_checkpoint(checkpoint)
    check_state_dict(raw, source)
    state_dict, kind = official_to_hf_state_dict(raw, config)
    model_class = (
        AgentSwinForSemanticSegmentation if config.model_type == "agent_swin" else AgentPvtForSemanticSegmentation
    )
    model = model_class(config)
    expected = model.state_dict()
    allowed_missing = None
    if kind == "imagenet":
        prefix = _BACKBONE_PREFIX[config.model_type]
        # Heads are trained from scratch; Swin's per-stage output norms are new (LayerNorm 1/0 init).
        allowed_missing = lambda k: (
            not k.startswith(prefix) or (config.model_type == "agent_swin" and k[len(prefix) :].startswith("norms."))
        )  # noqa: E731
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
# ImageNet classification (`agent_transformer`: models/agent_{swin,pvt}.py, config.py, cfgs/*.yaml)
# ----------------------------------------------------------------------------------------------------------------

_CLASSIFIERS = {"agent_swin": AgentSwinForImageClassification, "agent_pvt": AgentPvtForImageClassification}
_CLASSIFIER_KEY_MAPPING = {family: cls._checkpoint_key_mapping() for family, cls in _CLASSIFIERS.items()}

# The official `agent_pvt_{tiny,small,medium,large}` factories: depths of each (every other value is shared).
_OFFICIAL_PVT_DEPTHS = {
    "agent_pvt_tiny": (2, 2, 2, 2),
    "agent_pvt_small": (3, 4, 6, 3),
    "agent_pvt_medium": (3, 4, 18, 3),
    "agent_pvt_large": (3, 8, 27, 3),
}
_OFFICIAL_PVT_FACTORY = dict(
    patch_size=4, embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), qkv_bias=True,
    sr_ratios=(8, 4, 2, 1), layer_norm_eps=1e-6,
)  # fmt: skip


def _agent_grids(agent_num) -> list[list[int]]:
    """The official classifiers pool sqrt(n) x sqrt(n) agents at their own resolution."""
    return [[round(int(n) ** 0.5)] * 2 for n in agent_num]


def _swin_backbone_kwargs(official: Mapping, img_size: int, window_size: int) -> dict:
    """`AgentSwinConfig` arguments of the backbone arguments that the official segmentation backbone and classifier
    (`AgentSwinTransformer`) share, with their defaults. Window blocks use max(7, window_size // 8): the official
    window_size is the agent map size."""
    return dict(
        pretrain_image_size=img_size,
        patch_size=int(official.get("patch_size", 4)),
        num_channels=int(official.get("in_chans", 3)),
        embed_dim=int(official.get("embed_dim", 96)),
        depths=list(official.get("depths", (2, 2, 6, 2))),
        num_heads=list(official.get("num_heads", (3, 6, 12, 24))),
        window_size=max(7, window_size // 8),
        mlp_ratio=float(official.get("mlp_ratio", 4.0)),
        qkv_bias=bool(official.get("qkv_bias", True)),
        qk_scale=official.get("qk_scale"),
        hidden_dropout_prob=float(official.get("drop_rate", 0.0)),
        attention_probs_dropout_prob=float(official.get("attn_drop_rate", 0.0)),
        drop_path_rate=float(official.get("drop_path_rate", 0.1)),
        use_absolute_embeddings=bool(official.get("ape", False)),
        patch_norm=bool(official.get("patch_norm", True)),
        agent_num=[int(n) for n in official.get("agent_num", (9, 16, 49, 49))],
        attn_type=str(official.get("attn_type", "BBBB")),
    )


def _swin_classifier_kwargs(img_size: int, window_size: int, official: Mapping) -> dict:
    """`AgentSwinConfig` arguments of an official `AgentSwinTransformer(img_size, window_size, **official)`."""
    kwargs = _swin_backbone_kwargs(official, img_size=img_size, window_size=window_size)
    # Agent blocks attend over the whole map when it fits in window_size (the official models: window_size =
    # img_size / 4, the stage-1 map).
    kwargs["downstream_agent_shapes"] = _agent_grids(kwargs["agent_num"])
    patch_size = kwargs["patch_size"]
    config = AgentSwinConfig(**kwargs)  # validates attn_type and sizes
    for stage, types in enumerate(config.block_attention_types):
        grid = img_size // patch_size // 2**stage
        if "A" in types and grid > window_size:
            raise ValueError(
                f"official classification config: agent attention on stage {stage + 1}'s {grid}x{grid} map split "
                f"into {window_size}x{window_size} windows is not supported (WINDOW_SIZE must be at least "
                f"DATA.IMG_SIZE / PATCH_SIZE = {img_size // patch_size}, as in the official configs)"
            )
    return kwargs


def _pvt_backbone_kwargs(official: Mapping, img_size: int, default_patch_size: int) -> dict:
    """`AgentPvtConfig` arguments of the backbone arguments that the official segmentation backbone (`AgentPVT`) and
    classifier (`PyramidVisionTransformer`) share, with their defaults (the two differ only in the patch size's)."""
    agent_sr = official.get("agent_sr_ratios", "1111")
    return dict(
        pretrain_image_size=img_size,
        patch_size=int(official.get("patch_size", default_patch_size)),
        num_channels=int(official.get("in_chans", 3)),
        embed_dims=list(official.get("embed_dims", (64, 128, 256, 512))),
        num_heads=list(official.get("num_heads", (1, 2, 4, 8))),
        mlp_ratios=[float(r) for r in official.get("mlp_ratios", (4, 4, 4, 4))],
        qkv_bias=bool(official.get("qkv_bias", False)),
        qk_scale=official.get("qk_scale"),
        hidden_dropout_prob=float(official.get("drop_rate", 0.0)),
        attention_probs_dropout_prob=float(official.get("attn_drop_rate", 0.0)),
        drop_path_rate=float(official.get("drop_path_rate", 0.0)),
        depths=list(official.get("depths", (3, 4, 6, 3))),
        sr_ratios=list(official.get("sr_ratios", (8, 4, 2, 1))),
        # "1111" as the official configs write it, or a list
        agent_sr_ratios=[int(c) for c in str(agent_sr)] if isinstance(agent_sr, (str, int)) else list(agent_sr),
        agent_num=[int(n) for n in official.get("agent_num", (9, 16, 49, 49))],
        attn_type=str(official.get("attn_type") or "AAAA"),
    )


def _pvt_classifier_kwargs(img_size: int, official: Mapping) -> dict:
    """`AgentPvtConfig` arguments of an official `PyramidVisionTransformer(img_size, **official)`."""
    kwargs = _pvt_backbone_kwargs(official, img_size=img_size, default_patch_size=16)
    return dict(
        kwargs,
        downstream_agent_shapes=_agent_grids(kwargs["agent_num"]),
        # `agent_pvt_tiny` ... `large` (and the shared fixtures' models) use LayerNorm(eps=1e-6).
        layer_norm_eps=float(official.get("layer_norm_eps", 1e-6)),
    )


def _yaml_value(section: Mapping, key: str, default):
    value = section.get(key, default) if isinstance(section, Mapping) else default
    return default if value is None else value


def official_classification_config(official: Mapping, **overrides):
    """The config and the evaluation transform of an official ImageNet classification model.

    Args:
        official: either an official `agent_transformer/cfgs/*.yaml` read as a dict (`MODEL.TYPE` `agent_swin` or
            `agent_pvt_tiny` ... `agent_pvt_large`, with `config.py`'s defaults for the keys it leaves out), or the
            JSON form `{"official_class": "AgentSwinTransformer" | "PyramidVisionTransformer", "official_kwargs":
            {...constructor arguments...}, "img_size": 224}`.
        overrides: config values applied last (e.g. `id2label`).

    Returns:
        `(config, transform)`: an `AgentSwinConfig` / `AgentPvtConfig` with `num_labels` of the head, and the
        `AgentClassificationImageProcessor` arguments of the official evaluation (`size`, `do_center_crop`).

    Raises:
        ValueError: a model type that is not an Agent-Swin or Agent-PVT classifier, or an unsupported layout.
    """
    if not isinstance(official, Mapping):
        raise ValueError(f"official classification config: expected a mapping, got {type(official).__name__}")
    if "MODEL" in official:
        if any(official.get("BASE") or ()):
            raise ValueError(
                f"official classification config: BASE {official['BASE']} is not merged; give the merged config"
            )
        model, data, test = (official.get(k) or {} for k in ("MODEL", "DATA", "TEST"))
        img_size = int(_yaml_value(data, "IMG_SIZE", 224))
        crop = bool(_yaml_value(test, "CROP", True))
        model_type = str(_yaml_value(model, "TYPE", "swin"))
        agent = model.get("AGENT") or {}
        agent_num = str(_yaml_value(agent, "NUM", "9-16-49-49")).split("-")
        num_classes = int(_yaml_value(model, "NUM_CLASSES", 1000))
        common = dict(
            num_classes=num_classes,
            drop_rate=float(_yaml_value(model, "DROP_RATE", 0.0)),
            drop_path_rate=float(_yaml_value(model, "DROP_PATH_RATE", 0.1)),
            agent_num=agent_num,
            attn_type=str(_yaml_value(agent, "ATTN_TYPE", "BBBB")),
        )
        if model_type == "agent_swin":
            swin = model.get("SWIN") or {}
            official_kwargs = dict(
                common,
                patch_size=_yaml_value(swin, "PATCH_SIZE", 4),
                in_chans=_yaml_value(swin, "IN_CHANS", 3),
                embed_dim=_yaml_value(swin, "EMBED_DIM", 96),
                depths=_yaml_value(swin, "DEPTHS", [2, 2, 6, 2]),
                num_heads=_yaml_value(swin, "NUM_HEADS", [3, 6, 12, 24]),
                mlp_ratio=_yaml_value(swin, "MLP_RATIO", 4.0),
                qkv_bias=_yaml_value(swin, "QKV_BIAS", True),
                qk_scale=swin.get("QK_SCALE"),
                ape=_yaml_value(swin, "APE", False),
                patch_norm=_yaml_value(swin, "PATCH_NORM", True),
            )
            kwargs = _swin_classifier_kwargs(img_size, int(_yaml_value(swin, "WINDOW_SIZE", 7)), official_kwargs)
        elif model_type in _OFFICIAL_PVT_DEPTHS:
            official_kwargs = {
                **common,
                **_OFFICIAL_PVT_FACTORY,
                "depths": _OFFICIAL_PVT_DEPTHS[model_type],
                "agent_sr_ratios": str(_yaml_value(agent, "PVT_LA_SR_RATIOS", 1111)),
            }
            kwargs = _pvt_classifier_kwargs(img_size, official_kwargs)
        else:
            raise ValueError(
                f"official classification config: MODEL.TYPE {model_type!r} is not an Agent-Swin or Agent-PVT model "
                f"(expected 'agent_swin' or one of {', '.join(_OFFICIAL_PVT_DEPTHS)})"
            )
    elif "official_class" in official:
        official_kwargs = dict(official.get("official_kwargs") or {})
        img_size = int(official.get("img_size", official_kwargs.get("img_size", 224)))
        crop = bool(official.get("center_crop", True))
        num_classes = int(official_kwargs.get("num_classes", official.get("num_classes", 1000)))
        if official["official_class"] == "AgentSwinTransformer":
            kwargs = _swin_classifier_kwargs(img_size, int(official_kwargs.get("window_size", 7)), official_kwargs)
        elif official["official_class"] == "PyramidVisionTransformer":
            kwargs = _pvt_classifier_kwargs(img_size, official_kwargs)
        else:
            raise ValueError(
                f"official classification config: official_class {official['official_class']!r} is not "
                "'AgentSwinTransformer' or 'PyramidVisionTransformer'"
            )
    else:
        raise ValueError(
            "official classification config: expected an official cfgs/*.yaml (a 'MODEL' section) or "
            "{'official_class', 'official_kwargs', 'img_size'}"
        )
    kwargs["num_labels"] = num_classes
    if num_classes == 1000:
        from .data.imagenet import imagenet_id2label

        id2label = imagenet_id2label()
        kwargs.update(id2label=id2label, label2id={name: i for i, name in id2label.items()})
        kwargs.pop("num_labels")
    kwargs.update(overrides)
    config_class = AgentSwinConfig if "embed_dim" in kwargs else AgentPvtConfig
    return config_class(**kwargs), {"size": img_size, "do_center_crop": crop}


def official_classifier_state_dict(state_dict: Mapping, config) -> dict:
    """An official classification state dict (`{'model': ...}` or bare) renamed to the keys of the family's
    `...ForImageClassification`: `head.` -> `classifier.`, Swin's final `norm.` kept, the rest under the base model
    with the current module names."""
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    prefix, mapping = f"{config.model_type}.", _CLASSIFIER_KEY_MAPPING[config.model_type]
    renamed = {}
    for key, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor) or key.endswith("relative_position_index"):
            continue  # a derived buffer, recomputed by the model
        if key.startswith("head."):
            renamed["classifier." + key[len("head.") :]] = tensor
        elif config.model_type == "agent_swin" and key.startswith("norm."):
            renamed[key] = tensor
        else:
            renamed[rename_key(prefix + key, mapping)] = tensor
    return renamed


def load_official_classifier(checkpoint, config):
    """The image classifier of `config` with the weights of an official ImageNet checkpoint.

    Args:
        checkpoint: path to the official `.pth` (`{'model': state_dict, ...}`, read without running pickled code) or
            a state dict.
        config: an `AgentSwinConfig` / `AgentPvtConfig` (e.g. from `official_classification_config`) or an ImageNet
            preset name (`agent_hf.IMAGENET_PRESETS`).

    Raises `ValueError` listing missing, unexpected and mis-shaped keys when the checkpoint does not fit.
    """
    if isinstance(config, str):
        from .presets import imagenet_preset_config

        config = imagenet_preset_config(config)
    raw, source = _read_checkpoint(checkpoint)
    state_dict = official_classifier_state_dict(raw, config)
    model = _CLASSIFIERS[config.model_type](config)
    expected = model.state_dict()
    _check_fit(state_dict, expected, config, f"{source} (ImageNet classification checkpoint)")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state_dict.items()})
    model.eval()
    checkpoint_path = os.fspath(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else None
    record_provenance(model, official_checkpoint_provenance(model, checkpoint_path, "classification"))
    return model


__all__ = [
    "config_from_official",
    "load_official_checkpoint",
    "load_official_classifier",
    "official_classification_config",
    "official_classifier_state_dict",
    "official_to_hf_state_dict",
]
