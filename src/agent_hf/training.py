"""Training recipes of the paper (mmsegmentation 0.28 / mmcv 1.x) and their `transformers.Trainer` glue.

* :class:`Recipe` / :func:`recipe_for`: the optimizer, learning-rate schedule and batch size of the official configs
  (``configs/agent_swin/upernet_agent_swin_*.py``, ``configs/agent_pvt/fpn_agent_pvt_*.py``) or of transformers'
  semantic-segmentation example.
* :func:`parameter_groups` / :func:`build_optimizer`: AdamW with mmcv's ``paramwise_cfg.custom_keys`` rule (a
  parameter whose *official* name contains one of the keys gets ``decay_mult=0``).
* :func:`build_scheduler`: a ``LambdaLR`` reproducing mmcv's ``PolyLrUpdaterHook`` with linear warm-up.
* :class:`TrainDataset` / :class:`EvalDataset` / :func:`evaluate_segmentation`: the mmseg train pipeline and the
  mmseg evaluation (per image, at the original resolution, streamed into :class:`~agent_hf.metrics.MeanIoU`).
* :class:`SegmentationTrainer`: a ``Trainer`` whose optimizer and schedule come from the recipe and whose
  ``evaluate`` runs the mmseg evaluation, reporting ``eval_mIoU``, ``eval_mAcc`` and ``eval_aAcc``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import datasets
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm
from transformers import Trainer, TrainingArguments, get_scheduler
from transformers.trainer_pt_utils import get_parameter_names
from transformers.trainer_utils import speed_metrics

from .data.transforms import ADE20K_MEAN, ADE20K_STD, EvalTransform, TrainTransform
from .inference import DEFAULT_EVAL_SCALE, InferenceMode, scaled_bound, segment
from .metrics import MeanIoU
from .presets import PRESETS, preset_config

logger = logging.getLogger(__name__)

__all__ = [
    "EvalDataset",
    "EvalSettings",
    "RECIPE_NAMES",
    "Recipe",
    "SegmentationTrainer",
    "TrainDataset",
    "build_optimizer",
    "build_scheduler",
    "evaluate_segmentation",
    "mmcv_poly_lr",
    "official_parameter_name",
    "pad_collate",
    "parameter_groups",
    "recipe_for",
    "segmentation_metrics",
]

RECIPE_NAMES: tuple[str, ...] = ("paper", "hf-example")

# Our backbones wrap the official one in `backbone.<model_type>.`; official mmseg names start with `backbone.`.
_OFFICIAL_PREFIXES = {"backbone.agent_swin.": "backbone.", "backbone.agent_pvt.": "backbone."}

# transformers' `Trainer.get_decay_parameter_names` (v5): LayerNorm modules and these name patterns get no decay.
_TRANSFORMERS_NO_DECAY_PATTERNS = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")

# Recipe fields written into `TrainingArguments` (the Trainer's loop, clipping and logs use them).
_TRAINER_FIELDS = (
    "learning_rate",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "warmup_steps",
    "max_steps",
    "max_grad_norm",
)
# Recipe fields that a `TrainingArguments` field of the same name overrides when passed explicitly.
_ARGUMENT_FIELDS = _TRAINER_FIELDS + ("lr_scheduler_type", "lr_scheduler_kwargs")


# ----------------------------------------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Recipe:
    """Optimizer, schedule and batch size of a training run.

    Attributes:
        name: ``"paper"`` or ``"hf-example"`` (``"+overrides"`` is appended once command-line values replace some).
        source: where the numbers come from.
        learning_rate, weight_decay, adam_beta1, adam_beta2, adam_epsilon: AdamW settings.
        no_decay_keys: mmcv ``paramwise_cfg.custom_keys`` with ``decay_mult=0``: a parameter whose official name
            contains one of them gets no weight decay. ``None`` selects transformers' rule instead (no decay for
            biases and LayerNorm parameters).
        lr_scheduler_type: ``"mmcv_poly"`` (mmcv's ``PolyLrUpdaterHook`` with linear warm-up, see
            :func:`mmcv_poly_lr`) or any transformers ``SchedulerType`` name.
        lr_scheduler_kwargs: for ``"mmcv_poly"``: ``power``, ``min_lr`` and ``warmup_ratio`` (mmcv's names; the
            warm-up starts at ``warmup_ratio`` times the regular lr); otherwise passed to
            ``transformers.get_scheduler``.
        warmup_steps: warm-up iterations; a value in ``(0, 1)`` is a fraction of the run, as in ``TrainingArguments``.
        max_steps: iterations (optimizer steps); ``-1`` trains for ``num_train_epochs`` instead.
        total_batch_size: images per optimizer step over all processes (per-device batch x processes x gradient
            accumulation).
        max_grad_norm: gradient clipping norm; 0 disables it (mmcv's ``OptimizerHook`` without ``grad_clip``).
        sync_batchnorm: use ``SyncBatchNorm`` in the heads when training on several GPUs (mmseg's ``SyncBN``).
    """

    name: str
    source: str
    learning_rate: float
    weight_decay: float
    max_steps: int
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    no_decay_keys: tuple[str, ...] | None = ()
    lr_scheduler_type: str = "mmcv_poly"
    lr_scheduler_kwargs: Mapping[str, float] = field(default_factory=dict)
    warmup_steps: float = 0
    total_batch_size: int = 16
    max_grad_norm: float = 0.0
    sync_batchnorm: bool = True

    def merge(self, args: TrainingArguments, explicit: Collection[str]) -> Recipe:
        """This recipe with the values of the ``TrainingArguments`` fields named in ``explicit`` (the options the user
        passed), e.g. ``{"learning_rate", "max_steps"}``.

        ``num_train_epochs`` (without ``max_steps``) switches to epoch-based training; an explicit
        ``per_device_train_batch_size`` or ``gradient_accumulation_steps`` sets the total batch size; an explicit
        ``lr_scheduler_type`` brings ``args.lr_scheduler_kwargs`` with it, while ``lr_scheduler_kwargs`` alone
        updates the recipe's (e.g. ``{"power": 0.9}`` keeps mmcv's ``warmup_ratio``).
        """
        changes: dict[str, Any] = {name: getattr(args, name) for name in _ARGUMENT_FIELDS if name in explicit}
        if "lr_scheduler_type" in changes:
            changes["lr_scheduler_type"] = getattr(changes["lr_scheduler_type"], "value", changes["lr_scheduler_type"])
            changes["lr_scheduler_kwargs"] = dict(args.lr_scheduler_kwargs or {})
        elif "lr_scheduler_kwargs" in changes:  # same schedule, some of its settings changed
            changes["lr_scheduler_kwargs"] = {**self.lr_scheduler_kwargs, **(args.lr_scheduler_kwargs or {})}
        if "num_train_epochs" in explicit and "max_steps" not in explicit:
            changes["max_steps"] = -1
        if {"per_device_train_batch_size", "gradient_accumulation_steps"} & set(explicit):
            per_device = (
                args.per_device_train_batch_size
                if "per_device_train_batch_size" in explicit
                else _per_device_batch_size(self.total_batch_size, args)
            )
            changes["total_batch_size"] = per_device * args.world_size * args.gradient_accumulation_steps
        if not changes:
            return self
        return dataclasses.replace(self, name=f"{self.name.split('+')[0]}+overrides", **changes)

    def configure(self, args: TrainingArguments) -> None:
        """Writes the recipe into ``args`` (learning rate, AdamW settings, warm-up, steps, gradient clipping,
        per-device batch size) so that the ``Trainer``'s loop, logs and saved arguments agree with it."""
        for name in _TRAINER_FIELDS:
            setattr(args, name, getattr(self, name))
        per_device = _per_device_batch_size(self.total_batch_size, args)
        actual = per_device * args.world_size * args.gradient_accumulation_steps
        if actual != self.total_batch_size:
            logger.warning(
                f"The recipe's batch of {self.total_batch_size} images does not split over {args.world_size} "
                f"process(es) x {args.gradient_accumulation_steps} accumulation step(s): using {per_device} per "
                f"device, {actual} in total."
            )
        args.per_device_train_batch_size = per_device

    def describe(self) -> str:
        """A multi-line human-readable summary."""
        if self.no_decay_keys is None:
            decay = "no decay on biases and LayerNorm parameters (transformers' Trainer rule)"
        elif self.no_decay_keys:
            decay = "no decay on parameters whose official name contains " + ", ".join(self.no_decay_keys)
        else:
            decay = "decay on every parameter"
        schedule = self.lr_scheduler_type + "".join(f", {k}={v}" for k, v in self.lr_scheduler_kwargs.items())
        steps = f"{self.max_steps} iterations" if self.max_steps > 0 else "num_train_epochs epochs"
        return "\n".join(
            [
                f"Training recipe '{self.name}' ({self.source}):",
                f"  optimizer: AdamW lr={self.learning_rate:g} betas=({self.adam_beta1:g}, {self.adam_beta2:g}) "
                f"eps={self.adam_epsilon:g} weight_decay={self.weight_decay:g}",
                f"  weight decay: {decay}",
                f"  schedule: {schedule}; warmup_steps={self.warmup_steps:g}; {steps}; gradient clipping: "
                + (f"max norm {self.max_grad_norm:g}" if self.max_grad_norm > 0 else "none"),
                f"  batch: {self.total_batch_size} images per iteration; SyncBatchNorm on multi-GPU: "
                f"{self.sync_batchnorm}",
            ]
        )


def _per_device_batch_size(total: int, args: TrainingArguments) -> int:
    return max(1, total // (args.world_size * args.gradient_accumulation_steps))


def _model_type(preset_or_config) -> str:
    if isinstance(preset_or_config, str):
        if preset_or_config not in PRESETS:
            raise ValueError(f"Unknown preset {preset_or_config!r}; available presets: {', '.join(PRESETS)}")
        return preset_config(preset_or_config).model_type
    model_type = getattr(preset_or_config, "model_type", None)
    if model_type not in ("agent_swin", "agent_pvt"):
        raise ValueError(
            f"recipe_for: expected a preset name or an AgentSwinConfig/AgentPvtConfig, got {preset_or_config!r}"
        )
    return model_type


_SWIN_NO_DECAY_KEYS = (
    "absolute_pos_embed",
    "relative_position_bias_table",
    "norm",
    "an_bias",
    "na_bias",
    "ah_bias",
    "aw_bias",
    "ha_bias",
    "wa_bias",
)


def recipe_for(preset_or_config, name: str = "paper") -> Recipe:
    """The training recipe of a preset name or an agent_hf config (any model config for ``"hf-example"``).

    ``"paper"``:

    * Agent-Swin (UperNet, ``schedule_160k``): AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01 except on
      parameters whose official name contains ``absolute_pos_embed``, ``relative_position_bias_table``, ``norm`` or an
      agent bias (``an_bias``, ``na_bias``, ``ah_bias``, ``aw_bias``, ``ha_bias``, ``wa_bias``); poly decay (power 1,
      min_lr 0) over 160k iterations after 1,500 linear warm-up iterations starting at 1e-6 x lr; 16 images per
      iteration (8 GPUs x 2); no gradient clipping; SyncBN in the heads.
    * Agent-PVT (Semantic FPN, ``schedule_40k``): AdamW lr 2e-4, weight decay 1e-4 on every parameter; poly decay
      (power 0.9, min_lr 0), no warm-up, 40k iterations; 16 images per iteration.

    ``"hf-example"``: transformers' ``examples/pytorch/semantic-segmentation`` README command (lr 6e-5,
    ``polynomial`` schedule, 10k steps, 8 images per device taken here as 8 in total) with the ``Trainer`` defaults
    for the rest (AdamW betas (0.9, 0.999), eps 1e-8, weight decay 0, no warm-up, gradient clipping at norm 1).
    """
    if name == "hf-example":
        return Recipe(
            name=name,
            source="transformers examples/pytorch/semantic-segmentation README + Trainer defaults",
            learning_rate=6e-5,
            weight_decay=0.0,
            max_steps=10_000,
            no_decay_keys=None,
            lr_scheduler_type="polynomial",
            lr_scheduler_kwargs={"lr_end": 1e-7, "power": 1.0},
            total_batch_size=8,
            max_grad_norm=1.0,
            sync_batchnorm=False,
        )
    if name != "paper":
        raise ValueError(f"Unknown recipe {name!r}; available recipes: {', '.join(RECIPE_NAMES)}")
    if _model_type(preset_or_config) == "agent_swin":
        return Recipe(
            name=name,
            source="official configs/agent_swin/upernet_agent_swin_*_9-12-14-7.py",
            learning_rate=6e-5,
            weight_decay=0.01,
            max_steps=160_000,
            no_decay_keys=_SWIN_NO_DECAY_KEYS,
            lr_scheduler_kwargs={"power": 1.0, "min_lr": 0.0, "warmup_ratio": 1e-6},
            warmup_steps=1500,
        )
    return Recipe(
        name=name,
        source="official configs/agent_pvt/fpn_agent_pvt_*_12-16-28-28.py",
        learning_rate=2e-4,
        weight_decay=1e-4,
        max_steps=40_000,
        lr_scheduler_kwargs={"power": 0.9, "min_lr": 0.0},
    )


# --------------------------------------------------------------------------------------------------------- optimizer
def official_parameter_name(name: str) -> str:
    """The official mmseg name of one of our parameters, e.g.
    ``backbone.agent_swin.layers.0.blocks.0.attn.an_bias -> backbone.layers.0.blocks.0.attn.an_bias``."""
    for ours, official in _OFFICIAL_PREFIXES.items():
        if name.startswith(ours):
            return official + name[len(ours) :]
    return name


def parameter_groups(model: nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: ``"decay"`` (``weight_decay=recipe.weight_decay``) and ``"no_decay"``
    (``weight_decay=0``); empty groups are left out, frozen parameters too.

    Each group is a dict with ``group`` (its name), ``weight_decay``, ``param_names`` (our names) and ``params``.
    """
    named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    if recipe.no_decay_keys is None:
        decayed = set(get_parameter_names(model, [nn.LayerNorm], list(_TRANSFORMERS_NO_DECAY_PATTERNS)))
        no_decay = {name for name, _ in named if name not in decayed}
    else:
        no_decay = {
            name for name, _ in named if any(key in official_parameter_name(name) for key in recipe.no_decay_keys)
        }
    groups = []
    for group, weight_decay, members in (
        ("decay", recipe.weight_decay, [(n, p) for n, p in named if n not in no_decay]),
        ("no_decay", 0.0, [(n, p) for n, p in named if n in no_decay]),
    ):
        if members:
            groups.append(
                {
                    "group": group,
                    "weight_decay": weight_decay,
                    "param_names": [n for n, _ in members],
                    "params": [p for _, p in members],
                }
            )
    return groups


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over :func:`parameter_groups`, with the recipe's lr, betas and eps."""
    return torch.optim.AdamW(
        parameter_groups(model, recipe),
        lr=recipe.learning_rate,
        betas=(recipe.adam_beta1, recipe.adam_beta2),
        eps=recipe.adam_epsilon,
        weight_decay=recipe.weight_decay,
    )


# --------------------------------------------------------------------------------------------------------- scheduler
def mmcv_poly_lr(
    step: int,
    base_lr: float,
    max_steps: int,
    power: float = 1.0,
    min_lr: float = 0.0,
    warmup_steps: int = 0,
    warmup_ratio: float = 0.1,
) -> float:
    """Learning rate of mmcv 1.x ``PolyLrUpdaterHook(by_epoch=False, warmup='linear')`` at iteration ``step``
    (0 for the first optimizer step)::

        regular = (base_lr - min_lr) * (1 - step / max_steps) ** power + min_lr
        lr = regular * (1 - (1 - step / warmup_steps) * (1 - warmup_ratio))   if step < warmup_steps
        lr = regular                                                            otherwise

    Steps past ``max_steps`` keep ``min_lr``.
    """
    progress = min(step, max_steps) / max_steps
    regular = (base_lr - min_lr) * (1 - progress) ** power + min_lr
    if step < warmup_steps:
        return regular * (1 - (1 - step / warmup_steps) * (1 - warmup_ratio))
    return regular


def _mmcv_poly_factor(step: int, base_lr: float, **kwargs) -> float:
    return mmcv_poly_lr(step, base_lr, **kwargs) / base_lr


def _warmup_steps(warmup: float, num_training_steps: int) -> int:
    """``TrainingArguments.get_warmup_steps``: a value below 1 is a fraction of the run."""
    return int(warmup) if warmup >= 1 else math.ceil(num_training_steps * warmup)


def build_scheduler(
    optimizer: torch.optim.Optimizer, recipe: Recipe, num_training_steps: int | None = None
) -> torch.optim.lr_scheduler.LRScheduler:
    """The recipe's learning-rate schedule over ``num_training_steps`` (default ``recipe.max_steps``).

    ``"mmcv_poly"`` gives a ``LambdaLR`` whose learning rate at step ``i`` is :func:`mmcv_poly_lr` of each group's
    initial lr (mmcv's ``runner.max_iters`` is the length of the run); other types come from
    ``transformers.get_scheduler``. The optimizer's lr at construction is the step-0 value; the ``Trainer`` calls
    ``scheduler.step()`` after every optimizer step.
    """
    total = num_training_steps if num_training_steps is not None else recipe.max_steps
    if total is None or total < 1:
        raise ValueError(f"build_scheduler needs a positive number of training steps, got {total}")
    warmup = _warmup_steps(recipe.warmup_steps, total)
    if recipe.lr_scheduler_type != "mmcv_poly":
        return get_scheduler(
            recipe.lr_scheduler_type,
            optimizer=optimizer,
            num_warmup_steps=warmup,
            num_training_steps=total,
            scheduler_specific_kwargs=dict(recipe.lr_scheduler_kwargs),
        )
    unknown = set(recipe.lr_scheduler_kwargs) - {"power", "min_lr", "warmup_ratio"}
    if unknown:
        raise ValueError(f"mmcv_poly takes power, min_lr and warmup_ratio; got unknown {sorted(unknown)}")
    kwargs = {"power": 1.0, "min_lr": 0.0, "warmup_ratio": 0.1, **recipe.lr_scheduler_kwargs}
    lambdas = [
        partial(_mmcv_poly_factor, base_lr=group["lr"], max_steps=total, warmup_steps=warmup, **kwargs)
        for group in optimizer.param_groups
    ]
    return LambdaLR(optimizer, lambdas)


# ---------------------------------------------------------------------------------------------------------- datasets
def _sample_name(split: str, index: int, image) -> str:
    filename = getattr(image, "filename", "")
    return f"{split}[{index}] ({os.path.basename(filename)})" if filename else f"{split}[{index}]"


def _read_example(dataset: datasets.Dataset, index: int, split: str) -> dict[str, Any]:
    try:
        return dataset[index]
    except Exception as error:  # undecodable image, missing file, ...
        raise ValueError(f"could not read sample {split}[{index}]: {error}") from error


def _check_labels(labels: torch.Tensor, num_labels: int, ignore_index: int, name: str) -> None:
    """Raises a ValueError naming the sample when a label is neither a class id nor the ignore index."""
    bad = labels[(labels != ignore_index) & ((labels < 0) | (labels >= num_labels))]
    if bad.numel():
        values = sorted({int(v) for v in bad.unique()[:10]})
        raise ValueError(
            f"sample {name}: label value(s) {values} are outside the {num_labels} classes [0, {num_labels}) and are "
            f"not the ignore index {ignore_index} (check --do_reduce_labels and the dataset's label ids)"
        )


class TrainDataset(torch.utils.data.Dataset):
    """A scene-parsing split (columns ``image`` and ``annotation``) through the mmseg train pipeline.

    Items: ``pixel_values`` ``float32 (3, crop_h, crop_w)`` and ``labels`` ``int64 (crop_h, crop_w)`` (255 = ignore).

    Args:
        dataset: a ``datasets.Dataset`` with ``Image`` columns.
        transform: the :class:`~agent_hf.data.TrainTransform` (crop size, scale, reduce-zero-label, ...).
        num_labels: number of classes; other label values than ``transform.ignore_index`` raise an error.
        split: split name used in error messages.
        image_column, label_column: column names.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        transform: TrainTransform,
        num_labels: int,
        split: str = "train",
        image_column: str = "image",
        label_column: str = "annotation",
    ):
        self.dataset = dataset
        self.transform = transform
        self.num_labels = num_labels
        self.split = split
        self.image_column = image_column
        self.label_column = label_column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        example = _read_example(self.dataset, index, self.split)
        image = example[self.image_column]
        name = _sample_name(self.split, index, image)
        sample = self.transform(image, example[self.label_column], name=name)
        _check_labels(sample["labels"], self.num_labels, self.transform.ignore_index, name)
        return sample


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
        ratios: test-time scales (``img_ratios``), each multiplying ``scale``; ``(1.0,)`` is single-scale.
        flip: also evaluate the horizontally flipped images (probabilities averaged).
        crop_size, stride: ``(height, width)`` of the sliding windows and their step (``mode="slide"``).
        mean, std: RGB normalization in 0-255 units.
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
            text += f", scales {list(self.ratios)}"
        return text + (", + flip" if self.flip else "")


class EvalDataset(torch.utils.data.Dataset):
    """A scene-parsing split prepared for mmseg evaluation.

    Items: ``pixel_values`` (one ``float32 (3, h_i, w_i)`` tensor per ratio of ``settings``), ``labels``
    ``int64 (H, W)`` at the original size (reduce-zero-label applied if ``settings.reduce_labels``) and ``name``.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
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
        self.transforms = [
            EvalTransform(scaled_bound(settings.scale, ratio), settings.mean, settings.std, settings.reduce_labels)
            for ratio in settings.ratios
        ]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = _read_example(self.dataset, index, self.split)
        image = example[self.image_column]
        name = _sample_name(self.split, index, image)
        first = self.transforms[0](image, example[self.label_column], name=name)
        pixel_values = [first["pixel_values"]] + [t(image, name=name)["pixel_values"] for t in self.transforms[1:]]
        return {"pixel_values": pixel_values, "labels": first["labels"], "name": name}


# -------------------------------------------------------------------------------------------------------- evaluation
def _only_item(batch: Sequence[Any]) -> Any:
    return batch[0]


def _broadcast_batchnorm_buffers(model: nn.Module) -> None:
    """Copies process 0's BatchNorm running statistics to every process (mmseg's ``DistEvalHook`` does the same).

    Without SyncBatchNorm each process updates them from its own images after DDP's per-step broadcast, so the
    replicas would otherwise evaluate slightly different models.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            for buffer in (module.running_mean, module.running_var, module.num_batches_tracked):
                torch.distributed.broadcast(buffer, src=0)


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module,
    dataset: EvalDataset,
    *,
    process_index: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    progress: bool = False,
) -> MeanIoU:
    """Runs the mmseg evaluation of ``model`` on ``dataset`` and returns the accumulated :class:`MeanIoU`.

    Every image is predicted on its own (no padding, no batching) at the original resolution and its confusion
    counts are added to the metric; no logits are kept. With ``world_size > 1`` the BatchNorm statistics of process
    0 are broadcast first, each process takes every ``world_size``-th image starting at ``process_index``, and the
    counts are summed over processes once at the end (collectives: every process must call this). ``progress``
    shows a progress bar.
    """
    settings = dataset.settings
    device = next(model.parameters()).device
    metric = MeanIoU(model.config.num_labels, ignore_index=255)
    shard = torch.utils.data.Subset(dataset, range(process_index, len(dataset), world_size))
    loader = torch.utils.data.DataLoader(shard, batch_size=1, num_workers=num_workers, collate_fn=_only_item)
    if progress:
        loader = tqdm(loader, desc="Evaluating", unit="image")
    if world_size > 1:
        _broadcast_batchnorm_buffers(model)
    was_training = model.training
    model.eval()
    try:
        for sample in loader:
            labels = sample["labels"].to(device)
            inputs = [pixels[None].to(device) for pixels in sample["pixel_values"]]
            prediction = segment(
                model, inputs, labels.shape, settings.flip, settings.mode, settings.crop_size, settings.stride
            )[0]
            _check_labels(labels, metric.num_labels, metric.ignore_index, sample["name"])
            metric.update(prediction, labels)
    finally:
        model.train(was_training)
    metric.sync()
    return metric


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def segmentation_metrics(
    metric: MeanIoU, id2label: Mapping[int, str], prefix: str = "eval"
) -> tuple[dict[str, float], dict[str, Any]]:
    """mmseg's summary of a (synced) :class:`MeanIoU`, as fractions in [0, 1].

    Returns:
        ``({f"{prefix}_mIoU", f"{prefix}_mAcc", f"{prefix}_aAcc"}, per_class)`` where ``per_class`` maps each class
        name to ``{"iou", "accuracy"}`` (``None`` where undefined: the class is absent from labels and predictions).
    """
    results = metric.compute(id2label)
    summary = {
        f"{prefix}_mIoU": results["mean_iou"],
        f"{prefix}_mAcc": results["mean_accuracy"],
        f"{prefix}_aAcc": results["overall_accuracy"],
    }
    per_class = {
        name: {key: _json_number(value) for key, value in values.items()}
        for name, values in results["per_category"].items()
    }
    return summary, per_class


# ----------------------------------------------------------------------------------------------------------- trainer
class SegmentationTrainer(Trainer):
    """A ``Trainer`` for agent_hf segmentation models with an mmseg recipe and mmseg evaluation.

    * The optimizer (:func:`build_optimizer`) and schedule (:func:`build_scheduler`) come from ``recipe``, which is
      written into ``args`` first (:meth:`Recipe.configure`); to let some ``TrainingArguments`` values win, pass
      ``recipe.merge(args, explicit={...})``. The recipe is printed when training starts.
    * ``evaluate`` runs :func:`evaluate_segmentation` on an :class:`EvalDataset`, logs ``eval_mIoU``, ``eval_mAcc``,
      ``eval_aAcc`` (fractions) and writes the per-class IoU/accuracy with class names to
      ``{output_dir}/{prefix}_per_class.json`` (with the number of images and processes).
    * With ``recipe.sync_batchnorm`` and several CUDA processes, the heads' BatchNorms become ``SyncBatchNorm``.
    """

    def __init__(self, model: nn.Module, args: TrainingArguments, *, recipe: Recipe, **kwargs):
        recipe.configure(args)
        if recipe.sync_batchnorm and args.world_size > 1 and args.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        super().__init__(model=model, args=args, **kwargs)
        self.recipe = recipe

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

    def train(self, *args, **kwargs):
        if self.is_world_process_zero():
            print(self.recipe.describe(), flush=True)
        return super().train(*args, **kwargs)

    def evaluate(
        self,
        eval_dataset: EvalDataset | Mapping[str, EvalDataset] | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if isinstance(dataset, Mapping):
            metrics = {}
            for name, split in dataset.items():
                metrics.update(self.evaluate(split, ignore_keys, f"{metric_key_prefix}_{name}"))
            return metrics
        if not isinstance(dataset, EvalDataset):
            raise TypeError(f"SegmentationTrainer.evaluate needs an EvalDataset, got {type(dataset).__name__}")
        start = time.time()
        metric = evaluate_segmentation(
            self.model,
            dataset,
            process_index=self.args.process_index,
            world_size=self.args.world_size,
            num_workers=self.args.dataloader_num_workers,
            progress=self.is_world_process_zero() and not self.args.disable_tqdm,
        )
        metrics, per_class = segmentation_metrics(metric, self.model.config.id2label, metric_key_prefix)
        metrics.update(speed_metrics(metric_key_prefix, start, num_samples=len(dataset)))
        if self.is_world_process_zero():
            self._write_per_class(metric_key_prefix, metrics, per_class, dataset)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _write_per_class(
        self, prefix: str, metrics: Mapping[str, float], per_class: Mapping[str, Any], dataset: EvalDataset
    ) -> None:
        report = {
            "mIoU": _json_number(metrics[f"{prefix}_mIoU"]),
            "mAcc": _json_number(metrics[f"{prefix}_mAcc"]),
            "aAcc": _json_number(metrics[f"{prefix}_aAcc"]),
            "num_images": len(dataset),
            "world_size": self.args.world_size,
            "global_step": self.state.global_step,
            "evaluation": dataset.settings.describe(),
            "per_class": per_class,
        }
        os.makedirs(self.args.output_dir, exist_ok=True)
        with open(os.path.join(self.args.output_dir, f"{prefix}_per_class.json"), "w") as file:
            json.dump(report, file, indent=2)
        logger.info(
            f"Evaluated {len(dataset)} images on {self.args.world_size} process(es) ({dataset.settings.describe()}): "
            f"mIoU {100 * metrics[f'{prefix}_mIoU']:.2f}, mAcc {100 * metrics[f'{prefix}_mAcc']:.2f}, "
            f"aAcc {100 * metrics[f'{prefix}_aAcc']:.2f}"
        )
