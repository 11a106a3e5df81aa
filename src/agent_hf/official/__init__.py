"""Official Agent Attention configs and checkpoints -> agent_hf.

* `configs`: `config_from_official(model_dict)` reads the `model` dict of an official mmsegmentation 0.x config file
  (after its `_base_` files are merged); `official_classification_config(cfg)` an official ImageNet classification
  config.
* `checkpoints`: `load_official_checkpoint(checkpoint, config)` loads an mmseg segmentation checkpoint
  (`{'state_dict': ...}`) or an official ImageNet checkpoint (`{'model': ...}`, the paper's starting point) into a
  segmentation model, `load_official_classifier(checkpoint, config)` the latter into the image classifier.

Which family an official name belongs to, and how its keys are named, comes from `agent_hf.families`.
"""

from __future__ import annotations

from .checkpoints import (
    load_official_checkpoint,
    load_official_classifier,
    official_classifier_state_dict,
    official_to_hf_state_dict,
)
from .configs import config_from_official, official_classification_config

__all__ = [
    "config_from_official",
    "load_official_checkpoint",
    "load_official_classifier",
    "official_classification_config",
    "official_classifier_state_dict",
    "official_to_hf_state_dict",
]
