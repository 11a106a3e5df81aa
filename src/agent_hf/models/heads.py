"""Segmentation heads with mmsegmentation 0.x semantics: UperNet (`UPerHead`), the auxiliary FCN
(`FCNHead`), the FPN neck (`FPN`) and the Semantic FPN head (`FPNHead`).

Module and parameter names follow mmseg's, so official checkpoints load by prefix only. All heads
return logits at the resolution of their finest input (1/4 of the image for the four-stage backbones).
Each head module owns its initialization (`init_head_weights`, mmseg's rules).

Shipped to the Hub with the model: imports only torch/transformers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .export_ops import AdaptiveAvgPool2d, is_exporting

# Import shim, as in layers.py: `transformers.initialization` (5.x) skips parameters loaded from a checkpoint.
try:
    from transformers import initialization as init
except ImportError:  # transformers 4.x
    from torch.nn import init


# ----------------------------------------------------------------------------------------------------------------
# Inference convolutions: Winograd F(2x2, 3x3)
# ----------------------------------------------------------------------------------------------------------------

# Smallest output map (pixels) on which a 3x3 convolution runs as Winograd F(2x2, 3x3) at inference; `None` turns
# Winograd off. Below this size the per-call weight transform is not worth it.
WINOGRAD_MIN_PIXELS: int | None = 64 * 64
# Transformed input values (16 x channels x tiles) one Winograd step holds: 32 MB in fp32.
WINOGRAD_BLOCK_SIZE = 1 << 23


def _under_dispatch_mode() -> bool:
    """Whether a TorchDispatchMode (FLOP counting, tracing) watches the operations: those then see the plain
    convolution, so that a model's counted FLOPs are those of its definition."""
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode
    except ImportError:  # pragma: no cover - very old torch
        return True
    return _get_current_dispatch_mode() is not None


def can_use_winograd(x: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor) -> bool:
    """Whether `winograd_conv3x3` replaces `conv` on input x: a 3x3, stride-1, padding-1, ungrouped convolution on a
    large enough fp32 CPU map, without gradient, outside torch.compile and dispatch modes."""
    if torch.compiler.is_compiling() or is_exporting():  # first: the size test below would be a traced guard
        return False
    if WINOGRAD_MIN_PIXELS is None or x.shape[-2] * x.shape[-1] < WINOGRAD_MIN_PIXELS:
        return False
    if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1) or conv.dilation != (1, 1):
        return False
    if conv.groups != 1 or conv.padding_mode != "zeros" or x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    if weight.dtype != torch.float32 or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        return False
    if torch.is_autocast_enabled("cpu"):  # autocast would run the products in bf16
        return False
    return not _under_dispatch_mode()


def winograd_weights(weight: torch.Tensor) -> torch.Tensor:
    """(K, C, 3, 3) kernels -> (16, K, C): G g G^T for each kernel g, G = [[1, 0, 0], [1/2, 1/2, 1/2],
    [1/2, -1/2, 1/2], [0, 0, 1]] (element 4 * i + j of the 4x4 result first)."""

    def transform(taps):  # the three taps along the last axis -> the four G-rows, stacked in front
        t0, t1, t2 = taps.unbind(-1)
        return torch.stack([t0, (t0 + t1 + t2) * 0.5, (t0 - t1 + t2) * 0.5, t2])

    columns = transform(weight)  # (4 [j], K, C, 3 [kernel rows])
    return transform(columns).reshape(16, *weight.shape[:2])  # (4 [i], 4 [j], K, C)


def winograd_conv3x3(parts: list[torch.Tensor], weights: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 3x3 convolution (stride 1, zero padding 1) of the channel concatenation of `parts`, by Winograd's minimal
    filtering F(2x2, 3x3) (Lavin & Gray, CVPR 2016).

    Args:
        parts (`list[torch.Tensor]`): maps (B, C_i, H, W) whose concatenation along the channels is the input; the
            concatenated map is never built.
        weights (`torch.Tensor` of shape `(16, out_channels, sum C_i)`): `winograd_weights` of the kernels.
        bias (`torch.Tensor` of shape `(out_channels,)`, *optional*): added to the output.

    Every 2x2 output tile is A^T [(G g G^T) . (B^T d B)] A for its 4x4 input patch d: the same sums as the direct
    convolution, regrouped, with 16 products per tile and channel pair instead of 36. For a block of tile rows,
    the 16 transformed inputs (C x tiles) meet the 16 transformed kernels in one batched GEMM; the zero-padded
    rows a block needs are copied into a small strip, so no padded copy of the maps is made. Exact up to
    rounding (on the segmentation heads' maps its error is below oneDNN's direct convolution's). Returns
    (B, out_channels, H, W).
    """
    batch, _, height, width = parts[0].shape
    channels, out_channels = weights.shape[2], weights.shape[1]
    tiles_h, tiles_w = (height + 1) // 2, (width + 1) // 2
    output = parts[0].new_empty(batch, out_channels, 2 * tiles_h, 2 * tiles_w)
    step = max(1, min(tiles_h, WINOGRAD_BLOCK_SIZE // (16 * channels * tiles_w)))
    transformed = parts[0].new_empty(16, channels, step * tiles_w)
    strip = parts[0].new_empty(max(part.shape[1] for part in parts), 2 * step + 2, 2 * tiles_w + 2)
    for image in range(batch):
        for first in range(0, tiles_h, step):
            count = min(step, tiles_h - first)
            inputs = transformed[:, :, : count * tiles_w]
            tiles = inputs.view(4, 4, channels, count, tiles_w)
            offset = 0
            for part in parts:
                size = part.shape[1]
                padded = _padded_rows(part[image], 2 * first - 1, 2 * count + 2, strip[:size, : 2 * count + 2])
                # B^T d B with B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]: rows, then columns.
                rows = [padded[:, i : 2 * count + i : 2] for i in range(4)]  # (C_i, count, 2 * tiles_w + 2)
                for i, row in enumerate((rows[0] - rows[2], rows[1] + rows[2], rows[2] - rows[1], rows[1] - rows[3])):
                    cols = [row[..., j : j + 2 * tiles_w : 2] for j in range(4)]  # (C_i, count, tiles_w)
                    target = tiles[i, :, offset : offset + size]
                    torch.sub(cols[0], cols[2], out=target[0])
                    torch.add(cols[1], cols[2], out=target[1])
                    torch.sub(cols[2], cols[1], out=target[2])
                    torch.sub(cols[1], cols[3], out=target[3])
                offset += size
            products = torch.bmm(weights, inputs).view(4, 4, out_channels, count, tiles_w)
            # A^T m A with A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]: rows, then columns, into the 2x2 output tiles.
            rows = (products[0] + products[1] + products[2], products[1] - products[2] - products[3])
            block = output[image, :, 2 * first : 2 * (first + count)]
            for i, row in enumerate(rows):
                torch.add(row[0] + row[1], row[2], out=block[:, i::2, 0::2])
                torch.sub(row[1] - row[2], row[3], out=block[:, i::2, 1::2])
    if bias is not None:
        output += bias.view(-1, 1, 1)
    if output.shape[-2:] != (height, width):
        output = output[..., :height, :width].contiguous()
    return output


def _padded_rows(image: torch.Tensor, start: int, rows: int, out: torch.Tensor) -> torch.Tensor:
    """Rows [start, start + rows) of `image` (C, H, W) with one zero column on the left and zeros wherever the
    range leaves the image (the convolution's zero padding), written into `out` (C, rows, >= W + 1)."""
    height, width = image.shape[-2:]
    top, bottom = max(start, 0), min(start + rows, height)
    out[:, :, 0] = 0
    out[:, :, width + 1 :] = 0
    out[:, : top - start] = 0
    out[:, max(bottom - start, 0) :] = 0
    if bottom > top:
        out[:, top - start : bottom - start, 1 : width + 1] = image[:, top:bottom]
    return out


def conv2d_inference(parts: list[torch.Tensor], conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None):
    """`conv`'s convolution, with `weight` and `bias` (e.g. BatchNorm folded in), of the channel concatenation of
    `parts`: Winograd F(2x2, 3x3) where `can_use_winograd` allows it, else `F.conv2d` on the concatenated map."""
    if can_use_winograd(parts[0], conv, weight):
        return winograd_conv3x3(parts, winograd_weights(weight), bias)
    x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


# ----------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------


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
    FPN-neck convs, N(0, 0.01) classifiers. Applied after the backbone rule (`layers.init_backbone_weights`), which
    gives their BatchNorms 1/0 and plain convolutions PyTorch's default."""
    if isinstance(module, AgentConvBNReLU):
        init.kaiming_normal_(module.conv.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, AgentConvLayer):
        init.xavier_uniform_(module.conv.weight)
        init.zeros_(module.conv.bias)
    elif isinstance(module, AgentDecodeHead):
        init.normal_(module.conv_seg.weight, std=0.01)
        init.zeros_(module.conv_seg.bias)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, align_corners: bool = False):
    """mmseg's decode-head loss: logits resized bilinearly to the label size, pixel-wise cross-entropy,
    averaged over ALL pixels, ignored ones counting as zero (mmseg 0.x `avg_non_ignore=False`)."""
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=align_corners)
    return F.cross_entropy(logits.float(), labels.long(), ignore_index=ignore_index, reduction="none").mean()


__all__ = [
    "AgentConvBNReLU",
    "AgentConvLayer",
    "AgentDecodeHead",
    "AgentFCNHead",
    "AgentFPNNeck",
    "AgentSemanticFPNHead",
    "AgentUperNetHead",
    "AgentUpsample2x",
    "WINOGRAD_MIN_PIXELS",
    "can_use_winograd",
    "conv2d_inference",
    "init_head_weights",
    "segmentation_loss",
    "winograd_conv3x3",
    "winograd_weights",
]
