"""Training recipes of the paper (mmsegmentation 0.28 / mmcv 1.x) and their `transformers.Trainer` glue.

* :mod:`.recipes` -- :class:`Recipe` / :func:`recipe_for`: the optimizer, learning-rate schedule and batch size of
  the official configs or of transformers' semantic-segmentation example; :class:`BatchPlan`: the images of one
  iteration against the recipe's.
* :mod:`.optimization` -- :func:`parameter_groups` / :func:`build_optimizer` (AdamW with mmcv's ``custom_keys``
  no-decay rule) and :func:`build_scheduler` (mmcv's ``PolyLrUpdaterHook`` with linear warm-up).
* :mod:`.datasets` -- :class:`TrainDataset` / :class:`StreamingTrainDataset` (the mmseg train pipeline with
  augmentations derived from the seed, epoch and sample), :class:`EvalDataset` / :class:`StreamingEvalDataset`;
  :func:`train_dataset_for` / :func:`eval_dataset_for` pick the one that fits a split.
* :mod:`.validation` -- :func:`find_invalid_samples` / :func:`check_splits`: every sample that would fail, found
  before training; :func:`describe_batch` / :func:`check_batchnorm_batch`: a run's batch against the recipe's.
* :mod:`.evaluation` -- :func:`evaluate_segmentation`: the mmseg evaluation (per image, at the original resolution,
  streamed into :class:`~agent_hf.metrics.MeanIoU`, exact over several processes).
* :mod:`.checkpoints` -- :func:`scan_checkpoints`: the complete and the half-written ``checkpoint-N`` of a run.
* :mod:`.run_folder` -- :func:`plan_output`: where a run writes and whether it resumes; :func:`save_trained_model`:
  the trained model folder, with its provenance.
* :mod:`.model_setup` -- :func:`load_model_to_train` / :func:`load_image_processor`: the model a run starts from and
  the processor saved with it.
* :mod:`.script_support` -- parsing a training script's argument dataclasses, its logging and launch checks.
* :mod:`.trainer` -- :class:`SegmentationTrainer`: a ``Trainer`` whose optimizer and schedule come from the recipe and
  whose ``evaluate`` runs the mmseg evaluation, reporting ``eval_mIoU``, ``eval_mAcc`` and ``eval_aAcc``.
"""

from .checkpoints import CheckpointScan, scan_checkpoints
from .datasets import (
    EpochSampler,
    EvalDataset,
    EvalSettings,
    InvalidSampleError,
    StreamingEvalDataset,
    StreamingTrainDataset,
    TrainDataset,
    augmentation_rng,
    eval_dataset_for,
    pad_collate,
    train_dataset_for,
)
from .evaluation import Evaluation, evaluate_segmentation, segmentation_metrics
from .optimization import build_optimizer, build_scheduler, mmcv_poly_lr, official_parameter_name, parameter_groups
from .recipes import RECIPE_NAMES, BatchPlan, Recipe, batch_plan, has_batchnorm, recipe_for
from .trainer import SegmentationTrainer
from .validation import InvalidSample, check_batchnorm_batch, check_splits, describe_batch, find_invalid_samples

__all__ = [
    "RECIPE_NAMES",
    "BatchPlan",
    "CheckpointScan",
    "EpochSampler",
    "EvalDataset",
    "EvalSettings",
    "Evaluation",
    "InvalidSample",
    "InvalidSampleError",
    "Recipe",
    "SegmentationTrainer",
    "StreamingEvalDataset",
    "StreamingTrainDataset",
    "TrainDataset",
    "augmentation_rng",
    "batch_plan",
    "build_optimizer",
    "build_scheduler",
    "check_batchnorm_batch",
    "check_splits",
    "describe_batch",
    "eval_dataset_for",
    "evaluate_segmentation",
    "find_invalid_samples",
    "has_batchnorm",
    "mmcv_poly_lr",
    "official_parameter_name",
    "pad_collate",
    "parameter_groups",
    "recipe_for",
    "scan_checkpoints",
    "segmentation_metrics",
    "train_dataset_for",
]
