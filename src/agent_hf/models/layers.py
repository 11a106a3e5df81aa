"""Building blocks shared by Agent-Swin and Agent-PVT: the pre-norm block, MLP, stochastic depth, input checks,
the backbone's weight initialization, the checkpoint key renaming of both model families, and the output types
(the classes both families build on are in `modeling_agent_common.py`).

Shipped to the Hub with the model: imports only torch/transformers and sibling modules.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput, logging

from .agent_attention import AgentAttention
from .export_ops import is_exporting

# Import shim: `transformers.initialization` (5.x) only touches parameters that were not loaded from a
# checkpoint; transformers 4.x uses torch's functions and skips loaded weights itself.
try:
    from transformers import initialization as init
except ImportError:  # transformers 4.x
    from torch.nn import init

logger = logging.get_logger(__name__)

# In-place twins of `ACT2FN` activations (same function), used where no gradient is recorded: at
# segmentation resolutions a fresh (B, N, 4C) buffer costs more in first-touch page faults than the
# activation itself (stage 1 of Agent-Swin-T at 512x2048: ~100 MB per MLP).
_INPLACE_ACTIVATIONS = {"gelu": torch.ops.aten.gelu_, "relu": torch.ops.aten.relu_}

# The attention implementations every attention module of both families has.
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


class AgentMlp(nn.Module):
    """fc1 -> activation -> dropout -> fc2 -> dropout; (B, N, C) -> (B, N, C).

    Args:
        dim (`int`): input and output channels C.
        hidden_dim (`int`): hidden channels.
        act (`str`): activation, a key of transformers' `ACT2FN`.
        dropout (`float`): dropout after the activation and after fc2.
    """

    def __init__(self, dim: int, hidden_dim: int, act: str = "gelu", dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = ACT2FN[act]
        self.act_inplace = _INPLACE_ACTIVATIONS.get(act) if isinstance(act, str) else None
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.fc1(x)
        if self.act_inplace is not None and not (torch.is_grad_enabled() and hidden.requires_grad):
            hidden = self.act_inplace(hidden)
        else:
            hidden = self.act(hidden)
        return self.drop(self.fc2(self.drop(hidden)))


def add_residual(residual: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """residual + branch, written into `branch` when it can hold the sum exactly (same shape, and a
    dtype the sum does not promote past, e.g. not a bf16 branch under autocast on an fp32 stream).

    `branch` must be a block's own fresh output that autograd does not save (a projection's or
    DropPath's output): reusing it saves one (B, N, C) allocation and its page faults per residual.
    Addition commutes exactly, so the result is bit-identical to `residual + branch`.
    """
    if branch.shape == residual.shape and torch.promote_types(branch.dtype, residual.dtype) == branch.dtype:
        return branch.add_(residual)
    return residual + branch


def add_feed_forward(hidden_states: torch.Tensor, norm: nn.Module, mlp: nn.Module, drop_path: nn.Module):
    """hidden_states + drop_path(mlp(norm(hidden_states))): a pre-norm block's second residual branch.

    Args:
        hidden_states (`torch.Tensor` of shape `(batch_size, tokens, dim)`): the block's residual stream after its
            attention branch; it must be the block's own intermediate tensor (the first residual sum), since
            inference writes the result into it.
        norm (`nn.Module`): the branch's LayerNorm.
        mlp (`nn.Module`): the branch's MLP.
        drop_path (`nn.Module`): the branch's stochastic depth.

    Without autograd and outside training (inference), the tokens are processed `FEED_FORWARD_BLOCK_SIZE` hidden
    values at a time and each result is added into `hidden_states` in place: every operation is row-wise, so this
    is the same computation, without the (B, N, hidden) buffers (100 MB per block in stage 1 of Agent-Swin-T at
    512x2048) whose first-touch page faults cost about as much as the products. Returns the new residual stream.
    """
    needs_grad = torch.is_grad_enabled() and hidden_states.requires_grad
    if mlp.training or drop_path.training or needs_grad or is_exporting() or not hidden_states.is_contiguous():
        return add_residual(hidden_states, drop_path(mlp(norm(hidden_states))))
    channels = hidden_states.shape[-1]
    hidden = getattr(getattr(mlp, "fc1", None), "out_features", channels)
    tokens = hidden_states.view(-1, channels)
    step = max(1, FEED_FORWARD_BLOCK_SIZE // hidden)
    for start in range(0, tokens.shape[0], step):
        block = tokens[start : start + step]
        block.add_(mlp(norm(block)))
    return hidden_states


# Hidden values (tokens x MLP width) the inference path of `add_feed_forward` computes at once: 8 MB in fp32.
FEED_FORWARD_BLOCK_SIZE = 1 << 21


def agent_attention_from_config(
    config, stage: int, dim: int, num_heads: int, table_size: tuple[int, int], **kwargs
) -> AgentAttention:
    """The `AgentAttention` of a block of `stage`, with the config's agent, scale, bias and dropout settings.

    Args:
        config (`AgentSwinConfig` or `AgentPvtConfig`): the model config.
        stage (`int`): 0-based stage of the block (indexes `agent_num` and `downstream_agent_shapes`).
        dim (`int`): channels C.
        num_heads (`int`): heads h.
        table_size (`tuple[int, int]`): the stage's pretraining token grid (the agent bias tables' size).
        kwargs: the family's other `AgentAttention` arguments (`fused_qkv`, `key_table_size`).
    """
    return AgentAttention(
        dim,
        num_heads,
        agent_num=config.agent_num[stage],
        agent_grid=tuple(config.downstream_agent_shapes[stage]),
        table_size=table_size,
        kernel_size=config.agent_kernel_size,
        scale_exponent=config.attention_scale_exponent,
        qkv_bias=config.qkv_bias,
        attn_drop=config.attention_probs_dropout_prob,
        proj_drop=config.hidden_dropout_prob,
        config=config,
        **kwargs,
    )


class AgentBlock(GradientCheckpointingLayer):
    """The pre-norm transformer block of both families: x + drop_path(attention(norm1(x))), then
    x + drop_path(mlp(norm2(x))). Each family's block builds `norm1`, its attention, `drop_path`, `norm2` and `mlp`,
    and defines `attention(x, height, width, output_attentions)`."""

    def forward(self, hidden_states: torch.Tensor, height: int, width: int, output_attentions: bool = False):
        """(B, H*W, C) -> (B, H*W, C); with `output_attentions`, also the block's attention weights (see the
        family's `attention`)."""
        x = self.attention(self.norm1(hidden_states), height, width, output_attentions=output_attentions)
        weights = None
        if output_attentions:
            x, weights = x
        hidden_states = add_residual(hidden_states, self.drop_path(x))
        hidden_states = add_feed_forward(hidden_states, self.norm2, self.mlp, self.drop_path)
        return (hidden_states, weights) if output_attentions else hidden_states


def run_blocks(blocks, x: torch.Tensor, height: int, width: int, output_attentions: bool = False):
    """Tokens x (B, H*W, C) of a (height, width) map through `blocks` (`AgentBlock`s). Returns x and the blocks'
    attention weights (a tuple, empty without `output_attentions`)."""
    attentions = ()
    for block in blocks:
        if output_attentions:
            x, weights = block(x, height, width, output_attentions=True)
            attentions += (weights,)
        else:
            x = block(x, height, width)
    return x, attentions


class AgentDropPath(nn.Module):
    """Stochastic depth per sample (active in training only); any shape (B, ...) -> the same shape.

    Args:
        drop_prob (`float`): probability of dropping a sample's branch.
    """

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


def check_pixel_values(pixel_values, num_channels: int, model_name: str, dtype: torch.dtype | None = None):
    """`pixel_values` checked and ready for the model: a float (B >= 1, num_channels, H, W) tensor, cast to `dtype`.

    Args:
        pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`): the model input.
        num_channels (`int`): channels the model expects.
        model_name (`str`): the model's class name, for the error messages.
        dtype (`torch.dtype`, *optional*): the model's dtype; a floating input of another dtype (e.g. fp16 or fp64
            pixels for an fp32 model) is cast to it.

    Raises a clear error for a non-tensor, a wrong shape, an integer dtype or an empty batch; warns once when the
    input holds NaN or infinite values (they would turn the outputs they reach into NaN).
    """
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"{model_name}: pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    if pixel_values.ndim != 4 or pixel_values.shape[1] != num_channels:
        raise ValueError(
            f"{model_name}: expected pixel_values of shape (batch, {num_channels}, height, width), got "
            f"{tuple(pixel_values.shape)}; use the image processor to turn images into pixel_values"
        )
    if not pixel_values.is_floating_point():
        raise ValueError(
            f"{model_name}: expected floating-point (normalized) pixel_values, got dtype {pixel_values.dtype}; "
            "use the image processor to rescale and normalize uint8 images"
        )
    if pixel_values.numel() == 0:
        raise ValueError(
            f"{model_name}: got an empty input, pixel_values of shape {tuple(pixel_values.shape)}; "
            "pass at least one image of at least one pixel"
        )
    # Values exist only on real devices (not meta: FLOP counting) and outside torch.compile's tracing.
    inspectable = pixel_values.device.type != "meta" and not torch.compiler.is_compiling()
    if inspectable and not bool(torch.isfinite(pixel_values).all()):
        logger.warning_once(
            f"{model_name}: pixel_values contain NaN or infinite values; every output they reach will be NaN"
        )
    if dtype is not None and dtype.is_floating_point and pixel_values.dtype != dtype:
        pixel_values = pixel_values.to(dtype)
    return pixel_values


def check_labels(labels, pixel_values: torch.Tensor, num_labels: int, ignore_index: int, model_name: str) -> None:
    """Raise a clear `ValueError` for segmentation labels the loss cannot use.

    Args:
        labels (`torch.Tensor` of shape `(batch_size, height, width)`): class ids in [0, num_labels) or `ignore_index`.
        pixel_values (`torch.Tensor` of shape `(batch_size, channels, height, width)`): the images the labels go with.
        num_labels (`int`): classes of the model.
        ignore_index (`int`): label the loss ignores.
        model_name (`str`): the model's class name, for the error messages.

    One reduction and one host sync, instead of the cross-entropy's IndexError (a device-side assert on GPU).
    """
    if not isinstance(labels, torch.Tensor) or labels.ndim != 3 or labels.shape[0] != pixel_values.shape[0]:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(
            f"{model_name}: expected labels of shape (batch={pixel_values.shape[0]}, height, width), got {shape}"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{model_name}: labels must be integer class ids, got dtype {labels.dtype}")
    if labels.device.type == "meta" or torch.compiler.is_compiling():
        return
    invalid = (labels != ignore_index) & ((labels < 0) | (labels >= num_labels))
    if bool(invalid.any()):
        values = labels[invalid].unique()
        shown = ", ".join(str(v) for v in values[:10].tolist()) + (", ..." if values.numel() > 10 else "")
        raise ValueError(
            f"{model_name}: labels must be class ids in [0, {num_labels}) or the ignore index {ignore_index}; "
            f"got {shown} ({int(invalid.sum())} pixels). Check num_labels / id2label of the config and the "
            "dataset's label mapping (e.g. do_reduce_labels for ADE20K)"
        )


def drop_path_rates(drop_path_rate: float, depths) -> list[list[float]]:
    """Stochastic depth growing linearly from 0 to `drop_path_rate` over all blocks, split per stage."""
    rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # as the official float32 rates
    out, start = [], 0
    for depth in depths:
        out.append(rates[start : start + depth])
        start += depth
    return out


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


def checkpoint_key_mapping(legacy_names: dict[str, str], base_prefix: str, base_keys: str, target: str) -> dict:
    """The `key_mapping` (regex -> replacement) with which a class of a model family loads a checkpoint.

    Args:
        legacy_names (`dict[str, str]`): renamings of the base model's own keys (regex matched at the start of a
            base-model key, e.g. `block1\\.` -> `stages.0.blocks.`): parameter names of agent-hf 0.1.0 and of the
            official code.
        base_prefix (`str`): attribute of the base model in the backbone class (`agent_swin`, `agent_pvt`).
        base_keys (`str`): regex matching the first name of a base-model key (e.g. `(?:patch_embed|layers)\\.`).
        target (`str`): the class that loads: `"model"`, `"backbone"`, `"segmentation"` or `"classification"`.

    A key may come from a base-model folder (no prefix), a backbone folder (`agent_swin.`) or a segmentation folder
    (`backbone.agent_swin.`). Each rule names the prefix it starts with and rewrites it to where the loading class
    keeps the base model, leaving transformers' own `base_model_prefix` handling (add or strip `agent_swin.`) to
    the backbone and base-model classes. transformers 4.x applies the first matching rule and 5.x every rule in
    turn: a 0.1.0 name is renamed by one rule that also moves its prefix, after which no other rule matches.
    """
    bare, nested, segmentation = "", f"{base_prefix}.", f"backbone.{base_prefix}."
    destination = {
        "model": {segmentation: bare, nested: nested, bare: bare},
        "backbone": {segmentation: bare, nested: nested, bare: bare},
        "segmentation": {segmentation: segmentation, nested: segmentation, bare: segmentation},
        # The image classifier keeps the base model at `agent_swin.` beside its own top-level `norm`/`classifier`.
        "classification": {segmentation: nested, nested: nested, bare: bare},
    }[target]
    rules = {}
    for origin, prefix in destination.items():
        for name, replacement in legacy_names.items():
            rules["^" + re.escape(origin) + name] = prefix + replacement
    for origin, prefix in destination.items():
        if origin != prefix:
            rules["^" + (re.escape(origin) if origin else f"(?={base_keys})")] = prefix
    return rules


def rename_key(key: str, mapping: dict[str, str]) -> str:
    """`key` renamed by the first rule of `mapping` (regex -> replacement) that matches it, as transformers 4.x
    applies `key_mapping`; unchanged when none does."""
    for pattern, replacement in mapping.items():
        key, count = re.subn(pattern, replacement, key)
        if count:
            break
    return key


def copy_into(buffer: torch.Tensor, value: torch.Tensor) -> None:
    """Writes a derived buffer (e.g. a relative position index) during weight initialization."""
    if hasattr(init, "copy_"):  # transformers 5.x: skips buffers that were loaded
        init.copy_(buffer, value)
    else:
        with torch.no_grad():
            buffer.copy_(value)


@dataclass
class AgentSegmenterOutput(ModelOutput):
    """`SemanticSegmenterOutput`'s fields plus the auxiliary head's logits, in this order (as a tuple, the
    attentions come last, as in every transformers output).

    loss: decode loss (+ auxiliary weight x auxiliary loss) when `labels` are given.
    logits: (B, num_labels, H/4, W/4), before any resize (as mmseg's decode head output).
    auxiliary_logits: (B, num_labels, H/16, W/16) for UperNet models with an auxiliary head, when labels are given or
        `output_auxiliary_logits=True`, else None.
    hidden_states: the four backbone stage maps (B, C_i, H_i, W_i) with `output_hidden_states`.
    attentions: per backbone block, its attention weights with `output_attentions` (see the backbone model).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    auxiliary_logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple | None = None


__all__ = [
    "ATTENTION_IMPLEMENTATIONS",
    "AgentBlock",
    "AgentDropPath",
    "AgentMlp",
    "AgentSegmenterOutput",
    "add_feed_forward",
    "add_residual",
    "agent_attention_from_config",
    "check_labels",
    "check_pixel_values",
    "checkpoint_key_mapping",
    "copy_into",
    "drop_path_rates",
    "init_backbone_weights",
    "rename_key",
    "run_blocks",
]
