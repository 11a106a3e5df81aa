#!/usr/bin/env python
"""Train and evaluate Agent Attention segmentation models with the paper's mmsegmentation recipe.

The command line follows transformers' ``examples/pytorch/semantic-segmentation/run_semantic_segmentation.py``
(``--model_name_or_path``, ``--dataset_name``, ``--do_reduce_labels``, ... plus every ``TrainingArguments`` option),
and runs under ``python``, ``accelerate launch`` and ``torchrun --nproc_per_node N``. Differences:

* the model can be a preset (``agent-swin-t-upernet-ade20k``, ...; random init, or ``--backbone_checkpoint`` for an
  official ImageNet checkpoint), a local model folder or a Hub id;
* data: ``--dataset_name synthetic`` (the default: a generated scene-parsing set), a Hub dataset in the
  ``scene_parse_150`` schema, or local folders (``--train_dir``/``--validation_dir``: an ``ADEChallengeData2016``
  root or any folder with ``images/`` and ``annotations/`` PNG masks of the same stems);
* training uses mmseg's ADE20K pipeline (random resize, crop with ``cat_max_ratio``, flip, photometric distortion)
  and the official optimizer/schedule (``--recipe paper``); ``--learning_rate``, ``--weight_decay``,
  ``--max_steps``, ``--warmup_steps``, ``--per_device_train_batch_size``, ... override the recipe when given;
* evaluation is mmseg's (``--eval_mode whole|slide``, ``--eval_scales``, ``--eval_flip``): every image at its
  original resolution, streamed into a mean-IoU accumulator; ``eval_mIoU``/``eval_mAcc``/``eval_aAcc`` are logged
  and per-class results are written to ``{output_dir}/eval_per_class.json``;
* the output folder is a complete model folder (weights, config with model code, image processor) and
  ``--push_to_hub`` publishes it with ``agent_hf.hub.push_folder_to_hub`` (model files first, model card last).

Examples::

    # a few minutes on a CPU: tiny Agent-Swin on the generated dataset
    python scripts/run_semantic_segmentation.py --model_name_or_path agent-swin-t-upernet-ade20k \\
        --config_overrides '{"embed_dim": 32, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8]}' \\
        --crop_size 128 --scale 512 128 --eval_scale 512 128 --max_steps 200 --learning_rate 1e-3 \\
        --per_device_train_batch_size 8 --do_train --do_eval --output_dir outputs/tiny

    # the paper's Agent-Swin-T run on ADE20K (8 GPUs x 2 images, 160k iterations)
    torchrun --nproc_per_node 8 scripts/run_semantic_segmentation.py \\
        --model_name_or_path agent-swin-t-upernet-ade20k --backbone_checkpoint agent_swin_t.pth \\
        --train_dir data/ADEChallengeData2016 --validation_dir data/ADEChallengeData2016 \\
        --do_train --do_eval --eval_strategy steps --eval_steps 16000 --save_steps 16000 \\
        --dataloader_num_workers 4 --output_dir outputs/agent-swin-t
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
import transformers
from huggingface_hub import get_token, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForSemanticSegmentation,
    HfArgumentParser,
    TrainingArguments,
    set_seed,
)

import agent_hf
from agent_hf.data import ade20k_id2label, make_synthetic_scene_parsing, synthetic_id2label
from agent_hf.data.transforms import TrainTransform
from agent_hf.hub import card_for_folder, push_folder_to_hub
from agent_hf.processing import make_image_processor, save_model_folder
from agent_hf.provenance import eval_results_from_metrics, record_provenance, trained_provenance
from agent_hf.training import (
    RECIPE_NAMES,
    EvalDataset,
    EvalSettings,
    SegmentationTrainer,
    TrainDataset,
    pad_collate,
    recipe_for,
)

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ADE_SPLIT_FOLDERS = {"train": "training", "validation": "validation"}


@dataclass
class ModelArguments:
    """Which model to train or evaluate."""

    model_name_or_path: str = field(
        metadata={"help": f"A preset ({', '.join(agent_hf.PRESETS)}), a local model folder or a Hub model id."}
    )
    config_name: str | None = field(default=None, metadata={"help": "Config name or path, if not the model's."})
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": 'JSON object of config fields to override, e.g. \'{"embed_dim": 32, "depths": [2, 2, 2, 2]}\'.'
        },
    )
    backbone_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Official ImageNet (or mmseg) checkpoint to start from; only with a preset."},
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where to store models and datasets downloaded from the Hub."}
    )
    model_revision: str = field(default="main", metadata={"help": "Model version: branch, tag or commit id."})
    image_processor_name: str | None = field(default=None, metadata={"help": "Name or path of the image processor."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models/datasets."})
    trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": "Run model code from the Hub (needed for agent_hf models loaded from the Hub without agent_hf)."
        },
    )


@dataclass
class DataTrainingArguments:
    """Which data, and how it is transformed and evaluated."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "'synthetic' (default without --train_dir/--validation_dir), or a Hub dataset / local dataset "
            "folder in the scene_parse_150 schema (columns image + annotation)."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    train_dir: str | None = field(
        default=None,
        metadata={
            "help": "ADEChallengeData2016 root (images/training + annotations/training) or a folder with images/ "
            "and annotations/ (PNG masks named like the images)."
        },
    )
    validation_dir: str | None = field(
        default=None,
        metadata={
            "help": "ADEChallengeData2016 root (images/validation + annotations/validation) or a folder with "
            "images/ and annotations/ (PNG masks named like the images)."
        },
    )
    train_val_split: float = field(
        default=0.15, metadata={"help": "Fraction of train split off as validation when there is no validation split."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep this many (shuffled) training images."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N validation images."})
    do_reduce_labels: bool | None = field(
        default=None,
        metadata={
            "help": "Map annotation 0 to ignore (255) and k to k-1 (ADE20K). Default: on for synthetic, "
            "scene_parse_150 and ADEChallengeData2016 folders, off otherwise."
        },
    )
    synthetic_train_samples: int = field(
        default=128, metadata={"help": "Generated training images (--dataset_name synthetic)."}
    )
    synthetic_validation_samples: int = field(default=32, metadata={"help": "Generated validation images."})
    synthetic_num_labels: int = field(default=8, metadata={"help": "Classes of the generated dataset."})
    recipe: str | None = field(
        default=None,
        metadata={
            "help": "Optimizer/schedule recipe (see agent_hf.training.recipe_for). Default: paper for Agent Attention "
            "models, hf-example otherwise.",
            "choices": list(RECIPE_NAMES),
        },
    )
    crop_size: list[int] = field(
        default_factory=lambda: [512], metadata={"help": "Training crop: SIZE or HEIGHT WIDTH."}
    )
    scale: list[int] = field(
        default_factory=lambda: [2048, 512],
        metadata={"help": "Train resize bound LONG SHORT, before the ratio range."},
    )
    ratio_range: list[float] = field(
        default_factory=lambda: [0.5, 2.0], metadata={"help": "Random resize ratio range."}
    )
    eval_mode: str = field(
        default="whole", metadata={"help": "whole or slide inference.", "choices": ["whole", "slide"]}
    )
    eval_scale: list[int] = field(
        default_factory=lambda: [2048, 512], metadata={"help": "Test resize bound LONG SHORT (keep ratio)."}
    )
    eval_scales: list[float] = field(
        default_factory=lambda: [1.0], metadata={"help": "Test-time scale ratios, e.g. 0.5 0.75 1.0 1.25 1.5 1.75."}
    )
    eval_flip: bool = field(default=False, metadata={"help": "Also evaluate horizontally flipped images."})
    eval_crop_size: list[int] = field(
        default_factory=lambda: [512], metadata={"help": "Slide window: SIZE or HEIGHT WIDTH."}
    )
    eval_stride: list[int] = field(
        default_factory=lambda: [341], metadata={"help": "Slide stride: SIZE or HEIGHT WIDTH."}
    )

    def __post_init__(self):
        for option, values in (
            ("--scale", self.scale),
            ("--eval_scale", self.eval_scale),
            ("--ratio_range", self.ratio_range),
        ):
            if len(values) != 2 or min(values) <= 0:
                raise ValueError(f"{option} takes two positive numbers, got {values}")
        if not self.eval_scales or min(self.eval_scales) <= 0:
            raise ValueError(f"--eval_scales takes positive ratios, got {self.eval_scales}")
        for option, values in (
            ("--crop_size", self.crop_size),
            ("--eval_crop_size", self.eval_crop_size),
            ("--eval_stride", self.eval_stride),
        ):
            _pair(values, option)


def _pair(values: list[int], option: str) -> tuple[int, int]:
    if len(values) not in (1, 2) or min(values) < 1:
        raise ValueError(f"{option} takes one or two positive integers, got {values}")
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


# ---------------------------------------------------------------------------------------------------- arguments
def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments, set[str]]:
    """The three argument groups and the names of the options given explicitly (they override the recipe)."""
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments), allow_abbrev=False)
    if len(argv) == 1 and argv[0].endswith(".json"):
        path = os.path.abspath(argv[0])
        with open(path) as file:
            explicit = set(json.load(file))
        return (*parser.parse_json_file(json_file=path), explicit)
    dests = {option: action.dest for action in parser._actions for option in action.option_strings}
    explicit = {dests[token.split("=", 1)[0]] for token in argv if token.split("=", 1)[0] in dests}
    return (*parser.parse_args_into_dataclasses(args=argv), explicit)


def use_cpu_processes_without_accelerator() -> None:
    """Under ``torchrun --nproc_per_node N`` on a machine without GPU, accelerate only forms a (gloo) process group
    when told to use the CPU; without this every process would silently train on its own."""
    accelerator = getattr(torch, "accelerator", None)
    has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator:
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def check_world_size(training_args: TrainingArguments) -> None:
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != training_args.world_size:
        raise RuntimeError(
            f"launched {launched} processes but the Trainer sees a world size of {training_args.world_size}: the "
            "processes would train independently (on CPU pass --use_cpu)"
        )


def setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    logging.getLogger("agent_hf").setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    logger.warning(
        f"Process rank: {training_args.process_index}, world size: {training_args.world_size}, "
        f"device: {training_args.device}, distributed: {training_args.parallel_mode.value == 'distributed'}"
    )


# --------------------------------------------------------------------------------------------------------- data
@dataclass
class LoadedData:
    """The splits (columns ``image`` and ``annotation``), their class names if known, whether the annotations follow
    ADE20K's convention (0 = unlabeled, reduced by default) and a short name for logs and the model card."""

    splits: datasets.DatasetDict
    id2label: dict[int, str] | None
    reduce_labels_default: bool
    description: str


def _split_folders(root: Path, split: str) -> tuple[Path, Path]:
    """``(images, annotations)`` folders of one split under ``root`` (ADEChallengeData2016 or a flat pair)."""
    ade = ADE_SPLIT_FOLDERS[split]
    for images_dir, masks_dir in (
        (root / "images" / ade, root / "annotations" / ade),
        (root / "images", root / "annotations"),
    ):
        if images_dir.is_dir() and masks_dir.is_dir() and any(p.is_file() for p in images_dir.iterdir()):
            return images_dir, masks_dir
    raise FileNotFoundError(
        f"--{split}_dir {root}: expected {root}/images/{ade} and {root}/annotations/{ade} (ADEChallengeData2016 "
        f"layout) or {root}/images and {root}/annotations (image files and PNG masks with the same names)"
    )


def _folder_split(root: Path, split: str) -> datasets.Dataset:
    images_dir, annotations_dir = _split_folders(root, split)
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    annotations = [annotations_dir / f"{p.stem}.png" for p in images]
    missing = [str(image) for image, mask in zip(images, annotations, strict=True) if not mask.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise FileNotFoundError(f"no PNG mask in {annotations_dir} for {len(missing)} image(s): {shown}")
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    return datasets.Dataset.from_dict(
        {"image": [str(p) for p in images], "annotation": [str(p) for p in annotations]}, features=features
    )


def _folder_id2label(roots: list[Path]) -> dict[int, str] | None:
    for root in roots:
        if (root / "id2label.json").is_file():
            return {int(k): v for k, v in json.loads((root / "id2label.json").read_text()).items()}
    return None


def load_data(data_args: DataTrainingArguments, model_args: ModelArguments, seed: int) -> LoadedData:
    """Loads the splits named by the arguments (folders, the generated dataset or a Hub dataset)."""
    if data_args.train_dir or data_args.validation_dir:
        given = {"train": data_args.train_dir, "validation": data_args.validation_dir}
        roots = {split: Path(path) for split, path in given.items() if path}
        splits = datasets.DatasetDict({split: _folder_split(root, split) for split, root in roots.items()})
        ade_layout = any((root / "images" / ADE_SPLIT_FOLDERS[split]).is_dir() for split, root in roots.items())
        id2label = _folder_id2label(list(roots.values()))
        if id2label is None and ade_layout:
            id2label = ade20k_id2label()
        return LoadedData(
            splits, id2label, ade_layout, ", ".join(sorted({root.resolve().name for root in roots.values()}))
        )
    if data_args.dataset_name in (None, "synthetic"):
        splits = make_synthetic_scene_parsing(
            data_args.synthetic_train_samples,
            data_args.synthetic_validation_samples,
            num_classes=data_args.synthetic_num_labels,
            seed=seed,
        )
        return LoadedData(splits, synthetic_id2label(data_args.synthetic_num_labels), True, "synthetic")
    splits = datasets.load_dataset(
        data_args.dataset_name, data_args.dataset_config_name, cache_dir=model_args.cache_dir, token=model_args.token
    )
    splits = _standard_columns(splits)
    is_ade = data_args.dataset_name.split("/")[-1] == "scene_parse_150"
    id2label = ade20k_id2label() if is_ade else _dataset_id2label(data_args.dataset_name, model_args)
    return LoadedData(splits, id2label, is_ade, data_args.dataset_name)


def _dataset_id2label(dataset_name: str, model_args: ModelArguments) -> dict[int, str] | None:
    """``id2label.json`` of a local dataset folder or Hub dataset repository (transformers' example convention)."""
    if os.path.isdir(dataset_name):
        return _folder_id2label([Path(dataset_name)])
    try:
        path = hf_hub_download(dataset_name, "id2label.json", repo_type="dataset", token=model_args.token)
    except (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError):
        return None
    return {int(k): v for k, v in json.loads(Path(path).read_text()).items()}


def _standard_columns(splits: datasets.DatasetDict) -> datasets.DatasetDict:
    """Renames ``pixel_values``/``label`` to ``image``/``annotation`` and checks both columns exist."""
    for split, dataset in splits.items():
        renames = {
            old: new
            for old, new in (("pixel_values", "image"), ("label", "annotation"))
            if old in dataset.column_names and new not in dataset.column_names
        }
        dataset = dataset.rename_columns(renames) if renames else dataset
        missing = [column for column in ("image", "annotation") if column not in dataset.column_names]
        if missing:
            raise ValueError(
                f"split {split!r} has columns {dataset.column_names} but needs 'image' and 'annotation' (or 'label'); "
                f"missing: {missing}"
            )
        for column in ("image", "annotation"):
            if not isinstance(dataset.features[column], datasets.Image):
                dataset = dataset.cast_column(column, datasets.Image())
        splits[split] = dataset
    return splits


def select_splits(
    data: LoadedData, data_args: DataTrainingArguments, training_args: TrainingArguments
) -> datasets.DatasetDict:
    """Train/validation splits after ``--train_val_split`` and ``--max_*_samples``; errors for missing/empty ones."""
    splits = datasets.DatasetDict(data.splits)
    if "validation" not in splits and "train" in splits and data_args.train_val_split > 0 and training_args.do_eval:
        parts = splits["train"].train_test_split(data_args.train_val_split, seed=training_args.seed)
        splits = datasets.DatasetDict(train=parts["train"], validation=parts["test"])
    if training_args.do_train:
        if "train" not in splits:
            raise ValueError(f"--do_train needs a train split; {data.description} has {sorted(splits)}")
        if data_args.max_train_samples is not None:
            train = splits["train"].shuffle(seed=training_args.seed)
            splits["train"] = train.select(range(min(data_args.max_train_samples, len(train))))
    if training_args.do_eval:
        if "validation" not in splits:
            raise ValueError(f"--do_eval needs a validation split; {data.description} has {sorted(splits)}")
        if data_args.max_eval_samples is not None:
            splits["validation"] = splits["validation"].select(
                range(min(data_args.max_eval_samples, len(splits["validation"])))
            )
    needed = [s for s, wanted in (("train", training_args.do_train), ("validation", training_args.do_eval)) if wanted]
    for split in needed:
        if len(splits[split]) == 0:
            raise ValueError(f"the {split} split of {data.description} is empty")
    return splits


# -------------------------------------------------------------------------------------------------------- model
def _config_overrides(model_args: ModelArguments) -> dict:
    if not model_args.config_overrides:
        return {}
    try:
        overrides = json.loads(model_args.config_overrides)
    except json.JSONDecodeError as error:
        raise ValueError(f"--config_overrides is not valid JSON: {error}") from error
    if not isinstance(overrides, dict):
        raise ValueError("--config_overrides must be a JSON object of config fields")
    return overrides


def build_model(model_args: ModelArguments, id2label: dict[int, str] | None):
    """The model to train: a preset (random init or ``--backbone_checkpoint``) or a pretrained folder / Hub model."""
    overrides = _config_overrides(model_args)
    labels = {} if id2label is None else {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    name = model_args.model_name_or_path
    if name in agent_hf.PRESETS:
        config = agent_hf.preset_config(name, **labels, **overrides)
        if model_args.backbone_checkpoint:
            return agent_hf.load_official_checkpoint(model_args.backbone_checkpoint, config).train()
        return AutoModelForSemanticSegmentation.from_config(config)
    if model_args.backbone_checkpoint:
        raise ValueError("--backbone_checkpoint needs a preset as --model_name_or_path")
    hub_kwargs = dict(
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
    )
    config = AutoConfig.from_pretrained(model_args.config_name or name, **hub_kwargs, **overrides)
    relabel = id2label is not None and len(id2label) != config.num_labels
    if relabel:
        logger.warning(
            f"{name} has {config.num_labels} classes, the dataset {len(id2label)}: the classifiers are re-initialized"
        )
    for key, value in labels.items():
        setattr(config, key, value)
    return AutoModelForSemanticSegmentation.from_pretrained(
        name, config=config, ignore_mismatched_sizes=relabel, **hub_kwargs
    )


def build_image_processor(model_args: ModelArguments, do_reduce_labels: bool):
    """The model's image processor (saved with it); the agent_hf one for presets."""
    name = model_args.image_processor_name or model_args.model_name_or_path
    if name in agent_hf.PRESETS:
        return make_image_processor(do_reduce_labels=do_reduce_labels)
    return AutoImageProcessor.from_pretrained(
        name,
        do_reduce_labels=do_reduce_labels,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
    )


# ---------------------------------------------------------------------------------------------------------- hub
def hub_repo_id(training_args: TrainingArguments) -> str:
    """Checks, before any training, that ``--push_to_hub`` can work: a full repo id, a token, online mode."""
    if not training_args.do_train:
        raise ValueError("--push_to_hub publishes the trained model folder: it needs --do_train")
    repo_id = training_args.hub_model_id
    if not repo_id or "/" not in repo_id:
        raise ValueError("--push_to_hub needs --hub_model_id NAMESPACE/NAME")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"--hub_model_id {repo_id!r} is not a valid repository id: {error}") from error
    if not (training_args.hub_token or get_token()):
        raise ValueError("--push_to_hub needs a Hub token: --hub_token, HF_TOKEN or `hf auth login`")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ValueError("--push_to_hub is impossible with HF_HUB_OFFLINE set")
    return repo_id


# --------------------------------------------------------------------------------------------------------- main
def make_train_dataset(
    split: datasets.Dataset,
    data_args: DataTrainingArguments,
    training_args: TrainingArguments,
    model,
    transform_kwargs,
) -> TrainDataset:
    """The mmseg train pipeline; each process draws its own augmentations (seeded by seed and rank)."""
    rank_seed = np.random.SeedSequence([training_args.seed, training_args.process_index]).generate_state(1)[0]
    transform = TrainTransform(
        crop_size=_pair(data_args.crop_size, "--crop_size"),
        scale=tuple(data_args.scale),
        ratio_range=tuple(data_args.ratio_range),
        seed=int(rank_seed),
        **transform_kwargs,
    )
    return TrainDataset(split, transform, model.config.num_labels, "train")


def make_eval_dataset(split: datasets.Dataset, data_args: DataTrainingArguments, transform_kwargs) -> EvalDataset:
    settings = EvalSettings(
        mode=data_args.eval_mode,
        scale=tuple(data_args.eval_scale),
        ratios=tuple(data_args.eval_scales),
        flip=data_args.eval_flip,
        crop_size=_pair(data_args.eval_crop_size, "--eval_crop_size"),
        stride=_pair(data_args.eval_stride, "--eval_stride"),
        **transform_kwargs,
    )
    return EvalDataset(split, settings, "validation")


def train_and_evaluate(trainer: SegmentationTrainer, training_args: TrainingArguments) -> dict[str, float]:
    """``--do_train`` (optionally resuming) then ``--do_eval``; metrics are logged and saved (``all_results.json``)."""
    metrics: dict[str, float] = {}
    if training_args.do_train:
        resume = training_args.resume_from_checkpoint
        resume = True if isinstance(resume, str) and resume.lower() in ("true", "last") else resume
        train_metrics = trainer.train(resume_from_checkpoint=resume).metrics
        trainer.log_metrics("train", train_metrics)
        trainer.save_metrics("train", train_metrics)
        trainer.save_state()
        metrics.update(train_metrics)
    if training_args.do_eval:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    return metrics


def main(argv: list[str] | None = None) -> dict[str, float]:
    use_cpu_processes_without_accelerator()
    model_args, data_args, training_args, explicit = parse_arguments(sys.argv[1:] if argv is None else argv)
    setup_logging(training_args)
    check_world_size(training_args)
    if not (training_args.do_train or training_args.do_eval):
        raise ValueError("nothing to do: pass --do_train and/or --do_eval")
    push_repo_id = hub_repo_id(training_args) if training_args.push_to_hub else None
    training_args.push_to_hub = False  # the model folder is published by agent_hf.hub (card last), not by Trainer
    if training_args.device.type == "cpu" and "dataloader_pin_memory" not in explicit:
        training_args.dataloader_pin_memory = False  # nothing to pin to without an accelerator

    set_seed(training_args.seed)
    with training_args.main_process_first(desc="loading the dataset"):
        data = load_data(data_args, model_args, training_args.seed)
    splits = select_splits(data, data_args, training_args)
    reduce_labels = data.reduce_labels_default if data_args.do_reduce_labels is None else data_args.do_reduce_labels
    sizes = {name: len(split) for name, split in splits.items()}
    logger.info(f"Data: {data.description}, images per split {sizes}, reduce_labels={reduce_labels}")

    model = build_model(model_args, data.id2label)
    image_processor = build_image_processor(model_args, reduce_labels)
    transform_kwargs = dict(
        mean=tuple(255 * m for m in image_processor.image_mean),
        std=tuple(255 * s for s in image_processor.image_std),
        reduce_labels=reduce_labels,
    )
    agent_model = model.config.model_type in ("agent_swin", "agent_pvt")
    recipe = recipe_for(model.config, data_args.recipe or ("paper" if agent_model else "hf-example"))
    trainer = SegmentationTrainer(
        model,
        training_args,
        recipe=recipe.merge(training_args, explicit),
        train_dataset=make_train_dataset(splits["train"], data_args, training_args, model, transform_kwargs)
        if training_args.do_train
        else None,
        eval_dataset=make_eval_dataset(splits["validation"], data_args, transform_kwargs)
        if training_args.do_eval
        else None,
        data_collator=pad_collate(_pair(data_args.crop_size, "--crop_size")),
    )
    metrics = train_and_evaluate(trainer, training_args)

    if trainer.is_world_process_zero() and training_args.do_train:
        provenance = trained_provenance(
            trainer.model,
            base=model_args.model_name_or_path,
            dataset=data.description,
            steps=trainer.state.global_step,
            recipe=dataclasses.asdict(trainer.recipe),
            eval_results=eval_results_from_metrics(metrics, data.description),
        )
        record_provenance(trainer.model, provenance)
        save_model_folder(trainer.model, training_args.output_dir, image_processor)
        if push_repo_id:
            card = card_for_folder(training_args.output_dir, push_repo_id)
            result = push_folder_to_hub(
                training_args.output_dir,
                push_repo_id,
                token=training_args.hub_token,
                private=bool(training_args.hub_private_repo),
                revision=training_args.hub_revision,
                card=card,
            )
            logger.info(f"Pushed {training_args.output_dir} to {push_repo_id}: {', '.join(result.commit_urls)}")
    return metrics


if __name__ == "__main__":
    main()
