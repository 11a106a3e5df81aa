"""A small procedurally generated scene-parsing dataset (``scene_parse_150`` schema).

Each image is a mosaic of regions (anisotropic Voronoi cells with ellipses on top).
Every region is either "other" (annotation 0: a smooth, randomly colored
background) or one of ``K`` classes (annotation ``1..K``). A class is a fixed
combination of a mean color and a texture (stripes at an angle, checkerboard,
dot lattice or per-pixel noise), so it is recognizable from local appearance: a
small CNN or transformer learns it far above chance, and even per-pixel color
separates most classes. Appearance varies per image (texture phase, period and
angle jitter, lighting, sensor noise) so it is not memorisable by position.

Like ADE20K, annotation 0 is meant to be mapped to the ignore index with
reduce-zero-label, giving training ids ``0..K-1`` (see :func:`synthetic_id2label`).

Everything is a deterministic function of ``(seed, split, index)``; the class
appearance depends only on ``K``.
"""

from __future__ import annotations

import colorsys
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import datasets

__all__ = [
    "make_synthetic_scene_parsing",
    "save_as_image_folders",
    "synthetic_id2label",
    "synthetic_scenes",
]

_PATTERNS = ("stripes", "checker", "dots", "noise")
_COLOR_NAMES = (
    "red", "orange", "yellow", "lime", "green", "spring", "cyan", "azure", "blue",
    "violet", "magenta", "rose",
)  # fmt: skip
_SPLITS = ("train", "validation")
_ADE_SPLIT_DIRS = {"train": "training", "validation": "validation"}


@dataclass(frozen=True)
class _ClassStyle:
    color: np.ndarray  # (3,) float32 mean RGB, 0..255
    pattern: str
    period: float  # pixels
    angle: float  # radians (stripes only)
    name: str


def _class_styles(num_classes: int) -> list[_ClassStyle]:
    """Deterministic appearance of classes 1..K (index 0 here is class 1)."""
    styles: list[_ClassStyle] = []
    names: set[str] = set()
    for c in range(num_classes):
        hue = (c * 0.618033988749895) % 1.0  # golden-ratio steps spread hues evenly
        saturation = 0.85 if (c // 4) % 2 == 0 else 0.55
        value = 0.85 if (c // 8) % 2 == 0 else 0.6
        color = np.array(colorsys.hsv_to_rgb(hue, saturation, value), np.float32) * 255
        pattern = _PATTERNS[c % len(_PATTERNS)]
        name = f"{_COLOR_NAMES[round(hue * 12) % 12]}_{pattern}"
        if name in names:
            name = f"{name}_{c + 1}"
        names.add(name)
        styles.append(
            _ClassStyle(
                color=color,
                pattern=pattern,
                period=6.0 + 2.0 * ((c // 4) % 4),
                angle=np.deg2rad((37.0 * c) % 180.0),
                name=name,
            )
        )
    return styles


def synthetic_id2label(num_classes: int = 8) -> dict[int, str]:
    """Names of the synthetic classes after reduce-zero-label (ids ``0..K-1``).

    Annotation value ``k`` (``1..K``) is training id ``k - 1``; annotation 0 is
    "other" and maps to the ignore index.
    """
    return {i: style.name for i, style in enumerate(_class_styles(num_classes))}


def _texture(style: _ClassStyle, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Texture in ``[-1, 1]`` at pixel coordinates ``(yy, xx)``, with per-image jitter."""
    period = style.period * rng.uniform(0.9, 1.1)
    phase_y, phase_x = rng.uniform(0, period, size=2)
    y, x = yy + phase_y, xx + phase_x
    if style.pattern == "stripes":
        angle = style.angle + rng.uniform(-0.15, 0.15)
        wave = np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period)
        return np.tanh(3.0 * wave)
    if style.pattern == "checker":
        return np.sign(np.sin(np.pi * x / period) * np.sin(np.pi * y / period))
    if style.pattern == "dots":
        dy = np.mod(y, period) - period / 2
        dx = np.mod(x, period) - period / 2
        return np.where(dx * dx + dy * dy < (0.3 * period) ** 2, 1.0, -1.0).astype(np.float32)
    return rng.random(yy.shape, dtype=np.float32) * 2.0 - 1.0  # "noise"


def _render_scene(
    styles: list[_ClassStyle],
    height: int,
    width: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One ``(H, W, 3)`` uint8 image and its ``(H, W)`` uint8 annotation (0..K)."""
    num_classes = len(styles)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    # Layout: anisotropic Voronoi cells, then a few ellipses painted over them.
    num_cells = int(rng.integers(3, 8))
    centers = rng.uniform((0, 0), (height, width), size=(num_cells, 2)).astype(np.float32)
    stretch = rng.uniform(0.6, 1.6, size=(num_cells, 2)).astype(np.float32)
    dist = ((yy[None] - centers[:, 0, None, None]) / stretch[:, 0, None, None]) ** 2 + (
        (xx[None] - centers[:, 1, None, None]) / stretch[:, 1, None, None]
    ) ** 2
    # ~15% of the cells are "other" (0), like ADE20K's unlabeled stuff.
    cell_class = np.where(rng.random(num_cells) < 0.15, 0, rng.integers(1, num_classes + 1, size=num_cells))
    annotation = cell_class[np.argmin(dist, axis=0)].astype(np.uint8)
    for _ in range(int(rng.integers(0, 4))):
        cy, cx = rng.uniform((0, 0), (height, width))
        ry, rx = rng.uniform(0.08, 0.3, size=2) * min(height, width)
        theta = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        annotation[(u / rx) ** 2 + (v / ry) ** 2 <= 1.0] = rng.integers(1, num_classes + 1)

    # "Other": a smooth random color gradient.
    base = rng.uniform(40, 215, size=3).astype(np.float32)
    slope = rng.uniform(-0.4, 0.4, size=(2, 3)).astype(np.float32)
    image = base + yy[..., None] * slope[0] + xx[..., None] * slope[1]
    for label in np.unique(annotation):
        if label == 0:
            continue
        style = styles[label - 1]
        color = style.color + rng.normal(0.0, 6.0, size=3).astype(np.float32)  # color cast
        region = annotation == label
        texture = _texture(style, yy[region], xx[region], rng)  # only where it is drawn
        image[region] = color + 45.0 * texture[:, None]

    image += rng.normal(0.0, 8.0)  # global lighting
    image += 5.0 * rng.standard_normal(image.shape, dtype=np.float32)  # sensor noise
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), annotation


def _png_bytes(array: np.ndarray) -> dict[str, bytes | None]:
    """Encode as PNG ourselves: ``datasets`` would use a slower compression level."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


def make_synthetic_scene_parsing(
    num_train: int,
    num_val: int,
    num_classes: int = 8,
    seed: int = 0,
    min_size: int = 96,
    max_size: int = 256,
) -> datasets.DatasetDict:
    """Build the synthetic dataset in the ``scene_parse_150`` schema.

    Args:
        num_train, num_val: number of images per split.
        num_classes: ``K`` (1..255); annotations use ``0`` for "other" and ``1..K``.
        seed: base seed; image ``i`` of a split depends only on ``(seed, split, i)``.
        min_size, max_size: inclusive bounds of each image side (drawn
            independently, so aspect ratios vary).

    Returns:
        ``DatasetDict(train=..., validation=...)`` with columns ``image`` (PIL RGB)
        and ``annotation`` (PIL ``L``), both stored losslessly as PNG.
    """
    import datasets  # here, not at the top: `import agent_hf` must not import `datasets`

    _check_scene_arguments(num_classes, min_size, max_size)  # before any work: `synthetic_scenes` is lazy
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    splits = {}
    for split, count in zip(_SPLITS, (num_train, num_val), strict=True):
        images, annotations = [], []
        for image, annotation in synthetic_scenes(split, count, num_classes, seed, min_size, max_size):
            images.append(_png_bytes(image))
            annotations.append(_png_bytes(annotation))
        splits[split] = datasets.Dataset.from_dict({"image": images, "annotation": annotations}, features=features)
    return datasets.DatasetDict(splits)


def _check_scene_arguments(num_classes: int, min_size: int, max_size: int) -> None:
    if not 1 <= num_classes <= 255:
        raise ValueError(f"num_classes must be in 1..255, got {num_classes}")
    if not 1 <= min_size <= max_size:
        raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")


def synthetic_scenes(
    split: str, count: int, num_classes: int = 8, seed: int = 0, min_size: int = 96, max_size: int = 256
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The first ``count`` images of one split of :func:`make_synthetic_scene_parsing`, without ``datasets``.

    Yields ``(image, annotation)``: ``(H, W, 3)`` and ``(H, W)`` ``uint8`` arrays, the very pixels the dataset
    stores (losslessly) for the same arguments.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    _check_scene_arguments(num_classes, min_size, max_size)
    styles = _class_styles(num_classes)
    for i in range(count):
        rng = np.random.default_rng([seed, _SPLITS.index(split), i])
        height, width = (int(s) for s in rng.integers(min_size, max_size + 1, size=2))
        yield _render_scene(styles, height, width, rng)


def save_as_image_folders(
    dataset_dict: datasets.DatasetDict,
    root: str | Path,
    image_format: str = "jpg",
    id2label: dict[int, str] | None = None,
) -> Path:
    """Write a scene-parsing ``DatasetDict`` in the ``ADEChallengeData2016`` layout.

    Creates ``root/images/{training,validation}/<stem>.<image_format>`` and
    ``root/annotations/{training,validation}/<stem>.png`` (split ``train`` ->
    ``training``; other split names are kept), with stems like
    ``synthetic_train_00000001`` (1-based, as ADE's ``ADE_train_00000001``).
    Annotations are always PNG so they stay exact; JPEG images use quality 95.
    If ``id2label`` is given it is written to ``root/id2label.json``.

    Returns:
        ``Path(root)``.
    """
    root = Path(root)
    if image_format not in {"jpg", "png"}:
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    for split, dataset in dataset_dict.items():
        folder = _ADE_SPLIT_DIRS.get(split, split)
        image_dir = root / "images" / folder
        annotation_dir = root / "annotations" / folder
        image_dir.mkdir(parents=True, exist_ok=True)
        annotation_dir.mkdir(parents=True, exist_ok=True)
        for i, example in enumerate(dataset):
            stem = f"synthetic_{split}_{i + 1:08d}"
            image = example["image"].convert("RGB")
            if image_format == "jpg":
                image.save(image_dir / f"{stem}.jpg", quality=95)
            else:
                image.save(image_dir / f"{stem}.png")
            example["annotation"].save(annotation_dir / f"{stem}.png")
    if id2label is not None:
        (root / "id2label.json").write_text(json.dumps({str(k): v for k, v in id2label.items()}, indent=2) + "\n")
    return root
