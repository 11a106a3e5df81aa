"""The seven published Agent Attention segmentation models (ADE20K, 150 classes), by name.

Each preset is the official config file's model, expressed as an agent_hf config; the training recipe
that goes with it (optimizer, schedule, iterations) lives in `agent_hf.training`.
"""

from __future__ import annotations

from .configuration_agent_pvt import AgentPvtConfig
from .configuration_agent_swin import AgentSwinConfig
from .data.ade20k import ade20k_id2label

_SWIN = {
    # name: (embed_dim, depths, num_heads, downstream_agent_shapes, attn_type, drop_path_rate)
    "agent-swin-t-upernet-ade20k": (
        96,
        [2, 2, 6, 2],
        [3, 6, 12, 24],
        [[9, 9], [12, 12], [14, 14], [7, 7]],
        "AAAB",
        0.3,
    ),
    "agent-swin-s-upernet-ade20k": (
        96,
        [2, 2, 18, 2],
        [3, 6, 12, 24],
        [[9, 9], [12, 12], [7, 7], [7, 7]],
        "AABB",
        0.3,
    ),
    "agent-swin-b-upernet-ade20k": (
        128,
        [2, 2, 18, 2],
        [4, 8, 16, 32],
        [[9, 9], [12, 12], [14, 14], [7, 7]],
        "AAMB2",
        0.5,
    ),
}
_PVT = {
    # name: (depths, drop_path_rate); all share widths 64-128-320-512 and agent grids 12-16-28-28
    "agent-pvt-t-fpn-ade20k": ([2, 2, 2, 2], 0.1),
    "agent-pvt-s-fpn-ade20k": ([3, 4, 6, 3], 0.1),
    "agent-pvt-m-fpn-ade20k": ([3, 4, 18, 3], 0.2),
    "agent-pvt-l-fpn-ade20k": ([3, 8, 27, 3], 0.1),
}
PRESETS: tuple[str, ...] = tuple(_SWIN) + tuple(_PVT)


def preset_config(name: str, **overrides) -> AgentSwinConfig | AgentPvtConfig:
    """Config of a published model, e.g. `preset_config("agent-swin-t-upernet-ade20k")`.

    `overrides` replace any field (e.g. `id2label=...` for another dataset, `drop_path_rate=0.0`).
    The preset's name is kept in the config as `agent_hf_preset`. The backbone returns all four stage maps
    (`out_features`), as the official one; pass `out_features=[...]` to select others.
    """
    id2label = ade20k_id2label()
    common = dict(
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        agent_hf_preset=name,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    if name in _SWIN:
        embed_dim, depths, heads, shapes, layout, dpr = _SWIN[name]
        kwargs = dict(
            embed_dim=embed_dim,
            depths=depths,
            num_heads=heads,
            downstream_agent_shapes=shapes,
            attn_type=layout,
            drop_path_rate=dpr,
        )
        return AgentSwinConfig(**{**common, **kwargs, **overrides})
    if name in _PVT:
        depths, dpr = _PVT[name]
        return AgentPvtConfig(**{**common, "depths": depths, "drop_path_rate": dpr, **overrides})
    raise ValueError(f"Unknown preset {name!r}; available presets: {', '.join(PRESETS)}")


__all__ = ["PRESETS", "preset_config"]
