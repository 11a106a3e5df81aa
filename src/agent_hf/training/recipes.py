"""Training recipes: the optimizer, schedule and batch size of the paper's mmsegmentation configs.

* :class:`Recipe` / :func:`recipe_for`: the numbers of the official configs
  (``configs/agent_swin/upernet_agent_swin_*.py``, ``configs/agent_pvt/fpn_agent_pvt_*.py``) or of transformers'
  semantic-segmentation example.
* :class:`BatchPlan` / :func:`batch_plan`: how the images of one iteration come about (processes x per-device batch x
  gradient accumulation), compared with the recipe's.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from transformers import TrainingArguments

from ..families import FAMILIES, get_family
from ..presets import PRESETS, preset_config, unknown_preset_message

logger = logging.getLogger(__name__)

__all__ = ["RECIPE_NAMES", "BatchPlan", "Recipe", "batch_plan", "has_batchnorm", "recipe_for"]

RECIPE_NAMES: tuple[str, ...] = ("paper", "hf-example")

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
        overrides: ``name=value`` of every value that replaced the recipe's (:meth:`with_overrides`), for the banner.
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
    overrides: tuple[str, ...] = ()

    def with_overrides(self, args: TrainingArguments, explicit: Collection[str]) -> Recipe:
        """This recipe with the values of the ``TrainingArguments`` fields named in ``explicit`` (the options the user
        passed), e.g. ``{"learning_rate", "max_steps"}``.

        ``num_train_epochs`` (without ``max_steps``) switches to epoch-based training; an explicit
        ``per_device_train_batch_size`` or ``gradient_accumulation_steps`` sets the total batch size; an explicit
        ``lr_scheduler_type`` brings ``args.lr_scheduler_kwargs`` with it, while ``lr_scheduler_kwargs`` alone
        updates the recipe's (e.g. ``{"power": 0.9}`` keeps mmcv's ``warmup_ratio``).

        A run shorter than the recipe's (``max_steps`` given) keeps the recipe's warm-up in proportion (1,500 of
        160,000 iterations become 9 of 1,000), with a warning; an explicit ``warmup_steps`` not shorter than an
        explicit ``max_steps`` is refused.

        Raises:
            ValueError: the explicit warm-up is as long as the run or longer.
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
        max_steps = changes.get("max_steps", self.max_steps)
        if "warmup_steps" in changes:
            if max_steps > 0 and changes["warmup_steps"] >= max(1, max_steps):
                learning_rate = changes.get("learning_rate", self.learning_rate)
                raise ValueError(
                    f"warmup_steps={changes['warmup_steps']:g} is not shorter than the run (max_steps={max_steps}): "
                    f"the learning rate would never reach {learning_rate:g}"
                )
        elif 0 < max_steps < self.max_steps and self.warmup_steps >= 1:
            changes["warmup_steps"] = round(self.warmup_steps * max_steps / self.max_steps)
            logger.warning(
                f"The recipe's warm-up of {self.warmup_steps:g} of its {self.max_steps} iterations is scaled to "
                f"{changes['warmup_steps']} of this run's {max_steps} (an explicit warmup_steps chooses another)"
            )
        if not changes:
            return self
        overrides = tuple(f"{name}={_short(value)}" for name, value in changes.items())
        return dataclasses.replace(
            self, name=f"{self.name.split('+')[0]}+overrides", overrides=self.overrides + overrides, **changes
        )

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
        overridden = [f"  overridden: {', '.join(self.overrides)}"] if self.overrides else []
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
                *overridden,
            ]
        )


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _per_device_batch_size(total: int, args: TrainingArguments) -> int:
    return max(1, total // (args.world_size * args.gradient_accumulation_steps))


def _model_type(preset_or_config) -> str:
    if isinstance(preset_or_config, str):
        if preset_or_config not in PRESETS:
            raise ValueError(unknown_preset_message(preset_or_config))
        return preset_config(preset_or_config).model_type
    model_type = getattr(preset_or_config, "model_type", None)
    if model_type not in FAMILIES:
        raise ValueError(
            f"recipe_for: expected a preset name or the config of an agent_hf family ({', '.join(FAMILIES)}), got "
            f"{preset_or_config!r}"
        )
    return model_type


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
    family = get_family(_model_type(preset_or_config))
    official = family.recipe
    schedule = {"power": official.poly_power, "min_lr": official.min_lr}
    if official.warmup_iters:
        schedule["warmup_ratio"] = official.warmup_ratio
    return Recipe(
        name=name,
        source=f"official {official.schedule} config of {family.name}",
        learning_rate=official.learning_rate,
        weight_decay=official.weight_decay,
        max_steps=official.iterations,
        adam_beta1=official.betas[0],
        adam_beta2=official.betas[1],
        no_decay_keys=official.no_decay_keys,
        lr_scheduler_kwargs=schedule,
        warmup_steps=official.warmup_iters,
        total_batch_size=official.batch_size,
    )


@dataclass(frozen=True)
class BatchPlan:
    """The images of one optimizer step: ``world_size x per_device x accumulation``, against the recipe's.

    Attributes:
        world_size: processes (GPUs, or CPU processes).
        per_device: images per process and forward pass.
        accumulation: gradient accumulation steps.
        recipe_total: images per iteration of the reference recipe (16 for the paper).
    """

    world_size: int
    per_device: int
    accumulation: int
    recipe_total: int

    @property
    def total(self) -> int:
        return self.world_size * self.per_device * self.accumulation

    @property
    def matches(self) -> bool:
        return self.total == self.recipe_total

    @property
    def matching_accumulation(self) -> int | None:
        """The accumulation that gives the recipe's total with the same processes and per-device batch, if any."""
        per_step = self.world_size * self.per_device
        return self.recipe_total // per_step if self.recipe_total % per_step == 0 else None

    def describe(self) -> str:
        """E.g. ``"1 process x 2 images x 1 accumulation step = 2 images per iteration (recipe: 16)"``."""
        return (
            f"{self.world_size} process{'es' if self.world_size > 1 else ''} x {self.per_device} "
            f"image{'s' if self.per_device > 1 else ''} x {self.accumulation} accumulation "
            f"step{'s' if self.accumulation > 1 else ''} = {self.total} images per iteration "
            f"(recipe: {self.recipe_total})"
        )


def batch_plan(args: TrainingArguments, recipe_total: int) -> BatchPlan:
    """The :class:`BatchPlan` of ``args`` (after :meth:`Recipe.configure`) against ``recipe_total`` images."""
    return BatchPlan(args.world_size, args.per_device_train_batch_size, args.gradient_accumulation_steps, recipe_total)


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has BatchNorm layers (the UperNet / FPN heads): their statistics depend on the batch."""
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())
