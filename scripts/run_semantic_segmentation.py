#!/usr/bin/env python
"""Train and evaluate Agent Attention segmentation models with the paper's mmsegmentation recipe.

The command line follows transformers' ``examples/pytorch/semantic-segmentation/run_semantic_segmentation.py``
(``--model_name_or_path``, ``--dataset_name``, ``--do_reduce_labels``, ... plus every ``TrainingArguments`` option),
and runs under ``python``, ``accelerate launch`` and ``torchrun``. Differences:

* the model can be a preset (``agent-swin-t-upernet-ade20k``, ...; random init, or ``--backbone_checkpoint`` for an
  official ImageNet checkpoint), a local model folder or a Hub id;
* data: ``--dataset_name synthetic`` (the default: a generated scene-parsing set), a Hub dataset or local dataset
  folder in the ``scene_parse_150`` schema (``scene_parse_150`` itself is read from the Hub's parquet export), or
  local folders (``--train_dir``/``--validation_dir``: an ``ADEChallengeData2016`` root or any folder with
  ``images/`` and ``annotations/`` PNG masks of the same stems); ``--streaming`` streams Hub/parquet datasets,
  split across processes;
* every sample of the splits it will read is checked before the first step (decoding, mask size, label range,
  missing masks); bad samples are named, or skipped and listed with ``--skip_invalid_samples``;
* training uses mmseg's ADE20K pipeline (random resize, crop with ``cat_max_ratio``, flip, photometric distortion)
  with augmentations derived from (seed, epoch, sample), so a resumed run repeats the uninterrupted run's batches,
  and the official optimizer/schedule (``--recipe paper``); ``--learning_rate``, ``--weight_decay``,
  ``--max_steps``, ``--warmup_steps``, ``--per_device_train_batch_size``, ... override the recipe when given; the
  batch arithmetic (processes x per-device batch x accumulation) is printed against the recipe's 16 images;
* the trained model is saved as soon as training ends, before evaluation;
* evaluation is mmseg's (``--eval_mode whole|slide``, ``--eval_ratios``, ``--eval_flip``): every image at its
  original resolution, streamed into a mean-IoU accumulator; ``eval_mIoU``/``eval_mAcc``/``eval_aAcc`` are logged
  and per-class results are written to ``{output_dir}/eval_per_class.json``;
* the output folder is a complete model folder (weights, config with model code, image processor) and
  ``--push_to_hub`` publishes it with ``agent_hf.hub.push_folder_to_hub`` (model files first, model card last).

Every folder it writes serves as it is (the output folder, each ``checkpoint-N``, a folder evaluated later: image
processor, pipeline and handler code registered in ``config.json``). A model whose number of classes differs from the
data's is refused unless ``--ignore_mismatched_sizes`` (new classifiers); a run shorter than the recipe's keeps its
warm-up in proportion. The run says one line per phase; ``--verbose`` adds transformers' and datasets' logs.

Output folder: a rerun into a folder that holds this run's checkpoints resumes from the newest complete one
(half-written checkpoints are skipped and named); any other non-empty folder is refused unless
``--overwrite_output_dir``, which trains into a staging folder beside it and swaps it in when the model is saved
(never replacing a folder that holds an input or the current directory). Errors in the arguments, config or data are
one line (exit code 1); ``--debug`` shows the traceback.

Examples::

    # a few minutes on a CPU: tiny Agent-Swin on the generated dataset
    python scripts/run_semantic_segmentation.py --model_name_or_path agent-swin-t-upernet-ade20k \\
        --config_overrides '{"embed_dim": 32, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8]}' \\
        --crop_size 128 --scale 512 128 --eval_scale 512 128 --max_steps 200 --learning_rate 1e-3 \\
        --per_device_train_batch_size 8 --do_train --do_eval --output_dir outputs/tiny

    # the paper's Agent-Swin-T run on ADE20K (8 GPUs x 2 images, 160k iterations)
    accelerate launch --multi_gpu --num_processes 8 scripts/run_semantic_segmentation.py \\
        --model_name_or_path agent-swin-t-upernet-ade20k --backbone_checkpoint agent_swin_t.pth \\
        --train_dir data/ADEChallengeData2016 --validation_dir data/ADEChallengeData2016 \\
        --per_device_train_batch_size 2 --do_train --do_eval --eval_strategy steps --eval_steps 16000 \\
        --save_steps 16000 --dataloader_num_workers 4 --output_dir outputs/agent-swin-t
"""

from __future__ import annotations

import sys
from pathlib import Path

# `--help` answers at once from the text that `short_help` generates (tests/test_journeys.py checks it is current):
# argument parsing itself needs transformers' TrainingArguments, hence torch.
HELP_FILE = Path(__file__).with_name("run_semantic_segmentation_help.txt")
if __name__ == "__main__" and {"-h", "--help"} & set(sys.argv[1:]) and HELP_FILE.is_file():
    print(HELP_FILE.read_text(), end="")
    sys.exit(0)

from agent_hf.argument_checks import ArgumentChecks, check_arguments_early

if __name__ == "__main__":  # what needs no model or data is answered before torch is imported
    check_arguments_early(
        ArgumentChecks(
            files=("--backbone_checkpoint",),
            folders=("--train_dir", "--validation_dir"),
            models=("--model_name_or_path",),
            output_dir="--output_dir",
            overwrite=("--overwrite_output_dir",),
            training_output=True,
        )
    )

import logging
from dataclasses import dataclass, field
from typing import ClassVar

from huggingface_hub.errors import OfflineModeIsEnabled
from transformers import TrainingArguments, set_seed

import agent_hf
from agent_hf.argument_checks import ScriptError, run_script, user_errors
from agent_hf.data import TrainTransform
from agent_hf.data.ade20k import PARQUET_EXPORT_REVISION
from agent_hf.data.loading import (
    SCENE_PARSE_150,
    LoadedData,
    load_scene_parsing,
    needed_splits,
    select_splits,
    to_streams,
)
from agent_hf.families import FAMILIES
from agent_hf.hub import HubTokenMissingError, card_for_folder, check_publishable, push_folder_to_hub
from agent_hf.presets import mistyped_preset
from agent_hf.provenance import add_eval_results
from agent_hf.training import (
    RECIPE_NAMES,
    EvalSettings,
    SegmentationTrainer,
    eval_dataset_for,
    pad_collate,
    recipe_for,
    script_support,
    train_dataset_for,
)
from agent_hf.training.checkpoints import resume_problem
from agent_hf.training.model_setup import load_image_processor, load_model_to_train
from agent_hf.training.run_folder import OutputPlan, evaluates_own_folder, plan_output, save_trained_model
from agent_hf.training.validation import check_batchnorm_batch, check_splits, describe_batch

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """Which model to train or evaluate."""

    _argument_group_name: ClassVar[str] = "model"

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
        metadata={
            "help": "Official ImageNet (or mmseg) checkpoint, or a converted ImageNet classification folder, to start "
            "from; only with a preset."
        },
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
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={
            "help": "Allow a model whose number of classes differs from the data's: its classifiers start anew "
            "(fine-tuning a new head). Without it such a model is refused, since it would evaluate a random head."
        },
    )


def _folder_help(split: str) -> str:
    return (
        f"ADEChallengeData2016 root (images/{split} + annotations/{split}) or a folder with images/ and "
        "annotations/ (PNG masks named like the images)."
    )


@dataclass
class DataTrainingArguments:
    """Which data, and how it is transformed and evaluated."""

    _argument_group_name: ClassVar[str] = "data, augmentation and evaluation"

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "'synthetic' (default without --train_dir/--validation_dir); a Hub dataset or local dataset "
            "folder (parquet files, e.g. written by scripts/prepare_ade20k.py, or a save_to_disk folder) in the "
            "scene_parse_150 schema (columns image + annotation); 'scene_parse_150' loads the Hub's parquet export."
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "Hub dataset configuration name (scene_parse_150: scene_parsing)."}
    )
    dataset_revision: str | None = field(
        default=None,
        metadata={
            "help": f"Dataset version: branch, tag, commit id or {PARQUET_EXPORT_REVISION} (the Hub's parquet "
            f"export; the default for {SCENE_PARSE_150})."
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Stream the dataset instead of downloading it first (Hub/parquet datasets): each process reads "
            "its part of the stream; training is driven by --max_steps."
        },
    )
    streaming_buffer_size: int = field(
        default=1000, metadata={"help": "Shuffle buffer of a streamed training split (examples)."}
    )
    train_dir: str | None = field(default=None, metadata={"help": _folder_help("training")})
    validation_dir: str | None = field(default=None, metadata={"help": _folder_help("validation")})
    train_val_split: float = field(
        default=0.15, metadata={"help": "Fraction of train split off as validation when there is no validation split."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep this many (shuffled) training images."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N validation images."})
    skip_invalid_samples: bool = field(
        default=False,
        metadata={
            "help": "Skip (and list) samples that cannot be used (undecodable image or mask, size mismatch, label "
            "values outside the classes, missing mask) instead of stopping before training."
        },
    )
    do_reduce_labels: bool | None = field(
        default=None,
        metadata={
            "help": "Map annotation 0 to ignore (255) and k to k-1 (ADE20K). Default: on for synthetic, "
            "scene_parse_150, ADEChallengeData2016 folders and datasets with ADE20K's 150 classes, off otherwise."
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
    eval_ratios: list[float] = field(
        default_factory=lambda: [1.0],
        metadata={
            "help": "Test-time ratios of --eval_scale (mmseg's img_ratios), e.g. 0.5 0.75 1.0 1.25 1.5 1.75 "
            "(--eval_scales is the older name).",
            "aliases": ["--eval_scales"],
        },
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
                raise ScriptError(f"{option} takes two positive numbers, got {values}")
        if not self.eval_ratios or min(self.eval_ratios) <= 0:
            raise ScriptError(f"--eval_ratios takes positive ratios, got {self.eval_ratios}")
        for option, values in (
            ("--crop_size", self.crop_size),
            ("--eval_crop_size", self.eval_crop_size),
            ("--eval_stride", self.eval_stride),
        ):
            _pair(values, option)


@dataclass
class OutputArguments:
    """What may happen to an existing output folder, and what the run says."""

    _argument_group_name: ClassVar[str] = "output folder and logs"

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over in an --output_dir that is not empty: the run trains into a staging folder beside "
            "it, which replaces it once the model is saved (never a folder holding an input or the current "
            "directory). Without it, a folder with this run's checkpoints is resumed and any other non-empty "
            "folder is refused. For --do_eval alone: replace earlier evaluation results."
        },
    )
    verbose: bool = field(
        default=False,
        metadata={
            "help": "Log everything transformers and datasets say (configs, the Trainer's settings); by default the "
            "run says one line per phase and warnings."
        },
    )


def _pair(values: list[int], option: str) -> tuple[int, int]:
    if len(values) not in (1, 2) or min(values) < 1:
        raise ScriptError(f"{option} takes one or two positive integers, got {values}")
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


# ---------------------------------------------------------------------------------------------------- arguments
# The TrainingArguments options that `--help` shows (`--help_all` lists every one).
HELP_TRAINING_OPTIONS = (
    "output_dir", "do_train", "do_eval", "max_steps", "num_train_epochs", "learning_rate", "weight_decay",
    "warmup_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "eval_strategy", "eval_steps",
    "save_steps", "save_total_limit", "resume_from_checkpoint", "seed", "dataloader_num_workers", "use_cpu",
    "report_to", "push_to_hub", "hub_model_id",
)  # fmt: skip


def short_help() -> str:
    """The grouped ``--help`` text: this script's own options and the most used ``TrainingArguments`` ones."""
    return script_support.short_help(
        (ModelArguments, DataTrainingArguments, OutputArguments),
        HELP_TRAINING_OPTIONS,
        "training (transformers TrainingArguments; these override the recipe)",
        prog="run_semantic_segmentation.py",
        usage="%(prog)s --model_name_or_path MODEL [--do_train] [--do_eval] --output_dir DIR [OPTIONS] "
        "(or: agent-hf-train ...)",
        description=__doc__.split("\n\n")[0],
        epilog="--help_all lists every TrainingArguments option; --debug shows the traceback of an error.",
    )


def parse_arguments(
    argv: list[str],
) -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments, OutputArguments, set[str]]:
    """The argument groups and the names of the options given explicitly (they override the recipe)."""
    parser = script_support.ArgumentDataclassParser(
        (ModelArguments, DataTrainingArguments, TrainingArguments, OutputArguments), allow_abbrev=False
    )
    if "--help_all" in argv:
        parser.print_help()
        sys.exit(0)
    if "--write_help" in argv:  # after changing an option: regenerate the text --help prints
        HELP_FILE.write_text(short_help())
        sys.exit(0)
    # `--do_reduce_labels` (None = decided from the data) may be given bare, as in transformers' example.
    groups, explicit = script_support.parse_argument_dataclasses(
        parser, argv, bare_flags=("--do_reduce_labels", "--do-reduce-labels"), renamed={"eval_scales": "eval_ratios"}
    )
    return (*groups, explicit)


def check_run_arguments(training_args: TrainingArguments, data_args: DataTrainingArguments, explicit: set[str]):
    if not (training_args.do_train or training_args.do_eval):
        raise ScriptError("nothing to do: pass --do_train and/or --do_eval")
    if (
        data_args.streaming
        and training_args.do_train
        and "num_train_epochs" in explicit
        and "max_steps" not in explicit
    ):
        raise ScriptError("a streamed dataset has no length: give --max_steps instead of --num_train_epochs")


def hub_repo_id(training_args: TrainingArguments) -> str:
    """Checks, before any training, that ``--push_to_hub`` can work: a repo id, a token, online mode."""
    if not training_args.do_train:
        raise ScriptError("--push_to_hub publishes the trained model folder: it needs --do_train")
    repo_id = training_args.hub_model_id
    if not repo_id:
        raise ScriptError("--push_to_hub needs --hub_model_id NAMESPACE/NAME")
    try:
        check_publishable(repo_id, training_args.hub_token)
    except (ValueError, HubTokenMissingError, OfflineModeIsEnabled) as error:
        raise ScriptError(f"--push_to_hub: {' '.join(str(error).split())}") from error
    return repo_id


# -------------------------------------------------------------------------------------------- data and model
def load_data(data_args: DataTrainingArguments, model_args: ModelArguments, seed: int) -> LoadedData:
    """The splits that the data arguments name (folders, the generated dataset or a Hub/local dataset)."""
    return load_scene_parsing(
        train_dir=data_args.train_dir,
        validation_dir=data_args.validation_dir,
        dataset_name=data_args.dataset_name,
        dataset_config_name=data_args.dataset_config_name,
        dataset_revision=data_args.dataset_revision,
        streaming=data_args.streaming,
        synthetic_train_samples=data_args.synthetic_train_samples,
        synthetic_validation_samples=data_args.synthetic_validation_samples,
        synthetic_num_labels=data_args.synthetic_num_labels,
        seed=seed,
        cache_dir=model_args.cache_dir,
        token=model_args.token,
    )


def hub_kwargs(model_args: ModelArguments) -> dict:
    """The ``from_pretrained`` arguments of a model or processor from a folder or the Hub."""
    keys = ("cache_dir", "token", "trust_remote_code")
    return {"revision": model_args.model_revision, **{key: getattr(model_args, key) for key in keys}}


# --------------------------------------------------------------------------------------------------------- main
def train_and_evaluate(
    trainer: SegmentationTrainer, plan: OutputPlan, image_processor, base: str, dataset: str, verbose: bool = False
) -> dict[str, float]:
    """``--do_train`` (optionally resuming), saving the model at once, then ``--do_eval``; metrics are logged (in one
    line each; the Trainer's tables with ``verbose``) and saved (``all_results.json``), and a trained model's
    ``config.json`` gets the measured results."""
    metrics: dict[str, float] = {}
    if trainer.args.do_train:
        problem = plan.resume_from and resume_problem(plan.resume_from, trainer.model)
        if problem:
            raise ScriptError(f"cannot resume from {plan.resume_from}: {problem}")
        train_metrics = trainer.train(resume_from_checkpoint=plan.resume_from).metrics
        logger.info(
            f"Trained {trainer.state.global_step} steps in {train_metrics['train_runtime']:.1f} s, mean loss "
            f"{train_metrics.get('train_loss', float('nan')):.4f}"
        )
        if verbose:
            trainer.log_metrics("train", train_metrics)
        trainer.save_metrics("train", train_metrics)
        trainer.save_state()
        metrics.update(train_metrics)
        # Before evaluating: a failing evaluation loses nothing.
        save_trained_model(trainer, plan, image_processor, base, dataset)
    if trainer.args.do_eval:
        eval_metrics = trainer.evaluate()
        if verbose:
            trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
        own_folder = trainer.args.do_train or evaluates_own_folder(base, plan.output_dir)
        if own_folder and trainer.is_world_process_zero():
            add_eval_results(plan.output_dir, eval_metrics, dataset)
    return metrics


def main(argv: list[str]) -> dict[str, float]:
    script_support.use_cpu_processes_without_accelerator()
    model_args, data_args, training_args, output_args, explicit = parse_arguments(argv)
    mistyped = mistyped_preset(model_args.model_name_or_path)
    if mistyped:  # answered now, not after a failed Hub request
        raise ScriptError(f"--model_name_or_path: {mistyped}")
    script_support.setup_logging(training_args, output_args.verbose, logger)
    script_support.check_world_size(training_args.world_size)
    check_run_arguments(training_args, data_args, explicit)
    push_repo_id = hub_repo_id(training_args) if training_args.push_to_hub else None
    training_args.push_to_hub = False  # the model folder is published by agent_hf.hub (card last), not by Trainer
    if training_args.device.type == "cpu" and "dataloader_pin_memory" not in explicit:
        training_args.dataloader_pin_memory = False  # nothing to pin to without an accelerator
    plan = plan_output(
        training_args.output_dir,
        do_train=training_args.do_train,
        overwrite=output_args.overwrite_output_dir,
        resume_from_checkpoint=training_args.resume_from_checkpoint,
        inputs=[model_args.model_name_or_path, model_args.config_name, model_args.image_processor_name,
                model_args.backbone_checkpoint, data_args.train_dir, data_args.validation_dir, data_args.dataset_name],
        process_index=training_args.process_index,
    )  # fmt: skip
    training_args.output_dir = str(plan.run_dir)

    set_seed(training_args.seed)
    with training_args.main_process_first(desc="loading the dataset"), user_errors("could not load the dataset"):
        data = load_data(data_args, model_args, training_args.seed)
    splits = select_splits(
        data,
        do_train=training_args.do_train,
        do_eval=training_args.do_eval,
        train_val_split=data_args.train_val_split,
        max_train_samples=data_args.max_train_samples,
        max_eval_samples=data_args.max_eval_samples,
        seed=training_args.seed,
    )
    reduce_labels = data.reduce_labels_default if data_args.do_reduce_labels is None else data_args.do_reduce_labels
    logger.info(f"Data: {data.description}, splits {list(splits)}, reduce_labels={reduce_labels}")

    inference = dict(  # the evaluation's settings, which the saved image processor serves too
        scale=tuple(data_args.eval_scale),
        mode=data_args.eval_mode,
        ratios=tuple(data_args.eval_ratios),
        flip=data_args.eval_flip,
        crop_size=_pair(data_args.eval_crop_size, "--eval_crop_size"),
        stride=_pair(data_args.eval_stride, "--eval_stride"),
    )
    with user_errors(f"could not build the model {model_args.model_name_or_path}"):
        model = load_model_to_train(
            model_args.model_name_or_path,
            data.id2label,
            config_name=model_args.config_name,
            overrides=model_args.config_overrides,
            backbone_checkpoint=model_args.backbone_checkpoint,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
            do_train=training_args.do_train,
            **hub_kwargs(model_args),
        )
        processor_name = model_args.image_processor_name or model_args.model_name_or_path
        image_processor = load_image_processor(processor_name, reduce_labels, inference, **hub_kwargs(model_args))
    rank, world_size = training_args.process_index, training_args.world_size
    if data_args.streaming:
        splits = to_streams(
            splits,
            process_index=rank,
            world_size=world_size,
            num_workers=training_args.dataloader_num_workers,
            seed=training_args.seed,
            buffer_size=data_args.streaming_buffer_size,
        )
    else:
        splits = check_splits(
            splits,
            needed_splits(training_args.do_train, training_args.do_eval),
            model.config.num_labels,
            reduce_labels=reduce_labels,
            skip_invalid=data_args.skip_invalid_samples,
            num_workers=training_args.dataloader_num_workers,
            process_index=rank,
            world_size=world_size,
            progress=rank == 0 and not training_args.disable_tqdm,
        )
    normalization = dict(
        mean=tuple(255 * m for m in image_processor.image_mean),
        std=tuple(255 * s for s in image_processor.image_std),
        reduce_labels=reduce_labels,
    )
    train_dataset = eval_dataset = None
    if training_args.do_train:
        # The mmseg train pipeline; augmentations derive from (seed, epoch, sample), see agent_hf.training.
        transform = TrainTransform(
            crop_size=_pair(data_args.crop_size, "--crop_size"),
            scale=tuple(data_args.scale),
            ratio_range=tuple(data_args.ratio_range),
            seed=training_args.seed,
            **normalization,
        )
        seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
        train_dataset = train_dataset_for(
            splits["train"],
            transform,
            model.config.num_labels,
            seed=seed,
            rank=rank,
            skip_invalid=data_args.skip_invalid_samples,
        )
    if training_args.do_eval:
        eval_dataset = eval_dataset_for(splits["validation"], EvalSettings(**inference, **normalization), rank=rank)
    agent_model = model.config.model_type in FAMILIES
    recipe = recipe_for(model.config, data_args.recipe or ("paper" if agent_model else "hf-example"))
    with user_errors("the training recipe", (ValueError,)):
        run_recipe = recipe.with_overrides(training_args, explicit)
    trainer = SegmentationTrainer(
        model,
        training_args,
        recipe=run_recipe,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=pad_collate(_pair(data_args.crop_size, "--crop_size")),
        image_processor=image_processor,
    )
    if training_args.do_train:
        check_batchnorm_batch(trainer)
        if trainer.is_world_process_zero():
            print(describe_batch(trainer, recipe), flush=True)
    metrics = train_and_evaluate(
        trainer, plan, image_processor, model_args.model_name_or_path, data.description, output_args.verbose
    )

    if trainer.is_world_process_zero() and push_repo_id:
        result = push_folder_to_hub(
            training_args.output_dir,
            push_repo_id,
            token=training_args.hub_token,
            private=bool(training_args.hub_private_repo),
            revision=training_args.hub_revision,
            card=card_for_folder(training_args.output_dir, push_repo_id),
        )
        logger.info(f"Pushed {training_args.output_dir} to {push_repo_id}: {', '.join(result.commit_urls)}")
    return metrics


if __name__ == "__main__":
    sys.exit(run_script(main))
