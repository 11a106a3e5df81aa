"""mmseg's segmentation loss (the decode and auxiliary heads').

Shipped to the Hub with the model: imports only torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, align_corners: bool = False):
    """mmseg's decode-head loss: logits resized bilinearly to the label size, pixel-wise cross-entropy,
    averaged over ALL pixels, ignored ones counting as zero (mmseg 0.x `avg_non_ignore=False`)."""
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=align_corners)
    return F.cross_entropy(logits.float(), labels.long(), ignore_index=ignore_index, reduction="none").mean()


__all__ = ["segmentation_loss"]
