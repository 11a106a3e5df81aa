"""Agent-Swin Transformer (Han et al., ECCV 2024) with UperNet, on transformers conventions.

Parameter names inside the backbone follow the official `AgentSwinTransformer`, so the paper's
checkpoints load by prefix (see `agent_hf.official`).
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
from .configuration_agent_swin import AgentSwinConfig
from .conv_inference import conv2d_inference  # noqa: F401
from .export_ops import ceil_to, is_exporting, size_oblivious_trace
from .heads import AgentFCNHead, AgentUperNetHead
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
from .weight_init import copy_into, init


class AgentSwinPatchEmbed(nn.Module):
    """Non-overlapping patches (padded at the right/bottom to a multiple of the patch size) -> LayerNorm.

    Args:
        config (`AgentSwinConfig`): the model config (patch size, channels, width, `patch_norm`).

    (B, 3, H, W) -> tokens (B, ceil(H/p) * ceil(W/p), C) and their (height, width).
    """

    def __init__(self, config: AgentSwinConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.proj = nn.Conv2d(
            config.num_channels, config.embed_dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps) if config.patch_norm else None

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        height, width = pixel_values.shape[-2:]
        # Pads written as whole patches minus size (equal to -size % patch): simpler symbolic sizes for torch.export.
        pad_w, pad_h = ceil_to(width, self.patch_size) - width, ceil_to(height, self.patch_size) - height
        if is_exporting() or pad_w or pad_h:  # exporting: pad by a symbolic amount (maybe 0)
            pixel_values = F.pad(pixel_values, (0, pad_w, 0, pad_h))
        # A channels-last input makes the convolution write channels-last, i.e. tokens (B, N, C) in place.
        x = self.proj(pixel_values.contiguous(memory_format=torch.channels_last))
        size = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        return (self.norm(x) if self.norm is not None else x), size


# Adapted from Swin Transformer (Liu et al., ICCV 2021; microsoft/Swin-Transformer `WindowAttention`): the
# relative position index of the window attention.
def relative_position_index(window: int) -> torch.Tensor:
    """(w*w, w*w) index into the (2w-1)^2 relative position bias table for each pair of window tokens."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return relative[..., 0] * (2 * window - 1) + relative[..., 1]


class AgentSwinWindowAttention(nn.Module):
    """Swin's window softmax attention with a relative position bias, for the `B` blocks.

    Adapted from Swin Transformer (Liu et al., ICCV 2021) `WindowAttention`, as the official Agent-Swin uses it;
    parameter names as in its checkpoints.

    Args:
        config (`AgentSwinConfig`): the model config (window size, biases, dropout, attention implementation).
        dim (`int`): channels C.
        num_heads (`int`): heads h.
    """

    def __init__(self, config: AgentSwinConfig, dim: int, num_heads: int):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = config.qk_scale or head_dim**-0.5
        window = config.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=config.qkv_bias)
        self.attn_drop = config.attention_probs_dropout_prob
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None, output_attentions: bool = False):
        """Attention within each window.

        Args:
            windows (`torch.Tensor` of shape `(batch_size, num_windows, window_size**2, dim)`): the windows' tokens.
            mask (`torch.Tensor` of shape `(num_windows, window_size**2, window_size**2)`, *optional*): shift mask
                of 0 / -100.
            output_attentions (`bool`): also return the weights (B, nW, h, w*w, w*w) (computed explicitly).

        Returns windows of the input's shape, and the weights with `output_attentions`.
        """
        batch, num_windows, tokens, channels = windows.shape
        qkv = self.qkv(windows).reshape(batch, num_windows, tokens, 3, self.num_heads, channels // self.num_heads)
        query, key, value = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, nW, h, N, d)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(tokens, tokens, self.num_heads).permute(2, 0, 1)  # (h, N, N)
        if mask is not None:
            bias = bias + mask.unsqueeze(1)  # (nW, h, N, N)
        bias = bias.to(query.dtype)
        dropout = self.attn_drop if self.training else 0.0
        weights = None
        # Exporting: written out too, as the ONNX exporter's SDPA takes 4-D inputs only (these are 5-D).
        if self.config._attn_implementation == "eager" or output_attentions or is_exporting():
            weights = torch.softmax((query * self.scale) @ key.transpose(-2, -1) + bias, dim=-1)
            output = F.dropout(weights, dropout, self.training) @ value
        else:
            output = F.scaled_dot_product_attention(
                query, key, value, attn_mask=bias, dropout_p=dropout, scale=self.scale
            )
        output = output.transpose(2, 3).reshape(batch, num_windows, tokens, channels)
        output = self.proj_drop(self.proj(output))
        return (output, weights) if output_attentions else output


# Adapted from Swin Transformer (Liu et al., ICCV 2021): the attention mask of the shifted windows (regions of
# the cyclically rolled map that were not neighbors get -100).
def shifted_window_mask(height: int, width: int, window: int, shift: int, device) -> torch.Tensor:
    """(nW, w*w, w*w) mask: 0 between tokens of the same region of the rolled map, -100 otherwise."""

    def regions(size):
        index = torch.arange(size, device=device)
        return (index >= size - window).long() + (index >= size - shift).long()

    region = regions(height)[:, None] * 3 + regions(width)[None, :]
    region = (
        region.view(height // window, window, width // window, window)
        .transpose(1, 2)
        .clone(memory_format=torch.contiguous_format)
        .view(-1, window * window)
    )
    return (region[:, :, None] != region[:, None, :]).float() * -100.0


class AgentSwinBlock(AgentBlock):
    """Pre-norm transformer block with agent attention over the whole map (`A`) or shifted-window
    attention (`B`; windows padded at the right/bottom, shift of half a window on odd blocks).

    Args:
        config (`AgentSwinConfig`): the model config.
        stage (`int`): 0-based stage of the block.
        index (`int`): 0-based index of the block in its stage (window blocks shift on odd indices).
        drop_path (`float`): stochastic depth of the block.

    (B, H*W, C) -> (B, H*W, C).
    """

    def __init__(self, config: AgentSwinConfig, stage: int, index: int, drop_path: float):
        super().__init__()
        dim = config.embed_dim * 2**stage
        heads = config.num_heads[stage]
        self.attention_type = config.block_attention_types[stage][index]
        self.window_size = config.window_size
        self.shift_size = config.window_size // 2 if (self.attention_type == "B" and index % 2 == 1) else 0
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        if self.attention_type == "A":
            table = config.pretrain_image_size // config.patch_size // 2**stage
            self.attn = agent_attention_from_config(config, stage, dim, heads, (table, table), fused_qkv=True)
        else:
            self.attn = AgentSwinWindowAttention(config, dim, heads)
        self.drop_path = AgentDropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = AgentMlp(dim, int(dim * config.mlp_ratio), config.hidden_act, config.hidden_dropout_prob)

    def window_attention(self, x: torch.Tensor, height: int, width: int, output_attentions: bool = False):
        """Shifted-window attention over a (height, width) map of tokens x (B, H*W, C), padded to whole windows.
        Returns (B, H*W, C) and, with `output_attentions`, the windows' weights (B, nW, h, w*w, w*w)."""
        if is_exporting():  # one program for maps of one window per side and of several
            with size_oblivious_trace():
                return self._window_attention(x, height, width, output_attentions)
        return self._window_attention(x, height, width, output_attentions)

    def _window_attention(self, x: torch.Tensor, height: int, width: int, output_attentions: bool = False):
        # The partitions below copy (clone, then view) where `reshape` would decide between a view and a copy from
        # the sizes: while exporting, that decision would be a guard on the number of windows.
        # Adapted from Swin Transformer (Liu et al., ICCV 2021) `SwinTransformerBlock`: pad, cyclic shift,
        # window partition, attention, window reverse, reverse shift, crop.
        batch, _, channels = x.shape
        window, shift = self.window_size, self.shift_size
        x = x.view(batch, height, width, channels)
        pad_b, pad_r = ceil_to(height, window) - height, ceil_to(width, window) - width
        if is_exporting() or pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        padded_h, padded_w = height + pad_b, width + pad_r
        mask = None
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            mask = shifted_window_mask(padded_h, padded_w, window, shift, x.device)
        rows, cols = padded_h // window, padded_w // window
        windows = (
            x.view(batch, rows, window, cols, window, channels)
            .transpose(2, 3)
            .clone(memory_format=torch.contiguous_format)
            .view(batch, rows * cols, window * window, channels)
        )
        weights = None
        if output_attentions:
            windows, weights = self.attn(windows, mask, output_attentions=True)
        else:
            windows = self.attn(windows, mask)
        x = (
            windows.view(batch, rows, cols, window, window, channels)
            .transpose(2, 3)
            .clone(memory_format=torch.contiguous_format)
            .view(batch, padded_h, padded_w, channels)
        )
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        if is_exporting():  # the crop as a copy: a slice would guard on whether the map was padded
            x = x.index_select(1, torch.arange(height, device=x.device))
            x = x.index_select(2, torch.arange(width, device=x.device))
        x = x[:, :height, :width, :].reshape(batch, height * width, channels)
        return (x, weights) if output_attentions else x

    def attention(self, x: torch.Tensor, height: int, width: int, output_attentions: bool = False):
        """Normalized tokens x (B, H*W, C) -> (B, H*W, C); with `output_attentions`, also the attention weights: a
        tuple (agent_to_token (B, h, n, H*W), token_to_agent (B, h, H*W, n)) for an agent block, the windows' weights
        (B, nW, h, w*w, w*w) for a window block."""
        if self.attention_type == "A":
            return self.attn(x, height, width, output_attentions=output_attentions)
        return self.window_attention(x, height, width, output_attentions=output_attentions)


class AgentSwinPatchMerging(nn.Module):
    """2x2 neighborhood concat (odd sizes padded) -> LayerNorm(4C) -> Linear(4C, 2C, no bias).

    Adapted from Swin Transformer (Liu et al., ICCV 2021) `PatchMerging`; parameter names as in its checkpoints.

    Args:
        config (`AgentSwinConfig`): the model config.
        dim (`int`): channels C of the input tokens.

    (B, H*W, C) -> (B, ceil(H/2) * ceil(W/2), 2C) and the new (height, width).
    """

    def __init__(self, config: AgentSwinConfig, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, tuple[int, int]]:
        batch, _, channels = x.shape
        x = x.view(batch, height, width, channels)
        if is_exporting() or height % 2 or width % 2:
            x = F.pad(x, (0, 0, 0, ceil_to(width, 2) - width, 0, ceil_to(height, 2) - height))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        size = (x.shape[1], x.shape[2])
        return self.reduction(self.norm(x.view(batch, -1, 4 * channels))), size


class AgentSwinStage(nn.Module):
    """The blocks of one stage and the patch merging that ends it (none after the last stage).

    Args:
        config (`AgentSwinConfig`): the model config.
        stage (`int`): 0-based stage index.
        drop_paths (`list[float]`): stochastic depth of each block.
    """

    def __init__(self, config: AgentSwinConfig, stage: int, drop_paths: list[float]):
        super().__init__()
        self.blocks = nn.ModuleList(AgentSwinBlock(config, stage, i, rate) for i, rate in enumerate(drop_paths))
        last = stage == config.num_layers - 1
        self.downsample = None if last else AgentSwinPatchMerging(config, config.embed_dim * 2**stage)

    def forward(self, x: torch.Tensor, size: tuple[int, int], output_attentions: bool = False):
        """Tokens x (B, H*W, C) of a map of `size` (H, W). Returns (input of the next stage, its size, this stage's
        output, its size, the blocks' attention weights (a tuple, empty without `output_attentions`))."""
        x, attentions = run_blocks(self.blocks, x, *size, output_attentions=output_attentions)
        if self.downsample is None:
            return x, size, x, size, attentions
        down, down_size = self.downsample(x, *size)
        return down, down_size, x, size, attentions


class AgentSwinPreTrainedModel(AgentPreTrainedModel):
    config_class = AgentSwinConfig
    # Where the base model sits in `AgentSwinBackbone`; the segmentation model holds it at `backbone.agent_swin`,
    # which `_checkpoint_key_mapping` handles for folders of the other classes.
    base_model_prefix = "agent_swin"
    _no_split_modules = ["AgentSwinBlock"]
    # agent-hf 0.1.0 and the official code named the per-stage output norms `norm{i}`; they are `norms.{i}` now.
    _legacy_key_names = {rf"norm{i}\.": f"norms.{i}." for i in range(8)}
    # The first name of every key of a bare `AgentSwinModel`.
    _base_model_keys = r"(?:patch_embed|absolute_pos_embed|layers|norms?\d*)\b"

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, AgentSwinWindowAttention):
            init.trunc_normal_(module.relative_position_bias_table, std=std)
            # A non-persistent buffer: recomputed here because from_pretrained builds the model on the meta device.
            copy_into(module.relative_position_index, relative_position_index(self.config.window_size))
        elif isinstance(module, AgentSwinModel) and module.absolute_pos_embed is not None:
            init.trunc_normal_(module.absolute_pos_embed, std=std)

    def get_input_embeddings(self) -> nn.Module:
        """The patch embedding's convolution (`enable_input_require_grads` hooks its output (B, C, H/4, W/4))."""
        return self._input_model().patch_embed.proj


class AgentSwinModel(AgentModelMixin, AgentSwinPreTrainedModel):
    """The Agent-Swin backbone: patch embedding, four stages, and a LayerNorm on each stage output.

    `forward(pixel_values (B, 3, H, W))` returns `last_hidden_state` (B, C_4, H/32, W/32), `pooler_output`
    (B, C_4, global average), with `output_hidden_states` the four normalized stage maps (B, C_i, H_i, W_i),
    and with `output_attentions` one entry per block (see `AgentSwinBlock.forward`).
    """

    def __init__(self, config: AgentSwinConfig):
        super().__init__(config)
        self.patch_embed = AgentSwinPatchEmbed(config)
        self.absolute_pos_embed = None
        if config.use_absolute_embeddings:
            grid = config.pretrain_image_size // config.patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, grid * grid, config.embed_dim))
        self.pos_drop = nn.Dropout(config.hidden_dropout_prob)
        rates = drop_path_rates(config.drop_path_rate, config.depths)
        self.layers = nn.ModuleList(AgentSwinStage(config, i, rates[i]) for i in range(config.num_layers))
        self.num_features = [config.embed_dim * 2**i for i in range(config.num_layers)]
        self.norms = nn.ModuleList(nn.LayerNorm(channels, eps=config.layer_norm_eps) for channels in self.num_features)
        self.post_init()

    def _absolute_position(self, size: tuple[int, int]) -> torch.Tensor:
        grid = self.config.pretrain_image_size // self.config.patch_size
        if size == (grid, grid):
            return self.absolute_pos_embed
        table = self.absolute_pos_embed.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        return F.interpolate(table, size=size, mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)

    def stage_maps(self, pixel_values: torch.Tensor, output_attentions: bool = False) -> tuple[list, tuple]:
        """Checked `pixel_values` (B, 3, H, W) -> (the four normalized stage maps (B, C_i, H_i, W_i), the blocks'
        attention weights (a tuple, empty without `output_attentions`))."""
        x, size = self.patch_embed(pixel_values)
        if self.absolute_pos_embed is not None:
            x = x + self._absolute_position(size)
        x = self.pos_drop(x)
        feature_maps, attentions = [], ()
        for stage, norm, channels in zip(self.layers, self.norms, self.num_features):
            x, size, out, out_size, stage_attentions = stage(x, size, output_attentions=output_attentions)
            attentions += stage_attentions
            out = norm(out)
            feature_maps.append(out.view(-1, *out_size, channels).permute(0, 3, 1, 2).contiguous())
        return feature_maps, attentions


class AgentSwinBackbone(AgentBackboneMixin, AgentSwinPreTrainedModel):
    """Agent-Swin as a transformers backbone (see `AgentBackboneMixin`)."""

    def __init__(self, config: AgentSwinConfig):
        super().__init__(config)
        self.agent_swin = AgentSwinModel(config)
        self.num_features = [config.embed_dim] + self.agent_swin.num_features
        self.post_init()


class AgentSwinForSemanticSegmentation(AgentSegmentationMixin, AgentSwinPreTrainedModel):
    """Agent-Swin + UperNet (+ auxiliary FCN head on stage 3 for the loss), as in the paper.

    `forward(pixel_values (B, 3, H, W), labels (B, H', W') optional)` returns `logits` (B, num_labels, H/4, W/4)
    and, with labels, `loss` = CE(decode) + auxiliary_loss_weight * CE(auxiliary), each computed as mmseg does
    (logits resized to the labels, ignore index, mean over all pixels). The auxiliary head only serves the loss:
    like mmseg at test time, it runs only when labels are given or `output_auxiliary_logits=True` asks for its
    `auxiliary_logits`.
    """

    def __init__(self, config: AgentSwinConfig):
        super().__init__(config)
        self.backbone = AgentSwinBackbone(config)
        self.neck = None  # UperNet reads the backbone's maps directly
        channels = [config.embed_dim * 2**i for i in range(config.num_layers)]
        self.decode_head = AgentUperNetHead(
            channels,
            config.decoder_hidden_size,
            config.num_labels,
            pool_scales=config.pool_scales,
            dropout=config.classifier_dropout,
            align_corners=config.align_corners,
        )
        self.auxiliary_head = None
        if config.use_auxiliary_head:
            self.auxiliary_head = AgentFCNHead(
                channels[config.auxiliary_in_index],
                config.auxiliary_channels,
                config.num_labels,
                num_convs=config.auxiliary_num_convs,
                concat_input=config.auxiliary_concat_input,
                dropout=config.classifier_dropout,
            )
        self.post_init()


class AgentSwinForImageClassification(AgentImageClassificationMixin, AgentSwinPreTrainedModel):
    """Agent-Swin + the official ImageNet head: final LayerNorm, average pooling over the tokens, linear classifier.

    As the official classification model (`AgentSwinTransformer` of `agent_transformer`), the network has no per-stage
    output norms (the base model's `norms` are identities here) and its window blocks do not shift on a stage whose
    pretraining map fits in one window (stage 4 of every published model: a 7x7 map, 7x7 windows at 224 px).

    `forward(pixel_values (B, 3, H, W), labels (B,) optional)` returns `logits` (B, num_labels) and, with labels, the
    `loss` (see `AgentImageClassificationMixin`).
    """

    def __init__(self, config: AgentSwinConfig):
        super().__init__(config)
        self.agent_swin = AgentSwinModel(config)
        self.agent_swin.norms = nn.ModuleList(nn.Identity() for _ in self.agent_swin.norms)
        for stage, layer in enumerate(self.agent_swin.layers):
            if config.pretrain_image_size // config.patch_size // 2**stage <= config.window_size:
                for block in layer.blocks:
                    block.shift_size = 0
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def pool(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """The last stage's map (B, C, H, W) -> tokens normalized by `norm`, averaged: (B, C)."""
        return self.norm(last_hidden_state.flatten(2).transpose(1, 2)).mean(dim=1)


__all__ = [
    "AgentSwinBackbone",
    "AgentSwinForImageClassification",
    "AgentSwinForSemanticSegmentation",
    "AgentSwinModel",
    "AgentSwinPreTrainedModel",
]
