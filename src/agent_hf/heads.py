"""Segmentation heads with mmsegmentation 0.x semantics: UperNet (`UPerHead`), the auxiliary FCN
(`FCNHead`), the FPN neck (`FPN`) and the Semantic FPN head (`FPNHead`).

Module and parameter names follow mmseg's, so official checkpoints load by prefix only. All heads
return logits at the resolution of their finest input (1/4 of the image for the four-stage backbones).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU: mmseg's `ConvModule` with a BN norm config."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class ConvLayer(nn.Module):
    """Plain conv with bias: mmseg's `ConvModule` without norm and activation (the FPN neck's)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample2x(nn.Module):
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


class DecodeHead(nn.Module):
    """Base of every head: `Dropout2d` then a 1x1 conv to the classes (mmseg `BaseDecodeHead.cls_seg`)."""

    def __init__(self, channels: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_labels, kernel_size=1)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(x))


class UperNetDecodeHead(DecodeHead):
    """UperNet head: a pyramid pooling module on the coarsest map, a top-down FPN, and a fused classifier.

    Args:
        in_channels: channels of the backbone maps, fine to coarse.
        channels: width of the head (512 in the paper's models). pool_scales: PPM output sizes.
    Input: list of (B, C_i, H_i, W_i); output logits (B, num_labels, H_0, W_0).
    """

    def __init__(self, in_channels, channels, num_labels, pool_scales=(1, 2, 3, 6), dropout=0.1, align_corners=False):
        super().__init__(channels, num_labels, dropout)
        self.align_corners = align_corners
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), ConvBNReLU(in_channels[-1], channels, 1))
            for scale in pool_scales
        )
        self.bottleneck = ConvBNReLU(in_channels[-1] + len(pool_scales) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvBNReLU(channels, channels, 3, padding=1) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvBNReLU(len(in_channels) * channels, channels, 3, padding=1)

    def pyramid_pooling(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [resize_like(module(x), x, self.align_corners) for module in self.psp_modules]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, features)]
        laterals.append(self.pyramid_pooling(features[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize_like(laterals[i], laterals[i - 1], self.align_corners)
        outputs = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        outputs = [outputs[0]] + [resize_like(x, outputs[0], self.align_corners) for x in outputs[1:]]
        return self.classify(self.fpn_bottleneck(torch.cat(outputs, dim=1)))


class FCNHead(DecodeHead):
    """Auxiliary FCN head: `num_convs` 3x3 ConvBNReLU on one backbone map, then the classifier."""

    def __init__(self, in_channels, channels, num_labels, num_convs=1, concat_input=False, dropout=0.1):
        super().__init__(channels, num_labels, dropout)
        self.convs = nn.Sequential(
            *(ConvBNReLU(in_channels if i == 0 else channels, channels, 3, padding=1) for i in range(num_convs))
        )
        self.concat_input = concat_input
        if concat_input:
            self.conv_cat = ConvBNReLU(in_channels + channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.convs(x)
        if self.concat_input:
            output = self.conv_cat(torch.cat([x, output], dim=1))
        return self.classify(output)


class FPNNeck(nn.Module):
    """Feature pyramid network (mmseg `FPN`, no norm, no activation, nearest top-down upsampling).

    Input: list of (B, C_i, H_i, W_i); output: list of (B, out_channels, H_i, W_i).
    """

    def __init__(self, in_channels, out_channels=256):
        super().__init__()
        self.lateral_convs = nn.ModuleList(ConvLayer(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(ConvLayer(out_channels, out_channels, 3, padding=1) for _ in in_channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, features)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        return [conv(x) for conv, x in zip(self.fpn_convs, laterals)]


class SemanticFPNHead(DecodeHead):
    """Semantic FPN head (Kirillov et al.; mmseg `FPNHead`): each level goes through
    max(1, log2(stride_i / stride_0)) 3x3 ConvBNReLU, each followed by a x2 bilinear upsampling
    for the coarser levels; the levels are summed and classified.
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
                layers.append(ConvBNReLU(in_channels[i] if k == 0 else channels, channels, 3, padding=1))
                if stride != feature_strides[0]:
                    layers.append(Upsample2x(align_corners))
            self.scale_heads.append(nn.Sequential(*layers))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        output = self.scale_heads[0](features[0])
        for head, x in zip(self.scale_heads[1:], features[1:]):
            output = output + resize_like(head(x), output, self.align_corners)
        return self.classify(output)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, align_corners: bool = False):
    """mmseg's decode-head loss: logits resized bilinearly to the label size, pixel-wise cross-entropy,
    averaged over ALL pixels, ignored ones counting as zero (mmseg 0.x `avg_non_ignore=False`)."""
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=align_corners)
    return F.cross_entropy(logits.float(), labels.long(), ignore_index=ignore_index, reduction="none").mean()


__all__ = [
    "ConvBNReLU",
    "ConvLayer",
    "FCNHead",
    "FPNNeck",
    "DecodeHead",
    "SemanticFPNHead",
    "UperNetDecodeHead",
    "segmentation_loss",
]
