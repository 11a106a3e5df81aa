"""Datasets and mmseg-equivalent transforms for semantic segmentation.

The generated dataset (`make_synthetic_scene_parsing`, ...) needs `datasets`: it is imported on first use, so that
the model code, which reads the ADE20K class names from here, does not import `datasets`.
"""

import importlib
from typing import Any

from . import transforms
from .ade20k import ADE20K_CLASSES, ADE20K_PALETTE, ade20k_id2label
from .transforms import *  # noqa: F403 (the mmseg-equivalent transforms, as listed in transforms.__all__)

_SYNTHETIC_NAMES = ("make_synthetic_scene_parsing", "save_as_image_folders", "synthetic_id2label", "synthetic_scenes")


def __getattr__(name: str) -> Any:
    if name in _SYNTHETIC_NAMES:
        return getattr(importlib.import_module(f"{__name__}.synthetic"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ADE20K_CLASSES", "ADE20K_PALETTE", "ade20k_id2label"]
__all__ += [*_SYNTHETIC_NAMES, *transforms.__all__]
