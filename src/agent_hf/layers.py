"""Building blocks shared by Agent-Swin and Agent-PVT: MLP, stochastic depth, weight initialization,
and the segmentation output type."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import SemanticSegmenterOutput

from .agent_attention import AgentAttention
from .heads import ConvBNReLU, ConvLayer, DecodeHead

# In-place twins of `ACT2FN` activations (same function), used where no gradient is recorded: at
# segmentation resolutions a fresh (B, N, 4C) buffer costs more in first-touch page faults than the
# activation itself (stage 1 of Agent-Swin-T at 512x2048: ~100 MB per MLP).
_INPLACE_ACTIVATIONS = {"gelu": torch.ops.aten.gelu_, "relu": torch.ops.aten.relu_}


class Mlp(nn.Module):
    """fc1 -> activation -> dropout -> fc2 -> dropout; (B, N, C) -> (B, N, C)."""

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


class DropPath(nn.Module):
    """Stochastic depth per sample (active in training only)."""

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


def check_pixel_values(pixel_values, num_channels: int, model_name: str) -> None:
    """Raise a clear error for inputs that are not a float (B, num_channels, H, W) tensor."""
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


def drop_path_rates(drop_path_rate: float, depths) -> list[list[float]]:
    """Stochastic depth growing linearly from 0 to `drop_path_rate` over all blocks, split per stage."""
    rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # as the official float32 rates
    out, start = [], 0
    for depth in depths:
        out.append(rates[start : start + depth])
        start += depth
    return out


def init_agent_weights(module: nn.Module, std: float = 0.02) -> None:
    """The official initialization: timm-style backbone (trunc-normal linears, tables and position
    embeddings; PyTorch defaults for convs) and mmseg heads (Kaiming fan-out convs in ConvModules,
    Xavier FPN neck, N(0, 0.01) classifiers). Children are visited before their parents, so a head's
    own rule overrides the plain-conv default of its convs."""
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
    elif isinstance(module, ConvBNReLU):
        init.kaiming_normal_(module.conv.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, ConvLayer):
        init.xavier_uniform_(module.conv.weight)
        init.zeros_(module.conv.bias)
    elif isinstance(module, DecodeHead):
        init.normal_(module.conv_seg.weight, std=0.01)
        init.zeros_(module.conv_seg.bias)
    elif isinstance(module, AgentAttention):
        for table in module._bias_tables():
            init.trunc_normal_(table, std=std)
    elif isinstance(module, nn.Conv2d):
        # Backbone convs (patch embeddings, DWC, spatial reduction) keep PyTorch's default init.
        init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        if module.bias is not None:
            fan_in = module.weight[0].numel()
            init.uniform_(module.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))


class AutoMapMixin:
    """Saves the model code with every save and lists all four Auto classes of the model family in the
    config's `auto_map`, so a saved folder or Hub repo loads with `trust_remote_code=True` where agent_hf
    is not installed. Subclasses name their family in `_auto_map_classes` (Auto class -> class name)."""

    _auto_map_classes: dict[str, str] = {}

    def save_pretrained(self, save_directory, *args, **kwargs):
        module = type(self).__module__.rsplit(".", 1)[-1]
        config_class = type(self.config)
        self.config.auto_map = {
            "AutoConfig": f"{config_class.__module__.rsplit('.', 1)[-1]}.{config_class.__name__}",
            **{auto: f"{module}.{name}" for auto, name in self._auto_map_classes.items()},
        }
        return super().save_pretrained(save_directory, *args, **kwargs)


@dataclass
class AgentSegmenterOutput(SemanticSegmenterOutput):
    """`SemanticSegmenterOutput` plus the auxiliary head's logits.

    loss: decode loss (+ auxiliary weight x auxiliary loss) when `labels` are given.
    logits: (B, num_labels, H/4, W/4), before any resize (as mmseg's decode head output).
    auxiliary_logits: (B, num_labels, H/16, W/16) for UperNet models with an auxiliary head, else None.
    hidden_states: the backbone feature maps when `output_hidden_states=True`.
    """

    auxiliary_logits: torch.FloatTensor | None = None


__all__ = [
    "AgentSegmenterOutput",
    "AutoMapMixin",
    "DropPath",
    "Mlp",
    "add_residual",
    "check_pixel_values",
    "drop_path_rates",
    "init_agent_weights",
]
