"""ImageNet-1k: the class names of the 1000 classes, in the order of the official models' outputs (the sorted WordNet
ids of the ImageNet-1k folders), shipped as ``imagenet_1k_labels.json`` (one short name per class)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

__all__ = ["IMAGENET_NUM_CLASSES", "imagenet_id2label"]

IMAGENET_NUM_CLASSES = 1000


@lru_cache(maxsize=1)
def _names() -> tuple[str, ...]:
    names = json.loads((resources.files("agent_hf") / "data" / "imagenet_1k_labels.json").read_text("utf-8"))
    if len(names) != IMAGENET_NUM_CLASSES:
        raise RuntimeError(f"imagenet_1k_labels.json holds {len(names)} names instead of {IMAGENET_NUM_CLASSES}")
    return tuple(names)


def imagenet_id2label() -> dict[int, str]:
    """``{class_id: name}`` for the 1000 ImageNet-1k classes (ids ``0..999``)."""
    return dict(enumerate(_names()))
