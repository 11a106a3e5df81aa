"""Segmentation heads with mmsegmentation 0.x semantics: UperNet (`UPerHead`), the auxiliary FCN
(`FCNHead`), the FPN neck (`FPN`) and the Semantic FPN head (`FPNHead`).

Module and parameter names follow mmseg's, so official checkpoints load by prefix only. All heads
return logits at the resolution of their finest input (1/4 of the image for the four-stage backbones).
Each head module owns its initialization (`init_head_weights`, mmseg's rules). At inference their convolutions
run with the BatchNorm folded in, by `conv_inference`; mmseg's loss is in `loss.py`.

Shipped to the Hub with the model: imports only torch/transformers and sibling modules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .conv_inference import can_use_winograd, conv2d_inference, winograd_conv3x3, winograd_weights
from .export_ops import AdaptiveAvgPool2d
from .weight_init import init


class AgentConvBNReLU(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU: mmseg's `ConvModule` with a BN norm config.

    At inference (BatchNorm in eval mode and no gradient needed) the BatchNorm is folded into the convolution:
    conv(x, w) * s + (beta - mean * s) == conv(x, w * s) + (beta - mean * s) with s = gamma / sqrt(var + eps),
    exact up to rounding, and large 3x3 convolutions run as Winograd F(2x2, 3x3) (`conv2d_inference`). The folded
    weights are recomputed on every call (a pass over the weights, tiny next to the convolution), so they always
    follow the current parameters and buffers and take no memory between calls.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def can_fold(self, x: torch.Tensor) -> bool:
        """Whether the BatchNorm is folded for input x: eval-mode statistics, no gradient, parameters on x's device
        (not on the meta device of an offloaded module whose hook loads them in its own forward)."""
        if self.bn.training or self.bn.running_var is None or type(self.conv) is not nn.Conv2d:
            return False
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            return False
        return all(t.device == x.device for t in (self.conv.weight, self.bn.weight, self.bn.running_var))

    def folded_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The convolution's weight and bias with the eval-mode BatchNorm folded in."""
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = self.conv.weight * scale.to(self.conv.weight.dtype).view(-1, 1, 1, 1)
        return weight, (bn.bias - bn.running_mean * scale).to(weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_concat([x])

    def forward_concat(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """`forward(torch.cat(parts, dim=1))`; at inference without building the concatenated map where Winograd
        runs. parts: maps (B, C_i, H, W) with sum C_i = in_channels."""
        if not self.can_fold(parts[0]):
            x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
            return self.activate(self.bn(self.conv(x)))
        weight, bias = self.folded_parameters()
        return torch.relu_(conv2d_inference(parts, self.conv, weight, bias))


class AgentConvLayer(nn.Module):
    """Plain conv with bias: mmseg's `ConvModule` without norm and activation (the FPN neck's)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if type(conv) is nn.Conv2d and conv.weight.device == x.device and can_use_winograd(x, conv, conv.weight):
            return winograd_conv3x3([x], winograd_weights(conv.weight), conv.bias)
        return conv(x)


class AgentUpsample2x(nn.Module):
    """Bilinear x2 upsampling (mmseg `Upsample(scale_factor=2)`, which resizes to exactly twice the size)."""

    def __init__(self, align_corners: bool = False):
        super().__init__()
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2] * 2, x.shape[-1] * 2)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)


def resize_like(x: torch.Tensor, reference: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of x (B, C, h, w) to the spatial size of reference."""
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=align_corners)


class AgentDecodeHead(nn.Module):
    """Base of every head: `Dropout2d` then a 1x1 conv to the classes (mmseg `BaseDecodeHead.cls_seg`)."""

    def __init__(self, channels: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_labels, kernel_size=1)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(x))


class AgentUperNetHead(AgentDecodeHead):
    """UperNet head: a pyramid pooling module on the coarsest map, a top-down FPN, and a fused classifier.

    Adapted from mmsegmentation 0.x `UPerHead` (Xiao et al., "Unified Perceptual Parsing", ECCV 2018): same
    computation, module and parameter names.

    Args:
        in_channels (`list[int]`): channels of the backbone maps, fine to coarse.
        channels (`int`): width of the head (512 in the paper's models).
        num_labels (`int`): classes.
        pool_scales (`tuple[int, ...]`): output sizes of the pyramid pooling module.
        dropout (`float`): `Dropout2d` before the classifier.
        align_corners (`bool`): `align_corners` of the bilinear resizes.

    Input: list of (B, C_i, H_i, W_i); output logits (B, num_labels, H_0, W_0).
    """

    def __init__(self, in_channels, channels, num_labels, pool_scales=(1, 2, 3, 6), dropout=0.1, align_corners=False):
        super().__init__(channels, num_labels, dropout)
        self.align_corners = align_corners
        self.psp_modules = nn.ModuleList(
            nn.Sequential(AdaptiveAvgPool2d(scale), AgentConvBNReLU(in_channels[-1], channels, 1))
            for scale in pool_scales
        )
        self.bottleneck = AgentConvBNReLU(in_channels[-1] + len(pool_scales) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList(AgentConvBNReLU(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(AgentConvBNReLU(channels, channels, 3, padding=1) for _ in in_channels[:-1])
        self.fpn_bottleneck = AgentConvBNReLU(len(in_channels) * channels, channels, 3, padding=1)

    def pyramid_pooling(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [resize_like(module(x), x, self.align_corners) for module in self.psp_modules]
        return self.bottleneck.forward_concat([x, *pooled])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, features)]
        laterals.append(self.pyramid_pooling(features[-1]))
        # Without autograd the top-down sums are written into the laterals (fresh conv outputs) and every map is
        # dropped as soon as it is used: the same values, with fewer full-resolution maps alive at once.
        inference = not (torch.is_grad_enabled() and laterals[0].requires_grad)
        for i in range(len(laterals) - 1, 0, -1):
            upsampled = resize_like(laterals[i], laterals[i - 1], self.align_corners)
            laterals[i - 1] = laterals[i - 1].add_(upsampled) if inference else laterals[i - 1] + upsampled
        outputs = [laterals.pop()]
        for conv in reversed(self.fpn_convs):
            outputs.insert(0, conv(laterals.pop()))
        outputs = [outputs[0]] + [resize_like(x, outputs[0], self.align_corners) for x in outputs[1:]]
        return self.classify(self.fpn_bottleneck.forward_concat(outputs))


class AgentFCNHead(AgentDecodeHead):
    """Auxiliary FCN head: `num_convs` 3x3 conv-BN-ReLU on one backbone map, then the classifier.

    Adapted from mmsegmentation 0.x `FCNHead`.

    Args:
        in_channels (`int`): channels of the input map.
        channels (`int`): width of the head.
        num_labels (`int`): classes.
        num_convs (`int`): 3x3 conv-BN-ReLU layers.
        concat_input (`bool`): concatenate the input with the convs' output before one more conv.
        dropout (`float`): `Dropout2d` before the classifier.

    Input (B, in_channels, H, W); output logits (B, num_labels, H, W).
    """

    def __init__(self, in_channels, channels, num_labels, num_convs=1, concat_input=False, dropout=0.1):
        super().__init__(channels, num_labels, dropout)
        self.convs = nn.Sequential(
            *(AgentConvBNReLU(in_channels if i == 0 else channels, channels, 3, padding=1) for i in range(num_convs))
        )
        self.concat_input = concat_input
        if concat_input:
            self.conv_cat = AgentConvBNReLU(in_channels + channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.convs(x)
        if self.concat_input:
            output = self.conv_cat.forward_concat([x, output])
        return self.classify(output)


class AgentFPNNeck(nn.Module):
    """Feature pyramid network: 1x1 laterals, nearest top-down sums, 3x3 output convs (no norm, no activation).

    Adapted from mmsegmentation 0.x `FPN` (Lin et al., CVPR 2017), as the Semantic FPN configs use it.

    Args:
        in_channels (`list[int]`): channels of the backbone maps, fine to coarse.
        out_channels (`int`): channels of every output level.

    Input: list of (B, C_i, H_i, W_i); output: list of (B, out_channels, H_i, W_i).
    """

    def __init__(self, in_channels, out_channels=256):
        super().__init__()
        self.lateral_convs = nn.ModuleList(AgentConvLayer(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(AgentConvLayer(out_channels, out_channels, 3, padding=1) for _ in in_channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, features)]
        inference = not (torch.is_grad_enabled() and laterals[0].requires_grad)  # then the sums go in place
        for i in range(len(laterals) - 1, 0, -1):
            upsampled = F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
            laterals[i - 1] = laterals[i - 1].add_(upsampled) if inference else laterals[i - 1] + upsampled
        return [conv(x) for conv, x in zip(self.fpn_convs, laterals)]


class AgentSemanticFPNHead(AgentDecodeHead):
    """Semantic FPN head: each level goes through max(1, log2(stride_i / stride_0)) 3x3 conv-BN-ReLU, each
    followed by a x2 bilinear upsampling for the coarser levels; the levels are summed and classified.

    Adapted from mmsegmentation 0.x `FPNHead` (Kirillov et al., "Panoptic Feature Pyramid Networks", CVPR 2019).

    Args:
        in_channels (`list[int]`): channels of the neck's levels, fine to coarse.
        channels (`int`): width of the head.
        num_labels (`int`): classes.
        feature_strides (`tuple[int, ...]`): stride of each level relative to the image.
        dropout (`float`): `Dropout2d` before the classifier.
        align_corners (`bool`): `align_corners` of the bilinear resizes.

    Input: list of (B, C, H_i, W_i); output logits (B, num_labels, H_0, W_0).
    """

    def __init__(
        self, in_channels, channels, num_labels, feature_strides=(4, 8, 16, 32), dropout=0.1, align_corners=False
    ):
        super().__init__(channels, num_labels, dropout)
        self.align_corners = align_corners
        self.scale_heads = nn.ModuleList()
        for i, stride in enumerate(feature_strides):
            head_length = max(1, int(math.log2(stride) - math.log2(feature_strides[0])))
            layers = []
            for k in range(head_length):
                layers.append(AgentConvBNReLU(in_channels[i] if k == 0 else channels, channels, 3, padding=1))
                if stride != feature_strides[0]:
                    layers.append(AgentUpsample2x(align_corners))
            self.scale_heads.append(nn.Sequential(*layers))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        output = self.scale_heads[0](features[0])
        inference = not (torch.is_grad_enabled() and output.requires_grad)  # then the sums go in place
        for head, x in zip(self.scale_heads[1:], features[1:]):
            upsampled = resize_like(head(x), output, self.align_corners)
            output = output.add_(upsampled) if inference else output + upsampled
        return self.classify(output)


def init_head_weights(module: nn.Module) -> None:
    """mmseg's initialization of the heads' modules: Kaiming-normal (fan-out) convs in conv-BN-ReLU, Xavier-uniform
    FPN-neck convs, N(0, 0.01) classifiers. Applied after the backbone rule (`init_backbone_weights` in
    `modeling_agent_common.py`), which gives their BatchNorms 1/0 and plain convolutions PyTorch's default."""
    if isinstance(module, AgentConvBNReLU):
        init.kaiming_normal_(module.conv.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, AgentConvLayer):
        init.xavier_uniform_(module.conv.weight)
        init.zeros_(module.conv.bias)
    elif isinstance(module, AgentDecodeHead):
        init.normal_(module.conv_seg.weight, std=0.01)
        init.zeros_(module.conv_seg.bias)


__all__ = [
    "AgentConvBNReLU",
    "AgentConvLayer",
    "AgentDecodeHead",
    "AgentFCNHead",
    "AgentFPNNeck",
    "AgentSemanticFPNHead",
    "AgentUperNetHead",
    "AgentUpsample2x",
    "init_head_weights",
]
