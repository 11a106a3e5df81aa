"""ImageNet-1k and ImageFolder data for the image classifiers: the names of the 1000 classes, in the order of the
official models' outputs (the sorted WordNet ids of the ImageNet-1k folders), shipped as ``imagenet_1k_labels.json``
(one short name per class); an ImageFolder-layout split read lazily; streaming top-1/top-5 accuracy; a fine-tuning
transform. Used by ``scripts/run_image_classification.py``."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

__all__ = [
    "IMAGENET_NUM_CLASSES",
    "ImageFolderDataset",
    "TopKAccuracy",
    "imagenet_id2label",
    "random_resized_crop_transform",
]

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


# ------------------------------------------------------------------------------------------------ ImageFolder
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageFolderDataset:
    """An ImageFolder-layout split (`root/<class>/<image>`, as torchvision's `ImageFolder` and the official
    `datasets.ImageFolder(root/val)` read ImageNet): class ids are the sorted class folder names' positions, images
    are read lazily (one at a time, when the data loader asks), each turned into ``pixel_values`` by `transform`.

    Args:
        root: the split's folder.
        transform: a PIL RGB image -> ``(3, H, W)`` float array/tensor.
        max_samples: keep the first ones only (sorted by class, then name).

    Items: ``{"pixel_values": (3, H, W) tensor, "labels": class id}``.
    """

    def __init__(self, root, transform, max_samples: int | None = None):
        from pathlib import Path

        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is not a folder (expected an ImageFolder layout: <class>/<image>)")
        self.classes = sorted(entry.name for entry in self.root.iterdir() if entry.is_dir())
        if not self.classes:
            raise ValueError(f"{self.root} has no class folders (expected an ImageFolder layout: <class>/<image>)")
        self.samples = [
            (path, index)
            for index, name in enumerate(self.classes)
            for path in sorted((self.root / name).rglob("*"))
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not self.samples:
            raise ValueError(f"{self.root} holds no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
        if max_samples is not None:
            self.samples = self.samples[:max_samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        import torch
        from PIL import Image

        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError) as error:
            raise ValueError(f"{path} is not a readable image ({error})") from error
        return {"pixel_values": torch.as_tensor(self.transform(rgb)), "labels": label}


class TopKAccuracy:
    """Streaming top-1 / top-5 accuracy: `update(logits (B, C), labels (B,))` per batch, `compute()` at the end (the
    form of transformers' `compute_metrics` with `batch_eval_metrics=True`, whose batches are already gathered over
    processes)."""

    def __init__(self, ks: tuple[int, ...] = (1, 5)):
        self.ks = ks
        self.reset()

    def reset(self) -> None:
        self.correct = dict.fromkeys(self.ks, 0)
        self.total = 0

    def update(self, logits, labels) -> None:
        import torch

        logits, labels = torch.as_tensor(logits), torch.as_tensor(labels)
        top = logits.topk(min(max(self.ks), logits.shape[-1]), dim=-1).indices
        hits = top == labels[:, None]
        for k in self.ks:
            self.correct[k] += int(hits[:, :k].any(dim=-1).sum())
        self.total += int(labels.numel())

    def compute(self) -> dict[str, float]:
        """``{"accuracy_top1": ..., "accuracy_top5": ...}`` as fractions (NaN before any update)."""
        return {f"accuracy_top{k}": (self.correct[k] / self.total if self.total else float("nan")) for k in self.ks}

    def __call__(self, eval_prediction, compute_result: bool = False) -> dict[str, float] | None:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        self.update(logits, eval_prediction.label_ids)
        if not compute_result:
            return None
        result = self.compute()
        self.reset()
        return result


def random_resized_crop_transform(size: int, image_mean, image_std, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """A fine-tuning transform: a random crop of `scale` of the area and `ratio` aspect (10 tries, else the central
    crop of the closest ratio, as torchvision's `RandomResizedCrop`), resized to `size` x `size` bicubically, flipped
    horizontally half the time, scaled to 0-1 and normalized. (The official ImageNet recipe adds RandAugment, mixup,
    cutmix and random erasing, which agent-hf does not reproduce.)"""
    import math
    import random

    import numpy as np
    from PIL import Image

    mean, std = np.asarray(image_mean, np.float32), np.asarray(image_std, np.float32)

    def crop_box(width: int, height: int) -> tuple[int, int, int, int]:
        area = width * height
        for _ in range(10):
            target = area * random.uniform(*scale)
            aspect = math.exp(random.uniform(math.log(ratio[0]), math.log(ratio[1])))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                left, top = random.randint(0, width - w), random.randint(0, height - h)
                return left, top, left + w, top + h
        aspect = min(max(width / height, ratio[0]), ratio[1])
        w, h = (width, round(width / aspect)) if width / height < aspect else (round(height * aspect), height)
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def transform(image):
        image = image.resize((size, size), Image.BICUBIC, box=crop_box(*image.size))
        if random.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        array = (np.asarray(image, np.float32) / 255.0 - mean) / std
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    return transform
