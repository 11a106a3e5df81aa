"""Loading scene-parsing splits (columns ``image`` and ``annotation``) for training and evaluation.

* :func:`load_scene_parsing`: local folders (an ``ADEChallengeData2016`` root or any folder with ``images/`` and
  ``annotations/``), the generated dataset (``"synthetic"``), a local dataset folder (parquet files or a
  ``save_to_disk`` folder) or a Hub dataset (``scene_parse_150`` is read from the Hub's parquet export);
* :func:`select_splits`: the train/validation splits a run reads (``train_val_split``, ``max_*_samples``);
* :func:`to_streams`: each process's part of the splits as a stream.

Errors about the data are :class:`~agent_hf.argument_checks.ScriptError` (one line, naming the dataset).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets.distributed import split_dataset_by_node
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

from ..argument_checks import ScriptError
from .ade20k import (
    ADE_SPLIT_FOLDERS,
    PARQUET_EXPORT_REVISION,
    ParquetExportNotFoundError,
    ade20k_id2label,
    load_parquet_export,
    scene_parsing_folder,
)
from .cache import local_dataset_cache_dir
from .synthetic import make_synthetic_scene_parsing, synthetic_id2label

__all__ = [
    "SCENE_PARSE_150",
    "LoadedData",
    "load_scene_parsing",
    "needed_splits",
    "select_splits",
    "standard_columns",
    "to_streams",
]

logger = logging.getLogger(__name__)

SCENE_PARSE_150 = "scene_parse_150"
SCENE_PARSE_150_REPO = "zhoubolei/scene_parse_150"  # the Hub's home of the former canonical `scene_parse_150`
ADE_DOWNLOAD = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"


@dataclass
class LoadedData:
    """The splits (columns ``image`` and ``annotation``; ``IterableDataset``\\ s when streaming), their class names if
    known, whether the annotations follow ADE20K's convention (0 = unlabeled, reduced by default) and a short name
    for logs and the model card."""

    splits: datasets.DatasetDict | datasets.IterableDatasetDict
    id2label: dict[int, str] | None
    reduce_labels_default: bool
    description: str


def _folder_id2label(roots: list[Path]) -> dict[int, str] | None:
    for root in roots:
        if (root / "id2label.json").is_file():
            return {int(k): v for k, v in json.loads((root / "id2label.json").read_text()).items()}
    return None


def _dataset_id2label(dataset_name: str, token: str | None) -> dict[int, str] | None:
    """``id2label.json`` of a local dataset folder or Hub dataset repository (transformers' example convention)."""
    if os.path.isdir(dataset_name):
        return _folder_id2label([Path(dataset_name)])
    try:
        path = hf_hub_download(dataset_name, "id2label.json", repo_type="dataset", token=token)
    except (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError):
        return None
    return {int(k): v for k, v in json.loads(Path(path).read_text()).items()}


def _scene_parse_150_missing(name: str, revision: str, error: Exception) -> ScriptError:
    return ScriptError(
        f"{name}: {error}. {SCENE_PARSE_150} on the Hub is a loading script, which datasets>=4 no longer runs, so it "
        f"is read from its parquet export (--dataset_revision {revision}). Without it, download ADEChallengeData2016 "
        f"({ADE_DOWNLOAD}) and pass --train_dir/--validation_dir, or convert it once with scripts/prepare_ade20k.py"
    )


def _load_named_dataset(
    name: str,
    config: str | None,
    revision: str | None,
    streaming: bool,
    cache_dir: str | None,
    token: str | None,
):
    """A local dataset folder, ``scene_parse_150`` (parquet export) or another Hub dataset."""
    hub = dict(cache_dir=cache_dir, token=token)
    if os.path.isdir(name):
        if (Path(name) / "dataset_dict.json").is_file():  # written by DatasetDict.save_to_disk
            return datasets.load_from_disk(name)
        # Cached by its files, never served another folder's (or its own earlier) rows.
        return datasets.load_dataset(
            name, config, streaming=streaming, cache_dir=local_dataset_cache_dir(name, cache_dir), token=token
        )
    if name.split("/")[-1] == SCENE_PARSE_150:
        revision = revision or PARQUET_EXPORT_REVISION
        repo_id = name if "/" in name else SCENE_PARSE_150_REPO
        try:
            export = load_parquet_export(
                repo_id,
                config or "scene_parsing",
                splits=("train", "validation"),  # the test split has no annotations
                revision=revision,
                streaming=streaming,
                **hub,
            )
        except ParquetExportNotFoundError as error:
            raise _scene_parse_150_missing(repo_id, revision, error) from error
        for split in export.partial:
            logger.warning(f"The parquet export of {name} holds only part of its {split} split")
        return export.splits
    try:
        return datasets.load_dataset(name, config, revision=revision, streaming=streaming, **hub)
    except RuntimeError as error:
        if "scripts are no longer supported" not in str(error):
            raise
        logger.warning(f"{name} is a loading script (not run by datasets>=4): reading its parquet export instead")
        try:
            return load_parquet_export(name, config or "default", streaming=streaming, **hub).splits
        except ParquetExportNotFoundError as export_error:
            raise ScriptError(f"{name} is a loading-script dataset, and {export_error}") from error


def load_scene_parsing(
    *,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    dataset_revision: str | None = None,
    streaming: bool = False,
    synthetic_train_samples: int = 128,
    synthetic_validation_samples: int = 32,
    synthetic_num_labels: int = 8,
    seed: int = 0,
    cache_dir: str | None = None,
    token: str | None = None,
) -> LoadedData:
    """Loads the splits of folders (``train_dir``/``validation_dir``), else of ``dataset_name``: ``None`` or
    ``"synthetic"`` (the generated dataset), a local dataset folder or a Hub dataset.

    Args:
        train_dir, validation_dir: an ``ADEChallengeData2016`` root or a folder with ``images/`` and
            ``annotations/`` (PNG masks named like the images); an ``id2label.json`` beside them names the classes.
        dataset_name: ``"synthetic"``, a local dataset folder or a Hub dataset in the ``scene_parse_150`` schema.
        dataset_config_name, dataset_revision: the Hub dataset's configuration and version.
        streaming: stream a Hub/parquet dataset instead of downloading it first.
        synthetic_train_samples, synthetic_validation_samples, synthetic_num_labels: the generated dataset's size.
        seed: seed of the generated dataset.
        cache_dir, token: where Hub downloads are stored, and the Hub token.
    """
    if train_dir or validation_dir:
        given = {"train": train_dir, "validation": validation_dir}
        roots = {split: Path(path) for split, path in given.items() if path}
        splits = datasets.DatasetDict({split: scene_parsing_folder(root, split) for split, root in roots.items()})
        ade_layout = any((root / "images" / ADE_SPLIT_FOLDERS[split]).is_dir() for split, root in roots.items())
        id2label = _folder_id2label(list(roots.values()))
        if id2label is None and ade_layout:
            id2label = ade20k_id2label()
        description = ", ".join(sorted({root.resolve().name for root in roots.values()}))
        return LoadedData(splits, id2label, ade_layout or id2label == ade20k_id2label(), description)
    if dataset_name in (None, "synthetic"):
        splits = make_synthetic_scene_parsing(
            synthetic_train_samples, synthetic_validation_samples, num_classes=synthetic_num_labels, seed=seed
        )
        return LoadedData(splits, synthetic_id2label(synthetic_num_labels), True, "synthetic")
    loaded = _load_named_dataset(dataset_name, dataset_config_name, dataset_revision, streaming, cache_dir, token)
    splits = standard_columns(loaded)
    is_ade = dataset_name.split("/")[-1] == SCENE_PARSE_150
    id2label = ade20k_id2label() if is_ade else _dataset_id2label(dataset_name, token)
    return LoadedData(splits, id2label, is_ade or id2label == ade20k_id2label(), dataset_name)


def standard_columns(splits):
    """Renames ``pixel_values``/``label`` to ``image``/``annotation`` and checks both columns exist."""
    for split, dataset in splits.items():
        columns = list(dataset.column_names or dataset.features or [])
        renames = {
            old: new
            for old, new in (("pixel_values", "image"), ("label", "annotation"))
            if old in columns and new not in columns
        }
        dataset = dataset.rename_columns(renames) if renames else dataset
        columns = [renames.get(column, column) for column in columns]
        missing = [column for column in ("image", "annotation") if column not in columns]
        if missing:
            raise ScriptError(
                f"split {split!r} has columns {columns} but needs 'image' and 'annotation' (or 'pixel_values' and "
                f"'label'); missing: {missing}"
            )
        for column in ("image", "annotation"):
            if not isinstance(dataset.features[column], datasets.Image):
                dataset = dataset.cast_column(column, datasets.Image())
        splits[split] = dataset
    return splits


def needed_splits(do_train: bool, do_eval: bool) -> list[str]:
    """The splits a run reads: ``train`` to train, ``validation`` to evaluate."""
    return [split for split, wanted in (("train", do_train), ("validation", do_eval)) if wanted]


def select_splits(
    data: LoadedData,
    *,
    do_train: bool,
    do_eval: bool,
    train_val_split: float = 0.15,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 0,
):
    """The train/validation splits of ``data`` that a run reads: a validation split divided off the training split
    (``train_val_split``) when there is none, at most ``max_train_samples`` shuffled training and the first
    ``max_eval_samples`` validation samples. Errors for a missing or empty split."""
    streamed = isinstance(data.splits, datasets.IterableDatasetDict)
    splits = type(data.splits)(data.splits)
    if "validation" not in splits and "train" in splits and train_val_split > 0 and do_eval:
        if streamed:
            raise ScriptError(
                f"{data.description} has no validation split ({sorted(splits)}), and a streamed split cannot be "
                "divided: drop --streaming or use a dataset with a validation split"
            )
        parts = splits["train"].train_test_split(train_val_split, seed=seed)
        splits = datasets.DatasetDict(train=parts["train"], validation=parts["test"])
    if do_train:
        if "train" not in splits:
            raise ScriptError(f"--do_train needs a train split; {data.description} has {sorted(splits)}")
        if max_train_samples is not None:
            if streamed:
                splits["train"] = splits["train"].take(max_train_samples)
            else:
                train = splits["train"].shuffle(seed=seed)
                splits["train"] = train.select(range(min(max_train_samples, len(train))))
    if do_eval:
        if "validation" not in splits:
            raise ScriptError(f"--do_eval needs a validation split; {data.description} has {sorted(splits)}")
        if max_eval_samples is not None:
            validation = splits["validation"]
            splits["validation"] = (
                validation.take(max_eval_samples)
                if streamed
                else validation.select(range(min(max_eval_samples, len(validation))))
            )
    if not streamed:
        for split in needed_splits(do_train, do_eval):
            if len(splits[split]) == 0:
                raise ScriptError(f"the {split} split of {data.description} is empty")
    return splits


def to_streams(
    splits, *, process_index: int, world_size: int, num_workers: int = 0, seed: int = 0, buffer_size: int = 1000
):
    """This process's part of each split as a stream (``split_dataset_by_node``; the training split shuffled with a
    buffer of ``buffer_size`` examples). A local split is streamed from its Arrow files, in enough shards for every
    process's ``num_workers`` dataloader workers."""
    streams = {}
    for name, split in splits.items():
        if isinstance(split, datasets.Dataset):
            shards = max(1, world_size * max(1, num_workers))
            split = split.to_iterable_dataset(num_shards=min(shards, max(1, len(split))))
        if name == "train":
            split = split.shuffle(seed=seed, buffer_size=buffer_size)
        streams[name] = split_dataset_by_node(split, process_index, world_size)
    return streams
