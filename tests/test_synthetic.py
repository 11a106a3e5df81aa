"""The procedural scene-parsing dataset: schema, determinism, label range, learnability."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
from PIL import Image

from agent_hf.data import (
    TrainTransform,
    make_synthetic_scene_parsing,
    save_as_image_folders,
    synthetic_id2label,
    synthetic_scenes,
)

K = 8


@pytest.fixture(scope="module")
def dataset() -> datasets.DatasetDict:
    return make_synthetic_scene_parsing(num_train=24, num_val=8, num_classes=K, seed=0)


def _arrays(split: datasets.Dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(ex["image"]), np.asarray(ex["annotation"])) for ex in split]


def test_schema(dataset):
    assert set(dataset) == {"train", "validation"}
    assert dataset["train"].num_rows == 24 and dataset["validation"].num_rows == 8
    for split in dataset.values():
        assert split.column_names == ["image", "annotation"]
        assert isinstance(split.features["image"], datasets.Image)
        assert isinstance(split.features["annotation"], datasets.Image)
    example = dataset["train"][0]
    assert isinstance(example["image"], Image.Image) and example["image"].mode == "RGB"
    assert example["annotation"].mode == "L"
    assert example["image"].size == example["annotation"].size


def test_sizes_vary_within_bounds(dataset):
    sizes = {ex["image"].size for ex in dataset["train"]}
    assert all(96 <= w <= 256 and 96 <= h <= 256 for w, h in sizes)
    assert len({round(w / h, 2) for w, h in sizes}) > 5  # varied aspect ratios


def test_label_range_and_coverage(dataset):
    seen = set()
    for _, annotation in _arrays(dataset["train"]):
        assert annotation.dtype == np.uint8
        assert annotation.max() <= K
        seen |= set(np.unique(annotation).tolist())
    assert seen == set(range(K + 1))  # "other" (0) and every class 1..K occur


def test_determinism_and_seed_dependence(dataset):
    again = make_synthetic_scene_parsing(num_train=3, num_val=2, num_classes=K, seed=0)
    # image i depends only on (seed, split, i), not on how many images are made
    for (img_a, ann_a), (img_b, ann_b) in zip(_arrays(dataset["train"])[:3], _arrays(again["train"]), strict=True):
        np.testing.assert_array_equal(img_a, img_b)
        np.testing.assert_array_equal(ann_a, ann_b)
    np.testing.assert_array_equal(
        np.asarray(dataset["validation"][1]["image"]), np.asarray(again["validation"][1]["image"])
    )
    other = make_synthetic_scene_parsing(num_train=1, num_val=0, num_classes=K, seed=1)
    assert not np.array_equal(np.asarray(other["train"][0]["image"]), np.asarray(dataset["train"][0]["image"]))


def test_classes_are_learnable_from_local_appearance(dataset):
    """A nearest-class-mean color classifier is far above chance (1/K)."""
    feats, labels = [], []
    for image, annotation in _arrays(dataset["train"]):
        keep = annotation > 0
        feats.append(image[keep].astype(float))
        labels.append(annotation[keep])
    feats, labels = np.concatenate(feats), np.concatenate(labels)
    means = np.stack([feats[labels == c].mean(0) for c in range(1, K + 1)])
    correct = total = 0
    for image, annotation in _arrays(dataset["validation"]):
        keep = annotation > 0
        pixels = image[keep].astype(float)
        predicted = 1 + np.argmin(((pixels[:, None] - means[None]) ** 2).sum(-1), axis=1)
        correct += int((predicted == annotation[keep]).sum())
        total += int(keep.sum())
    assert correct / total > 0.6  # chance: 1/8


def test_id2label():
    names = synthetic_id2label(K)
    assert sorted(names) == list(range(K)) and len(set(names.values())) == K
    assert len(set(synthetic_id2label(40).values())) == 40


def test_save_as_image_folders(dataset, tmp_path):
    small = datasets.DatasetDict(
        train=dataset["train"].select(range(3)), validation=dataset["validation"].select(range(2))
    )
    root = save_as_image_folders(small, tmp_path / "synth", id2label=synthetic_id2label(K))
    images = sorted(p.name for p in (root / "images" / "training").iterdir())
    assert images == [f"synthetic_train_{i:08d}.jpg" for i in (1, 2, 3)]
    annotations = sorted((root / "annotations" / "validation").glob("*.png"))
    assert [p.stem for p in annotations] == [
        "synthetic_validation_00000001",
        "synthetic_validation_00000002",
    ]
    # annotations are lossless; JPEG images are close to the originals
    np.testing.assert_array_equal(
        np.asarray(Image.open(annotations[0])), np.asarray(small["validation"][0]["annotation"])
    )
    jpg = np.asarray(Image.open(root / "images" / "training" / images[0])).astype(int)
    assert np.abs(jpg - np.asarray(small["train"][0]["image"]).astype(int)).mean() < 8
    assert json.loads((root / "id2label.json").read_text())["0"] == synthetic_id2label(K)[0]


def test_train_transform_on_synthetic_sample(dataset):
    example = dataset["train"][0]
    out = TrainTransform(crop_size=(64, 64), scale=(256, 64), seed=0)(example["image"], example["annotation"])
    values = set(out["labels"].unique().tolist())
    assert values <= set(range(K)) | {255}


def test_synthetic_scenes_are_the_dataset_pixels(dataset):
    """The generator without `datasets` (used by the benchmark's bf16 agreement) yields the stored pixels."""
    scenes = list(synthetic_scenes("validation", 3, num_classes=8, seed=0))
    assert len(scenes) == 3
    for (image, annotation), example in zip(scenes, dataset["validation"]):
        assert np.array_equal(image, np.asarray(example["image"]))
        assert np.array_equal(annotation, np.asarray(example["annotation"]))
    with pytest.raises(ValueError, match="split"):
        next(synthetic_scenes("test", 1))
