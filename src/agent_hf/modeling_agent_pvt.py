"""Agent-PVT (Han et al., ECCV 2024) with Semantic FPN, on transformers conventions.

Parameter names inside the backbone follow the official `AgentPVT` (`patch_embed{i}`, `pos_embed{i}`,
`block{i}`), so the paper's checkpoints load by prefix (see `agent_hf.official`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BackboneOutput, BaseModelOutputWithPooling
from transformers.modeling_utils import PreTrainedModel

from .agent_attention import AgentAttention
from .configuration_agent_pvt import AgentPvtConfig
from .heads import FPNNeck, SemanticFPNHead, segmentation_loss
from .layers import (
    AgentSegmenterOutput,
    AutoMapMixin,
    DropPath,
    Mlp,
    add_residual,
    check_pixel_values,
    drop_path_rates,
    init_agent_weights,
)


def pretrain_grids(config: AgentPvtConfig) -> list[int]:
    """Side of each stage's pretraining token grid (56, 28, 14, 7 for 224 px), as the official code derives it."""
    grids = [config.pretrain_image_size // config.patch_size]
    for i in range(1, config.num_stages):
        grids.append(config.pretrain_image_size // (2 ** (i - 1) * config.patch_size) // 2)
    return grids


class AgentPvtPatchEmbed(nn.Module):
    """Strided conv patch embedding (no padding: sizes are floored) -> LayerNorm (eps 1e-5).

    (B, C_in, H, W) -> tokens (B, (H//p) * (W//p), C) and (H//p, W//p).
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        # A channels-last input makes the convolution write channels-last, i.e. tokens (B, N, C) in place.
        x = self.proj(x.contiguous(memory_format=torch.channels_last))
        size = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), size


class PvtSpatialReductionAttention(nn.Module):
    """PVT's softmax attention whose keys/values come from a map reduced `sr_ratio` times by a strided
    conv + LayerNorm (the ``B`` stages). (B, H*W, C) -> (B, H*W, C)."""

    def __init__(self, config: AgentPvtConfig, dim: int, num_heads: int, sr_ratio: int):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.scale = config.qk_scale or (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=config.qkv_bias)
        self.attn_drop = config.attention_probs_dropout_prob
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(config.hidden_dropout_prob)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, tokens, channels = x.shape
        heads, head_dim = self.num_heads, channels // self.num_heads
        query = self.q(x).reshape(batch, tokens, heads, head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            reduced = self.sr(x.transpose(1, 2).reshape(batch, channels, height, width))
            x = self.norm(reduced.flatten(2).transpose(1, 2))
        key, value = self.kv(x).reshape(batch, -1, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        dropout = self.attn_drop if self.training else 0.0
        if self.config._attn_implementation == "eager":
            weights = torch.softmax((query @ key.transpose(-2, -1)) * self.scale, dim=-1)
            output = F.dropout(weights, dropout, self.training) @ value
        else:
            output = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, scale=self.scale)
        return self.proj_drop(self.proj(output.transpose(1, 2).reshape(batch, tokens, channels)))


class AgentPvtBlock(GradientCheckpointingLayer):
    """Pre-norm block with agent attention (``A``) or spatial-reduction attention (``B``). (B, N, C) -> (B, N, C)."""

    def __init__(self, config: AgentPvtConfig, stage: int, drop_path: float, grid: int):
        super().__init__()
        dim, heads = config.embed_dims[stage], config.num_heads[stage]
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        if config.attn_type[stage] == "A":
            sr = config.agent_sr_ratios[stage]
            self.attn = AgentAttention(
                dim,
                heads,
                agent_num=config.agent_num[stage],
                agent_grid=tuple(config.downstream_agent_shapes[stage]),
                table_size=(grid, grid),
                key_table_size=(grid // sr, grid // sr),
                kernel_size=config.agent_kernel_size,
                scale_exponent=config.attention_scale_exponent,
                qkv_bias=config.qkv_bias,
                fused_qkv=False,
                attn_drop=config.attention_probs_dropout_prob,
                proj_drop=config.hidden_dropout_prob,
                config=config,
            )
        else:
            self.attn = PvtSpatialReductionAttention(config, dim, heads, config.sr_ratios[stage])
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratios[stage]), config.hidden_act, config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, height: int, width: int) -> torch.Tensor:
        hidden_states = add_residual(
            hidden_states, self.drop_path(self.attn(self.norm1(hidden_states), height, width))
        )
        return add_residual(hidden_states, self.drop_path(self.mlp(self.norm2(hidden_states))))


class AgentPvtPreTrainedModel(AutoMapMixin, PreTrainedModel):
    config_class = AgentPvtConfig
    _auto_map_classes = {
        "AutoModel": "AgentPvtModel",
        "AutoBackbone": "AgentPvtBackbone",
        "AutoModelForSemanticSegmentation": "AgentPvtForSemanticSegmentation",
    }
    base_model_prefix = "agent_pvt"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["AgentPvtBlock"]
    # forward takes **kwargs: without this, Trainer would scale the loss for DDP / gradient accumulation.
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        init_agent_weights(module, std)
        if isinstance(module, AgentPvtModel):
            for i in range(self.config.num_stages):
                init.trunc_normal_(getattr(module, f"pos_embed{i + 1}"), std=std)


class AgentPvtModel(AgentPvtPreTrainedModel):
    """The Agent-PVT backbone: per stage a patch embedding, a position embedding and blocks.

    `forward(pixel_values (B, 3, H, W))` returns `last_hidden_state` (B, C_4, H/32, W/32) (sizes floored),
    `pooler_output` (B, C_4) and, with `output_hidden_states`, the four stage maps (B, C_i, H_i, W_i).
    """

    _auto_class = "AutoModel"

    def __init__(self, config: AgentPvtConfig):
        super().__init__(config)
        self.grids = pretrain_grids(config)
        rates = drop_path_rates(config.drop_path_rate, config.depths)
        for i in range(config.num_stages):
            in_channels = config.num_channels if i == 0 else config.embed_dims[i - 1]
            patch = config.patch_size if i == 0 else 2
            setattr(self, f"patch_embed{i + 1}", AgentPvtPatchEmbed(in_channels, config.embed_dims[i], patch))
            setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, self.grids[i] ** 2, config.embed_dims[i])))
            setattr(self, f"pos_drop{i + 1}", nn.Dropout(config.hidden_dropout_prob))
            blocks = nn.ModuleList(AgentPvtBlock(config, i, rate, self.grids[i]) for rate in rates[i])
            setattr(self, f"block{i + 1}", blocks)
        self.post_init()

    def position_embedding(self, stage: int, height: int, width: int) -> torch.Tensor:
        """Stage position embedding (1, H*W, C), bilinearly resized from the pretraining grid."""
        table, grid = getattr(self, f"pos_embed{stage + 1}"), self.grids[stage]
        # The official code skips the resize whenever H*W equals stage 1's pretraining token count, even for
        # another aspect ratio (a 28x112 map reuses the 56x56 table row-major); reproduced for stage 1.
        if (height, width) == (grid, grid) or (stage == 0 and height * width == grid * grid):
            return table
        table = table.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        return (
            F.interpolate(table, size=(height, width), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
        )

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        check_pixel_values(pixel_values, self.config.num_channels, type(self).__name__)
        min_side = self.config.patch_size * 2 ** (self.config.num_stages - 1)
        if min(pixel_values.shape[-2:]) < min_side:
            raise ValueError(
                f"{type(self).__name__}: images must be at least {min_side}x{min_side} pixels "
                f"(got {tuple(pixel_values.shape[-2:])}): every stage needs at least one token"
            )
        x, feature_maps = pixel_values, []
        for i in range(self.config.num_stages):
            x, (height, width) = getattr(self, f"patch_embed{i + 1}")(x)
            x = getattr(self, f"pos_drop{i + 1}")(x + self.position_embedding(i, height, width))
            for block in getattr(self, f"block{i + 1}"):
                x = block(x, height, width)
            # The next patch embedding reads the channels-last view in place; the heads get the usual
            # contiguous (B, C, H, W) maps (their convolutions train slower on channels-last inputs).
            x = x.reshape(x.shape[0], height, width, -1).permute(0, 3, 1, 2)
            feature_maps.append(x.contiguous())
        last = feature_maps[-1]
        output = BaseModelOutputWithPooling(
            last_hidden_state=last,
            pooler_output=last.mean(dim=(2, 3)),
            hidden_states=tuple(feature_maps) if output_hidden_states else None,
        )
        return output if (return_dict if return_dict is not None else self.config.return_dict) else output.to_tuple()


class AgentPvtBackbone(BackboneMixin, AgentPvtPreTrainedModel):
    """Agent-PVT as a transformers backbone: `feature_maps` of the stages in `config.out_features`."""

    _auto_class = "AutoBackbone"

    def __init__(self, config: AgentPvtConfig):
        super().__init__(config)
        self.agent_pvt = AgentPvtModel(config)
        self.num_features = [config.embed_dims[0]] + list(config.embed_dims)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        maps = self.agent_pvt(pixel_values, output_hidden_states=True, return_dict=True).hidden_states
        by_stage = dict(zip(self.stage_names[1:], maps))
        output = BackboneOutput(
            feature_maps=tuple(by_stage[name] for name in self.out_features),
            hidden_states=maps if output_hidden_states else None,
        )
        return output if (return_dict if return_dict is not None else self.config.return_dict) else output.to_tuple()


class AgentPvtForSemanticSegmentation(AgentPvtPreTrainedModel):
    """Agent-PVT + FPN neck + Semantic FPN head, as in the paper.

    `forward(pixel_values (B, 3, H, W), labels (B, H', W') optional)` returns `logits` (B, num_labels, H/4, W/4)
    and, with labels, the mmseg cross-entropy `loss` (logits resized to the labels, ignore index, mean over pixels).
    """

    _auto_class = "AutoModelForSemanticSegmentation"

    def __init__(self, config: AgentPvtConfig):
        super().__init__(config)
        self.backbone = AgentPvtBackbone(config)
        self.neck = FPNNeck(config.embed_dims, config.fpn_hidden_size)
        self.decode_head = SemanticFPNHead(
            [config.fpn_hidden_size] * config.num_stages,
            config.decoder_hidden_size,
            config.num_labels,
            feature_strides=config.feature_strides,
            dropout=config.classifier_dropout,
            align_corners=config.align_corners,
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> AgentSegmenterOutput:
        features = self.backbone(pixel_values, return_dict=True).feature_maps
        logits = self.decode_head(self.neck(list(features)))
        loss = None
        if labels is not None:
            loss = segmentation_loss(logits, labels, self.config.loss_ignore_index, self.config.align_corners)
        output = AgentSegmenterOutput(
            loss=loss, logits=logits, hidden_states=tuple(features) if output_hidden_states else None
        )
        return output if (return_dict if return_dict is not None else self.config.return_dict) else output.to_tuple()


__all__ = ["AgentPvtBackbone", "AgentPvtForSemanticSegmentation", "AgentPvtModel", "AgentPvtPreTrainedModel"]
