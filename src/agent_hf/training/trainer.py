"""The ``transformers.Trainer`` of agent_hf: the recipe's optimizer and schedule, reproducible augmentations and the
mmseg evaluation."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, speed_metrics

from ..families import FAMILIES
from ..output_folders import apply_umask
from ..saving import add_serving_files
from .datasets import EpochSampler, EvalDataset, StreamingEvalDataset, StreamingTrainDataset, TrainDataset
from .evaluation import evaluate_segmentation, json_number, segmentation_metrics
from .optimization import build_optimizer, build_scheduler
from .recipes import Recipe

logger = logging.getLogger(__name__)

__all__ = ["SegmentationTrainer"]


class _EpochDataLoader(torch.utils.data.DataLoader):
    """A ``DataLoader`` over an already split stream that passes ``set_epoch`` on to it."""

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


class _CheckpointPermissions(TrainerCallback):
    """Gives each saved checkpoint the permissions of the umask (transformers writes the weights ``0600``)."""

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if args.should_save and os.path.isdir(folder):
            apply_umask(folder)


class SegmentationTrainer(Trainer):
    """A ``Trainer`` for agent_hf segmentation models with an mmseg recipe and mmseg evaluation.

    * The optimizer (:func:`build_optimizer`) and schedule (:func:`build_scheduler`) come from ``recipe``, which is
      written into ``args`` first (:meth:`Recipe.configure`); to let some ``TrainingArguments`` values win, pass
      ``recipe.with_overrides(args, explicit={...})``. The recipe is printed when training starts.
    * A :class:`TrainDataset` is read in the order of an :class:`EpochSampler` seeded with ``args.data_seed`` (else
      ``args.seed``): the batches, and their augmentations, are a function of the seed and the step, so a resumed run
      continues exactly where the interrupted one stopped. A :class:`StreamingTrainDataset` (already split across
      processes) is read as it comes; training then needs ``max_steps``.
    * ``evaluate`` runs :func:`evaluate_segmentation` on an :class:`EvalDataset` or :class:`StreamingEvalDataset`,
      logs ``eval_mIoU``, ``eval_mAcc``, ``eval_aAcc`` (fractions) and writes the per-class IoU/accuracy with class
      names to ``{output_dir}/{prefix}_per_class.json`` (with the number of images and processes).
    * With ``recipe.sync_batchnorm`` and several CUDA processes, the heads' BatchNorms become ``SyncBatchNorm``.
    * Under DDP, agent_hf models train without ``find_unused_parameters`` (every parameter is used) unless
      ``args.ddp_find_unused_parameters`` says otherwise.
    * Checkpoints get the permissions of the umask, like any file the user writes, and are complete model folders
      (:func:`~agent_hf.saving.add_serving_files`: ``image_processor``, its code, the pipeline registered in
      ``config.json``, the Endpoints handler), so a ``checkpoint-N`` can be evaluated and served as it is.
    """

    def __init__(self, model: nn.Module, args: TrainingArguments, *, recipe: Recipe, image_processor=None, **kwargs):
        recipe.configure(args)
        if args.ddp_find_unused_parameters is None and getattr(model.config, "model_type", None) in FAMILIES:
            # Every parameter of an agent_hf segmentation model reaches the loss (the auxiliary head included): DDP
            # need not search the graph for unused ones at every step (the Trainer's default for a PreTrainedModel).
            args.ddp_find_unused_parameters = False
        if recipe.sync_batchnorm and args.world_size > 1 and args.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        super().__init__(model=model, args=args, **kwargs)
        self.recipe = recipe
        self.image_processor = image_processor
        self.add_callback(_CheckpointPermissions())

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        add_serving_files(output_dir if output_dir is not None else self.args.output_dir, self.image_processor)

    @property
    def uses_sync_batchnorm(self) -> bool:
        """Whether the BatchNorm statistics are computed over all processes' images (SyncBatchNorm)."""
        return any(isinstance(module, nn.SyncBatchNorm) for module in self.model.modules())

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            self.optimizer = build_optimizer(self.model if model is None else model, self.recipe)
        return self.optimizer

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        if self.lr_scheduler is None:
            self.lr_scheduler = build_scheduler(optimizer or self.optimizer, self.recipe, num_training_steps)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler | None:
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if isinstance(dataset, TrainDataset):
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSampler(len(dataset), seed, shuffle=self.args.train_sampling_strategy != "sequential")
        return super()._get_train_sampler(train_dataset)

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        if not isinstance(self.train_dataset, StreamingTrainDataset):
            return super().get_train_dataloader()
        # The stream is already split across processes: accelerate must not split it again.
        return _EpochDataLoader(
            self.train_dataset,
            batch_size=self._train_batch_size,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )

    def train(self, *args, **kwargs):
        if self.is_world_process_zero():
            print(self.recipe.describe(), flush=True)
        return super().train(*args, **kwargs)

    def evaluate(
        self,
        eval_dataset: EvalDataset | StreamingEvalDataset | Mapping[str, EvalDataset] | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if isinstance(dataset, Mapping):
            metrics = {}
            for name, split in dataset.items():
                metrics.update(self.evaluate(split, ignore_keys, f"{metric_key_prefix}_{name}"))
            return metrics
        if not isinstance(dataset, (EvalDataset, StreamingEvalDataset)):
            raise TypeError(
                "SegmentationTrainer.evaluate needs an EvalDataset or StreamingEvalDataset, got "
                f"{type(dataset).__name__}"
            )
        start = time.time()
        evaluation = evaluate_segmentation(
            self.model,
            dataset,
            process_index=self.args.process_index,
            world_size=self.args.world_size,
            num_workers=self.args.dataloader_num_workers,
            progress=self.is_world_process_zero() and not self.args.disable_tqdm,
        )
        metrics, per_class = segmentation_metrics(evaluation.metric, self.model.config.id2label, metric_key_prefix)
        metrics.update(speed_metrics(metric_key_prefix, start, num_samples=evaluation.num_images))
        if self.is_world_process_zero():
            self._write_per_class(metric_key_prefix, metrics, per_class, dataset, evaluation.num_images)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _write_per_class(
        self,
        prefix: str,
        metrics: Mapping[str, float],
        per_class: Mapping[str, Any],
        dataset: EvalDataset | StreamingEvalDataset,
        num_images: int,
    ) -> None:
        report = {
            "mIoU": json_number(metrics[f"{prefix}_mIoU"]),
            "mAcc": json_number(metrics[f"{prefix}_mAcc"]),
            "aAcc": json_number(metrics[f"{prefix}_aAcc"]),
            "num_images": num_images,
            "world_size": self.args.world_size,
            "global_step": self.state.global_step,
            "evaluation": dataset.settings.describe(),
            "per_class": per_class,
        }
        os.makedirs(self.args.output_dir, exist_ok=True)
        with open(os.path.join(self.args.output_dir, f"{prefix}_per_class.json"), "w") as file:
            json.dump(report, file, indent=2)
        logger.info(
            f"Evaluated {num_images} images on {self.args.world_size} process(es) ({dataset.settings.describe()}): "
            f"mIoU {100 * metrics[f'{prefix}_mIoU']:.2f}, mAcc {100 * metrics[f'{prefix}_mAcc']:.2f}, "
            f"aAcc {100 * metrics[f'{prefix}_aAcc']:.2f}"
        )
