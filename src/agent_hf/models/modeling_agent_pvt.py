"""Agent-PVT (Han et al., ECCV 2024) with Semantic FPN, on transformers conventions.

Parameter names inside the blocks follow the official `AgentPVT`; its per-stage attributes `patch_embed{i}`,
`pos_embed{i}` and `block{i}` are `stages.{i-1}.patch_embed`, `.pos_embed` and `.blocks` here, and
`_checkpoint_key_mapping` renames them when an official checkpoint (see `agent_hf.official`) or a folder written
by agent-hf 0.1.0 is loaded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# transformers 4.57 and 5.0 copy only the siblings a model file imports itself when they load a local folder: the
# modules imported below with `noqa: F401` are used through this module's other imports, and imported here so that
# they are copied too.
from .agent_attention import AgentAttention  # noqa: F401
from .agent_attention_biases import AgentBiasFactors  # noqa: F401
from .agent_attention_fast import fast_agent_attention  # noqa: F401
from .agent_attention_kernels import fused_agent_attention  # noqa: F401
from .blocks import AgentBlock, AgentDropPath, AgentMlp, agent_attention_from_config, drop_path_rates, run_blocks
from .checkpoint_keys import checkpoint_key_mapping  # noqa: F401
from .configuration_agent_common import PreTrainedConfig  # noqa: F401
from .configuration_agent_pvt import AgentPvtConfig
from .conv_inference import conv2d_inference  # noqa: F401
from .export_ops import is_exporting
from .heads import AgentFPNNeck, AgentSemanticFPNHead
from .input_checks import check_pixel_values  # noqa: F401
from .loss import segmentation_loss  # noqa: F401
from .modeling_agent_common import (
    AgentBackboneMixin,
    AgentImageClassificationMixin,
    AgentModelMixin,
    AgentPreTrainedModel,
    AgentSegmentationMixin,
)
from .modeling_outputs import AgentSegmenterOutput  # noqa: F401
from .weight_init import init


def pretrain_grids(config: AgentPvtConfig) -> list[int]:
    """Side of each stage's pretraining token grid (56, 28, 14, 7 for 224 px), as the official code derives it."""
    grids = [config.pretrain_image_size // config.patch_size]
    for i in range(1, config.num_stages):
        grids.append(config.pretrain_image_size // (2 ** (i - 1) * config.patch_size) // 2)
    return grids


class AgentPvtPatchEmbed(nn.Module):
    """Strided conv patch embedding (no padding: sizes are floored) -> LayerNorm (eps 1e-5).

    Args:
        in_channels (`int`): channels of the input map.
        embed_dim (`int`): channels C of the tokens.
        patch_size (`int`): kernel and stride of the convolution.

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


class AgentPvtSpatialReductionAttention(nn.Module):
    """PVT's softmax attention whose keys/values come from a map reduced `sr_ratio` times by a strided
    conv + LayerNorm (the ``B`` stages). (B, H*W, C) -> (B, H*W, C).

    Adapted from PVT (Wang et al., ICCV 2021) `Attention` with spatial reduction, as the official Agent-PVT uses
    it; parameter names as in its checkpoints.

    Args:
        config (`AgentPvtConfig`): the model config (biases, dropout, attention implementation).
        dim (`int`): channels C.
        num_heads (`int`): heads h.
        sr_ratio (`int`): spatial reduction of the keys/values (1: none).
    """

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

    def forward(self, x: torch.Tensor, height: int, width: int, output_attentions: bool = False):
        """Tokens x (B, H*W, C) of a (height, width) map -> (B, H*W, C); with `output_attentions`, also the weights
        (B, h, H*W, H*W / sr_ratio**2) (computed explicitly)."""
        batch, tokens, channels = x.shape
        heads, head_dim = self.num_heads, channels // self.num_heads
        query = self.q(x).reshape(batch, tokens, heads, head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            reduced = self.sr(x.transpose(1, 2).reshape(batch, channels, height, width))
            x = self.norm(reduced.flatten(2).transpose(1, 2))
        key, value = self.kv(x).reshape(batch, -1, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        dropout = self.attn_drop if self.training else 0.0
        weights = None
        if self.config._attn_implementation == "eager" or output_attentions:
            weights = torch.softmax((query @ key.transpose(-2, -1)) * self.scale, dim=-1)
            output = F.dropout(weights, dropout, self.training) @ value
        else:
            output = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, scale=self.scale)
        output = self.proj_drop(self.proj(output.transpose(1, 2).reshape(batch, tokens, channels)))
        return (output, weights) if output_attentions else output


class AgentPvtBlock(AgentBlock):
    """Pre-norm block with agent attention (``A``) or spatial-reduction attention (``B``). (B, N, C) -> (B, N, C).

    Args:
        config (`AgentPvtConfig`): the model config.
        stage (`int`): 0-based stage of the block.
        drop_path (`float`): stochastic depth of the block.
        grid (`int`): side of the stage's pretraining token grid (the agent bias tables' size).
    """

    def __init__(self, config: AgentPvtConfig, stage: int, drop_path: float, grid: int):
        super().__init__()
        dim, heads = config.embed_dims[stage], config.num_heads[stage]
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        if config.attn_type[stage] == "A":
            sr = config.agent_sr_ratios[stage]
            self.attn = agent_attention_from_config(
                config, stage, dim, heads, (grid, grid), key_table_size=(grid // sr, grid // sr), fused_qkv=False
            )
        else:
            self.attn = AgentPvtSpatialReductionAttention(config, dim, heads, config.sr_ratios[stage])
        self.drop_path = AgentDropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = AgentMlp(dim, int(dim * config.mlp_ratios[stage]), config.hidden_act, config.hidden_dropout_prob)

    def attention(self, x: torch.Tensor, height: int, width: int, output_attentions: bool = False):
        """Normalized tokens x (B, H*W, C) -> (B, H*W, C); with `output_attentions`, also the attention weights: a
        tuple (agent_to_token (B, h, n, H*W), token_to_agent (B, h, H*W, n)) for an agent block, the
        spatial-reduction weights (B, h, H*W, H*W / sr_ratio**2) otherwise."""
        return self.attn(x, height, width, output_attentions=output_attentions)


class AgentPvtStage(nn.Module):
    """One stage: patch embedding, position embedding (learned at pretraining, resized to the input), blocks.

    Args:
        config (`AgentPvtConfig`): the model config.
        stage (`int`): 0-based stage index.
        grid (`int`): side of the stage's pretraining token grid.
        drop_paths (`list[float]`): stochastic depth of each block.
    """

    def __init__(self, config: AgentPvtConfig, stage: int, grid: int, drop_paths: list[float]):
        super().__init__()
        self.stage = stage
        self.grid = grid
        in_channels = config.num_channels if stage == 0 else config.embed_dims[stage - 1]
        patch = config.patch_size if stage == 0 else 2
        self.patch_embed = AgentPvtPatchEmbed(in_channels, config.embed_dims[stage], patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid**2, config.embed_dims[stage]))
        self.pos_drop = nn.Dropout(config.hidden_dropout_prob)
        self.blocks = nn.ModuleList(AgentPvtBlock(config, stage, rate, grid) for rate in drop_paths)

    def position_embedding(self, height: int, width: int) -> torch.Tensor:
        """The stage's position embedding (1, H*W, C), bilinearly resized from the pretraining grid."""
        table, grid = self.pos_embed, self.grid
        if is_exporting():
            return self._traced_position_embedding(height, width)
        # The official code skips the resize whenever H*W equals stage 1's pretraining token count, even for
        # another aspect ratio (a 28x112 map reuses the 56x56 table row-major); reproduced for stage 1.
        if (height, width) == (grid, grid) or (self.stage == 0 and height * width == grid * grid):
            return table
        table = table.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        return (
            F.interpolate(table, size=(height, width), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
        )

    def _traced_position_embedding(self, height, width) -> torch.Tensor:
        """`position_embedding` for symbolic sizes (torch.export): always resized, which is exact for (grid, grid)
        (a bilinear resize to the same size copies). Stage 1's other reuse of the table (same token count, another
        aspect ratio) would need the graph to compare sizes, so the exported model resizes there too: it differs
        from the eager one only for maps of exactly grid**2 tokens that are not square (e.g. 112x448 pixels for
        56x56 grids), which the test pipeline's 2048x512 resize does not produce."""
        table = self.pos_embed.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        return (
            F.interpolate(table, size=(height, width), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
        )

    def forward(self, x: torch.Tensor, output_attentions: bool = False):
        """Map x (B, C_in, H, W) -> (this stage's map (B, C, H', W'), the blocks' attention weights (a tuple, empty
        without `output_attentions`))."""
        x, (height, width) = self.patch_embed(x)
        x = self.pos_drop(x + self.position_embedding(height, width))
        x, attentions = run_blocks(self.blocks, x, height, width, output_attentions=output_attentions)
        # The next patch embedding reads the channels-last view in place; the heads get the usual
        # contiguous (B, C, H, W) maps (their convolutions train slower on channels-last inputs).
        return x.reshape(x.shape[0], height, width, -1).permute(0, 3, 1, 2), attentions


class AgentPvtPreTrainedModel(AgentPreTrainedModel):
    config_class = AgentPvtConfig
    # Where the base model sits in `AgentPvtBackbone`; the segmentation model holds it at `backbone.agent_pvt`,
    # which `_checkpoint_key_mapping` handles for folders of the other classes.
    base_model_prefix = "agent_pvt"
    _no_split_modules = ["AgentPvtBlock"]
    # agent-hf 0.1.0 and the official code named the per-stage attributes `patch_embed{i}`, `pos_embed{i}` and
    # `block{i}` (1-based); they are `stages.{i-1}.patch_embed`, `.pos_embed` and `.blocks` now.
    _legacy_key_names = {
        rule: target
        for i in range(1, 9)
        for rule, target in (
            (rf"patch_embed{i}\.", f"stages.{i - 1}.patch_embed."),
            (rf"pos_embed{i}$", f"stages.{i - 1}.pos_embed"),
            (rf"block{i}\.", f"stages.{i - 1}.blocks."),
        )
    }
    # The first name of every key of a bare `AgentPvtModel`.
    _base_model_keys = r"(?:stages|patch_embed\d|pos_embed\d|block\d)\b"

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, AgentPvtStage):
            init.trunc_normal_(module.pos_embed, std=self.config.initializer_range)

    def get_input_embeddings(self) -> nn.Module:
        """The first patch embedding's convolution (its output (B, C, H/4, W/4) is what `enable_input_require_grads`
        marks)."""
        return self._input_model().stages[0].patch_embed.proj


class AgentPvtModel(AgentModelMixin, AgentPvtPreTrainedModel):
    """The Agent-PVT backbone: per stage a patch embedding, a position embedding and blocks.

    `forward(pixel_values (B, 3, H, W))` returns `last_hidden_state` (B, C_4, H/32, W/32) (sizes floored),
    `pooler_output` (B, C_4), with `output_hidden_states` the four stage maps (B, C_i, H_i, W_i), and with
    `output_attentions` one entry per block (see `AgentPvtBlock.forward`).
    """

    def __init__(self, config: AgentPvtConfig):
        super().__init__(config)
        self.grids = pretrain_grids(config)
        rates = drop_path_rates(config.drop_path_rate, config.depths)
        self.stages = nn.ModuleList(
            AgentPvtStage(config, i, self.grids[i], rates[i]) for i in range(config.num_stages)
        )
        self.post_init()

    def stage_maps(self, pixel_values: torch.Tensor, output_attentions: bool = False) -> tuple[list, tuple]:
        """Checked `pixel_values` (B, 3, H, W), at least 32x32 -> (the four stage maps (B, C_i, H_i, W_i), the
        blocks' attention weights (a tuple, empty without `output_attentions`))."""
        min_side = self.config.patch_size * 2 ** (self.config.num_stages - 1)
        if min(pixel_values.shape[-2:]) < min_side:
            raise ValueError(
                f"{type(self).__name__}: images must be at least {min_side}x{min_side} pixels "
                f"(got {tuple(pixel_values.shape[-2:])}): every stage needs at least one token"
            )
        x, feature_maps, attentions = pixel_values, [], ()
        for stage in self.stages:
            x, stage_attentions = stage(x, output_attentions=output_attentions)
            attentions += stage_attentions
            feature_maps.append(x.contiguous())
        return feature_maps, attentions


class AgentPvtBackbone(AgentBackboneMixin, AgentPvtPreTrainedModel):
    """Agent-PVT as a transformers backbone (see `AgentBackboneMixin`)."""

    def __init__(self, config: AgentPvtConfig):
        super().__init__(config)
        self.agent_pvt = AgentPvtModel(config)
        self.num_features = [config.embed_dims[0]] + list(config.embed_dims)
        self.post_init()


class AgentPvtForSemanticSegmentation(AgentSegmentationMixin, AgentPvtPreTrainedModel):
    """Agent-PVT + FPN neck + Semantic FPN head, as in the paper.

    `forward(pixel_values (B, 3, H, W), labels (B, H', W') optional)` returns `logits` (B, num_labels, H/4, W/4)
    and, with labels, the mmseg cross-entropy `loss` (logits resized to the labels, ignore index, mean over pixels).
    """

    def __init__(self, config: AgentPvtConfig):
        super().__init__(config)
        self.backbone = AgentPvtBackbone(config)
        self.neck = AgentFPNNeck(config.embed_dims, config.fpn_hidden_size)
        self.decode_head = AgentSemanticFPNHead(
            [config.fpn_hidden_size] * config.num_stages,
            config.decoder_hidden_size,
            config.num_labels,
            feature_strides=config.feature_strides,
            dropout=config.classifier_dropout,
            align_corners=config.align_corners,
        )
        self.auxiliary_head = None  # Semantic FPN is trained without one
        self.post_init()


class AgentPvtForImageClassification(AgentImageClassificationMixin, AgentPvtPreTrainedModel):
    """Agent-PVT + the official ImageNet head: the last stage's tokens averaged (no final norm), linear classifier,
    as the official classification model (`PyramidVisionTransformer` of `agent_transformer/models/agent_pvt.py`).

    `forward(pixel_values (B, 3, H, W), labels (B,) optional)` returns `logits` (B, num_labels) and, with labels, the
    `loss` (see `AgentImageClassificationMixin`).
    """

    def __init__(self, config: AgentPvtConfig):
        super().__init__(config)
        self.agent_pvt = AgentPvtModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def pool(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """The last stage's map (B, C, H, W) -> its tokens averaged: (B, C)."""
        return last_hidden_state.mean(dim=(2, 3))


__all__ = [
    "AgentPvtBackbone",
    "AgentPvtForImageClassification",
    "AgentPvtForSemanticSegmentation",
    "AgentPvtModel",
    "AgentPvtPreTrainedModel",
]
