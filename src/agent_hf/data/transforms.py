"""mmsegmentation-equivalent data transforms on numpy arrays.

These reproduce, step by step, the ADE20K pipelines of the official Agent
Attention segmentation code (mmsegmentation 0.28 with mmcv 1.x, OpenCV backend)::

    train: LoadAnnotations(reduce_zero_label=True)
           -> Resize(img_scale=(2048, 512), ratio_range=(0.5, 2.0))   # keep ratio
           -> RandomCrop(crop_size=(512, 512), cat_max_ratio=0.75)
           -> RandomFlip(prob=0.5)
           -> PhotoMetricDistortion()
           -> Normalize(mean, std, to_rgb=True)
           -> Pad(size=(512, 512), pad_val=0, seg_pad_val=255)
    test:  Resize(img_scale=(2048, 512), keep_ratio=True) -> Normalize

The test pipeline's steps (:func:`to_rgb_array`, :func:`rescale_size`, :func:`resize_bilinear`,
:func:`resize_nearest`, :func:`resize_keep_ratio`, :func:`normalize`, :func:`pad_to` and the ADE20K mean/std)
live in :mod:`agent_hf.models.image_ops`, which is shipped with every model folder so that the image processor uses the
very same code; they are re-exported here.

Conventions
-----------
* Images are ``(H, W, 3)`` ``uint8`` arrays in **RGB** order. mmseg works in BGR and
  converts to RGB inside ``Normalize``; every step before that is either
  channel-order agnostic (resize, crop, flip, brightness, contrast) or symmetric
  under swapping R and B (OpenCV's BGR->HSV on BGR data equals RGB->HSV on RGB
  data), so working in RGB throughout gives identical numbers.
* Label maps are ``(H, W)`` ``uint8`` arrays; 255 is the ignore index.
* Sizes are given the way mmseg/mmcv take them: ``scale=(long_edge, short_edge)``
  for keep-ratio resizing, ``crop_size``/``size=(height, width)`` for crop/pad,
  and ``(width, height)`` for the explicit output size of :func:`resize_bilinear`
  and :func:`resize_nearest` (like ``cv2.resize``).
* Every random function takes an explicit ``numpy.random.Generator`` (keyword
  ``rng``) and draws from it in the same order and with the same distributions as
  mmseg draws from ``np.random``, so a pipeline is reproducible from a seed.

Fidelity to OpenCV (why PIL is not used for resizing)
-----------------------------------------------------
mmcv resizes with ``cv2.resize``: ``INTER_LINEAR`` for images and
``INTER_NEAREST`` for labels, and PhotoMetricDistortion goes through
``cv2.cvtColor`` BGR<->HSV. PIL matches none of these:

* ``INTER_LINEAR`` samples the two nearest source pixels at the half-pixel-center
  position ``(x + 0.5) * src / dst - 0.5`` and does **not** antialias when
  shrinking. PIL's ``Image.resize(BILINEAR)`` widens its filter by the shrink
  factor (it antialiases, even with ``reducing_gap=None``), so for ratios < 1, which
  ``ratio_range=(0.5, 2.0)`` produces half of the time, it differs by many gray
  levels near edges; when enlarging it agrees only to +-1 (different rounding).
* ``INTER_NEAREST`` picks source index ``floor(x * src / dst)``; PIL's ``NEAREST``
  picks ``floor((x + 0.5) * src / dst)``, shifting label maps by up to one pixel.

So :func:`resize_bilinear`, :func:`resize_nearest`, :func:`rgb_to_hsv` and
:func:`hsv_to_rgb` re-implement OpenCV's integer / float32 arithmetic in numpy. In
our checks against opencv-python 4.10 and 5.0 (x86-64, AVX2 code path) they are
bit-exact: random image sizes and channel counts for the resizes, every 8-bit
color for the HSV conversions.

Known, deliberate differences from mmseg
----------------------------------------
* OpenCV builds for other CPUs (ARM, or x86 without AVX2) use other SIMD block
  widths in HSV->RGB; there the last pixels of a row can differ by 1 gray level.
* 16-bit images are reduced to 8 bits by dropping the low byte (``v >> 8``), as
  OpenCV's ``IMREAD_COLOR`` PNG decoder does.
* Labels outside ``0..255`` raise ``ValueError``; mmseg would silently wrap them with
  ``astype(np.uint8)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

# The test pipeline's operations (and the mean/std) are shipped with the model, so they live in `image_ops`.
from ..models.image_ops import (
    _SIXTEEN_BIT_MODES,
    ADE20K_MEAN,
    ADE20K_STD,
    ImageInput,
    _where,
    normalize,
    pad_to,
    prepare_image,
    rescale_size,
    resize_bilinear,
    resize_keep_ratio,
    resize_nearest,
    to_rgb_array,
)

__all__ = [
    "ADE20K_MEAN",
    "ADE20K_STD",
    "EvalTransform",
    "TrainTransform",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "hsv_to_rgb",
    "normalize",
    "pad_to",
    "photometric_distortion",
    "random_crop",
    "random_flip",
    "random_resize",
    "reduce_zero_label",
    "rescale_size",
    "resize_bilinear",
    "resize_keep_ratio",
    "resize_nearest",
    "rgb_to_hsv",
    "to_label_array",
    "to_rgb_array",
]


def to_label_array(label: ImageInput, name: str | None = None) -> np.ndarray:
    """Convert a label map to an ``(H, W)`` ``uint8`` array.

    Accepts a single-channel PIL image (modes ``L``, ``P``, ``I``, ``I;16*``) or an
    integer array ``(H, W)`` / ``(H, W, 1)``; values must lie in ``0..255``.

    Raises:
        ValueError: multi-channel masks, non-integer dtypes or values outside 0..255.
    """
    if isinstance(label, Image.Image):
        if label.mode not in {"L", "P", "1"} | _SIXTEEN_BIT_MODES:
            raise ValueError(f"{_where(name)}label image mode {label.mode!r} is not a single-channel index mask")
        array = np.asarray(label)
    else:
        array = np.asarray(label)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise ValueError(f"{_where(name)}expected an (H, W) label map, got {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{_where(name)}label dtype {array.dtype} is not an integer")
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            bad = array.min() if array.min() < 0 else array.max()
            raise ValueError(f"{_where(name)}label value {int(bad)} is outside the range [0, 255]")
        array = array.astype(np.uint8)
    return array


def _check_pair(img: np.ndarray, seg: np.ndarray, name: str | None = None) -> None:
    if img.shape[:2] != seg.shape[:2]:
        raise ValueError(
            f"{_where(name)}image size (h={img.shape[0]}, w={img.shape[1]}) and label "
            f"size (h={seg.shape[0]}, w={seg.shape[1]}) differ"
        )


# ------------------------------------------------------------------ label mapping
def reduce_zero_label(seg: np.ndarray) -> np.ndarray:
    """ADE20K's reduce-zero-label: ``0 -> 255`` (ignore), ``k -> k - 1``, ``255 -> 255``.

    Args:
        seg: ``(H, W)`` integer label map with values in ``0..255``.

    Returns:
        A new ``(H, W)`` ``uint8`` array.
    """
    seg = to_label_array(seg)
    # uint8 arithmetic wraps 0 - 1 to 255, which is exactly mmseg's
    # "0 -> 255; subtract 1; 254 -> 255" sequence; only 255 itself must be restored.
    reduced = seg - np.uint8(1)
    reduced[seg == 255] = 255
    return reduced


def random_resize(
    img: np.ndarray,
    seg: np.ndarray,
    scale: tuple[int, int] = (2048, 512),
    ratio_range: tuple[float, float] = (0.5, 2.0),
    *,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """mmseg ``Resize(img_scale=scale, ratio_range=ratio_range)`` (keep ratio).

    Draws ``r ~ U[ratio_range)`` (one ``rng.random()`` call), sets the bound to
    ``(int(scale[0] * r), int(scale[1] * r))`` and rescales the image (bilinear) and
    the label map (nearest) with :func:`resize_keep_ratio`.

    Returns:
        ``(img, seg)`` resized to the same new ``(H', W')``.
    """
    _check_pair(img, seg)
    min_ratio, max_ratio = ratio_range
    if min_ratio > max_ratio:
        raise ValueError(f"ratio_range {ratio_range} must be (min, max)")
    ratio = rng.random() * (max_ratio - min_ratio) + min_ratio
    target = (int(scale[0] * ratio), int(scale[1] * ratio))
    return (
        resize_keep_ratio(img, target, "bilinear"),
        resize_keep_ratio(seg, target, "nearest"),
    )


# ----------------------------------------------------------------- crop/flip/pad
def _crop_is_balanced(window: np.ndarray, cat_max_ratio: float, ignore_index: int) -> bool:
    counts = np.bincount(window.ravel(), minlength=256)
    if 0 <= ignore_index < counts.size:
        counts[ignore_index] = 0
    counts = counts[counts > 0]
    return counts.size > 1 and counts.max() / counts.sum() < cat_max_ratio


def random_crop(
    img: np.ndarray,
    seg: np.ndarray,
    crop_size: tuple[int, int] = (512, 512),
    cat_max_ratio: float = 0.75,
    ignore_index: int = 255,
    *,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """mmseg ``RandomCrop(crop_size, cat_max_ratio, ignore_index)``.

    A crop offset is drawn as ``oy = rng.integers(0, max(H - ch, 0) + 1)`` then
    ``ox = rng.integers(0, max(W - cw, 0) + 1)``. If ``cat_max_ratio < 1`` the crop
    is accepted when its label window holds more than one non-ignored class and
    the most frequent one covers less than ``cat_max_ratio`` of the non-ignored
    pixels; otherwise a new offset is drawn, at most 10 times. After 10 rejections
    the 11th offset is used unchecked (as in mmseg). An image smaller than the crop
    is returned whole along that axis (pad it afterwards with :func:`pad_to`).

    Args:
        img: ``(H, W, C)`` image.
        seg: ``(H, W)`` label map.
        crop_size: ``(height, width)``.

    Returns:
        ``(img, seg)`` of size ``(min(H, ch), min(W, cw))``.
    """
    _check_pair(img, seg)
    crop_h, crop_w = crop_size
    if crop_h <= 0 or crop_w <= 0:
        raise ValueError(f"crop_size {crop_size} must be positive")
    margin_h = max(img.shape[0] - crop_h, 0)
    margin_w = max(img.shape[1] - crop_w, 0)

    def draw_offset() -> tuple[int, int]:
        offset_h = int(rng.integers(0, margin_h + 1))
        offset_w = int(rng.integers(0, margin_w + 1))
        return offset_h, offset_w

    top, left = draw_offset()
    if cat_max_ratio < 1.0:
        for _ in range(10):
            window = seg[top : top + crop_h, left : left + crop_w]
            if _crop_is_balanced(window, cat_max_ratio, ignore_index):
                break
            top, left = draw_offset()
    return (
        img[top : top + crop_h, left : left + crop_w],
        seg[top : top + crop_h, left : left + crop_w],
    )


def random_flip(
    img: np.ndarray, seg: np.ndarray, p: float = 0.5, *, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """mmseg ``RandomFlip(prob=p)``: flip both left-right when ``rng.random() < p``.

    One number is always drawn, even for ``p`` of 0 or 1 (as in mmseg), so the
    number of draws never depends on ``p``.
    """
    _check_pair(img, seg)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"flip probability {p} must be in [0, 1]")
    if rng.random() < p:
        return np.ascontiguousarray(img[:, ::-1]), np.ascontiguousarray(seg[:, ::-1])
    return img, seg


# ---------------------------------------------------------------------- color / HSV
_HSV_SHIFT = 12
_CV_HSV_BLOCK = 32  # pixels per iteration of OpenCV's AVX2 8-bit HSV->RGB kernel
_LEVELS = np.arange(1, 256, dtype=np.float64)
# OpenCV's reciprocal tables for 8-bit RGB->HSV (no exact .5 ties occur, so np.rint
# matches cvRound).
_SDIV = np.concatenate([[0], np.rint((255 << _HSV_SHIFT) / _LEVELS)]).astype(np.int32)
_HDIV180 = np.concatenate([[0], np.rint((180 << _HSV_SHIFT) / (6.0 * _LEVELS))]).astype(np.int32)


def rgb_to_hsv(img: np.ndarray) -> np.ndarray:
    """``cv2.cvtColor(img, cv2.COLOR_RGB2HSV)`` for ``uint8`` images, in numpy.

    OpenCV's 8-bit convention: ``H`` in ``[0, 180)`` (degrees / 2), ``S`` and ``V`` in
    ``[0, 255]``; integer fixed-point arithmetic with 12 fractional bits, bit-exact
    with OpenCV. E.g. red ``(255, 0, 0) -> (0, 255, 255)``, green ``-> (60, 255, 255)``,
    blue ``-> (120, 255, 255)``, grays ``(g, g, g) -> (0, 0, g)``.

    Args:
        img: ``(..., 3)`` ``uint8`` RGB.

    Returns:
        ``(..., 3)`` ``uint8`` HSV.
    """
    # int32 is enough: |h * hdiv| <= 1275 * 122880 and diff * sdiv <= 255 * 1044480.
    r, g, b = (img[..., i].astype(np.int32) for i in range(3))
    v = np.maximum(np.maximum(r, g), b)
    diff = v - np.minimum(np.minimum(r, g), b)
    s = (diff * _SDIV[v] + (1 << (_HSV_SHIFT - 1))) >> _HSV_SHIFT
    # Red wins ties over green, green over blue (OpenCV's branch order).
    h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * _HDIV180[diff] + (1 << (_HSV_SHIFT - 1))) >> _HSV_SHIFT  # floor shift
    h = np.where(h < 0, h + 180, h)
    return np.stack([h, s, v], axis=-1).astype(np.uint8)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """``cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)`` for ``uint8`` images, in numpy.

    Bit-exact with OpenCV 4.x/5.x on x86 CPUs with AVX2 (checked exhaustively over
    all 8-bit HSV triples against opencv-python 4.10 and 5.0). OpenCV converts each
    image row in blocks of 32 pixels with float32 SIMD code that fuses ``1 - s * x``
    into one FMA and *truncates* ``channel * 255``; the last ``W mod 32`` pixels of
    a row go through a scalar loop that *rounds* (half to even) instead. Both are
    reproduced, so e.g. cyan ``(90, 255, 255)`` becomes ``(0, 254, 255)`` inside a
    block but ``(0, 255, 255)`` in a row tail. (Training crops are 512 wide, so
    there is no tail there.)

    Args:
        hsv: ``(..., W, 3)`` ``uint8`` HSV with ``H`` in ``[0, 180)``.

    Returns:
        ``(..., W, 3)`` ``uint8`` RGB.
    """
    f32 = np.float32
    inv255 = f32(1.0) / f32(255.0)
    h = hsv[..., 0].astype(f32) * (f32(6.0) / f32(180.0))
    s = hsv[..., 1].astype(f32) * inv255
    v = hsv[..., 2].astype(f32) * inv255
    whole = np.trunc(h)
    frac = h - whole
    # The float32 product s * x is exact in float64, so evaluating 1 - s * x in
    # float64 and rounding once to float32 is what a fused multiply-add gives.
    s64 = s.astype(np.float64)
    tab0 = v
    tab1 = v * (f32(1.0) - s)
    tab2 = v * (1.0 - s64 * frac).astype(f32)
    tab3 = v * (1.0 - s64 * (f32(1.0) - frac)).astype(f32)
    sector = whole - f32(6.0) * np.trunc(whole * (f32(1.0) / f32(6.0)))
    # sectors 0..5 read (r, g, b) from the tabs as in OpenCV's sector table
    r = np.select([sector < 1, sector < 2, sector < 4, sector < 5], [tab0, tab2, tab1, tab3], tab0)
    g = np.select([sector < 1, sector < 3, sector < 4], [tab3, tab0, tab2], tab1)
    b = np.select([sector < 2, sector < 3, sector < 5], [tab1, tab3, tab0], tab2)
    rgb = np.stack([r, g, b], axis=-1) * f32(255.0)
    width = hsv.shape[-2]
    block_end = width - width % _CV_HSV_BLOCK
    rgb[..., :block_end, :] = np.trunc(rgb[..., :block_end, :])
    rgb[..., block_end:, :] = np.rint(rgb[..., block_end:, :])
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg's ``PhotoMetricDistortion.convert``: float32 affine map, clip, truncate."""
    out = img.astype(np.float32) * alpha + beta
    return np.clip(out, 0, 255).astype(np.uint8)


def adjust_brightness(img: np.ndarray, delta: float) -> np.ndarray:
    """Add ``delta`` to every channel; clip to ``[0, 255]``; truncate to ``uint8``."""
    return _convert(img, beta=delta)


def adjust_contrast(img: np.ndarray, alpha: float) -> np.ndarray:
    """Multiply every channel by ``alpha``; clip to ``[0, 255]``; truncate to ``uint8``."""
    return _convert(img, alpha=alpha)


def adjust_saturation(img: np.ndarray, alpha: float) -> np.ndarray:
    """Scale OpenCV 8-bit HSV saturation by ``alpha`` (clip, truncate), back to RGB."""
    hsv = rgb_to_hsv(img)
    hsv[..., 1] = _convert(hsv[..., 1], alpha=alpha)
    return hsv_to_rgb(hsv)


def adjust_hue(img: np.ndarray, delta: int) -> np.ndarray:
    """Rotate OpenCV 8-bit hue: ``H <- (H + delta) mod 180`` (2 degrees per unit)."""
    hsv = rgb_to_hsv(img)
    hsv[..., 0] = (hsv[..., 0].astype(np.int64) + int(delta)) % 180
    return hsv_to_rgb(hsv)


def photometric_distortion(
    img: np.ndarray,
    *,
    rng: np.random.Generator,
    brightness_delta: int = 32,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: int = 18,
) -> np.ndarray:
    """mmseg ``PhotoMetricDistortion`` on an ``(H, W, 3)`` ``uint8`` RGB image.

    Random draws, in mmseg's order (each "coin" is ``rng.integers(2)``)::

        coin -> brightness:  delta ~ U(-brightness_delta, brightness_delta)
        mode = rng.integers(2)
        if mode == 1: coin -> contrast: alpha ~ U(contrast_range)
        coin -> saturation:  alpha ~ U(saturation_range)
        coin -> hue:         delta = rng.integers(-hue_delta, hue_delta)  # high excl.
        if mode == 0: coin -> contrast: alpha ~ U(contrast_range)

    A parameter is only drawn when its coin is 1. Each step clips to ``[0, 255]``
    and truncates to ``uint8``.
    """
    if rng.integers(2):
        img = adjust_brightness(img, rng.uniform(-brightness_delta, brightness_delta))
    contrast_first = bool(rng.integers(2))
    if contrast_first and rng.integers(2):
        img = adjust_contrast(img, rng.uniform(*contrast_range))
    if rng.integers(2):
        img = adjust_saturation(img, rng.uniform(*saturation_range))
    if rng.integers(2):
        img = adjust_hue(img, int(rng.integers(-hue_delta, hue_delta)))
    if not contrast_first and rng.integers(2):
        img = adjust_contrast(img, rng.uniform(*contrast_range))
    return img


class TrainTransform:
    """The mmseg ADE20K training pipeline for one ``(image, label)`` pair.

    Steps: [reduce-zero-label] -> :func:`random_resize` -> :func:`random_crop` ->
    :func:`random_flip` -> :func:`photometric_distortion` -> :func:`normalize` ->
    :func:`pad_to` (image with 0 *after* normalization, label with 255).

    Randomness: pass ``rng=`` to :meth:`__call__` for full control. Otherwise the
    transform keeps its own generator, created lazily per process. In the main
    process it is seeded with ``seed`` (or ``torch.initial_seed()`` if ``seed`` is
    None). Inside a ``torch.utils.data.DataLoader`` worker it is seeded with
    ``(seed, worker_info.seed)``, so workers never replay each other's augmentations
    and every epoch's fresh workers get new streams, all reproducible under
    ``torch.manual_seed``.

    Args:
        crop_size: ``(height, width)`` of the output.
        scale: ``(long_edge, short_edge)`` base bound for the random resize.
        ratio_range: range of the random resize ratio.
        cat_max_ratio: max share of a single class in an accepted crop.
        flip_prob: probability of a horizontal flip.
        mean, std: RGB normalization constants (0..255 units).
        reduce_labels: apply :func:`reduce_zero_label` first (ADE20K: True).
        ignore_index: label value excluded from the crop statistics; also the pad
            value of the label.
        seed: optional seed for the internal generator.
    """

    def __init__(
        self,
        crop_size: tuple[int, int] = (512, 512),
        scale: tuple[int, int] = (2048, 512),
        ratio_range: tuple[float, float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        flip_prob: float = 0.5,
        mean: Sequence[float] = ADE20K_MEAN,
        std: Sequence[float] = ADE20K_STD,
        reduce_labels: bool = True,
        ignore_index: int = 255,
        seed: int | None = None,
    ) -> None:
        self.crop_size = tuple(crop_size)
        self.scale = tuple(scale)
        self.ratio_range = tuple(ratio_range)
        self.cat_max_ratio = cat_max_ratio
        self.flip_prob = flip_prob
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.reduce_labels = reduce_labels
        self.ignore_index = ignore_index
        self.seed = seed
        self._rng: np.random.Generator | None = None
        self._rng_owner: tuple[int, int | None] | None = None

    def _generator(self) -> np.random.Generator:
        worker = torch.utils.data.get_worker_info()
        owner = (os.getpid(), None if worker is None else worker.seed)
        if self._rng is None or self._rng_owner != owner:
            if worker is None:
                entropy = self.seed if self.seed is not None else torch.initial_seed()
            else:
                entropy = [worker.seed] if self.seed is None else [self.seed, worker.seed]
            self._rng = np.random.default_rng(entropy)
            self._rng_owner = owner
        return self._rng

    def __call__(
        self,
        image: ImageInput,
        label: ImageInput,
        *,
        rng: np.random.Generator | None = None,
        name: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Transform one sample.

        Args:
            image: PIL image or array (see :func:`to_rgb_array`).
            label: PIL mask or array (see :func:`to_label_array`), same size.
            rng: generator to draw from (default: the transform's own).
            name: sample identifier used in error messages.

        Returns:
            ``pixel_values``: ``float32`` tensor ``(3, crop_h, crop_w)``;
            ``labels``: ``int64`` tensor ``(crop_h, crop_w)`` (255 = ignore).
        """
        rng = self._generator() if rng is None else rng
        img = to_rgb_array(image, name)
        seg = to_label_array(label, name)
        _check_pair(img, seg, name)
        if self.reduce_labels:
            seg = reduce_zero_label(seg)
        img, seg = random_resize(img, seg, self.scale, self.ratio_range, rng=rng)
        img, seg = random_crop(img, seg, self.crop_size, self.cat_max_ratio, self.ignore_index, rng=rng)
        img, seg = random_flip(img, seg, self.flip_prob, rng=rng)
        img = photometric_distortion(img, rng=rng)
        pixels = normalize(img, self.mean, self.std)
        pixels, seg = pad_to(pixels, seg, self.crop_size, 0, self.ignore_index, channels_first=True)
        return {
            "pixel_values": torch.from_numpy(np.ascontiguousarray(pixels)),
            "labels": torch.from_numpy(seg.astype(np.int64)),
        }


class EvalTransform:
    """The mmseg ADE20K test pipeline: keep-ratio resize + normalize.

    The label is *not* resized: mmseg scores predictions at the original
    resolution (the model's logits are upsampled to the label's size), so the
    label map is returned at its original size, only passed through
    :func:`reduce_zero_label` when ``reduce_labels`` is True (use the same setting
    as for training and then ``MeanIoU(reduce_labels=False)``).

    Args:
        scale: ``(long_edge, short_edge)`` bound of the resize.
        mean, std: RGB normalization constants (0..255 units).
        reduce_labels: apply :func:`reduce_zero_label` to the label.
    """

    def __init__(
        self,
        scale: tuple[int, int] = (2048, 512),
        mean: Sequence[float] = ADE20K_MEAN,
        std: Sequence[float] = ADE20K_STD,
        reduce_labels: bool = True,
    ) -> None:
        self.scale = tuple(scale)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.reduce_labels = reduce_labels

    def __call__(
        self,
        image: ImageInput,
        label: ImageInput | None = None,
        *,
        name: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Transform one sample.

        Returns:
            ``pixel_values``: ``float32`` tensor ``(3, H', W')`` (resized);
            ``labels`` (only if a label is given): ``int64`` tensor ``(H, W)`` at
            the original image size.
        """
        img = to_rgb_array(image, name)
        out = {"pixel_values": torch.from_numpy(prepare_image(img, self.scale, self.mean, self.std, name))}
        if label is not None:
            seg = to_label_array(label, name)
            _check_pair(img, seg, name)
            if self.reduce_labels:
                seg = reduce_zero_label(seg)
            out["labels"] = torch.from_numpy(seg.astype(np.int64))
        return out
