"""The official checkpoints' key names -> agent_hf's, written here from the official names (not with the converter
under test, `agent_hf.official.official_to_hf_state_dict`), for the expected state dicts of the loading tests."""

from __future__ import annotations

import re

#: Derived buffers the official checkpoints store and our models recompute (not in our state dicts).
DERIVED_BUFFERS = ("relative_position_index",)


def our_backbone_key(official_key: str, model_type: str) -> str:
    """Our full key for an official backbone key (as in an ImageNet checkpoint, or a segmentation checkpoint's key
    without its ``backbone.`` prefix): Swin's per-stage output norms ``norm{i}`` are ``norms.{i}``; PVT's 1-based
    ``patch_embed{i}``, ``pos_embed{i}`` and ``block{i}`` are the 0-based ``stages.{i-1}.patch_embed``,
    ``.pos_embed`` and ``.blocks``."""
    key = official_key
    if model_type == "agent_swin":
        key = re.sub(r"^norm(\d)\.", r"norms.\1.", key)
    else:
        stage = lambda match: str(int(match[2]) - 1)  # noqa: E731
        key = re.sub(r"^(patch_embed|pos_embed|block)(\d)", lambda m: f"stages.{stage(m)}.{m[1]}", key)
        key = re.sub(r"^stages\.(\d)\.block\.", r"stages.\1.blocks.", key)
    return f"backbone.{model_type}.{key}"


def expected_state_dict(official: dict, model_type: str, skip=()) -> dict:
    """Our expected state dict for an official one: backbone keys renamed, head keys (``decode_head.``,
    ``auxiliary_head.``, ``neck.``) unchanged; keys in ``skip`` and derived buffers left out."""
    expected = {}
    for key, tensor in official.items():
        if key in skip or key.endswith(DERIVED_BUFFERS):
            continue
        if key.startswith(("decode_head.", "auxiliary_head.", "neck.")):
            expected[key] = tensor
        else:
            expected[our_backbone_key(key.removeprefix("backbone."), model_type)] = tensor
    return expected
