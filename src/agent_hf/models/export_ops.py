"""Shape-generic forms of the few operations whose eager form depends on the Python value of the input's size, for
`torch.export` (and the ONNX exporter built on it): one exported graph then serves every image size.

Eager PyTorch runs the usual operations: these forms are used only while `torch.export` traces the model
(`is_exporting()`), so the eager outputs stay exactly what they were.

Shipped to the Hub with the model: imports only torch.
"""

from __future__ import annotations

import torch


def is_exporting() -> bool:
    """Whether `torch.export` traces the model (False on a torch without `torch.compiler.is_exporting`)."""
    check = getattr(torch.compiler, "is_exporting", None)
    return check is not None and bool(check())


def size_oblivious_trace():
    """Context in which `torch.export` traces sizes "size-obliviously": a symbolic size is not specialized on
    being 1 (a Swin map of one window per side) by the stride and contiguity checks of views, so one program serves
    both cases. Used around the window partition only: over the whole model it would guard the batch above 1."""
    import torch.fx.experimental._config as symbolic_shapes_config

    return symbolic_shapes_config.patch(backed_size_oblivious=True)


def ceil_to(size, multiple: int):
    """`size` rounded up to a multiple of `multiple` (as `size + (-size % multiple)`, in a form whose symbolic
    version torch.export simplifies quickly)."""
    return (size + multiple - 1) // multiple * multiple


def adaptive_pool_matrix(in_size, out_size: int, like: torch.Tensor) -> torch.Tensor:
    """(out_size, in_size) matrix P with P @ x == 1-D adaptive average pooling of x (PyTorch's bins: output i
    averages inputs [floor(i * in / out), ceil((i + 1) * in / out))), built from tensor arithmetic on `in_size`, so
    that a traced `in_size` stays symbolic."""
    index = torch.arange(out_size, device=like.device)
    start = torch.div(index * in_size, out_size, rounding_mode="floor")
    stop = torch.div((index + 1) * in_size + out_size - 1, out_size, rounding_mode="floor")
    position = torch.arange(in_size, device=like.device)
    inside = (position[None, :] >= start[:, None]) & (position[None, :] < stop[:, None])
    return inside.to(like.dtype) / (stop - start)[:, None].to(like.dtype)


def adaptive_avg_pool2d(x: torch.Tensor, output_size: tuple[int, int] | int) -> torch.Tensor:
    """`F.adaptive_avg_pool2d(x, output_size)` for x (B, C, H, W); while exporting, as two products with
    `adaptive_pool_matrix` (the ONNX exporter cannot pool adaptively over a size it does not know; equal up to
    rounding)."""
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    if not is_exporting():
        return torch.nn.functional.adaptive_avg_pool2d(x, output_size)
    rows = adaptive_pool_matrix(x.shape[-2], output_size[0], x)
    cols = adaptive_pool_matrix(x.shape[-1], output_size[1], x)
    return torch.matmul(torch.matmul(rows, x), cols.t())


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d):
    """`nn.AdaptiveAvgPool2d` that exports with a dynamic input size (see `adaptive_avg_pool2d`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return adaptive_avg_pool2d(x, self.output_size)


__all__ = [
    "AdaptiveAvgPool2d",
    "adaptive_avg_pool2d",
    "adaptive_pool_matrix",
    "ceil_to",
    "is_exporting",
    "size_oblivious_trace",
]
