"""Training recipes of the paper (mmsegmentation 0.28 / mmcv 1.x) and their `transformers.Trainer` glue.

* :mod:`.recipes` -- :class:`Recipe` / :func:`recipe_for`: the optimizer, learning-rate schedule and batch size of
  the official configs or of transformers' semantic-segmentation example; :class:`BatchPlan`: the images of one
  iteration against the recipe's.
* :mod:`.optimization` -- :func:`parameter_groups` / :func:`build_optimizer` (AdamW with mmcv's ``custom_keys``
  no-decay rule) and :func:`build_scheduler` (mmcv's ``PolyLrUpdaterHook`` with linear warm-up).
* :mod:`.datasets` -- :class:`TrainDataset` / :class:`StreamingTrainDataset` (the mmseg train pipeline with
  augmentations derived from the seed, epoch and sample), :class:`EvalDataset` / :class:`StreamingEvalDataset`.
* :mod:`.validation` -- :func:`find_invalid_samples`: every sample that would fail, found before training.
* :mod:`.evaluation` -- :func:`evaluate_segmentation`: the mmseg evaluation (per image, at the original resolution,
  streamed into :class:`~agent_hf.metrics.MeanIoU`, exact over several processes).
* :mod:`.checkpoints` -- :func:`scan_checkpoints`: the complete and the half-written ``checkpoint-N`` of a run.
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
    pad_collate,
)
from .evaluation import Evaluation, evaluate_segmentation, segmentation_metrics
from .optimization import build_optimizer, build_scheduler, mmcv_poly_lr, official_parameter_name, parameter_groups
from .recipes import RECIPE_NAMES, BatchPlan, Recipe, batch_plan, has_batchnorm, recipe_for
from .trainer import SegmentationTrainer
from .validation import InvalidSample, find_invalid_samples

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
]
