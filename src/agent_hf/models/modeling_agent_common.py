"""What both model families share above their blocks: the `PreTrainedModel` conventions, and the forward passes of
the base model, the backbone and the segmentation model, written once.

Each family (`modeling_agent_swin.py`, `modeling_agent_pvt.py`) subclasses `AgentPreTrainedModel` with its config
class, weight initialization and checkpoint names, and builds its public classes from that and one mixin each:

    AgentSwinModel(AgentModelMixin, AgentSwinPreTrainedModel)             # defines `stage_maps`
    AgentSwinBackbone(AgentBackboneMixin, AgentSwinPreTrainedModel)       # holds the base model
    AgentSwinForSemanticSegmentation(AgentSegmentationMixin, AgentSwinPreTrainedModel)  # backbone, neck, heads

Shipped to the Hub with the model: imports only torch/transformers and sibling modules.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.modeling_outputs import BackboneOutput, BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.modeling_utils import PreTrainedModel
from transformers.utils.generic import can_return_tuple

from .agent_attention import ATTENTION_IMPLEMENTATIONS, AgentAttention
from .checkpoint_keys import checkpoint_key_mapping
from .heads import init_head_weights
from .input_checks import check_loss_labels, check_pixel_values
from .loss import segmentation_loss
from .modeling_outputs import AgentSegmenterOutput
from .weight_init import init

# Import shim (this module travels to the Hub and runs on transformers 4.57 through the newest 5.x; transformers'
# `check_imports` ignores imports inside try blocks): `BackboneMixin` lives in `transformers.backbone_utils` in newer
# 5.x releases.
try:
    from transformers.backbone_utils import BackboneMixin
except ImportError:  # older transformers
    from transformers.utils.backbone_utils import BackboneMixin


# The Auto classes a saved folder lists, with the suffix of the family's class for each.
_AUTO_CLASS_SUFFIXES = {
    "AutoModel": "Model",
    "AutoBackbone": "Backbone",
    "AutoModelForSemanticSegmentation": "ForSemanticSegmentation",
    "AutoModelForImageClassification": "ForImageClassification",
}


def init_backbone_weights(module: nn.Module, std: float = 0.02) -> None:
    """The official backbone initialization (timm style): truncated-normal linears and agent bias tables,
    LayerNorm/BatchNorm 1/0, PyTorch's default for convolutions. The heads' modules apply their own rule
    (`heads.init_head_weights`) after this one, as mmseg does."""
    if isinstance(module, nn.Linear):
        init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        init.ones_(module.weight)
        init.zeros_(module.bias)
        if isinstance(module, nn.BatchNorm2d):
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
    elif isinstance(module, AgentAttention):
        for table in module._bias_tables():
            init.trunc_normal_(table, std=std)
    elif isinstance(module, nn.Conv2d):
        # Backbone convs (patch embeddings, DWC, spatial reduction) keep PyTorch's default init.
        init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        if module.bias is not None:
            fan_in = module.weight[0].numel()
            init.uniform_(module.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))


class AgentPreTrainedModel(PreTrainedModel):
    """Conventions shared by both model families, on every supported transformers version.

    - `save_pretrained` writes the model code and lists every Auto class of the family in the config's
      `auto_map`, so a saved folder or Hub repo loads with `trust_remote_code=True` where agent_hf is not
      installed. A family's classes are named after its config class: `AgentSwinConfig` -> `AgentSwinModel`,
      `AgentSwinBackbone`, `AgentSwinForSemanticSegmentation`, `AgentSwinForImageClassification`.
    - `from_pretrained` renames checkpoint keys with `_checkpoint_key_mapping()` (regex -> replacement, through
      transformers' `key_mapping`): the parameter names of agent-hf 0.1.0 and of the official code
      (`_legacy_key_names`), and the base model's keys when a folder of another class of the family is loaded
      (e.g. an `AgentSwinModel` folder into the segmentation model). The renaming is not reverted on save: a
      reloaded model is saved with the current names.
    - `set_attn_implementation("eager" | "sdpa")` switches every attention module of a built model.
    - `_init_weights` applies the official backbone initialization, then mmseg's rule for the heads' modules.
    """

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # forward takes **kwargs: without this, Trainer would scale the loss for DDP / gradient accumulation.
    accepts_loss_kwargs = False

    # Set by each family: renamings of the base model's legacy keys (see `checkpoint_keys.checkpoint_key_mapping`).
    _legacy_key_names: dict[str, str] = {}
    # Regex matching the first name of every key of the family's bare base model.
    _base_model_keys: str = ""
    # Set by the mixins: the class that loads, `"model"`, `"backbone"`, `"segmentation"` or `"classification"` (None:
    # no renaming).
    _checkpoint_target: str | None = None

    @classmethod
    def _checkpoint_key_mapping(cls) -> dict[str, str]:
        if cls._checkpoint_target is None:
            return {}
        return checkpoint_key_mapping(
            cls._legacy_key_names, cls.base_model_prefix, cls._base_model_keys, cls._checkpoint_target
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        mapping = cls._checkpoint_key_mapping()
        user_mapping = kwargs.pop("key_mapping", None) or {}
        kwargs["key_mapping"] = {**user_mapping, **{k: v for k, v in mapping.items() if k not in user_mapping}}
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        # transformers 5.x reverts the renamings it loaded with on save; ours are not meant to come back.
        conversions = getattr(model, "_weight_conversions", None)
        if conversions:
            model._weight_conversions = [
                c for c in conversions if not set(getattr(c, "source_patterns", None) or ()) & set(mapping)
            ]
        return loaded

    def save_pretrained(self, save_directory, *args, **kwargs):
        module = type(self).__module__.rsplit(".", 1)[-1]
        config_class = type(self.config)
        family = config_class.__name__.removesuffix("Config")
        self.config.auto_map = {
            "AutoConfig": f"{config_class.__module__.rsplit('.', 1)[-1]}.{config_class.__name__}",
            **{auto: f"{module}.{family}{suffix}" for auto, suffix in _AUTO_CLASS_SUFFIXES.items()},
        }
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        # transformers guesses this from the modeling source (attention classes written on its AttentionInterface);
        # ours read `config._attn_implementation` each time they run, so switching a built model works.
        return True

    def set_attn_implementation(self, attn_implementation):
        """Switch every attention module to `"sdpa"` (`F.scaled_dot_product_attention`) or `"eager"` (explicit
        softmax(QK^T)V). A dict (`{"": "eager"}`, transformers' per-sub-config form) is read at its "" key."""
        if isinstance(attn_implementation, dict):
            attn_implementation = attn_implementation.get("", next(iter(attn_implementation.values()), None))
        attn_implementation = attn_implementation or "sdpa"
        if attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(
                f'{type(self).__name__}: Specified `attn_implementation="{attn_implementation}"` is not supported: '
                f"attn_implementation must be one of {ATTENTION_IMPLEMENTATIONS}"
            )
        for module in self.modules():
            config = getattr(module, "config", None)
            if config is not None and hasattr(config, "_attn_implementation"):
                config._attn_implementation = attn_implementation

    def _init_weights(self, module: nn.Module) -> None:
        # Families extend this with their own parameters (position embeddings, relative position tables).
        init_backbone_weights(module, self.config.initializer_range)
        init_head_weights(module)

    def _input_model(self) -> nn.Module:
        """The family's base model inside this model (itself, `agent_swin` in the backbone, `backbone.agent_swin` in
        the segmentation model)."""
        return getattr(self, "backbone", self).base_model


class AgentModelMixin:
    """The base model's forward: the family's `stage_maps(pixel_values, output_attentions)` gives the four stage
    maps (B, C_i, H_i, W_i) and the blocks' attention weights; this assembles a `BaseModelOutputWithPooling`."""

    _auto_class = "AutoModel"
    _checkpoint_target = "model"

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        r"""
        Args:
            pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
                Normalized images (Agent-PVT: at least 32x32); another floating dtype than the model's is cast to it.
            output_hidden_states (`bool`, *optional*):
                Return the four stage maps (default `config.output_hidden_states`).
            output_attentions (`bool`, *optional*):
                Return every block's attention weights (default `config.output_attentions`), computed explicitly.
            return_dict (`bool`, *optional*):
                Return a `BaseModelOutputWithPooling` (default `config.return_dict`) instead of a tuple.

        Returns `last_hidden_state` (B, C_4, H/32, W/32), `pooler_output` (B, C_4) (global average), the stage maps
        and the attention weights.
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        pixel_values = check_pixel_values(pixel_values, self.config.num_channels, type(self).__name__, self.dtype)
        feature_maps, attentions = self.stage_maps(pixel_values, output_attentions=output_attentions)
        last = feature_maps[-1]
        return BaseModelOutputWithPooling(
            last_hidden_state=last,
            pooler_output=last.mean(dim=(2, 3)),
            hidden_states=tuple(feature_maps) if output_hidden_states else None,
            attentions=attentions if output_attentions else None,
        )


class AgentBackboneMixin(BackboneMixin):
    """A transformers backbone around the family's base model (its `base_model_prefix` attribute, built by the
    family's `__init__`): `feature_maps` of the stages in `config.out_features` (by default the last stage, as every
    transformers backbone; the segmentation model reads all four)."""

    _auto_class = "AutoBackbone"
    _checkpoint_target = "backbone"
    has_attentions = True

    def __init__(self, config):
        super().__init__(config)
        if hasattr(self, "_init_backbone"):  # transformers < 5.3: BackboneMixin has no __init__
            self._init_backbone(config)
        if "stem" in (config.out_features or []):
            raise ValueError(f"{type(self).__name__}: out_features may name stage1..stage4, not 'stem'")

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> BackboneOutput:
        r"""
        The base model's forward (same arguments, see `AgentModelMixin.forward`), as a `BackboneOutput`
        (default `config.return_dict`; a tuple otherwise): `feature_maps` of the stages in `out_features`, with
        `output_hidden_states` also all four stage maps, with `output_attentions` every block's attention weights.
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        outputs = self.base_model(
            pixel_values, output_hidden_states=True, output_attentions=output_attentions, return_dict=True
        )
        by_stage = dict(zip(self.stage_names[1:], outputs.hidden_states))
        return BackboneOutput(
            feature_maps=tuple(by_stage[name] for name in self.out_features),
            hidden_states=outputs.hidden_states if output_hidden_states else None,
            attentions=outputs.attentions,
        )


class AgentSegmentationMixin:
    """The segmentation forward, as mmseg's `EncoderDecoder`: backbone -> neck (Agent-PVT's FPN; None for Agent-Swin)
    -> decode head, and the auxiliary head (Agent-Swin's FCN; None for Agent-PVT) on the stage
    `config.auxiliary_in_index`. The family's `__init__` builds `backbone`, `neck`, `decode_head` and
    `auxiliary_head`.

    The loss is computed as mmseg does (logits resized to the labels, ignore index, mean over all pixels): CE(decode)
    + `config.auxiliary_loss_weight` * CE(auxiliary). The auxiliary head only serves the loss: like mmseg at test
    time, it runs only when labels are given or `output_auxiliary_logits=True` asks for its `auxiliary_logits`.
    """

    _auto_class = "AutoModelForSemanticSegmentation"
    # Folders of the base model or of the backbone load their backbone weights (the heads start fresh).
    _checkpoint_target = "segmentation"

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        output_auxiliary_logits: bool | None = None,
        **kwargs,
    ) -> AgentSegmenterOutput:
        r"""
        Args:
            pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
                Normalized images (Agent-PVT: at least 32x32); another floating dtype than the model's is cast to it.
            labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
                Class ids in [0, num_labels) or `config.loss_ignore_index`, for the loss.
            output_hidden_states (`bool`, *optional*):
                Return the four backbone stage maps (default `config.output_hidden_states`).
            output_attentions (`bool`, *optional*):
                Return every backbone block's attention weights (default `config.output_attentions`).
            output_auxiliary_logits (`bool`, *optional*):
                Run the auxiliary head, if the model has one, and return its `auxiliary_logits` (B, num_labels, H/16,
                W/16) (default: only when `labels` are given, for the loss).
            return_dict (`bool`, *optional*):
                Return an `AgentSegmenterOutput` (default `config.return_dict`) instead of a tuple.

        Returns `logits` (B, num_labels, H/4, W/4) and, with labels, the `loss`.
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        outputs = self.backbone(
            pixel_values, output_hidden_states=True, output_attentions=output_attentions, return_dict=True
        )
        if labels is not None:
            check_loss_labels(
                labels, pixel_values, self.config.num_labels, self.config.loss_ignore_index, type(self).__name__
            )
        features = outputs.hidden_states  # all four stage maps, whatever config.out_features names
        logits = self.decode_head(self.neck(list(features)) if self.neck is not None else list(features))
        if output_auxiliary_logits is None:
            output_auxiliary_logits = labels is not None
        auxiliary_logits = None
        if self.auxiliary_head is not None and (output_auxiliary_logits or labels is not None):
            auxiliary_logits = self.auxiliary_head(features[self.config.auxiliary_in_index])
        loss = None
        if labels is not None:
            ignore, align = self.config.loss_ignore_index, self.config.align_corners
            loss = segmentation_loss(logits, labels, ignore, align)
            if auxiliary_logits is not None:
                loss = loss + self.config.auxiliary_loss_weight * segmentation_loss(
                    auxiliary_logits, labels, ignore, align
                )
        return AgentSegmenterOutput(
            loss=loss,
            logits=logits,
            auxiliary_logits=auxiliary_logits,
            hidden_states=features if output_hidden_states else None,
            attentions=outputs.attentions,
        )


class AgentImageClassificationMixin:
    """The image classification forward, as the official ImageNet models (`agent_transformer/models`): the base model
    (`base_model_prefix` attribute) -> the family's `pool(last_hidden_state)` (B, C_4) -> `classifier` (a linear
    layer) -> logits. The loss is transformers' for image classification (`config.problem_type`: single-label
    cross-entropy for integer labels, multi-label BCE for float labels, MSE for one regression output).
    """

    _auto_class = "AutoModelForImageClassification"
    # Folders of the base model, backbone or segmentation model load their backbone weights (the head starts fresh).
    _checkpoint_target = "classification"

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        r"""
        Args:
            pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
                Normalized images (at the config's `pretrain_image_size` for the official models' outputs); another
                floating dtype than the model's is cast to it.
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Class ids in [0, num_labels) (or float targets (batch_size, num_labels) for multi-label problems),
                for the loss.
            output_hidden_states (`bool`, *optional*):
                Return the four stage maps (default `config.output_hidden_states`).
            output_attentions (`bool`, *optional*):
                Return every block's attention weights (default `config.output_attentions`).
            return_dict (`bool`, *optional*):
                Return an `ImageClassifierOutput` (default `config.return_dict`) instead of a tuple.

        Returns `logits` (B, num_labels) and, with labels, the `loss`.
        """
        outputs = self.base_model(
            pixel_values,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        logits = self.classifier(self.pool(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = self.loss_function(labels.to(logits.device), logits, self.config)
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "AgentBackboneMixin",
    "AgentImageClassificationMixin",
    "AgentModelMixin",
    "AgentPreTrainedModel",
    "AgentSegmentationMixin",
    "init_backbone_weights",
]
