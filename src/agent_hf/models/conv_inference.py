"""The segmentation heads' convolutions at inference: 3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3) on
the CPU, and `conv2d_inference`, which runs a convolution that way where it can.

Shipped to the Hub with the model: imports only torch and sibling modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .export_ops import is_exporting

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


__all__ = [
    "WINOGRAD_BLOCK_SIZE",
    "WINOGRAD_MIN_PIXELS",
    "can_use_winograd",
    "conv2d_inference",
    "winograd_conv3x3",
    "winograd_weights",
]
