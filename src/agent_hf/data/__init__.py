"""Datasets and mmseg-equivalent transforms for semantic segmentation.

The generated dataset (`make_synthetic_scene_parsing`, ...) needs `datasets`: it is imported on first use, so that
the model code, which reads the ADE20K class names from here, does not import `datasets`.
"""

import importlib
from typing import Any

from .ade20k import ADE20K_CLASSES, ADE20K_PALETTE, ade20k_id2label
from .transforms import (
    ADE20K_MEAN,
    ADE20K_STD,
    EvalTransform,
    TrainTransform,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    hsv_to_rgb,
    normalize,
    pad_to,
    photometric_distortion,
    random_crop,
    random_flip,
    random_resize,
    reduce_zero_label,
    rescale_size,
    resize_bilinear,
    resize_keep_ratio,
    resize_nearest,
    rgb_to_hsv,
    to_label_array,
    to_rgb_array,
)

_SYNTHETIC_NAMES = ("make_synthetic_scene_parsing", "save_as_image_folders", "synthetic_id2label", "synthetic_scenes")


def __getattr__(name: str) -> Any:
    if name in _SYNTHETIC_NAMES:
        return getattr(importlib.import_module(f"{__name__}.synthetic"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ADE20K_CLASSES",
    "ADE20K_MEAN",
    "ADE20K_PALETTE",
    "ADE20K_STD",
    "EvalTransform",
    "TrainTransform",
    "ade20k_id2label",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "hsv_to_rgb",
    "make_synthetic_scene_parsing",
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
    "save_as_image_folders",
    "synthetic_id2label",
    "synthetic_scenes",
    "to_label_array",
    "to_rgb_array",
]
