"""The model families (Agent-Swin + UperNet, Agent-PVT + Semantic FPN): every fact about a family, in one table.

Each row of :data:`FAMILIES` says what the rest of agent_hf needs to know about one family: its classes (by module and
class name, imported on first use), the official code's names for it and its checkpoints, the paper's training recipe
and the architecture values every published size shares, the model cards' wording and the benchmark's peer. The
Auto registration, the presets, the model zoo, the official conversion, the training recipes and optimizer groups, the
model cards and the benchmark read it; `tests/test_families.py` checks that each of them knows every family.

Adding a family: its configuration and modeling modules in `agent_hf/models/`, one row here, its official config
translation in `agent_hf/official/configs.py`, its published models in `agent_hf/model_zoo.py`, and its model_type in
the shipped `models/pipeline_agent.AGENT_MODEL_TYPES`.

This module is plain data (standard library only): the Hub tools read it without importing torch or transformers.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = [
    "AGENT_PVT_RECIPE",
    "AGENT_SWIN_RECIPE",
    "FAMILIES",
    "MODEL_CLASS_SUFFIXES",
    "SWIN_T_UPERNET_PEER",
    "ModelFamily",
    "PaperRecipe",
    "get_family",
]


@dataclass(frozen=True)
class PaperRecipe:
    """Optimizer and schedule of an official config (mmsegmentation 0.x, mmcv 1.x `PolyLrUpdaterHook`).

    Attributes:
        schedule: the official `_base_` schedule file, e.g. ``"schedule_160k"``.
        learning_rate: AdamW learning rate.
        betas: AdamW betas.
        weight_decay: AdamW weight decay.
        no_decay_keys: mmcv ``paramwise_cfg.custom_keys`` with ``decay_mult=0``: parameters whose official name
            contains one of them get no weight decay (empty: decay on every parameter).
        poly_power: power of the poly learning-rate decay.
        min_lr: learning rate at the end of the schedule.
        warmup_iters: linear warm-up iterations (0: none).
        warmup_ratio: the warm-up starts at ``warmup_ratio * learning_rate``.
        iterations: length of the schedule (optimizer steps).
        gpus: GPUs of the official run.
        images_per_gpu: images per GPU and iteration.
        crop_size: training crop (height, width).
    """

    schedule: str
    learning_rate: float
    weight_decay: float
    poly_power: float
    iterations: int
    betas: tuple[float, float] = (0.9, 0.999)
    no_decay_keys: tuple[str, ...] = ()
    min_lr: float = 0.0
    warmup_iters: int = 0
    warmup_ratio: float = 0.0
    gpus: int = 8
    images_per_gpu: int = 2
    crop_size: tuple[int, int] = (512, 512)

    @property
    def batch_size(self) -> int:
        """Images per iteration over all GPUs."""
        return self.gpus * self.images_per_gpu

    def summary(self) -> str:
        """One sentence with every number of the recipe (used by the model cards)."""
        if self.no_decay_keys:
            keys = ", ".join(f"`{key}`" for key in self.no_decay_keys)
            decay = (
                f"weight decay {_number(self.weight_decay)}, none on parameters whose official name contains {keys}"
            )
        else:
            decay = f"weight decay {_number(self.weight_decay)} on every parameter"
        warmup = (
            f"{self.warmup_iters:,} linear warm-up iterations from {_number(self.warmup_ratio)} × lr, then "
            if self.warmup_iters
            else "no warm-up, "
        )
        return (
            f"AdamW (lr {_number(self.learning_rate)}, betas {self.betas}, {decay}); {warmup}poly decay "
            f"(power {self.poly_power:g}) to {self.min_lr:g} over {self.iterations:,} iterations of "
            f"{self.batch_size} images ({self.gpus} GPUs × {self.images_per_gpu}), "
            f"{self.crop_size[0]}×{self.crop_size[1]} crops of ADE20K train"
        )


def _number(value: float) -> str:
    """Numbers as the official configs write them: ``0.01``, ``2e-4``, ``1e-6``."""
    if 0 < abs(value) < 1e-3:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"
    return f"{value:g}"


#: Agent-Swin + UperNet, `configs/agent_swin/upernet_agent_swin_*_9-12-14-7.py` (`schedule_160k`).
AGENT_SWIN_RECIPE = PaperRecipe(
    schedule="schedule_160k",
    learning_rate=6e-5,
    weight_decay=0.01,
    no_decay_keys=(
        "absolute_pos_embed",
        "relative_position_bias_table",
        "norm",
        "an_bias",
        "na_bias",
        "ah_bias",
        "aw_bias",
        "ha_bias",
        "wa_bias",
    ),
    poly_power=1.0,
    warmup_iters=1500,
    warmup_ratio=1e-6,
    iterations=160_000,
)

#: Agent-PVT + Semantic FPN, `configs/agent_pvt/fpn_agent_pvt_*_12-16-28-28.py` (`schedule_40k`).
AGENT_PVT_RECIPE = PaperRecipe(
    schedule="schedule_40k",
    learning_rate=2e-4,
    weight_decay=1e-4,
    poly_power=0.9,
    iterations=40_000,
)

#: The model classes every family defines, `<class_prefix><suffix>` in its modeling module.
MODEL_CLASS_SUFFIXES = ("Model", "Backbone", "ForSemanticSegmentation", "ForImageClassification")

#: transformers' Swin-T + UperNet (Agent-Swin-T's sizes, shifted-window attention in every block), the model
#: `scripts/benchmark.py` builds as the peer of a run.
SWIN_T_UPERNET_PEER = "swin-t-upernet (transformers)"


@dataclass(frozen=True)
class ModelFamily:
    """One model family.

    Attributes:
        model_type: the config's ``model_type`` (``"agent_swin"``), also the base model's attribute name in the
            task models (``backbone.agent_swin.``).
        name: display name of the backbone family (``"Agent-Swin"``).
        head: display name of the decode head (``"UperNet"``, ``"Semantic FPN"``).
        head_tag: Hub tag of the head (``"upernet"``).
        configuration_module, modeling_module: the family's modules in ``agent_hf.models``.
        class_prefix: the classes' common prefix: ``<prefix>Config`` in the configuration module, ``<prefix>Model``
            ... (:data:`MODEL_CLASS_SUFFIXES`) in the modeling module. The official checkpoint keys -> ours mapping
            is the model classes' own (``_checkpoint_key_mapping()``, also used by ``from_pretrained``).
        recipe: the training recipe of the official segmentation configs.
        architecture: the config values of the official segmentation configs that every published size shares.
        preset_pattern: the segmentation presets' name, ``{}`` the size (``"agent-swin-{}-upernet-ade20k"``).
        upstream_config_pattern: the official segmentation config file, relative to ``downstream/segmentation``.
        official_backbone: the mmseg backbone ``type`` of the official segmentation configs.
        official_classifier: the class of the official classification code (``models/agent_*.py``).
        official_classification_types: the ``MODEL.TYPE`` values of the official classification configs.
        checkpoint_signature: a part of a key found only in this family's (renamed) checkpoints, which tells a
            checkpoint's family when it does not fit the config.
        classifier_top_level_keys: official classification keys that stay at the classifier's top level, beside the
            head (Agent-Swin's final ``norm.``); an ImageNet checkpoint loaded into a segmentation model drops them.
        imagenet_missing_backbone_keys: modules of the segmentation backbone that an ImageNet checkpoint has not
            (Agent-Swin's per-stage output ``norms.``): they keep their initialization.
        attention_wording: the model cards' sentence on where agent attention sits in the family's blocks (with the
            cards' line breaks).
        classifier_head_wording: the ImageNet cards' words for the official classification head.
        card_backbone, card_head: the folder cards' backbone and decode-head rows, formatted with the values of a
            ``config.json`` (``!d``: a list written ``2-2-6-2``).
        benchmark_peer: the transformers model `scripts/benchmark.py` compares the family's models with.
    """

    model_type: str
    name: str
    head: str
    head_tag: str
    configuration_module: str
    modeling_module: str
    class_prefix: str
    recipe: PaperRecipe
    architecture: Mapping[str, Any]
    preset_pattern: str
    upstream_config_pattern: str
    official_backbone: str
    official_classifier: str
    official_classification_types: tuple[str, ...]
    checkpoint_signature: str
    classifier_top_level_keys: tuple[str, ...]
    imagenet_missing_backbone_keys: tuple[str, ...]
    attention_wording: str
    classifier_head_wording: str
    card_backbone: str
    card_head: str
    benchmark_peer: str

    @property
    def backbone_tag(self) -> str:
        """Hub tag of the backbone family (``"agent-swin"``)."""
        return self.model_type.replace("_", "-")

    @property
    def backbone_prefix(self) -> str:
        """Where a segmentation model keeps the backbone's parameters (``"backbone.agent_swin."``)."""
        return f"backbone.{self.model_type}."

    def config_class(self) -> type:
        """The config class (imports the family's configuration module)."""
        return getattr(_models_module(self.configuration_module), f"{self.class_prefix}Config")

    def model_class(self, suffix: str) -> type:
        """The model class ``<class_prefix><suffix>``, `suffix` one of :data:`MODEL_CLASS_SUFFIXES` (imports the
        family's modeling module)."""
        if suffix not in MODEL_CLASS_SUFFIXES:
            raise ValueError(f"model_class: {suffix!r} is not one of {MODEL_CLASS_SUFFIXES}")
        return getattr(_models_module(self.modeling_module), f"{self.class_prefix}{suffix}")


def _models_module(name: str):
    return importlib.import_module(f"{__package__}.models.{name}")


# The architecture values of the official segmentation configs, grouped as they group them (backbone, attention,
# heads): what both families share, then each family's.
# fmt: off
_AGENT_COMMON = dict(
    pretrain_image_size=224, patch_size=4, num_channels=3, hidden_act="gelu",
    agent_num=(9, 16, 49, 49), agent_kernel_size=3, attention_scale_exponent=-0.5, qkv_bias=True, qk_scale=None,
    align_corners=False,
)
_AGENT_SWIN_ARCHITECTURE = dict(
    _AGENT_COMMON,
    window_size=7, mlp_ratio=4.0, layer_norm_eps=1e-5, patch_norm=True, use_absolute_embeddings=False,
    decoder_hidden_size=512, pool_scales=(1, 2, 3, 6),
    use_auxiliary_head=True, auxiliary_in_index=2, auxiliary_channels=256, auxiliary_num_convs=1,
    auxiliary_concat_input=False,
)
_AGENT_PVT_ARCHITECTURE = dict(
    _AGENT_COMMON,
    embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), layer_norm_eps=1e-6,
    attn_type="AAAA", sr_ratios=(8, 4, 2, 1), agent_sr_ratios=(1, 1, 1, 1),
    downstream_agent_shapes=((12, 12), (16, 16), (28, 28), (28, 28)),
    fpn_hidden_size=256, decoder_hidden_size=128, feature_strides=(4, 8, 16, 32),
)
# fmt: on

_AGENT_SWIN = ModelFamily(
    model_type="agent_swin",
    name="Agent-Swin",
    head="UperNet",
    head_tag="upernet",
    configuration_module="configuration_agent_swin",
    modeling_module="modeling_agent_swin",
    class_prefix="AgentSwin",
    recipe=AGENT_SWIN_RECIPE,
    architecture=MappingProxyType(_AGENT_SWIN_ARCHITECTURE),
    preset_pattern="agent-swin-{}-upernet-ade20k",
    upstream_config_pattern="configs/agent_swin/upernet_agent_swin_{}_9-12-14-7.py",
    official_backbone="AgentSwinTransformer",
    official_classifier="AgentSwinTransformer",
    official_classification_types=("agent_swin",),
    checkpoint_signature=".layers.0.blocks.",
    classifier_top_level_keys=("norm.",),
    imagenet_missing_backbone_keys=("norms.",),
    attention_wording=(
        "In Agent-Swin, agent-attention blocks replace the\nshifted-window attention in the high-resolution stages; "
        "the remaining blocks keep window attention (`attn_type` gives\nthe per-stage layout)."
    ),
    classifier_head_wording="final LayerNorm, average pooling, linear",
    card_backbone=(
        "Agent-Swin, block layout `{attn_type}`, width {embed_dim}, depths {depths!d}, heads {num_heads!d}, "
        "window {window_size}"
    ),
    card_head="UperNet ({decoder_hidden_size} channels, pool scales {pool_scales!d})",
    benchmark_peer=SWIN_T_UPERNET_PEER,
)

_AGENT_PVT = ModelFamily(
    model_type="agent_pvt",
    name="Agent-PVT",
    head="Semantic FPN",
    head_tag="semantic-fpn",
    configuration_module="configuration_agent_pvt",
    modeling_module="modeling_agent_pvt",
    class_prefix="AgentPvt",
    recipe=AGENT_PVT_RECIPE,
    architecture=MappingProxyType(_AGENT_PVT_ARCHITECTURE),
    preset_pattern="agent-pvt-{}-fpn-ade20k",
    upstream_config_pattern="configs/agent_pvt/fpn_agent_pvt_{}_12-16-28-28.py",
    official_backbone="AgentPVT",
    official_classifier="PyramidVisionTransformer",
    official_classification_types=("agent_pvt_tiny", "agent_pvt_small", "agent_pvt_medium", "agent_pvt_large"),
    checkpoint_signature=".stages.0.blocks.0.",
    classifier_top_level_keys=(),
    imagenet_missing_backbone_keys=(),
    attention_wording=(
        "In Agent-PVT, agent attention takes the place of PVT's spatial-reduction attention in\nthe blocks."
    ),
    classifier_head_wording="token average, linear",
    card_backbone=(
        "Agent-PVT, block layout `{attn_type}`, widths {embed_dims!d}, depths {depths!d}, heads {num_heads!d}, "
        "spatial reduction {sr_ratios!d}"
    ),
    card_head="Semantic FPN (FPN {fpn_hidden_size} channels, head {decoder_hidden_size} channels)",
    # transformers has no Semantic FPN: Agent-PVT's models are compared with the same Swin-T + UperNet.
    benchmark_peer=SWIN_T_UPERNET_PEER,
)

#: The families, keyed by model_type.
FAMILIES: Mapping[str, ModelFamily] = MappingProxyType(
    {family.model_type: family for family in (_AGENT_SWIN, _AGENT_PVT)}
)


def get_family(model_type: Any) -> ModelFamily:
    """The row of `model_type`; a `ValueError` naming the families when it has none."""
    try:
        return FAMILIES[model_type]
    except (KeyError, TypeError):
        raise ValueError(
            f"model_type {model_type!r} is not an agent_hf model family; expected one of {', '.join(FAMILIES)}"
        ) from None
