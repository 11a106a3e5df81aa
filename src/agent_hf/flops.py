"""Counting the operations of a model, as the paper's FLOPs column does (one image, 512x2048)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from transformers import AutoModelForSemanticSegmentation


class FlopCounter(FlopCounterMode):
    """`FlopCounterMode` that also counts PyTorch's fused CPU attention kernel.

    That kernel (what `F.scaled_dot_product_attention` runs on CPU for the agent and the window
    attention) is missing from torch's FLOP registry, so a plain counter would count 0 for it; it does
    the same products as any SDPA kernel.
    """

    def __init__(self, display: bool = False, custom_mapping: dict | None = None, **kwargs):
        def cpu_flash(query_shape, key_shape, value_shape, *args, out_shape=None, **kw):
            return sdpa_flop_count(query_shape, key_shape, value_shape)

        mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash, **(custom_mapping or {})}
        super().__init__(display=display, custom_mapping=mapping, **kwargs)


def count_model_flops(model: torch.nn.Module, *inputs, **kwargs) -> int:
    """Floating-point operations of `model(*inputs, **kwargs)` without gradients (2 per multiply-add).

    Works on real and on meta-device models. AgentAttention keeps its bias factors per map size at
    inference: on a second call at the same size the count leaves out the factors' construction (as the
    steady state of inference does) but includes the bias blocks built from them.
    """
    with torch.no_grad(), FlopCounter() as counter:
        model(*inputs, **kwargs)
    return int(counter.get_total_flops())


def count_flops(config, height: int = 512, width: int = 2048, include_auxiliary: bool = False) -> int:
    """Floating-point operations of one inference forward pass of the segmentation model of `config`
    on a (1, 3, height, width) input (2 per multiply-accumulate; MACs = FLOPs / 2, the unit of the
    paper's "954G"-style numbers), agent-bias construction included.

    The model is built on the meta device, so nothing is allocated or computed. The auxiliary head is
    left out by default: it is a training-time head, and mmseg's `get_flops` does not count it either.
    """
    config = type(config).from_dict(config.to_dict())
    if not include_auxiliary and hasattr(config, "use_auxiliary_head"):
        config.use_auxiliary_head = False
    with torch.device("meta"):
        model = AutoModelForSemanticSegmentation.from_config(config).eval()
        pixel_values = torch.empty(1, config.num_channels, height, width)
    return count_model_flops(model, pixel_values)


__all__ = ["FlopCounter", "count_flops", "count_model_flops"]
