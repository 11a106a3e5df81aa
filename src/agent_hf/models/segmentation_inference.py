"""mmsegmentation's test-time inference (``EncoderDecoder.inference`` / ``aug_test``), shipped with every model folder.

The models return logits at 1/4 of the input resolution. mmseg turns them into a prediction at the size of the
*original* image, and so do these functions:

* :func:`predict_whole` (``test_cfg=dict(mode='whole')``, the paper's setting): one forward pass on the whole
  (keep-ratio resized) image; the logits are resized bilinearly to the input size, then to the original size.
* :func:`predict_slide` (``mode='slide'``): overlapping ``crop_size`` windows every ``stride`` pixels; each window's
  logits are resized to the window, summed into the full canvas and divided by the number of windows covering each
  pixel, then resized to the original size.
* :func:`predict_multiscale` (``MultiScaleFlipAug`` + ``aug_test``): the softmax probabilities of several resized
  (and optionally horizontally flipped) copies of the image, each brought back to the original size, averaged.
* :func:`segment`: the class map (argmax) of any of them; single-scale predictions go through
  :func:`upsampled_argmax`, which bounds the memory of the last resize (150 classes at the size of a 24-megapixel
  photo would be a 14 GB tensor) without changing a single pixel.

Inputs are normalized ``pixel_values``, one tensor per scale; :func:`multiscale_inputs` builds them from an image
(the image processor and the evaluation dataset use the same function). The evaluation script, the image processor's
``post_process_semantic_segmentation`` and the ``image-segmentation`` pipeline all run this code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# ServingLimits is re-exported: the pipeline's callers import it from here.
from .image_ops import ADE20K_MEAN, ADE20K_STD, ServingLimits, prepare_image, to_rgb_array

__all__ = [
    "ARGMAX_CHUNK_BYTES",
    "DEFAULT_EVAL_SCALE",
    "INFERENCE_MODES",
    "InferenceMode",
    "ServingLimits",
    "check_inference_settings",
    "count_forward_passes",
    "count_windows",
    "encode_decode",
    "multiscale_inputs",
    "predict_multiscale",
    "predict_slide",
    "predict_whole",
    "resize_logits",
    "scaled_bound",
    "segment",
    "slide_logits",
    "upsampled_argmax",
    "view_logits",
]

InferenceMode = Literal["whole", "slide"]
INFERENCE_MODES: tuple[str, ...] = ("whole", "slide")

#: mmseg's ADE20K test ``img_scale``: ``(long_edge, short_edge)`` bound of the keep-ratio resize.
DEFAULT_EVAL_SCALE: tuple[int, int] = (2048, 512)

#: :func:`upsampled_argmax` resizes at most this many bytes of logits at once.
ARGMAX_CHUNK_BYTES = 256 * 2**20


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if _is_int(value) else tuple(value) if isinstance(value, (list, tuple)) else ()
    if len(pair) != 2 or not all(_is_int(v) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a (height, width) pair of positive ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def check_inference_settings(
    mode: str = "whole",
    ratios: Sequence[float] = (1.0,),
    flip: bool = False,
    crop_size: int | Sequence[int] = (512, 512),
    stride: int | Sequence[int] = (341, 341),
) -> dict:
    """Validated inference settings, as keyword arguments of :func:`segment` (plus ``ratios``).

    Raises:
        ValueError: an unknown ``mode``, no or non-positive (or infinite) ``ratios``, a non-boolean ``flip``, a
            window/stride that is not a positive ``(height, width)``, or a stride larger than the window (rows and
            columns between windows would get no prediction; mmseg refuses it too).
    """
    if not isinstance(mode, str) or mode not in INFERENCE_MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, INFERENCE_MODES))}, got {mode!r}")
    ratios = (ratios,) if isinstance(ratios, (int, float)) else tuple(ratios) if isinstance(ratios, Sequence) else ()
    if not ratios or not all(
        isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and r > 0 for r in ratios
    ):
        raise ValueError(f"ratios must be a non-empty sequence of positive finite numbers, got {ratios!r}")
    if not isinstance(flip, (bool, np.bool_)):
        raise ValueError(f"flip must be True or False, got {flip!r}")
    crop_size, stride = _pair(crop_size, "crop_size"), _pair(stride, "stride")
    if stride[0] > crop_size[0] or stride[1] > crop_size[1]:
        raise ValueError(f"stride {stride} must not exceed crop_size {crop_size}: pixels between windows get no label")
    return {"mode": mode, "ratios": tuple(float(r) for r in ratios), "flip": bool(flip), "crop_size": crop_size,
            "stride": stride}  # fmt: skip


def resize_logits(logits: torch.Tensor, size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of ``(B, C, h, w)`` to ``size=(H, W)`` (a no-op when the size already matches)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    # Always the NCHW kernel, so that resizing a slice of the channels gives the same numbers as the whole tensor.
    return F.interpolate(logits.contiguous(), size=tuple(size), mode="bilinear", align_corners=align_corners)


def _align_corners(model) -> bool:
    return bool(getattr(model.config, "align_corners", False))


def encode_decode(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """mmseg ``encode_decode``: the decode head's logits ``(B, C, h/4, w/4)`` resized to the input ``(B, C, h, w)``."""
    logits = model(pixel_values=pixel_values).logits
    return resize_logits(logits, pixel_values.shape[-2:], _align_corners(model))


def upsampled_argmax(
    logits: torch.Tensor, size: Sequence[int], align_corners: bool = False, max_bytes: int = ARGMAX_CHUNK_BYTES
) -> torch.Tensor:
    """``resize_logits(logits, size, align_corners).argmax(dim=1)``, with bounded memory.

    When the resized logits would take more than ``max_bytes``, each image's classes are resized a few at a time
    and a running maximum is kept. Bilinear resizing treats every channel on its own, and ties (and NaNs) resolve to
    the first class as in ``argmax``, so the result is identical.

    Args:
        logits: ``(B, C, h, w)``.
        size: ``(H, W)`` output size.
        align_corners: of the bilinear resize.
        max_bytes: bound on the resized logits held at once.

    Returns:
        ``(B, H, W)`` ``int64`` class ids.
    """
    batch, channels = logits.shape[:2]
    per_channel = int(size[0]) * int(size[1]) * logits.element_size()
    if batch * channels * per_channel <= max_bytes:
        return resize_logits(logits, size, align_corners).argmax(dim=1)
    step = max(1, max_bytes // per_channel)
    labels = []
    for index in range(batch):
        best_value = best_class = None
        for start in range(0, channels, step):
            resized = resize_logits(logits[index : index + 1, start : start + step], size, align_corners)
            classes = resized.argmax(dim=1, keepdim=True)
            values = resized.gather(1, classes)
            classes += start
            if best_value is None:
                best_value, best_class = values, classes
                continue
            better = (values > best_value) | (values.isnan() & ~best_value.isnan())
            best_value = torch.where(better, values, best_value)
            best_class = torch.where(better, classes, best_class)
        labels.append(best_class[:, 0])
    return torch.cat(labels)


@torch.no_grad()
def predict_whole(model, pixel_values: torch.Tensor, output_size: Sequence[int]) -> torch.Tensor:
    """Whole-image inference.

    Args:
        model: an agent_hf segmentation model (in eval mode).
        pixel_values: ``(B, 3, h, w)`` normalized images (already resized for testing, not padded).
        output_size: ``(H, W)`` of the original images.

    Returns:
        ``(B, num_labels, H, W)`` logits.
    """
    return resize_logits(encode_decode(model, pixel_values), output_size, _align_corners(model))


def _num_windows(length: int, crop: int, stride: int) -> int:
    return max(length - crop + stride - 1, 0) // stride + 1


def _window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of mmseg's sliding windows along one axis (the last window is moved back inside the image)."""
    return [max(min(i * stride + crop, length) - crop, 0) for i in range(_num_windows(length, crop, stride))]


def count_windows(size: Sequence[int], crop_size: Sequence[int], stride: Sequence[int]) -> int:
    """How many sliding windows :func:`slide_logits` runs on an image of ``size=(height, width)``."""
    return _num_windows(size[0], crop_size[0], stride[0]) * _num_windows(size[1], crop_size[1], stride[1])


def count_forward_passes(sizes: Sequence[tuple[int, int]], settings: dict) -> int:
    """Forward passes :func:`segment` runs on one image with validated ``settings`` (see
    :func:`check_inference_settings`), ``sizes`` being its views' ``(height, width)`` after each scale's resize."""
    per_flip = sum(
        count_windows(size, settings["crop_size"], settings["stride"]) if settings["mode"] == "slide" else 1
        for size in sizes
    )
    return per_flip * (2 if settings["flip"] else 1)


@torch.no_grad()
def slide_logits(
    model,
    pixel_values: torch.Tensor,
    crop_size: tuple[int, int] = (512, 512),
    stride: tuple[int, int] = (341, 341),
) -> torch.Tensor:
    """mmseg ``slide_inference`` before the final resize: ``(B, num_labels, h, w)`` logits at the input size.

    Args:
        model: an agent_hf segmentation model (in eval mode).
        pixel_values: ``(B, 3, h, w)`` normalized images.
        crop_size: ``(height, width)`` of a window; images smaller than a window are processed whole.
        stride: ``(height, width)`` step between windows.
    """
    batch, _, height, width = pixel_values.shape
    (crop_h, crop_w), (stride_h, stride_w) = crop_size, stride
    if min(crop_h, crop_w, stride_h, stride_w) < 1 or stride_h > crop_h or stride_w > crop_w:
        raise ValueError(f"crop_size {crop_size} and stride {stride} must be positive, the stride not above the crop")
    canvas = pixel_values.new_zeros((batch, model.config.num_labels, height, width))
    counts = pixel_values.new_zeros((1, 1, height, width))
    for top in _window_starts(height, crop_h, stride_h):
        for left in _window_starts(width, crop_w, stride_w):
            bottom, right = min(top + crop_h, height), min(left + crop_w, width)
            window = pixel_values[:, :, top:bottom, left:right]
            canvas[:, :, top:bottom, left:right] += encode_decode(model, window)
            counts[:, :, top:bottom, left:right] += 1
    return canvas / counts


@torch.no_grad()
def predict_slide(
    model,
    pixel_values: torch.Tensor,
    output_size: Sequence[int],
    crop_size: tuple[int, int] = (512, 512),
    stride: tuple[int, int] = (341, 341),
) -> torch.Tensor:
    """Sliding-window inference (mmseg ``slide_inference``): :func:`slide_logits` (same arguments) resized to
    ``output_size``, the ``(H, W)`` of the original images.

    Returns:
        ``(B, num_labels, H, W)`` logits, averaged over the windows covering each pixel.
    """
    return resize_logits(slide_logits(model, pixel_values, crop_size, stride), output_size, _align_corners(model))


def view_logits(
    model,
    pixel_values: torch.Tensor,
    mode: InferenceMode = "whole",
    crop_size: tuple[int, int] = (512, 512),
    stride: tuple[int, int] = (341, 341),
) -> torch.Tensor:
    """``(B, num_labels, h, w)`` logits of one view ``(B, 3, h, w)`` at its own size, by ``"whole"`` inference or
    ``"slide"`` inference (``crop_size`` windows every ``stride`` pixels)."""
    if mode == "whole":
        return encode_decode(model, pixel_values)
    if mode == "slide":
        return slide_logits(model, pixel_values, crop_size, stride)
    raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")


@torch.no_grad()
def predict_multiscale(
    model,
    pixel_values: Sequence[torch.Tensor],
    output_size: Sequence[int],
    flip: bool = False,
    mode: InferenceMode = "whole",
    crop_size: tuple[int, int] = (512, 512),
    stride: tuple[int, int] = (341, 341),
) -> torch.Tensor:
    """Multi-scale (+ horizontal flip) test-time augmentation (mmseg ``aug_test``).

    Args:
        model: an agent_hf segmentation model (in eval mode).
        pixel_values: one ``(B, 3, h_i, w_i)`` tensor per scale (see :func:`multiscale_inputs`).
        output_size: ``(H, W)`` of the original images.
        flip: also run every scale on the horizontally flipped images (and flip the result back).
        mode: ``"whole"`` or ``"slide"`` inference for each view.
        crop_size, stride: sliding-window settings (``mode="slide"`` only).

    Returns:
        ``(B, num_labels, H, W)`` softmax probabilities averaged over the ``len(pixel_values) * (1 + flip)`` views.
    """
    if not pixel_values:
        raise ValueError("predict_multiscale needs at least one scale")
    total, views, align_corners = None, 0, _align_corners(model)
    for scaled in pixel_values:
        for flipped in (False, True) if flip else (False,):
            inputs = scaled.flip(-1) if flipped else scaled
            logits = resize_logits(view_logits(model, inputs, mode, crop_size, stride), output_size, align_corners)
            probabilities = logits.softmax(dim=1)
            probabilities = probabilities.flip(-1) if flipped else probabilities
            total = probabilities if total is None else total + probabilities
            views += 1
    return total / views


@torch.no_grad()
def segment(
    model, pixel_values: Sequence[torch.Tensor], output_size: Sequence[int], flip: bool = False, **view_settings
) -> torch.Tensor:
    """Predicted class ids ``(B, H, W)`` (``int64``): the argmax of :func:`predict_multiscale`, which takes the same
    arguments (``view_settings``: ``mode``, ``crop_size``, ``stride``).

    With a single scale and no flip the softmax is skipped (same argmax, as in mmseg's ``simple_test``) and the last
    resize goes through :func:`upsampled_argmax`.
    """
    if len(pixel_values) == 1 and not flip:
        logits = view_logits(model, pixel_values[0], **view_settings)
        return upsampled_argmax(logits, output_size, _align_corners(model))
    return predict_multiscale(model, pixel_values, output_size, flip, **view_settings).argmax(dim=1)


def scaled_bound(scale: tuple[int, int], ratio: float) -> tuple[int, int]:
    """mmseg ``MultiScaleFlipAug``'s bound for one ratio: ``(int(long * ratio), int(short * ratio))``."""
    return int(scale[0] * ratio), int(scale[1] * ratio)


def multiscale_inputs(
    image: np.ndarray | Image.Image,
    scale: tuple[int, int] = DEFAULT_EVAL_SCALE,
    ratios: Sequence[float] = (1.0,),
    mean: Sequence[float] = ADE20K_MEAN,
    std: Sequence[float] = ADE20K_STD,
) -> list[torch.Tensor]:
    """The normalized test inputs of one image, one ``(1, 3, h_i, w_i)`` tensor per ratio.

    Each is the image resized keeping its aspect ratio to fit ``scaled_bound(scale, ratio)`` (mmcv ``imrescale``
    with OpenCV's bilinear sampling), then normalized with ``mean``/``std`` (0-255 units): :func:`prepare_image`.
    """
    image = to_rgb_array(image)
    return [torch.from_numpy(prepare_image(image, scaled_bound(scale, ratio), mean, std))[None] for ratio in ratios]
