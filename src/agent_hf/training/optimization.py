"""The optimizer and learning-rate schedule of a :class:`~agent_hf.training.Recipe`.

* :func:`parameter_groups` / :func:`build_optimizer`: AdamW with mmcv's ``paramwise_cfg.custom_keys`` rule (a
  parameter whose *official* name contains one of the keys gets ``decay_mult=0``).
* :func:`build_scheduler`: a ``LambdaLR`` reproducing mmcv's ``PolyLrUpdaterHook`` with linear warm-up.
"""

from __future__ import annotations

import logging
import math
import re
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_scheduler
from transformers.trainer_pt_utils import get_parameter_names

from ..families import FAMILIES
from .recipes import Recipe

logger = logging.getLogger(__name__)

__all__ = ["build_optimizer", "build_scheduler", "mmcv_poly_lr", "official_parameter_name", "parameter_groups"]

# Our backbones wrap the official one in `backbone.<model_type>.`; official mmseg names start with `backbone.`.
_OFFICIAL_PREFIXES = {family.backbone_prefix: "backbone." for family in FAMILIES.values()}

# transformers' `Trainer.get_decay_parameter_names` (v5): LayerNorm modules and these name patterns get no decay.
_TRANSFORMERS_NO_DECAY_PATTERNS = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")


# Our module names that differ from the official ones (beyond the backbone prefix): per-stage lists are ModuleLists
# here (`norms.3`, `stages.0.blocks`) where the official code numbers attributes (`norm3`, `block1`, 1-based in PVT).
_OFFICIAL_STAGE_NAMES = (
    (re.compile(r"^backbone\.norms\.(\d+)\."), lambda m: f"backbone.norm{m[1]}."),
    (
        re.compile(r"^backbone\.stages\.(\d+)\.(patch_embed|pos_embed|blocks)\b"),
        lambda m: f"backbone.{'block' if m[2] == 'blocks' else m[2]}{int(m[1]) + 1}",
    ),
)


def official_parameter_name(name: str) -> str:
    """The official mmseg name of one of our parameters, e.g.
    ``backbone.agent_swin.layers.0.blocks.0.attn.an_bias -> backbone.layers.0.blocks.0.attn.an_bias``,
    ``backbone.agent_swin.norms.3.bias -> backbone.norm3.bias``,
    ``backbone.agent_pvt.stages.0.blocks.1.norm1.weight -> backbone.block1.1.norm1.weight``."""
    for ours, official in _OFFICIAL_PREFIXES.items():
        if name.startswith(ours):
            name = official + name[len(ours) :]
            for pattern, replacement in _OFFICIAL_STAGE_NAMES:
                name = pattern.sub(replacement, name)
            return name
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
    if warmup >= total:
        logger.warning(
            f"The warm-up ({warmup} steps) is not shorter than the run ({total} steps): the learning rate never "
            f"reaches {recipe.learning_rate:g}; choose a shorter warmup_steps"
        )
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
    kwargs = dict(recipe.lr_scheduler_kwargs)  # (what is not given keeps mmcv's default, as in `mmcv_poly_lr`)
    lambdas = [
        partial(_mmcv_poly_factor, base_lr=group["lr"], max_steps=total, warmup_steps=warmup, **kwargs)
        for group in optimizer.param_groups
    ]
    return LambdaLR(optimizer, lambdas)
