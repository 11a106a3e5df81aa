"""Checks of the models' inputs: `pixel_values`, and the segmentation labels of the loss, with errors that say what
to fix.

Shipped to the Hub with the model: imports only torch/transformers.
"""

from __future__ import annotations

import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)


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


def check_loss_labels(labels, pixel_values: torch.Tensor, num_labels: int, ignore_index: int, model_name: str) -> None:
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


__all__ = ["check_pixel_values", "check_loss_labels"]
