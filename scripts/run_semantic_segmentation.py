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

import os
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

import dataclasses
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

import datasets
import torch
import transformers
from datasets.distributed import split_dataset_by_node
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
from agent_hf.argument_checks import ScriptError, check_eval_results, folder_error, run_script
from agent_hf.data import make_synthetic_scene_parsing, synthetic_id2label
from agent_hf.data.ade20k import (
    ADE_SPLIT_FOLDERS,
    PARQUET_EXPORT_REVISION,
    ParquetExportNotFoundError,
    ade20k_id2label,
    load_parquet_export,
    scene_parsing_folder,
)
from agent_hf.data.cache import local_dataset_cache_dir
from agent_hf.data.transforms import TrainTransform
from agent_hf.hub import card_for_folder, push_folder_to_hub
from agent_hf.output_folders import (
    OutputFolderError,
    add_files,
    check_output_folder,
    new_staging_folder,
    recover_leftovers,
    replace_folder,
)
from agent_hf.presets import mistyped_preset
from agent_hf.provenance import PROVENANCE_KEY, eval_results_from_metrics, record_provenance, trained_provenance
from agent_hf.saving import make_image_processor, save_model_config, save_model_folder
from agent_hf.training import (
    RECIPE_NAMES,
    EvalDataset,
    EvalSettings,
    Recipe,
    SegmentationTrainer,
    StreamingEvalDataset,
    StreamingTrainDataset,
    TrainDataset,
    batch_plan,
    find_invalid_samples,
    has_batchnorm,
    pad_collate,
    recipe_for,
)
from agent_hf.training.checkpoints import CheckpointScan, checkpoint_problem, resume_problem, scan_checkpoints

logger = logging.getLogger(__name__)

SCENE_PARSE_150 = "scene_parse_150"
SCENE_PARSE_150_REPO = "zhoubolei/scene_parse_150"  # the Hub's home of the former canonical `scene_parse_150`
ADE_DOWNLOAD = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"


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
class _ArgumentParser(HfArgumentParser):
    def error(self, message: str):
        raise ScriptError(message)  # one line, not argparse's usage text of every TrainingArguments option


# The TrainingArguments options that `--help` shows (`--help_all` lists every one).
HELP_TRAINING_OPTIONS = (
    "output_dir",
    "do_train",
    "do_eval",
    "max_steps",
    "num_train_epochs",
    "learning_rate",
    "weight_decay",
    "warmup_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "eval_strategy",
    "eval_steps",
    "save_steps",
    "save_total_limit",
    "resume_from_checkpoint",
    "seed",
    "dataloader_num_workers",
    "use_cpu",
    "report_to",
    "push_to_hub",
    "hub_model_id",
)


def short_help() -> str:
    """The grouped ``--help`` text: this script's own options and the most used ``TrainingArguments`` ones."""
    import argparse

    parser = HfArgumentParser(
        (ModelArguments, DataTrainingArguments, OutputArguments),
        prog="run_semantic_segmentation.py",
        usage="%(prog)s --model_name_or_path MODEL [--do_train] [--do_eval] --output_dir DIR [OPTIONS] "
        "(or: agent-hf-train ...)",
        description=__doc__.split("\n\n")[0],
        epilog="--help_all lists every TrainingArguments option; --debug shows the traceback of an error.",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, width=119, max_help_position=40),
    )
    group = parser.add_argument_group("training (transformers TrainingArguments; these override the recipe)")
    fields = {f.name: f for f in dataclasses.fields(TrainingArguments)}
    for name in HELP_TRAINING_OPTIONS:
        help_text = " ".join(fields[name].metadata.get("help", "").split()).replace("%", "%%")
        if isinstance(fields[name].default, bool):
            group.add_argument(f"--{name}", help=help_text, action="store_true")
        else:
            group.add_argument(f"--{name}", help=help_text, metavar=name.upper())
    return parser.format_help()


def parse_arguments(
    argv: list[str],
) -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments, OutputArguments, set[str]]:
    """The argument groups and the names of the options given explicitly (they override the recipe)."""
    parser = _ArgumentParser(
        (ModelArguments, DataTrainingArguments, TrainingArguments, OutputArguments), allow_abbrev=False
    )
    if "--help_all" in argv:
        parser.print_help()
        sys.exit(0)
    if "--write_help" in argv:  # after changing an option: regenerate the text --help prints
        HELP_FILE.write_text(short_help())
        sys.exit(0)
    try:
        if len(argv) == 1 and argv[0].endswith(".json"):
            path = os.path.abspath(argv[0])
            with open(path) as file:
                values = json.load(file)
            if "eval_scales" in values:  # the older name of eval_ratios
                values["eval_ratios"] = values.pop("eval_scales")
            return (*parser.parse_dict(values), set(values))
        argv = _bare_flags_to_true(argv)
        dests = {option: action.dest for action in parser._actions for option in action.option_strings}
        explicit = {dests[token.split("=", 1)[0]] for token in argv if token.split("=", 1)[0] in dests}
        return (*parser.parse_args_into_dataclasses(args=argv), explicit)
    except (OSError, ValueError) as error:  # an unreadable JSON file, or TrainingArguments' own checks
        raise ScriptError(str(error)) from error


# `bool | None` options (None = decided from the data) that may be given bare, as in transformers' example.
_OPTIONAL_FLAGS = ("--do_reduce_labels", "--do-reduce-labels")


def _bare_flags_to_true(argv: list[str]) -> list[str]:
    result = []
    for position, token in enumerate(argv):
        result.append(token)
        if token in _OPTIONAL_FLAGS and (position + 1 == len(argv) or argv[position + 1].startswith("--")):
            result.append("True")
    return result


def use_cpu_processes_without_accelerator() -> None:
    """Under ``torchrun --nproc_per_node N`` or ``accelerate launch --multi_gpu --num_processes N`` on a machine
    without GPU, accelerate only forms a (gloo) process group when told to use the CPU; without this every process
    would silently train on its own."""
    accelerator = getattr(torch, "accelerator", None)
    has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator:
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def check_world_size(training_args: TrainingArguments) -> None:
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != training_args.world_size:
        raise ScriptError(
            f"launched {launched} processes but the Trainer sees a world size of {training_args.world_size}: the "
            "processes would train independently (on CPU pass --use_cpu)"
        )


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


def setup_logging(training_args: TrainingArguments, verbose: bool = False) -> None:
    """This script and agent_hf say one line per phase (info) on the main process; transformers and datasets only
    warn, unless ``--verbose`` (their configs, the Trainer's settings, datasets' progress bars) or ``--log_level``."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if training_args.should_log and verbose:
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    own_level = min(log_level, logging.INFO) if training_args.should_log else log_level
    logger.setLevel(own_level)
    logging.getLogger("agent_hf").setLevel(own_level)
    datasets.utils.logging.set_verbosity(log_level)
    # datasets' bars ("Generating train split", on every process) say what the "Data: ..." line says once.
    datasets.enable_progress_bars() if verbose else datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    logger.info(
        f"Process rank: {training_args.process_index}, world size: {training_args.world_size}, "
        f"device: {training_args.device}, distributed: {training_args.parallel_mode.value == 'distributed'}"
    )


@contextmanager
def user_errors(context: str, errors: tuple[type[BaseException], ...] = (OSError, ValueError)) -> Iterator[None]:
    """Reports ``errors`` raised inside the block as a one-line :class:`ScriptError` starting with ``context``."""
    try:
        yield
    except ScriptError:
        raise
    except errors as error:
        raise ScriptError(f"{context}: {error}") from error


# ------------------------------------------------------------------------------------------------ output folder
@dataclass
class OutputPlan:
    """Where the run writes.

    Attributes:
        output_dir: where the results end up (``--output_dir``).
        run_dir: where the Trainer writes checkpoints and results: ``output_dir``, or (``--overwrite_output_dir`` on
            a non-empty folder) a staging folder beside it that replaces it once the model is saved.
        resume_from: the checkpoint to resume from, if any.
        inputs: local paths the run reads (never replaced).
    """

    output_dir: Path
    run_dir: Path
    resume_from: str | None
    inputs: list[str]

    @property
    def staged(self) -> bool:
        return self.run_dir != self.output_dir


def run_inputs(model_args: ModelArguments, data_args: DataTrainingArguments, resume: str | None) -> list[str]:
    """The local paths among the run's inputs."""
    candidates = [
        model_args.model_name_or_path,
        model_args.config_name,
        model_args.image_processor_name,
        model_args.backbone_checkpoint,
        data_args.train_dir,
        data_args.validation_dir,
        data_args.dataset_name,
        resume,
    ]
    return [path for path in candidates if path and os.path.exists(path)]


def _wants_last_checkpoint(value: str | None) -> bool:
    return isinstance(value, str) and value.lower() in ("true", "last")


def _describe_partial(partial: list[tuple[Path, str]]) -> str:
    return "; ".join(f"{folder.name} ({problem})" for folder, problem in partial)


def _skipped_message(scan: CheckpointScan, chosen: Path | None) -> str:
    skipped = scan.skipped_after(chosen)
    return f" Skipped incomplete checkpoint(s): {_describe_partial(skipped)}" if skipped else ""


def resolve_resume(value: str | None, scan: CheckpointScan, output_dir: Path) -> str | None:
    """The checkpoint that ``--resume_from_checkpoint`` names: ``True``/``last`` is the newest complete one."""
    if value is None or value.lower() == "false":
        return None
    if _wants_last_checkpoint(value):
        if scan.last is None:
            partial = f" (incomplete: {_describe_partial(scan.partial)})" if scan.partial else ""
            raise ScriptError(f"--resume_from_checkpoint {value}: {output_dir} holds no complete checkpoint{partial}")
        logger.warning(
            f"Resuming from {scan.last}, the newest complete checkpoint.{_skipped_message(scan, scan.last)}"
        )
        return str(scan.last)
    if not os.path.isdir(value):
        raise ScriptError(f"--resume_from_checkpoint {value}: no such folder")
    problem = checkpoint_problem(value)
    if problem:
        newest = f"; the newest complete one is {scan.last}" if scan.last else ""
        raise ScriptError(f"--resume_from_checkpoint {value} is not a complete checkpoint: {problem}{newest}")
    return value


def _agreed_staging_name(output_dir: Path, training_args: TrainingArguments) -> str:
    """A staging folder name that every process of the run uses (chosen by process 0)."""
    name = [new_staging_folder(output_dir).name if training_args.process_index == 0 else None]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.broadcast_object_list(name, src=0)
    return name[0]


def plan_output(
    training_args: TrainingArguments,
    output_args: OutputArguments,
    model_args: ModelArguments,
    data_args: DataTrainingArguments,
) -> OutputPlan:
    """Decides, before anything is loaded, where the run writes and whether it resumes (see the module docstring)."""
    output_dir = Path(training_args.output_dir)
    overwrite = output_args.overwrite_output_dir
    resume_arg = training_args.resume_from_checkpoint
    inputs = run_inputs(model_args, data_args, None if _wants_last_checkpoint(resume_arg) else resume_arg)
    if not training_args.do_train:  # evaluation only: adds its result files next to whatever is there
        check_eval_results(output_dir, overwrite)
        return OutputPlan(output_dir, output_dir, None, inputs)
    try:
        # Not a file, not the current directory, not holding or inside the data or the model.
        check_output_folder(output_dir, overwrite=True, inputs=run_inputs(model_args, data_args, None))
    except OutputFolderError as error:
        if error.reason != "current_directory" or overwrite:
            raise folder_error(error) from error
    if training_args.process_index == 0:
        recover_leftovers(output_dir)  # of a killed run; before any process makes its staging folder
    scan = scan_checkpoints(output_dir)
    if overwrite:
        if _wants_last_checkpoint(resume_arg):
            raise ScriptError("--overwrite_output_dir starts the run over: it cannot also resume its last checkpoint")
        resume = resolve_resume(resume_arg, scan, output_dir)
        try:
            check_output_folder(output_dir, overwrite=True, inputs=inputs)
        except OutputFolderError as error:
            raise folder_error(error) from error
        if output_dir.is_dir() and any(output_dir.iterdir()):
            # The other processes' (and machines') copy; beside the folder a symbolic link points to.
            run_dir = new_staging_folder(output_dir, name=_agreed_staging_name(output_dir, training_args))
            logger.warning(f"Training into {run_dir}; it replaces {output_dir} once the model is saved")
            return OutputPlan(output_dir, run_dir, resume, inputs)
        return OutputPlan(output_dir, output_dir, resume, inputs)
    resume = resolve_resume(resume_arg, scan, output_dir)
    if resume is None and scan.last is not None:
        logger.warning(
            f"Resuming from {scan.last}: {output_dir} holds this run's checkpoints (pass --overwrite_output_dir to "
            f"start over instead).{_skipped_message(scan, scan.last)}"
        )
        resume = str(scan.last)
    if resume is None and output_dir.is_dir() and any(output_dir.iterdir()):
        partial = f"; its checkpoints are incomplete: {_describe_partial(scan.partial)}" if scan.partial else ""
        raise ScriptError(
            f"output folder {output_dir} is not empty and holds no checkpoint to resume{partial}: choose another "
            "--output_dir, or pass --overwrite_output_dir to replace it"
        )
    return OutputPlan(output_dir, output_dir, resume, inputs)


# --------------------------------------------------------------------------------------------------------- data
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


def _dataset_id2label(dataset_name: str, model_args: ModelArguments) -> dict[int, str] | None:
    """``id2label.json`` of a local dataset folder or Hub dataset repository (transformers' example convention)."""
    if os.path.isdir(dataset_name):
        return _folder_id2label([Path(dataset_name)])
    try:
        path = hf_hub_download(dataset_name, "id2label.json", repo_type="dataset", token=model_args.token)
    except (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError):
        return None
    return {int(k): v for k, v in json.loads(Path(path).read_text()).items()}


def _scene_parse_150_missing(name: str, revision: str, error: Exception) -> ScriptError:
    return ScriptError(
        f"{name}: {error}. {SCENE_PARSE_150} on the Hub is a loading script, which datasets>=4 no longer runs, so it "
        f"is read from its parquet export (--dataset_revision {revision}). Without it, download ADEChallengeData2016 "
        f"({ADE_DOWNLOAD}) and pass --train_dir/--validation_dir, or convert it once with scripts/prepare_ade20k.py"
    )


def _load_named_dataset(data_args: DataTrainingArguments, model_args: ModelArguments):
    """A local dataset folder, ``scene_parse_150`` (parquet export) or another Hub dataset."""
    name, config = data_args.dataset_name, data_args.dataset_config_name
    hub = dict(cache_dir=model_args.cache_dir, token=model_args.token)
    if os.path.isdir(name):
        if (Path(name) / "dataset_dict.json").is_file():  # written by DatasetDict.save_to_disk
            return datasets.load_from_disk(name)
        # Cached by its files, never served another folder's (or its own earlier) rows.
        cache_dir = local_dataset_cache_dir(name, model_args.cache_dir)
        return datasets.load_dataset(
            name, config, streaming=data_args.streaming, cache_dir=cache_dir, token=model_args.token
        )
    if name.split("/")[-1] == SCENE_PARSE_150:
        revision = data_args.dataset_revision or PARQUET_EXPORT_REVISION
        repo_id = name if "/" in name else SCENE_PARSE_150_REPO
        try:
            export = load_parquet_export(
                repo_id,
                config or "scene_parsing",
                splits=("train", "validation"),  # the test split has no annotations
                revision=revision,
                streaming=data_args.streaming,
                **hub,
            )
        except ParquetExportNotFoundError as error:
            raise _scene_parse_150_missing(repo_id, revision, error) from error
        for split in export.partial:
            logger.warning(f"The parquet export of {name} holds only part of its {split} split")
        return export.splits
    try:
        return datasets.load_dataset(
            name, config, revision=data_args.dataset_revision, streaming=data_args.streaming, **hub
        )
    except RuntimeError as error:
        if "scripts are no longer supported" not in str(error):
            raise
        logger.warning(f"{name} is a loading script (not run by datasets>=4): reading its parquet export instead")
        try:
            return load_parquet_export(name, config or "default", streaming=data_args.streaming, **hub).splits
        except ParquetExportNotFoundError as export_error:
            raise ScriptError(f"{name} is a loading-script dataset, and {export_error}") from error


def load_data(data_args: DataTrainingArguments, model_args: ModelArguments, seed: int) -> LoadedData:
    """Loads the splits named by the arguments (folders, the generated dataset or a Hub/local dataset)."""
    if data_args.train_dir or data_args.validation_dir:
        given = {"train": data_args.train_dir, "validation": data_args.validation_dir}
        roots = {split: Path(path) for split, path in given.items() if path}
        splits = datasets.DatasetDict({split: scene_parsing_folder(root, split) for split, root in roots.items()})
        ade_layout = any((root / "images" / ADE_SPLIT_FOLDERS[split]).is_dir() for split, root in roots.items())
        id2label = _folder_id2label(list(roots.values()))
        if id2label is None and ade_layout:
            id2label = ade20k_id2label()
        description = ", ".join(sorted({root.resolve().name for root in roots.values()}))
        return LoadedData(splits, id2label, ade_layout or id2label == ade20k_id2label(), description)
    if data_args.dataset_name in (None, "synthetic"):
        splits = make_synthetic_scene_parsing(
            data_args.synthetic_train_samples,
            data_args.synthetic_validation_samples,
            num_classes=data_args.synthetic_num_labels,
            seed=seed,
        )
        return LoadedData(splits, synthetic_id2label(data_args.synthetic_num_labels), True, "synthetic")
    splits = _standard_columns(_load_named_dataset(data_args, model_args))
    is_ade = data_args.dataset_name.split("/")[-1] == SCENE_PARSE_150
    id2label = ade20k_id2label() if is_ade else _dataset_id2label(data_args.dataset_name, model_args)
    return LoadedData(splits, id2label, is_ade or id2label == ade20k_id2label(), data_args.dataset_name)


def _standard_columns(splits):
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


def select_splits(data: LoadedData, data_args: DataTrainingArguments, training_args: TrainingArguments):
    """Train/validation splits after ``--train_val_split`` and ``--max_*_samples``; errors for missing/empty ones."""
    streamed = isinstance(data.splits, datasets.IterableDatasetDict)
    splits = type(data.splits)(data.splits)
    if "validation" not in splits and "train" in splits and data_args.train_val_split > 0 and training_args.do_eval:
        if streamed:
            raise ScriptError(
                f"{data.description} has no validation split ({sorted(splits)}), and a streamed split cannot be "
                "divided: drop --streaming or use a dataset with a validation split"
            )
        parts = splits["train"].train_test_split(data_args.train_val_split, seed=training_args.seed)
        splits = datasets.DatasetDict(train=parts["train"], validation=parts["test"])
    if training_args.do_train:
        if "train" not in splits:
            raise ScriptError(f"--do_train needs a train split; {data.description} has {sorted(splits)}")
        if data_args.max_train_samples is not None:
            if streamed:
                splits["train"] = splits["train"].take(data_args.max_train_samples)
            else:
                train = splits["train"].shuffle(seed=training_args.seed)
                splits["train"] = train.select(range(min(data_args.max_train_samples, len(train))))
    if training_args.do_eval:
        if "validation" not in splits:
            raise ScriptError(f"--do_eval needs a validation split; {data.description} has {sorted(splits)}")
        if data_args.max_eval_samples is not None:
            validation = splits["validation"]
            splits["validation"] = (
                validation.take(data_args.max_eval_samples)
                if streamed
                else validation.select(range(min(data_args.max_eval_samples, len(validation))))
            )
    if not streamed:
        for split in needed_splits(training_args):
            if len(splits[split]) == 0:
                raise ScriptError(f"the {split} split of {data.description} is empty")
    return splits


def needed_splits(training_args: TrainingArguments) -> list[str]:
    return [s for s, wanted in (("train", training_args.do_train), ("validation", training_args.do_eval)) if wanted]


def to_streams(splits, training_args: TrainingArguments, data_args: DataTrainingArguments):
    """This process's part of each split as a stream (``split_dataset_by_node``; the training split shuffled)."""
    streams = {}
    for name, split in splits.items():
        if isinstance(split, datasets.Dataset):  # a local split, streamed from its Arrow files
            shards = max(1, training_args.world_size * max(1, training_args.dataloader_num_workers))
            split = split.to_iterable_dataset(num_shards=min(shards, max(1, len(split))))
        if name == "train":
            split = split.shuffle(seed=training_args.seed, buffer_size=data_args.streaming_buffer_size)
        streams[name] = split_dataset_by_node(split, training_args.process_index, training_args.world_size)
    return streams


_HINTS = {
    "label_range": "check --do_reduce_labels (ADE20K-style annotations, 0 = unlabeled, need it) and the dataset's "
    "label ids against the model's classes",
    "missing_mask": "each image needs annotations/<same name>.png",
}


def check_samples(splits, model, reduce_labels: bool, data_args, training_args: TrainingArguments):
    """Checks every sample of the splits the run reads; stops naming every bad one, or skips them (listed)."""
    found = {}
    for split in needed_splits(training_args):
        found[split] = find_invalid_samples(
            splits[split],
            model.config.num_labels,
            reduce_labels=reduce_labels,
            split=split,
            num_workers=training_args.dataloader_num_workers,
            process_index=training_args.process_index,
            world_size=training_args.world_size,
            progress=training_args.process_index == 0 and not training_args.disable_tqdm,
        )
    bad_splits = {split: invalid for split, invalid in found.items() if invalid}
    if not bad_splits:
        return splits
    hints = sorted({_HINTS[s.kind] for invalid in bad_splits.values() for s in invalid if s.kind in _HINTS})
    hint_lines = "".join(f"\n  hint: {hint}" for hint in hints)
    listings = {
        split: f"{len(invalid)} of {len(splits[split])} {split} samples" + "".join(f"\n  {s}" for s in invalid)
        for split, invalid in bad_splits.items()
    }
    if not data_args.skip_invalid_samples:
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


# -------------------------------------------------------------------------------------------------------- model
def _config_overrides(model_args: ModelArguments) -> dict:
    if not model_args.config_overrides:
        return {}
    try:
        overrides = json.loads(model_args.config_overrides)
    except json.JSONDecodeError as error:
        raise ScriptError(f"--config_overrides is not valid JSON: {error}") from error
    if not isinstance(overrides, dict):
        raise ScriptError("--config_overrides must be a JSON object of config fields")
    return overrides


def build_model(model_args: ModelArguments, id2label: dict[int, str] | None, do_train: bool = True):
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
        raise ScriptError("--backbone_checkpoint needs a preset as --model_name_or_path")
    hub_kwargs = dict(
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
    )
    config = AutoConfig.from_pretrained(model_args.config_name or name, **hub_kwargs, **overrides)
    relabel = id2label is not None and len(id2label) != config.num_labels
    if relabel:
        mismatch = f"{name} has {config.num_labels} classes, the dataset {len(id2label)}"
        if not model_args.ignore_mismatched_sizes:
            raise ScriptError(
                f"{mismatch}: its classifiers do not fit the data (pass --ignore_mismatched_sizes to train new ones)"
            )
        logger.warning(
            f"{mismatch}: the classifiers start from random weights (--ignore_mismatched_sizes)"
            + ("" if do_train else "; evaluated without training, they measure nothing about the model")
        )
    for key, value in labels.items():
        setattr(config, key, value)
    return AutoModelForSemanticSegmentation.from_pretrained(
        name, config=config, ignore_mismatched_sizes=relabel, **hub_kwargs
    )


def build_image_processor(model_args: ModelArguments, data_args: DataTrainingArguments, do_reduce_labels: bool):
    """The model's image processor (saved with it): the agent_hf one for presets. An agent_hf processor gets this
    run's evaluation settings (test scale, whole/slide, ratios, flip), so the saved folder serves what was evaluated.
    """
    name = model_args.image_processor_name or model_args.model_name_or_path
    if name in agent_hf.PRESETS:
        processor = make_image_processor(do_reduce_labels=do_reduce_labels)
    else:
        processor = AutoImageProcessor.from_pretrained(
            name,
            do_reduce_labels=do_reduce_labels,
            cache_dir=model_args.cache_dir,
            revision=model_args.model_revision,
            token=model_args.token,
            trust_remote_code=model_args.trust_remote_code,
        )
    if type(processor).__name__ != "AgentImageProcessor":  # another model's processor, or remote code's class
        return processor
    return make_image_processor(
        do_reduce_labels=do_reduce_labels,
        scale=tuple(data_args.eval_scale),
        image_mean=processor.image_mean,
        image_std=processor.image_std,
        mode=data_args.eval_mode,
        ratios=tuple(data_args.eval_ratios),
        flip=data_args.eval_flip,
        crop_size=_pair(data_args.eval_crop_size, "--eval_crop_size"),
        stride=_pair(data_args.eval_stride, "--eval_stride"),
    )


# ---------------------------------------------------------------------------------------------------------- hub
def hub_repo_id(training_args: TrainingArguments) -> str:
    """Checks, before any training, that ``--push_to_hub`` can work: a full repo id, a token, online mode."""
    if not training_args.do_train:
        raise ScriptError("--push_to_hub publishes the trained model folder: it needs --do_train")
    repo_id = training_args.hub_model_id
    if not repo_id or "/" not in repo_id:
        raise ScriptError("--push_to_hub needs --hub_model_id NAMESPACE/NAME")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ScriptError(f"--hub_model_id {repo_id!r} is not a valid repository id: {error}") from error
    if not (training_args.hub_token or get_token()):
        raise ScriptError("--push_to_hub needs a Hub token: --hub_token, HF_TOKEN or `hf auth login`")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ScriptError("--push_to_hub is impossible with HF_HUB_OFFLINE set")
    return repo_id


# --------------------------------------------------------------------------------------------------------- main
def make_train_dataset(
    split, data_args: DataTrainingArguments, training_args: TrainingArguments, model, transform_kwargs
) -> TrainDataset | StreamingTrainDataset:
    """The mmseg train pipeline; augmentations derive from (seed, epoch, sample), see ``agent_hf.training``."""
    transform = TrainTransform(
        crop_size=_pair(data_args.crop_size, "--crop_size"),
        scale=tuple(data_args.scale),
        ratio_range=tuple(data_args.ratio_range),
        seed=training_args.seed,
        **transform_kwargs,
    )
    seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
    if isinstance(split, datasets.IterableDataset):
        return StreamingTrainDataset(
            split,
            transform,
            model.config.num_labels,
            seed=seed,
            rank=training_args.process_index,
            skip_invalid=data_args.skip_invalid_samples,
        )
    return TrainDataset(split, transform, model.config.num_labels, "train", seed=seed)


def make_eval_dataset(
    split, data_args: DataTrainingArguments, training_args: TrainingArguments, transform_kwargs
) -> EvalDataset | StreamingEvalDataset:
    settings = EvalSettings(
        mode=data_args.eval_mode,
        scale=tuple(data_args.eval_scale),
        ratios=tuple(data_args.eval_ratios),
        flip=data_args.eval_flip,
        crop_size=_pair(data_args.eval_crop_size, "--eval_crop_size"),
        stride=_pair(data_args.eval_stride, "--eval_stride"),
        **transform_kwargs,
    )
    if isinstance(split, datasets.IterableDataset):
        return StreamingEvalDataset(split, settings, rank=training_args.process_index)
    return EvalDataset(split, settings, "validation")


def describe_batch(trainer: SegmentationTrainer, reference: Recipe, model) -> str:
    """The batch arithmetic against the reference recipe, what to change to match it, and the BatchNorm caveat."""
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
    if has_batchnorm(model) and not trainer.uses_sync_batchnorm:
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


def check_batchnorm_batch(trainer: SegmentationTrainer, model) -> None:
    """UperNet's pyramid pooling has a 1x1 branch: with one image per forward pass and no SyncBatchNorm, its
    BatchNorm would see one value per channel and fail at the first step."""
    single = trainer.args.per_device_train_batch_size == 1 and not trainer.uses_sync_batchnorm
    if single and has_batchnorm(model) and 1 in (getattr(model.config, "pool_scales", None) or ()):
        raise ScriptError(
            "one image per device cannot train the UperNet heads without SyncBatchNorm (several CUDA GPUs): the "
            "pyramid pooling's 1x1 features leave BatchNorm a single value per channel; use "
            "--per_device_train_batch_size 2 or more (and --gradient_accumulation_steps for the total)"
        )


def save_trained_model(
    trainer: SegmentationTrainer, plan: OutputPlan, image_processor, base: str, dataset: str
) -> None:
    """Records the model's provenance (trained from `base` on `dataset`), writes the model folder into the run folder
    (each file complete before it appears, ``config.json`` last), swaps a staged run folder in, and points the
    Trainer at the final output folder."""
    provenance = trained_provenance(
        trainer.model,
        base=base,
        dataset=dataset,
        steps=trainer.state.global_step,
        recipe=dataclasses.asdict(trainer.recipe),
    )
    record_provenance(trainer.model, provenance)
    if trainer.args.should_save:
        with add_files(plan.run_dir) as staging:
            save_model_folder(trainer.model, staging, image_processor)
        if plan.staged:
            with user_errors(f"could not replace {plan.output_dir} (the run is complete in {plan.run_dir})"):
                replace_folder(plan.run_dir, plan.output_dir, overwrite=True, inputs=plan.inputs)
    trainer.accelerator.wait_for_everyone()
    trainer.args.output_dir = str(plan.output_dir)
    logger.info(f"Saved the trained model to {plan.output_dir}")


def record_eval_results(
    trainer: SegmentationTrainer, output_dir: str, metrics: dict[str, float], dataset: str
) -> None:
    """Adds the measured results to the trained model's provenance and rewrites its ``config.json`` (atomically,
    keeping the serving entries), so that its model card reports them."""
    provenance = dict(getattr(trainer.model.config, PROVENANCE_KEY, None) or {})
    results = eval_results_from_metrics(metrics, dataset)
    if provenance.get("origin") != "trained" or results is None:
        return
    provenance["eval_results"] = results
    record_provenance(trainer.model, provenance)
    if trainer.is_world_process_zero():
        save_model_config(trainer.model.config, output_dir)


def train_and_evaluate(
    trainer: SegmentationTrainer,
    training_args: TrainingArguments,
    plan: OutputPlan,
    image_processor,
    base: str,
    dataset: str,
    verbose: bool = False,
) -> dict[str, float]:
    """``--do_train`` (optionally resuming), saving the model at once, then ``--do_eval``; metrics are logged (in one
    line each; the Trainer's tables with ``verbose``) and saved (``all_results.json``), and a trained model's
    ``config.json`` gets the measured results."""
    metrics: dict[str, float] = {}
    if training_args.do_train:
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
    if training_args.do_eval:
        eval_metrics = trainer.evaluate()
        if verbose:
            trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
        if training_args.do_train or evaluates_own_folder(base, plan.output_dir):
            record_eval_results(trainer, str(plan.output_dir), eval_metrics, dataset)
    return metrics


def evaluates_own_folder(model_name_or_path: str, output_dir: Path) -> bool:
    """Whether an evaluation-only run writes into the folder of the model it evaluates (its results then go into
    that folder's ``config.json``, for the model card)."""
    return os.path.isdir(model_name_or_path) and Path(model_name_or_path).resolve() == output_dir.resolve()


def main(argv: list[str]) -> dict[str, float]:
    use_cpu_processes_without_accelerator()
    model_args, data_args, training_args, output_args, explicit = parse_arguments(argv)
    mistyped = mistyped_preset(model_args.model_name_or_path)
    if mistyped:  # answered now, not after a failed Hub request
        raise ScriptError(f"--model_name_or_path: {mistyped}")
    setup_logging(training_args, output_args.verbose)
    check_world_size(training_args)
    check_run_arguments(training_args, data_args, explicit)
    push_repo_id = hub_repo_id(training_args) if training_args.push_to_hub else None
    training_args.push_to_hub = False  # the model folder is published by agent_hf.hub (card last), not by Trainer
    if training_args.device.type == "cpu" and "dataloader_pin_memory" not in explicit:
        training_args.dataloader_pin_memory = False  # nothing to pin to without an accelerator
    plan = plan_output(training_args, output_args, model_args, data_args)
    training_args.output_dir = str(plan.run_dir)

    set_seed(training_args.seed)
    with training_args.main_process_first(desc="loading the dataset"), user_errors("could not load the dataset"):
        data = load_data(data_args, model_args, training_args.seed)
    splits = select_splits(data, data_args, training_args)
    reduce_labels = data.reduce_labels_default if data_args.do_reduce_labels is None else data_args.do_reduce_labels
    logger.info(f"Data: {data.description}, splits {list(splits)}, reduce_labels={reduce_labels}")

    with user_errors(f"could not build the model {model_args.model_name_or_path}"):
        model = build_model(model_args, data.id2label, training_args.do_train)
        image_processor = build_image_processor(model_args, data_args, reduce_labels)
    if data_args.streaming:
        splits = to_streams(splits, training_args, data_args)
    else:
        splits = check_samples(splits, model, reduce_labels, data_args, training_args)
    transform_kwargs = dict(
        mean=tuple(255 * m for m in image_processor.image_mean),
        std=tuple(255 * s for s in image_processor.image_std),
        reduce_labels=reduce_labels,
    )
    agent_model = model.config.model_type in ("agent_swin", "agent_pvt")
    recipe = recipe_for(model.config, data_args.recipe or ("paper" if agent_model else "hf-example"))
    with user_errors("the training recipe", (ValueError,)):
        run_recipe = recipe.with_overrides(training_args, explicit)
    trainer = SegmentationTrainer(
        model,
        training_args,
        recipe=run_recipe,
        train_dataset=make_train_dataset(splits["train"], data_args, training_args, model, transform_kwargs)
        if training_args.do_train
        else None,
        eval_dataset=make_eval_dataset(splits["validation"], data_args, training_args, transform_kwargs)
        if training_args.do_eval
        else None,
        data_collator=pad_collate(_pair(data_args.crop_size, "--crop_size")),
        image_processor=image_processor,
    )
    if training_args.do_train:
        check_batchnorm_batch(trainer, model)
        if trainer.is_world_process_zero():
            print(describe_batch(trainer, recipe, model), flush=True)
    metrics = train_and_evaluate(
        trainer,
        training_args,
        plan,
        image_processor,
        model_args.model_name_or_path,
        data.description,
        output_args.verbose,
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
