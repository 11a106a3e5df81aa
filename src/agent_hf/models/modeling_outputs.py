"""The output type of the segmentation models (`AgentSegmenterOutput`).

Shipped to the Hub with the model: imports only torch/transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class AgentSegmenterOutput(ModelOutput):
    """`SemanticSegmenterOutput`'s fields plus the auxiliary head's logits, in this order (as a tuple, the
    attentions come last, as in every transformers output).

    loss: decode loss (+ auxiliary weight x auxiliary loss) when `labels` are given.
    logits: (B, num_labels, H/4, W/4), before any resize (as mmseg's decode head output).
    auxiliary_logits: (B, num_labels, H/16, W/16) for UperNet models with an auxiliary head, when labels are given or
        `output_auxiliary_logits=True`, else None.
    hidden_states: the four backbone stage maps (B, C_i, H_i, W_i) with `output_hidden_states`.
    attentions: per backbone block, its attention weights with `output_attentions` (see the backbone model).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    auxiliary_logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple | None = None


__all__ = ["AgentSegmenterOutput"]
