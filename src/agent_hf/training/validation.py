"""What a training run checks before its first step: the samples of its splits, and its batch against the recipe's.

* :func:`find_invalid_samples` / :func:`check_splits`: every sample decodes, has a mask of its size and only known
  label values. A bad image found at step 90,000, or at the evaluation after training, costs the whole run; every
  sample of a split is read once, up front (in parallel over dataloader workers and processes, with a progress bar),
  and each one that would fail is named.
* :func:`describe_batch` / :func:`check_batchnorm_batch`: the batch arithmetic against the recipe's, and a batch the
  heads' BatchNorm cannot train with.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..argument_checks import ScriptError
from ..data.transforms import reduce_zero_label, to_label_array, to_rgb_array
from .datasets import InvalidSampleError, check_sample_labels, decode_image, sample_name
from .recipes import Recipe, batch_plan, has_batchnorm

if TYPE_CHECKING:
    import datasets

__all__ = ["InvalidSample", "check_batchnorm_batch", "check_splits", "describe_batch", "find_invalid_samples"]

logger = logging.getLogger(__name__)


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


_HINTS = {
    "label_range": "check --do_reduce_labels (ADE20K-style annotations, 0 = unlabeled, need it) and the dataset's "
    "label ids against the model's classes",
    "missing_mask": "each image needs annotations/<same name>.png",
}


def check_splits(
    splits: Mapping[str, datasets.Dataset],
    names: Sequence[str],
    num_labels: int,
    *,
    reduce_labels: bool,
    skip_invalid: bool = False,
    num_workers: int = 0,
    process_index: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> Mapping[str, datasets.Dataset]:
    """Checks every sample of the splits ``names`` (:func:`find_invalid_samples`): stops naming every bad one, or with
    ``skip_invalid`` leaves them out (listed in a warning).

    Returns:
        ``splits``, the bad samples left out.

    Raises:
        ScriptError: bad samples without ``skip_invalid`` (each named, with hints), or a split left empty.
    """
    found = {
        split: find_invalid_samples(
            splits[split],
            num_labels,
            reduce_labels=reduce_labels,
            split=split,
            num_workers=num_workers,
            process_index=process_index,
            world_size=world_size,
            progress=progress,
        )
        for split in names
    }
    bad_splits = {split: invalid for split, invalid in found.items() if invalid}
    if not bad_splits:
        return splits
    hints = sorted({_HINTS[s.kind] for invalid in bad_splits.values() for s in invalid if s.kind in _HINTS})
    hint_lines = "".join(f"\n  hint: {hint}" for hint in hints)
    listings = {
        split: f"{len(invalid)} of {len(splits[split])} {split} samples" + "".join(f"\n  {s}" for s in invalid)
        for split, invalid in bad_splits.items()
    }
    if not skip_invalid:
        report = "\n".join(listing.replace(" samples", " samples cannot be used:", 1) for listing in listings.values())
        raise ScriptError(
            f"{report}{hint_lines}\nNothing was trained: fix or remove these files, or pass --skip_invalid_samples "
            "to leave them out"
        )
    for split, invalid in bad_splits.items():
        logger.warning(f"Skipping {listings[split]}{hint_lines}")
        bad = {sample.index for sample in invalid}
        splits[split] = splits[split].select([i for i in range(len(splits[split])) if i not in bad])
        if len(splits[split]) == 0:
            raise ScriptError(f"no usable sample left in the {split} split")
    return splits


def describe_batch(trainer, reference: Recipe) -> str:
    """The batch arithmetic of ``trainer`` (a :class:`~agent_hf.training.SegmentationTrainer`) against the reference
    recipe, what to change to match it, and the BatchNorm caveat."""
    plan = batch_plan(trainer.args, reference.total_batch_size)
    lines = [f"Batch: {plan.describe()}."]
    if not plan.matches:
        accumulation = plan.matching_accumulation
        change = (
            f"pass --gradient_accumulation_steps {accumulation}"
            if accumulation
            else f"choose --per_device_train_batch_size and --gradient_accumulation_steps so that "
            f"{plan.world_size} x batch x accumulation = {plan.recipe_total}"
        )
        lines.append(f"  The recipe '{reference.name}' uses {plan.recipe_total} images per iteration: {change}.")
    if has_batchnorm(trainer.model) and not trainer.uses_sync_batchnorm:
        where = (
            "a single process"
            if plan.world_size == 1
            else f"{plan.world_size} processes without SyncBatchNorm (it needs CUDA)"
        )
        lines.append(
            f"  BatchNorm: {where}: the heads normalize over the {plan.per_device} image(s) of each forward pass"
            + (
                f"; the paper's SyncBN normalizes over all {reference.total_batch_size} images of an iteration (8 GPUs"
                " x 2), so the statistics differ from the paper's."
                if reference.sync_batchnorm and plan.per_device != reference.total_batch_size
                else "."
            )
        )
    return "\n".join(lines)


def check_batchnorm_batch(trainer) -> None:
    """UperNet's pyramid pooling has a 1x1 branch: with one image per forward pass and no SyncBatchNorm, its
    BatchNorm would see one value per channel and fail at the first step.

    Raises:
        ScriptError: ``trainer`` would train such a model with one image per device.
    """
    model = trainer.model
    single = trainer.args.per_device_train_batch_size == 1 and not trainer.uses_sync_batchnorm
    if single and has_batchnorm(model) and 1 in (getattr(model.config, "pool_scales", None) or ()):
        raise ScriptError(
            "one image per device cannot train the UperNet heads without SyncBatchNorm (several CUDA GPUs): the "
            "pyramid pooling's 1x1 features leave BatchNorm a single value per channel; use "
            "--per_device_train_batch_size 2 or more (and --gradient_accumulation_steps for the total)"
        )
