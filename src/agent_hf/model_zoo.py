"""The seven published Agent Attention segmentation models: every fact about them, in one place.

Each entry of :data:`MODELS` holds a model's architecture (the config values of the official config file), the
authors' ADE20K results, the training recipe's numbers, the parameter count, the FLOPs counted by agent-hf, and the
official config and checkpoint links; what its family shares with the other sizes (the architecture values, the
recipe, the names) comes from `agent_hf.families`. `agent_hf.presets` builds configs from it, `agent_hf.hub` renders
the model cards and the README's model table from it.

This module is plain data (standard library only): the Hub tools read it without importing torch or transformers.

Sources: the official README of `LeapLabTHU/Agent-Attention/downstream/segmentation` (results, parameters, FLOPs,
checkpoint links) and its mmsegmentation 0.x configs (architecture, recipe).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .families import AGENT_PVT_RECIPE, AGENT_SWIN_RECIPE, FAMILIES, PaperRecipe, get_family

__all__ = [
    "AGENT_PVT_RECIPE",
    "AGENT_SWIN_RECIPE",
    "IMAGENET_MODELS",
    "MODELS",
    "PAPER_URL",
    "TRAINING_ONLY_CONFIG_KEYS",
    "UPSTREAM_CLASSIFICATION_URL",
    "UPSTREAM_REPO_URL",
    "UPSTREAM_SEGMENTATION_URL",
    "ArchitectureDifference",
    "ImageNetModelSpec",
    "ModelSpec",
    "PaperRecipe",
    "architecture_differences",
    "get_imagenet_model_spec",
    "get_model_spec",
    "paper_recipe",
]

UPSTREAM_REPO_URL = "https://github.com/LeapLabTHU/Agent-Attention"
UPSTREAM_SEGMENTATION_URL = f"{UPSTREAM_REPO_URL}/tree/HEAD/downstream/segmentation"
UPSTREAM_CLASSIFICATION_URL = f"{UPSTREAM_REPO_URL}/tree/HEAD/agent_transformer"
PAPER_URL = "https://arxiv.org/abs/2312.08874"

#: Config values that only act during training (regularization, loss): they are not compared when deciding whether
#: a model has a preset's architecture.
TRAINING_ONLY_CONFIG_KEYS = frozenset(
    {
        "drop_path_rate",
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "classifier_dropout",
        "auxiliary_loss_weight",
        "loss_ignore_index",
    }
)


@dataclass(frozen=True)
class ModelSpec:
    """One published model.

    Attributes:
        preset: preset name, also the default Hub repository name (e.g. ``"agent-swin-t-upernet-ade20k"``).
        model_type: the family (a key of `agent_hf.families.FAMILIES`), e.g. ``"agent_swin"``.
        backbone: display name of the backbone (e.g. ``"Agent-Swin-T"``).
        head: display name of the decode head, ``"UperNet"`` or ``"Semantic FPN"``.
        architecture: config values that define the network (every one of them, not only those that differ from
            the config class's defaults), as in the official config file.
        drop_path_rate: stochastic depth of the official config (training only).
        num_labels: classes (ADE20K: 150).
        mean_iou: single-scale mIoU (%) reported on the ADE20K validation set (2,000 images).
        mean_accuracy: single-scale mAcc (%) on the same split.
        num_parameters: exact parameter count (auxiliary head included); the paper rounds it, see
            ``reported_parameters``.
        reported_parameters: parameter count as printed by the authors (e.g. ``"61M"``).
        reported_gflops: "FLOPs" at 512x2048 as printed by the authors, in G (mmcv's `get_model_complexity_info`
            plus analytic attention terms, i.e. multiply-accumulates).
        counted_flops: floating-point operations of one 512x2048 inference pass counted by agent-hf
            (`agent_hf.flops.count_flops`: 2 per multiply-accumulate, auxiliary head excluded as in the paper).
        recipe: the training recipe of the official config.
        upstream_config: official mmsegmentation config, relative to ``downstream/segmentation``.
        official_checkpoint_url: download link of the official checkpoint, ``None`` where the official README has
            an empty link.
    """

    preset: str
    model_type: str
    backbone: str
    head: str
    architecture: Mapping[str, Any]
    drop_path_rate: float
    mean_iou: float
    mean_accuracy: float
    num_parameters: int
    reported_parameters: str
    reported_gflops: float
    counted_flops: int
    recipe: PaperRecipe
    upstream_config: str
    official_checkpoint_url: str | None
    num_labels: int = 150
    dataset: str = "scene_parse_150"

    @property
    def backbone_tag(self) -> str:
        """Hub tag of the backbone family."""
        return get_family(self.model_type).backbone_tag

    @property
    def head_tag(self) -> str:
        """Hub tag of the head."""
        return get_family(self.model_type).head_tag

    @property
    def auxiliary_head(self) -> bool:
        """Whether the model has an auxiliary FCN head (training loss only)."""
        return bool(self.architecture.get("use_auxiliary_head", False))

    @property
    def train_iterations(self) -> int:
        """Length of the official schedule."""
        return self.recipe.iterations

    @property
    def config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the config class that build this model (architecture and drop-path rate)."""
        return {**_copy(self.architecture), "drop_path_rate": self.drop_path_rate}


def _copy(values: Mapping[str, Any]) -> dict[str, Any]:
    """Deep copy of nested lists, so that callers can never modify the registry."""
    return {key: _to_list(value) for key, value in values.items()}


def _to_list(value: Any) -> Any:
    return [_to_list(v) for v in value] if isinstance(value, (list, tuple)) else value


# fmt: off
#: The architecture values that set each published size apart (the rest is the family's, `ModelFamily.architecture`).
_SIZES = {
    "agent_swin": {
        "t": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), attn_type="AAAB",
                  downstream_agent_shapes=((9, 9), (12, 12), (14, 14), (7, 7))),
        "s": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), attn_type="AABB",
                  downstream_agent_shapes=((9, 9), (12, 12), (7, 7), (7, 7))),
        "b": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), attn_type="AAMB2",
                  downstream_agent_shapes=((9, 9), (12, 12), (14, 14), (7, 7))),
    },
    "agent_pvt": {
        "t": dict(depths=(2, 2, 2, 2)),
        "s": dict(depths=(3, 4, 6, 3)),
        "m": dict(depths=(3, 4, 18, 3)),
        "l": dict(depths=(3, 8, 27, 3)),
    },
}

# The official README's table, in its order: family, size, then the `ModelSpec` fields of `_RESULT_COLUMNS` (the
# config's drop-path rate, mIoU and mAcc (%), exact and reported parameters, reported GFLOPs, FLOPs counted by
# agent-hf), then the checkpoint id (None: the README's link is empty).
_RESULTS = (
    ("agent_swin", "t", 0.3, 46.68, 58.53, 60_556_472, "61M", 954, 1_912_511_286_432, "280481ee38024bce8364"),
    ("agent_swin", "s", 0.3, 48.08, 59.78, 81_320_192, "81M", 1043, 2_087_290_265_184, None),
    ("agent_swin", "b", 0.5, 48.73, 60.01, 121_606_588, "121M", 1196, 2_395_062_745_472, None),
    ("agent_pvt", "t", 0.1, 40.18, 51.76, 15_323_998, "15M", 147, 296_498_085_952, "5e7bf988b4b74efe8654"),
    ("agent_pvt", "s", 0.1, 44.18, 56.17, 24_388_712, "24M", 211, 429_174_313_456, "11332fa565e443678e4c"),
    ("agent_pvt", "m", 0.2, 44.30, 56.42, 39_675_392, "40M", 321, 656_797_431_856, None),
    ("agent_pvt", "l", 0.1, 46.52, 58.50, 52_491_826, "52M", 434, 889_049_511_136, "0da8b58581214f85974f"),
)
# fmt: on

_CHECKPOINT_URL = "https://cloud.tsinghua.edu.cn/f/{}/?dl=1"


_RESULT_COLUMNS = (
    "drop_path_rate",
    "mean_iou",
    "mean_accuracy",
    "num_parameters",
    "reported_parameters",
    "reported_gflops",
    "counted_flops",
)


def _model_spec(model_type: str, size: str, *columns: Any) -> ModelSpec:
    *results, checkpoint = columns
    family = get_family(model_type)
    return ModelSpec(
        preset=family.preset_pattern.format(size),
        model_type=model_type,
        backbone=f"{family.name}-{size.upper()}",
        head=family.head,
        architecture=MappingProxyType(dict(family.architecture, **_SIZES[model_type][size])),
        recipe=family.recipe,
        upstream_config=family.upstream_config_pattern.format(size),
        official_checkpoint_url=checkpoint and _CHECKPOINT_URL.format(checkpoint),
        **dict(zip(_RESULT_COLUMNS, results, strict=True)),
    )


#: The seven models, keyed by preset name, in the order of the official README.
MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {spec.preset: spec for spec in (_model_spec(*row) for row in _RESULTS)}
)


@dataclass(frozen=True)
class ImageNetModelSpec:
    """One published ImageNet-1K classification model (the backbones the segmentation models start from).

    Attributes:
        preset: preset name, also the default Hub repository name (e.g. ``"agent-swin-t-in1k-224"``).
        model_type: the family (a key of `agent_hf.families.FAMILIES`), e.g. ``"agent_swin"``.
        backbone: display name (e.g. ``"Agent-Swin-T"``).
        architecture: config values that define the network, as the official classification config builds it (the
            agent grids are the pretraining ones, sqrt(agent_num) a side).
        drop_path_rate: stochastic depth of the official config (training only).
        image_size: the input resolution of training and evaluation (the official ``DATA.IMG_SIZE``).
        center_crop: the official ``TEST.CROP``: evaluation resizes to int(256 / 224 x image_size) and center-crops
            (True), or resizes to image_size (False, the fine-tuned high-resolution models).
        top1_accuracy: ImageNet-1K validation acc@1 (%) reported by the authors.
        num_parameters: exact parameter count (head included), counted on the official code.
        reported_parameters: parameter count as printed by the authors (e.g. ``"29M"``).
        reported_gflops: FLOPs at ``image_size`` as printed by the authors, in G.
        upstream_config: official config file, relative to ``agent_transformer``.
        official_checkpoint_url: download link of the official checkpoint.
    """

    preset: str
    model_type: str
    backbone: str
    architecture: Mapping[str, Any]
    drop_path_rate: float
    image_size: int
    center_crop: bool
    top1_accuracy: float
    num_parameters: int
    reported_parameters: str
    reported_gflops: float
    upstream_config: str
    official_checkpoint_url: str
    num_labels: int = 1000
    dataset: str = "imagenet-1k"

    @property
    def config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the config class that build this model (architecture and drop-path rate)."""
        return {**_copy(self.architecture), "drop_path_rate": self.drop_path_rate}


# fmt: off
#: The ImageNet architecture of each size: the segmentation family's backbone values with the pretraining agent grids
#: (the official classification models pool sqrt(agent_num) x sqrt(agent_num) agents at their own resolution).
_IMAGENET_AGENT_GRIDS = dict(downstream_agent_shapes=((3, 3), (4, 4), (7, 7), (7, 7)))

# The official classification README's table (`agent_transformer/README.md`), in its order: family, size,
# resolution, then the config's drop-path rate and TEST.CROP, acc@1 (%), exact and reported parameters, reported
# GFLOPs, the config file's name and the checkpoint id.
_IMAGENET_RESULTS = (
    ("agent_pvt", "t", 224, 0.1, True, 78.4, 11_570_352, "11.6M", 2.0, "agent_pvt_t", "13fdf0e0a7c5498c934f"),
    ("agent_pvt", "s", 224, 0.1, True, 82.2, 20_635_066, "20.6M", 4.0, "agent_pvt_s", "36b8be9a8863456685a3"),
    ("agent_pvt", "m", 224, 0.3, True, 83.4, 35_921_746, "35.9M", 7.0, "agent_pvt_m", "4d00ecacf18b45f9b88c"),
    ("agent_pvt", "m", 256, 0.3, True, 83.8, 36_083_682, "36.1M", 9.2, "agent_pvt_m_256", "654df734121643b19c52"),
    ("agent_pvt", "l", 224, 0.3, True, 83.7, 48_738_180, "48.7M", 10.4, "agent_pvt_b", "040cfe0cfbbe4762ad09"),
    ("agent_swin", "t", 224, 0.2, True, 82.6, 28_902_964, "29M", 4.5, "agent_swin_t", "a2ddc1190c224f768a41"),
    ("agent_swin", "s", 224, 0.3, True, 83.7, 49_666_684, "50M", 8.7, "agent_swin_s", "f607172c9fea4d6e99bb"),
    ("agent_swin", "s", 288, 0.3, False, 84.1, 49_707_964, "50M", 14.6, "agent_swin_s_288", "09760394e93b4046a25e"),
    ("agent_swin", "b", 224, 0.5, True, 84.0, 88_095_096, "88M", 15.4, "agent_swin_b", "4fcd2d0114bb490483c3"),
    ("agent_swin", "b", 384, 0.5, False, 84.9, 88_305_016, "88M", 46.3, "agent_swin_b_384", "bb84ee9058954706a557"),
)
# fmt: on

#: The segmentation heads' values, which an image classifier does not use.
_SEGMENTATION_HEAD_KEYS = frozenset(
    {
        "align_corners", "decoder_hidden_size", "pool_scales", "use_auxiliary_head", "auxiliary_in_index",
        "auxiliary_channels", "auxiliary_num_convs", "auxiliary_concat_input", "fpn_hidden_size", "feature_strides",
    }
)  # fmt: skip


def _imagenet_model_spec(model_type: str, size: str, image_size: int, *columns: Any) -> ImageNetModelSpec:
    drop_path_rate, center_crop, top1, params, reported_params, gflops, config_name, checkpoint = columns
    family = get_family(model_type)
    architecture = {
        key: value
        for key, value in {**family.architecture, **_SIZES[model_type][size], **_IMAGENET_AGENT_GRIDS}.items()
        if key not in _SEGMENTATION_HEAD_KEYS
    }
    # The official Swin window blocks use max(7, WINDOW_SIZE // 8), WINDOW_SIZE being the stage-1 map (img / 4).
    if "window_size" in architecture:
        architecture["window_size"] = max(7, image_size // 4 // 8)
    architecture["pretrain_image_size"] = image_size
    suffix = "" if image_size == 224 else f"-{image_size}"
    return ImageNetModelSpec(
        preset=f"{family.backbone_tag}-{size}-in1k-{image_size}",
        model_type=model_type,
        backbone=f"{family.name}-{size.upper()}{suffix}",
        architecture=MappingProxyType(architecture),
        drop_path_rate=drop_path_rate,
        image_size=image_size,
        center_crop=center_crop,
        top1_accuracy=top1,
        num_parameters=params,
        reported_parameters=reported_params,
        reported_gflops=gflops,
        upstream_config=f"cfgs/{config_name}.yaml",
        official_checkpoint_url=_CHECKPOINT_URL.format(checkpoint),
    )


#: The ten ImageNet-1K classification models, keyed by preset name, in the order of the official README.
IMAGENET_MODELS: Mapping[str, ImageNetModelSpec] = MappingProxyType(
    {spec.preset: spec for spec in (_imagenet_model_spec(*row) for row in _IMAGENET_RESULTS)}
)


def get_imagenet_model_spec(preset: str) -> ImageNetModelSpec:
    """The entry of an ImageNet `preset`; a `ValueError` naming the presets when it is unknown."""
    try:
        return IMAGENET_MODELS[preset]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown ImageNet preset {preset!r}. Expected one of: {', '.join(IMAGENET_MODELS)}."
        ) from None


def get_model_spec(preset: str) -> ModelSpec:
    """The entry of `preset`; a `ValueError` naming the presets when it is unknown."""
    try:
        return MODELS[preset]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown preset {preset!r}. Expected one of: {', '.join(MODELS)}.") from None


def paper_recipe(model_type: str) -> PaperRecipe:
    """The official recipe of a model family (``"agent_swin"`` or ``"agent_pvt"``)."""
    if model_type not in FAMILIES:
        raise ValueError(f"No paper recipe for model_type {model_type!r}; expected one of {sorted(FAMILIES)}.")
    return FAMILIES[model_type].recipe


@dataclass(frozen=True)
class ArchitectureDifference:
    """One config value where a model differs from a preset (``None`` where the config does not record it)."""

    key: str
    value: Any
    preset_value: Any = field(default=None)

    def __str__(self) -> str:
        value = "not recorded" if self.value is None else self.value
        return f"{self.key} {value} (preset: {self.preset_value})"


def architecture_differences(config: Mapping[str, Any], preset: str) -> list[ArchitectureDifference]:
    """Where the config of a model (a ``config.json`` dict or ``config.to_dict()``) differs from a preset.

    Compares the model type, the number of classes and every architecture value of the preset (a segmentation or an
    ImageNet one); training-only values (drop-path, dropout, loss settings) are not compared. An empty list means the
    model has exactly the preset's architecture.
    """
    spec = IMAGENET_MODELS[preset] if preset in IMAGENET_MODELS else get_model_spec(preset)
    differences = []
    if config.get("model_type") != spec.model_type:
        differences.append(ArchitectureDifference("model_type", config.get("model_type"), spec.model_type))
    id2label = config.get("id2label")
    num_labels = len(id2label) if isinstance(id2label, Mapping) else config.get("num_labels")
    if num_labels != spec.num_labels:
        differences.append(ArchitectureDifference("num_labels", num_labels, spec.num_labels))
    for key, expected in spec.architecture.items():
        value = config.get(key)
        if _to_list(value) != _to_list(expected):
            differences.append(ArchitectureDifference(key, value, _to_list(expected)))
    return differences
