"""Counting the operations of a model, as the paper's FLOPs column does (one image, 512x2048)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForSemanticSegmentation


def count_flops(config, height: int = 512, width: int = 2048, include_auxiliary: bool = False) -> int:
    """Floating-point operations of one inference forward pass of the segmentation model of `config`
    on a (1, 3, height, width) input, counted by `torch.utils.flop_counter.FlopCounterMode` (2 per
    multiply-accumulate; MACs = FLOPs / 2, the unit of the paper's "954G"-style numbers).

    The model is built on the meta device, so nothing is allocated or computed. The auxiliary head is
    left out by default: it is a training-time head, and mmseg's `get_flops` does not count it either.
    """
    config = type(config).from_dict(config.to_dict())
    if not include_auxiliary and hasattr(config, "use_auxiliary_head"):
        config.use_auxiliary_head = False
    with torch.device("meta"):
        model = AutoModelForSemanticSegmentation.from_config(config).eval()
        pixel_values = torch.empty(1, config.num_channels, height, width)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(pixel_values)
    return int(counter.get_total_flops())


__all__ = ["count_flops"]
