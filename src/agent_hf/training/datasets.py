"""Scene-parsing splits through the mmseg pipelines, with augmentations that a resumed run reproduces.

* :class:`TrainDataset`: a map-style split through the mmseg train pipeline. Sample ``i`` of epoch ``e`` is
  augmented with a generator derived from ``(seed, e, i)`` (:func:`augmentation_rng`), whatever process or
  dataloader worker reads it, so an interrupted and resumed run sees exactly the batches of an uninterrupted one.
  :class:`EpochSampler` (the order of each epoch) hands it ``e * len(dataset) + i``.
* :class:`StreamingTrainDataset`: the same pipeline over a ``datasets.IterableDataset`` that has already been split
  across processes (``datasets.distributed.split_dataset_by_node``); its generators are derived from
  ``(seed, epoch, position in the stream, stream shard)``.
* :class:`EvalDataset` / :class:`StreamingEvalDataset` and :class:`EvalSettings`: the mmseg test pipeline.
* :func:`pad_collate`: pads crops to the crop size and stacks them.

Errors about a sample raise :class:`InvalidSampleError`, which names it (split, index and file name).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data.transforms import ADE20K_MEAN, ADE20K_STD, EvalTransform, TrainTransform
from ..models.segmentation_inference import DEFAULT_EVAL_SCALE, InferenceMode, scaled_bound

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

__all__ = [
    "EpochSampler",
    "EvalDataset",
    "EvalSettings",
    "InvalidSampleError",
    "StreamingEvalDataset",
    "StreamingTrainDataset",
    "TrainDataset",
    "augmentation_rng",
    "eval_dataset_for",
    "pad_collate",
    "train_dataset_for",
]


class InvalidSampleError(ValueError):
    """A sample that cannot be used.

    Attributes:
        sample: the sample's name, e.g. ``"train[3] (ADE_train_00000004.jpg)"``.
        kind: ``"unreadable"`` (an image or mask does not decode), ``"missing_mask"``, ``"size_mismatch"`` or
            ``"label_range"`` (label values that are neither a class id nor the ignore index).
        problem: what is wrong, without the sample's name.
    """

    def __init__(self, sample: str, kind: str, problem: str):
        super().__init__(f"sample {sample}: {problem}")
        self.sample, self.kind, self.problem = sample, kind, problem


def augmentation_rng(seed: int, epoch: int, index: int, shard: int = 0) -> np.random.Generator:
    """The generator that augments sample ``index`` in ``epoch`` (``shard`` numbers the stream of a streamed split).

    A pure function of its arguments: it does not depend on the process, the dataloader worker or what was drawn
    before, which is what makes a resumed run reproduce an uninterrupted one.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index, shard]))


def sample_name(split: str, index: int, source: Any = None) -> str:
    """``"train[3] (ADE_train_00000004.jpg)"``: the split, the index and the file name when known.

    Args:
        split: split name.
        index: index in the split.
        source: a PIL image (its ``filename``), a ``{"path": ...}`` dict (an undecoded ``datasets.Image``) or a path.
    """
    if isinstance(source, Mapping):
        source = source.get("path")
    filename = getattr(source, "filename", source)
    if isinstance(filename, (str, os.PathLike)) and os.fspath(filename):
        return f"{split}[{index}] ({os.path.basename(filename)})"
    return f"{split}[{index}]"


def decode_image(value: Any) -> Image.Image | np.ndarray:
    """A fully decoded image from a ``datasets.Image`` value (decoded or not), a path, bytes or an array.

    Raises:
        OSError / ValueError: the data does not decode (truncated or not an image file).
    """
    if isinstance(value, Mapping):
        data, path = value.get("bytes"), value.get("path")
        value = io.BytesIO(data) if data is not None else path
        if value is None:
            raise ValueError("neither bytes nor a path")
    if isinstance(value, bytes):
        value = io.BytesIO(value)
    if isinstance(value, (str, os.PathLike, io.IOBase)):
        value = Image.open(value)
    if isinstance(value, Image.Image):
        value.load()  # PIL opens lazily: decode now so that truncated files fail here
    return value


def check_sample_labels(labels: torch.Tensor | np.ndarray, num_labels: int, ignore_index: int, sample: str) -> None:
    """Raises :class:`InvalidSampleError` when a label is neither a class id in ``[0, num_labels)`` nor the ignore
    index."""
    labels = torch.as_tensor(labels)
    bad = labels[(labels != ignore_index) & ((labels < 0) | (labels >= num_labels))]
    if bad.numel():
        values = sorted({int(v) for v in bad.unique()[:10]})
        raise InvalidSampleError(
            sample,
            "label_range",
            f"label value(s) {values} are outside the {num_labels} classes [0, {num_labels}) and are not the ignore "
            f"index {ignore_index}",
        )


def _as_sample_error(error: Exception, sample: str) -> InvalidSampleError:
    if isinstance(error, InvalidSampleError):
        return error
    text = str(error).replace(f"sample {sample!r}: ", "")
    kind = "size_mismatch" if "size" in text and "differ" in text else "unreadable"
    return InvalidSampleError(sample, kind, text or type(error).__name__)


def _undecoded(dataset: datasets.Dataset, index: int, column: str) -> Any:
    """The stored value of ``column`` (path and/or bytes) without decoding it, or ``None``."""
    import datasets

    try:
        return dataset.cast_column(column, datasets.Image(decode=False))[index][column]
    except Exception:
        return None


def _read_example(dataset: datasets.Dataset, index: int, split: str, image_column: str) -> dict[str, Any]:
    try:
        return dataset[index]
    except Exception as error:  # undecodable image, missing file, ...
        name = sample_name(split, index, _undecoded(dataset, index, image_column))
        raise InvalidSampleError(name, "unreadable", f"could not be read: {error}") from error


class EpochSampler(torch.utils.data.Sampler[int]):
    """The order of each epoch, as keys ``epoch * num_samples + index`` that :class:`TrainDataset` understands.

    The permutation of epoch ``e`` is a function of ``(seed, e)`` only, so every process draws the same one (the
    processes then take their batches from it) and a resumed run draws it again. ``set_epoch`` is called by the
    ``Trainer`` (through accelerate) before each epoch.

    Args:
        num_samples: length of the dataset.
        seed: seed of the permutations.
        shuffle: ``False`` keeps the dataset order.
    """

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True):
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
            if self.shuffle
            else np.arange(self.num_samples)
        )
        offset = self.epoch * self.num_samples
        return iter((offset + order).tolist())


class TrainDataset(torch.utils.data.Dataset):
    """A scene-parsing split (columns ``image`` and ``annotation``) through the mmseg train pipeline.

    Items: ``pixel_values`` ``float32 (3, crop_h, crop_w)`` and ``labels`` ``int64 (crop_h, crop_w)`` (255 = ignore).
    Key ``k`` is sample ``k % len(self)`` of epoch ``k // len(self)`` (see :class:`EpochSampler`); plain indices are
    epoch 0.

    Args:
        dataset: a ``datasets.Dataset`` with ``Image`` columns.
        transform: the :class:`~agent_hf.data.TrainTransform` (crop size, scale, reduce-zero-label, ...).
        num_labels: number of classes; other label values than ``transform.ignore_index`` raise an error.
        split: split name used in error messages.
        image_column: column of the images.
        label_column: column of the annotations.
        seed: seed of the augmentations (default: ``transform.seed``, else 0).
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        transform: TrainTransform,
        num_labels: int,
        split: str = "train",
        image_column: str = "image",
        label_column: str = "annotation",
        seed: int | None = None,
    ):
        self.dataset = dataset
        self.transform = transform
        self.num_labels = num_labels
        self.split = split
        self.image_column = image_column
        self.label_column = label_column
        self.seed = seed if seed is not None else (transform.seed if transform.seed is not None else 0)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        epoch, index = divmod(int(key), len(self.dataset))
        example = _read_example(self.dataset, index, self.split, self.image_column)
        image = example[self.image_column]
        name = sample_name(self.split, index, image)
        rng = augmentation_rng(self.seed, epoch, index)
        return transform_train_example(self.transform, image, example[self.label_column], self.num_labels, name, rng)


def transform_train_example(
    transform: TrainTransform, image: Any, label: Any, num_labels: int, name: str, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """``transform`` of one example with ``rng``; problems raise :class:`InvalidSampleError` naming ``name``."""
    if label is None:
        raise InvalidSampleError(name, "missing_mask", "has no annotation")
    try:
        sample = transform(image, label, rng=rng, name=name)
    except (ValueError, OSError) as error:
        raise _as_sample_error(error, name) from error
    check_sample_labels(sample["labels"], num_labels, transform.ignore_index, name)
    return sample


class StreamingTrainDataset(torch.utils.data.IterableDataset):
    """The train pipeline over a streamed split (a ``datasets.IterableDataset``) of this process.

    Pass the process's part of the stream (``datasets.distributed.split_dataset_by_node``). Each epoch re-shuffles
    the stream (``set_epoch``, as ``datasets`` does) and augments the example at position ``p`` of the stream read
    by dataloader worker ``w`` with :func:`augmentation_rng` ``(seed, epoch, p, shard)`` where
    ``shard = rank * workers + w``. Samples that cannot be used raise :class:`InvalidSampleError`, or are skipped
    with a warning when ``skip_invalid`` is set (a streamed split cannot be checked before training).

    Args:
        dataset: the process's ``datasets.IterableDataset`` (columns ``image``/``annotation`` as for
            :class:`TrainDataset`).
        transform: the :class:`~agent_hf.data.TrainTransform`.
        num_labels: number of classes.
        seed: seed of the augmentations.
        rank: this process's index (numbers the stream shards).
        split: split name used in messages.
        image_column: column of the images.
        label_column: column of the annotations.
        skip_invalid: skip unusable samples instead of raising.
    """

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        transform: TrainTransform,
        num_labels: int,
        seed: int = 0,
        rank: int = 0,
        split: str = "train",
        image_column: str = "image",
        label_column: str = "annotation",
        skip_invalid: bool = False,
    ):
        self.dataset = dataset
        self.transform = transform
        self.num_labels = num_labels
        self.seed = seed
        self.rank = rank
        self.split = split
        self.image_column = image_column
        self.label_column = label_column
        self.skip_invalid = skip_invalid
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = torch.utils.data.get_worker_info()
        workers, worker_id = (1, 0) if worker is None else (worker.num_workers, worker.id)
        shard = self.rank * workers + worker_id
        self.dataset.set_epoch(self.epoch)
        for position, example in enumerate(self.dataset):
            image = example[self.image_column]
            name = sample_name(f"{self.split} stream {shard}", position, image)
            rng = augmentation_rng(self.seed, self.epoch, position, shard)
            try:
                yield transform_train_example(
                    self.transform, image, example[self.label_column], self.num_labels, name, rng
                )
            except InvalidSampleError as error:
                if not self.skip_invalid:
                    raise
                logger.warning(f"skipped {error}")


def pad_collate(crop_size: tuple[int, int], ignore_index: int = 255):
    """A collate function that pads every sample at the bottom/right to ``crop_size=(height, width)`` (pixels with
    0, labels with ``ignore_index``) and stacks them: ``pixel_values (B, 3, H, W)``, ``labels (B, H, W)``."""
    height, width = crop_size

    def collate(samples: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        pixel_values, labels = [], []
        for sample in samples:
            h, w = sample["labels"].shape
            if h > height or w > width:
                raise ValueError(f"a training sample of {h}x{w} is larger than the crop size {height}x{width}")
            pad = (0, width - w, 0, height - h)
            pixel_values.append(nn.functional.pad(sample["pixel_values"], pad, value=0.0))
            labels.append(nn.functional.pad(sample["labels"], pad, value=ignore_index))
        return {"pixel_values": torch.stack(pixel_values), "labels": torch.stack(labels)}

    return collate


@dataclass(frozen=True)
class EvalSettings:
    """How images are evaluated (mmseg ``test_cfg`` + ``MultiScaleFlipAug``).

    Attributes:
        mode: ``"whole"`` (the paper) or ``"slide"``.
        scale: ``(long_edge, short_edge)`` bound of the keep-ratio test resize (mmseg's ``img_scale``).
        ratios: test-time scale ratios (mmseg's ``img_ratios``), each multiplying ``scale``; ``(1.0,)`` is
            single-scale.
        flip: also evaluate the horizontally flipped images (probabilities averaged).
        crop_size: ``(height, width)`` of the sliding windows (``mode="slide"``).
        stride: ``(height, width)`` step of the sliding windows.
        mean: RGB normalization mean in 0-255 units.
        std: RGB normalization standard deviation in 0-255 units.
        reduce_labels: apply reduce-zero-label to the ground truth (ADE20K).
    """

    mode: InferenceMode = "whole"
    scale: tuple[int, int] = DEFAULT_EVAL_SCALE
    ratios: tuple[float, ...] = (1.0,)
    flip: bool = False
    crop_size: tuple[int, int] = (512, 512)
    stride: tuple[int, int] = (341, 341)
    mean: tuple[float, float, float] = ADE20K_MEAN
    std: tuple[float, float, float] = ADE20K_STD
    reduce_labels: bool = True

    def describe(self) -> str:
        text = f"{self.mode} inference, resize to fit {self.scale[0]}x{self.scale[1]}"
        if self.mode == "slide":
            text += f", {self.crop_size[0]}x{self.crop_size[1]} windows every {self.stride[0]}x{self.stride[1]}"
        if self.ratios != (1.0,):
            text += f", ratios {list(self.ratios)}"
        return text + (", + flip" if self.flip else "")

    def transforms(self) -> list[EvalTransform]:
        """One :class:`~agent_hf.data.EvalTransform` per ratio."""
        return [
            EvalTransform(scaled_bound(self.scale, ratio), self.mean, self.std, self.reduce_labels)
            for ratio in self.ratios
        ]


class _EvalExamples:
    """What both evaluation datasets share: the split, its columns, and the mmseg test pipeline of one example
    (arguments: see :class:`EvalDataset`)."""

    def __init__(
        self,
        dataset: datasets.Dataset | datasets.IterableDataset,
        settings: EvalSettings,
        split: str = "validation",
        image_column: str = "image",
        label_column: str = "annotation",
    ):
        self.dataset = dataset
        self.settings = settings
        self.split = split
        self.image_column = image_column
        self.label_column = label_column
        self.transforms = settings.transforms()

    def _sample(self, example: dict[str, Any], where: str, position: int) -> dict[str, Any]:
        """The evaluation sample of ``example``, the ``position``-th of ``where`` (for its name)."""
        image, label = example[self.image_column], example[self.label_column]
        name = sample_name(where, position, image)
        if label is None:
            raise InvalidSampleError(name, "missing_mask", "has no annotation")
        try:
            first = self.transforms[0](image, label, name=name)
            pixel_values = [first["pixel_values"]] + [t(image, name=name)["pixel_values"] for t in self.transforms[1:]]
        except (ValueError, OSError) as error:
            raise _as_sample_error(error, name) from error
        return {"pixel_values": pixel_values, "labels": first["labels"], "name": name}


class EvalDataset(_EvalExamples, torch.utils.data.Dataset):
    """A scene-parsing split prepared for mmseg evaluation.

    Items: ``pixel_values`` (one ``float32 (3, h_i, w_i)`` tensor per ratio of ``settings``), ``labels``
    ``int64 (H, W)`` at the original size (reduce-zero-label applied if ``settings.reduce_labels``) and ``name``.

    Args:
        dataset: a ``datasets.Dataset`` with ``Image`` columns.
        settings: the evaluation settings.
        split: split name used in sample names and error messages.
        image_column: column of the images.
        label_column: column of the annotations.
    """

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._sample(_read_example(self.dataset, index, self.split, self.image_column), self.split, index)


class StreamingEvalDataset(_EvalExamples, torch.utils.data.IterableDataset):
    """:class:`EvalDataset` over this process's part of a streamed split (``split_dataset_by_node``).

    Every process evaluates the images of its part once, so the summed counts are exactly those of the whole split.

    Args:
        dataset: the process's ``datasets.IterableDataset``.
        settings: the evaluation settings.
        rank: this process's index (used in sample names).
        split, image_column, label_column: as in :class:`EvalDataset`.
    """

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        settings: EvalSettings,
        rank: int = 0,
        split: str = "validation",
        image_column: str = "image",
        label_column: str = "annotation",
    ):
        super().__init__(dataset, settings, split, image_column, label_column)
        self.rank = rank

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for position, example in enumerate(self.dataset):
            yield self._sample(example, f"{self.split} stream {self.rank}", position)


def train_dataset_for(
    split: datasets.Dataset | datasets.IterableDataset,
    transform: TrainTransform,
    num_labels: int,
    *,
    seed: int,
    rank: int = 0,
    skip_invalid: bool = False,
) -> TrainDataset | StreamingTrainDataset:
    """The training dataset of ``split``: a :class:`StreamingTrainDataset` for a streamed split (this process's part;
    ``skip_invalid`` skips bad samples, which a stream cannot check up front), else a :class:`TrainDataset`.
    ``seed`` seeds the augmentations."""
    import datasets

    if isinstance(split, datasets.IterableDataset):
        return StreamingTrainDataset(split, transform, num_labels, seed=seed, rank=rank, skip_invalid=skip_invalid)
    return TrainDataset(split, transform, num_labels, "train", seed=seed)


def eval_dataset_for(
    split: datasets.Dataset | datasets.IterableDataset, settings: EvalSettings, *, rank: int = 0
) -> EvalDataset | StreamingEvalDataset:
    """The evaluation dataset of ``split``: a :class:`StreamingEvalDataset` for a streamed split (this process's
    part), else an :class:`EvalDataset`."""
    import datasets

    if isinstance(split, datasets.IterableDataset):
        return StreamingEvalDataset(split, settings, rank=rank)
    return EvalDataset(split, settings, "validation")
