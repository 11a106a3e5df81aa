"""The transformer block of both families and its parts: the pre-norm block (`AgentBlock`, `run_blocks`), its MLP,
stochastic depth, the residual and feed-forward sums, and the `AgentAttention` of a block built from the config.

Shipped to the Hub with the model: imports only torch/transformers and sibling modules.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from .agent_attention import AgentAttention
from .export_ops import is_exporting

# In-place twins of `ACT2FN` activations (same function), used where no gradient is recorded: at
# segmentation resolutions a fresh (B, N, 4C) buffer costs more in first-touch page faults than the
# activation itself (stage 1 of Agent-Swin-T at 512x2048: ~100 MB per MLP).
_INPLACE_ACTIVATIONS = {"gelu": torch.ops.aten.gelu_, "relu": torch.ops.aten.relu_}


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


def drop_path_rates(drop_path_rate: float, depths) -> list[list[float]]:
    """Stochastic depth growing linearly from 0 to `drop_path_rate` over all blocks, split per stage."""
    rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # as the official float32 rates
    out, start = [], 0
    for depth in depths:
        out.append(rates[start : start + depth])
        start += depth
    return out


__all__ = [
    "AgentBlock",
    "AgentDropPath",
    "AgentMlp",
    "add_feed_forward",
    "add_residual",
    "agent_attention_from_config",
    "drop_path_rates",
    "run_blocks",
]
