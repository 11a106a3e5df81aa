"""Official Agent Attention configs -> agent_hf configs.

`config_from_official(model_dict)` reads the `model` dict of an official mmsegmentation 0.x config file (after its
`_base_` files are merged); `official_classification_config(cfg)` reads an official ImageNet classification config
(`agent_transformer/cfgs/*.yaml` read as a dict, or its JSON form). Which family a config is comes from the official
names in `agent_hf.families`; each family's translation of the official arguments is written here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from transformers import PreTrainedConfig

from ..families import FAMILIES, ModelFamily
from ..models.configuration_agent_swin import AgentSwinConfig

__all__ = ["config_from_official", "official_classification_config"]


def _one_of(names) -> str:
    """``'a' or 'b'``, ``'a', 'b' or 'c'``."""
    quoted = [repr(name) for name in names]
    return " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)


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


def _agent_kwargs(backbone: Mapping) -> dict:
    """The agent-attention arguments of an official segmentation backbone (both families name them alike)."""
    return dict(
        downstream_agent_shapes=[
            list(s) for s in backbone.get("downstream_agent_shapes", ((3, 3), (4, 4), (7, 7), (7, 7)))
        ],
        agent_kernel_size=int(backbone.get("kernel_size", 3)),
        attention_scale_exponent=float(backbone.get("scale", -0.5)),
    )


def _swin_segmentation_kwargs(model: Mapping, backbone: Mapping) -> dict:
    """`AgentSwinConfig` arguments of an `AgentSwinTransformer` backbone with UperNet and the auxiliary FCN head."""
    out_indices = list(backbone.get("out_indices", (0, 1, 2, 3)))
    if out_indices != [0, 1, 2, 3]:
        raise ValueError(f"config_from_official: out_indices={out_indices}; only all four stages are supported")
    window_size = int(backbone.get("window_size", 56))
    kwargs = dict(
        _swin_backbone_kwargs(backbone, img_size=int(backbone.get("img_size", 224)), window_size=window_size),
        **_agent_kwargs(backbone),
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
    return kwargs


def _pvt_segmentation_kwargs(model: Mapping, backbone: Mapping) -> dict:
    """`AgentPvtConfig` arguments of an `AgentPVT` backbone with the FPN neck and the Semantic FPN head."""
    kwargs = dict(
        _pvt_backbone_kwargs(backbone, img_size=int(backbone.get("img_size", 224)), default_patch_size=4),
        **_agent_kwargs(backbone),
    )
    if int(backbone.get("num_stages", 4)) != len(kwargs["depths"]):
        raise ValueError("config_from_official: num_stages does not match the length of depths")
    neck = model.get("neck") or {}
    head = model.get("decode_head") or {}
    if "out_channels" in neck:
        kwargs["fpn_hidden_size"] = int(neck["out_channels"])
    if "feature_strides" in head:
        kwargs["feature_strides"] = list(head["feature_strides"])
    return kwargs


def config_from_official(model: Mapping, **overrides) -> PreTrainedConfig:
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


def _config_from_official(model: Mapping, **overrides) -> PreTrainedConfig:
    if "model" in model and "backbone" not in model:
        model = model["model"]
    backbone = model.get("backbone")
    if not isinstance(backbone, Mapping) or "type" not in backbone:
        raise ValueError("config_from_official: expected an mmseg model dict with a 'backbone' dict that has a 'type'")
    for part in ("decode_head", "neck", "auxiliary_head"):
        if model.get(part) is not None and not isinstance(model[part], Mapping):
            raise ValueError(f"config_from_official: '{part}' must be a dict, got {type(model[part]).__name__}")
    kind = backbone["type"]
    family = next((family for family in FAMILIES.values() if family.official_backbone == kind), None)
    if family is None:
        raise ValueError(
            f"config_from_official: backbone type {kind!r} is not an Agent Attention backbone "
            f"(expected {_one_of(family.official_backbone for family in FAMILIES.values())})"
        )
    kwargs = {**_head_kwargs(model), **_translation(_SEGMENTATION_KWARGS, family)(model, backbone)}
    kwargs["out_features"] = _all_stages(kwargs["depths"])  # the official backbone returns all four maps
    kwargs.update(overrides)
    return family.config_class()(**kwargs)


# ----------------------------------------------------------------------------------------------------------------
# ImageNet classification (`agent_transformer`: models/agent_{swin,pvt}.py, config.py, cfgs/*.yaml)
# ----------------------------------------------------------------------------------------------------------------

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


def _swin_yaml_kwargs(model_type: str, model: Mapping, agent: Mapping) -> dict:
    """The `AgentSwinTransformer` arguments of an official yaml's `MODEL.SWIN` section (`config.py`'s defaults)."""
    swin = model.get("SWIN") or {}
    return dict(
        patch_size=_yaml_value(swin, "PATCH_SIZE", 4),
        in_chans=_yaml_value(swin, "IN_CHANS", 3),
        embed_dim=_yaml_value(swin, "EMBED_DIM", 96),
        depths=_yaml_value(swin, "DEPTHS", [2, 2, 6, 2]),
        num_heads=_yaml_value(swin, "NUM_HEADS", [3, 6, 12, 24]),
        window_size=_yaml_value(swin, "WINDOW_SIZE", 7),
        mlp_ratio=_yaml_value(swin, "MLP_RATIO", 4.0),
        qkv_bias=_yaml_value(swin, "QKV_BIAS", True),
        qk_scale=swin.get("QK_SCALE"),
        ape=_yaml_value(swin, "APE", False),
        patch_norm=_yaml_value(swin, "PATCH_NORM", True),
    )


def _pvt_yaml_kwargs(model_type: str, model: Mapping, agent: Mapping) -> dict:
    """The `PyramidVisionTransformer` arguments of the official factory `MODEL.TYPE` names."""
    return {
        **_OFFICIAL_PVT_FACTORY,
        "depths": _OFFICIAL_PVT_DEPTHS[model_type],
        "agent_sr_ratios": str(_yaml_value(agent, "PVT_LA_SR_RATIOS", 1111)),
    }


# Each family's translation of the official arguments (the official names that select it: `agent_hf.families`).
#: (model dict, backbone dict) -> config arguments of an official segmentation config.
_SEGMENTATION_KWARGS: Mapping[str, Callable[[Mapping, Mapping], dict]] = {
    "agent_swin": _swin_segmentation_kwargs,
    "agent_pvt": _pvt_segmentation_kwargs,
}
#: (img_size, constructor arguments) -> config arguments of an official classifier.
_CLASSIFIER_KWARGS: Mapping[str, Callable[[int, Mapping], dict]] = {
    "agent_swin": lambda img_size, official: _swin_classifier_kwargs(
        img_size, int(official.get("window_size", 7)), official
    ),
    "agent_pvt": _pvt_classifier_kwargs,
}
#: (MODEL.TYPE, MODEL section, MODEL.AGENT section) -> the constructor arguments an official yaml gives.
_YAML_KWARGS: Mapping[str, Callable[[str, Mapping, Mapping], dict]] = {
    "agent_swin": _swin_yaml_kwargs,
    "agent_pvt": _pvt_yaml_kwargs,
}


def _translation(translations: Mapping[str, Callable], family: ModelFamily) -> Callable:
    if family.model_type not in translations:
        raise NotImplementedError(
            f"agent_hf.official.configs has no translation of {family.name}'s official arguments: add it beside the "
            "other families'"
        )
    return translations[family.model_type]


def official_classification_config(official: Mapping, **overrides):
    """The config and the evaluation transform of an official ImageNet classification model.

    Args:
        official: either an official `agent_transformer/cfgs/*.yaml` read as a dict (`MODEL.TYPE` one of a family's
            `official_classification_types`: `agent_swin`, `agent_pvt_tiny` ... `agent_pvt_large`, with `config.py`'s
            defaults for the keys it leaves out), or the JSON form `{"official_class": "AgentSwinTransformer" |
            "PyramidVisionTransformer", "official_kwargs": {...constructor arguments...}, "img_size": 224}`.
        overrides: config values applied last (e.g. `id2label`).

    Returns:
        `(config, transform)`: the family's config (`AgentSwinConfig`, `AgentPvtConfig`) with `num_labels` of the
        head, and the `AgentClassificationImageProcessor` arguments of the official evaluation (`size`,
        `do_center_crop`).

    Raises:
        ValueError: a model type that is not the classifier of a family, or an unsupported layout.
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
        family = next((f for f in FAMILIES.values() if model_type in f.official_classification_types), None)
        if family is None:
            names = " or ".join(f.name for f in FAMILIES.values())
            types = [name for f in FAMILIES.values() for name in f.official_classification_types]
            raise ValueError(
                f"official classification config: MODEL.TYPE {model_type!r} is not an {names} model (expected "
                f"{_one_of(types)})"
            )
        agent = model.get("AGENT") or {}
        num_classes = int(_yaml_value(model, "NUM_CLASSES", 1000))
        official_kwargs = dict(
            num_classes=num_classes,
            drop_rate=float(_yaml_value(model, "DROP_RATE", 0.0)),
            drop_path_rate=float(_yaml_value(model, "DROP_PATH_RATE", 0.1)),
            agent_num=str(_yaml_value(agent, "NUM", "9-16-49-49")).split("-"),
            attn_type=str(_yaml_value(agent, "ATTN_TYPE", "BBBB")),
            **_translation(_YAML_KWARGS, family)(model_type, model, agent),
        )
    elif "official_class" in official:
        family = next((f for f in FAMILIES.values() if f.official_classifier == official["official_class"]), None)
        if family is None:
            raise ValueError(
                f"official classification config: official_class {official['official_class']!r} is not "
                f"{_one_of(f.official_classifier for f in FAMILIES.values())}"
            )
        official_kwargs = dict(official.get("official_kwargs") or {})
        img_size = int(official.get("img_size", official_kwargs.get("img_size", 224)))
        crop = bool(official.get("center_crop", True))
        num_classes = int(official_kwargs.get("num_classes", official.get("num_classes", 1000)))
    else:
        raise ValueError(
            "official classification config: expected an official cfgs/*.yaml (a 'MODEL' section) or "
            "{'official_class', 'official_kwargs', 'img_size'}"
        )
    kwargs = _translation(_CLASSIFIER_KWARGS, family)(img_size, official_kwargs)
    kwargs["num_labels"] = num_classes
    if num_classes == 1000:
        from ..data.imagenet import imagenet_id2label

        id2label = imagenet_id2label()
        kwargs.update(id2label=id2label, label2id={name: i for i, name in id2label.items()})
        kwargs.pop("num_labels")
    kwargs.update(overrides)
    return family.config_class()(**kwargs), {"size": img_size, "do_center_crop": crop}
