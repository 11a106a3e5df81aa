"""Checking a split before training: every sample decodes, has a mask of its size and only known label values.

A bad image found at step 90,000, or at the evaluation after training, costs the whole run;
:func:`find_invalid_samples` reads every sample of a split once, up front (in parallel over dataloader workers and
processes, with a progress bar), and names each one that would fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.transforms import reduce_zero_label, to_label_array, to_rgb_array
from .datasets import InvalidSampleError, check_sample_labels, decode_image, sample_name

if TYPE_CHECKING:
    import datasets

__all__ = ["InvalidSample", "find_invalid_samples"]


@dataclass(frozen=True)
class InvalidSample:
    """A sample that cannot be used.

    Attributes:
        index: its index in the split.
        name: ``"train[3] (ADE_train_00000004.jpg)"``.
        kind: see :class:`~agent_hf.training.InvalidSampleError`.
        problem: what is wrong.
    """

    index: int
    name: str
    kind: str
    problem: str

    def __str__(self) -> str:
        return f"{self.name}: {self.problem}"


class _SampleCheck(torch.utils.data.Dataset):
    """Item ``i``: ``None`` when sample ``i`` is usable, else its :class:`InvalidSample`."""

    def __init__(self, dataset, indices, num_labels, reduce_labels, ignore_index, split, image_column, label_column):
        # Undecoded columns: the file name is known even when the file does not decode.
        import datasets

        self.dataset = dataset.cast_column(image_column, datasets.Image(decode=False)).cast_column(
            label_column, datasets.Image(decode=False)
        )
        self.indices = indices
        self.num_labels, self.reduce_labels, self.ignore_index = num_labels, reduce_labels, ignore_index
        self.split, self.image_column, self.label_column = split, image_column, label_column

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> InvalidSample | None:
        index = self.indices[position]
        name = sample_name(self.split, index)
        try:
            example = self.dataset[index]
            image, label = example[self.image_column], example[self.label_column]
            name = sample_name(self.split, index, image)
            self._check(image, label, name)
        except InvalidSampleError as error:
            return InvalidSample(index, name, error.kind, error.problem)
        except Exception as error:  # anything that stops the sample from being read
            return InvalidSample(index, name, "unreadable", f"could not be read: {error}")
        return None

    def _check(self, image: Any, label: Any, name: str) -> None:
        if image is None:
            raise InvalidSampleError(name, "unreadable", "has no image")
        if label is None:
            raise InvalidSampleError(name, "missing_mask", "has no annotation (mask)")
        try:
            pixels = to_rgb_array(decode_image(image))
        except Exception as error:
            raise InvalidSampleError(name, "unreadable", f"image does not decode: {error}") from error
        try:
            mask = to_label_array(decode_image(label))
        except Exception as error:
            raise InvalidSampleError(name, "unreadable", f"annotation does not decode: {error}") from error
        if pixels.shape[:2] != mask.shape:
            raise InvalidSampleError(
                name,
                "size_mismatch",
                f"image is {pixels.shape[1]}x{pixels.shape[0]} but its annotation {mask.shape[1]}x{mask.shape[0]}",
            )
        values = np.unique(reduce_zero_label(mask) if self.reduce_labels else mask)
        check_sample_labels(torch.from_numpy(values.astype(np.int64)), self.num_labels, self.ignore_index, name)


def _first_item(batch: list[Any]) -> Any:
    return batch[0]


def find_invalid_samples(
    dataset: datasets.Dataset,
    num_labels: int,
    *,
    reduce_labels: bool,
    ignore_index: int = 255,
    split: str = "train",
    image_column: str = "image",
    label_column: str = "annotation",
    num_workers: int = 0,
    process_index: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> list[InvalidSample]:
    """Every sample of ``dataset`` that would fail in training or evaluation, in index order.

    Checks: the image and the annotation decode, they have the same size, and after reduce-zero-label (if
    ``reduce_labels``) every label value is a class id in ``[0, num_labels)`` or ``ignore_index``. A missing
    annotation (``None``) is reported as ``missing_mask``. With ``world_size > 1`` each process checks every
    ``world_size``-th sample and the findings are gathered, so every process returns the full list (a collective:
    every process must call this).

    Args:
        dataset: a ``datasets.Dataset`` with ``Image`` columns.
        num_labels: number of classes.
        reduce_labels: whether reduce-zero-label is applied to the annotations.
        ignore_index: the label value that is ignored.
        split: split name used in sample names.
        image_column: column of the images.
        label_column: column of the annotations.
        num_workers: dataloader workers reading the samples.
        process_index: this process's index.
        world_size: number of processes.
        progress: show a progress bar.
    """
    indices = list(range(process_index, len(dataset), world_size))
    check = _SampleCheck(dataset, indices, num_labels, reduce_labels, ignore_index, split, image_column, label_column)
    loader = torch.utils.data.DataLoader(check, batch_size=1, num_workers=num_workers, collate_fn=_first_item)
    if progress:
        loader = tqdm(loader, desc=f"Checking {split}", unit="sample")
    invalid = [result for result in loader if result is not None]
    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list[list[InvalidSample]] = [[] for _ in range(world_size)]
        torch.distributed.all_gather_object(gathered, invalid)
        invalid = [sample for part in gathered for sample in part]
    return sorted(invalid, key=lambda sample: sample.index)
