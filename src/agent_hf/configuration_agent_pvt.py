"""Configuration of Agent-PVT backbones and their Semantic FPN segmentation model.

Shipped to the Hub with the model: imports only torch/transformers and sibling modules.
"""

from transformers.backbone_utils import BackboneConfigMixin
from transformers.configuration_utils import PreTrainedConfig


class AgentPvtConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of an Agent-PVT (Han et al., ECCV 2024) and of its Semantic FPN segmentation model
    (mmseg `FPN` neck + `FPNHead`), as in the official `AgentPVT`. Defaults build Agent-PVT-T + Semantic FPN.

    Backbone:
        pretrain_image_size (`int`, 224): ImageNet resolution; the position embeddings and agent bias
            tables of stage i were learned on a (224 / 4 / 2**i) grid and are interpolated to the input.
        patch_size (`int`, 4): patch of stage 1 (later stages merge 2x2). num_channels (`int`, 3).
        embed_dims (`list[int]`, [64, 128, 320, 512]), num_heads ([1, 2, 5, 8]), mlp_ratios ([8, 8, 4, 4]),
        depths ([2, 2, 2, 2]).
        attn_type (`str`, "AAAA"): one character per stage, ``A`` agent attention, ``B`` PVT's spatial-
            reduction softmax attention.
        sr_ratios (`list[int]`, [8, 4, 2, 1]): spatial reduction of the keys/values in ``B`` stages.
        agent_sr_ratios (`list[int]`, [1, 1, 1, 1]): spatial reduction in ``A`` stages (the official code
            supports only 1).
        agent_num (`list[int]`, [9, 16, 49, 49]), downstream_agent_shapes ([[12, 12], [16, 16], [28, 28],
            [28, 28]]), agent_kernel_size (3), attention_scale_exponent (-0.5): as in `AgentSwinConfig`.
        qkv_bias (`bool`, True), qk_scale (`float`, optional, for ``B`` stages), hidden_dropout_prob,
        attention_probs_dropout_prob, drop_path_rate (0.1), hidden_act ("gelu").
        layer_norm_eps (`float`, 1e-6): eps of the blocks' LayerNorms (the patch-embedding and spatial-
            reduction LayerNorms keep PyTorch's 1e-5, as in the official code).
        attn_implementation: "sdpa" (default) or "eager".

    Segmentation (Semantic FPN): fpn_hidden_size (`int`, 256), decoder_hidden_size (`int`, 128),
    feature_strides ([4, 8, 16, 32]), classifier_dropout (0.1), loss_ignore_index (255), align_corners (False).
    """

    model_type = "agent_pvt"
    _auto_class = "AutoConfig"  # saved with its code (see AutoMapMixin)
    attribute_map = {"num_attention_heads": "num_heads", "num_hidden_layers": "num_stages"}

    pretrain_image_size: int = 224
    patch_size: int = 4
    num_channels: int = 3
    embed_dims: list[int] | tuple[int, ...] = (64, 128, 320, 512)
    num_heads: list[int] | tuple[int, ...] = (1, 2, 5, 8)
    mlp_ratios: list[float] | tuple[float, ...] = (8, 8, 4, 4)
    depths: list[int] | tuple[int, ...] = (2, 2, 2, 2)
    attn_type: str = "AAAA"
    sr_ratios: list[int] | tuple[int, ...] = (8, 4, 2, 1)
    agent_sr_ratios: list[int] | tuple[int, ...] = (1, 1, 1, 1)
    agent_num: list[int] | tuple[int, ...] = (9, 16, 49, 49)
    downstream_agent_shapes: list | tuple = ((12, 12), (16, 16), (28, 28), (28, 28))
    agent_kernel_size: int = 3
    attention_scale_exponent: float = -0.5
    qkv_bias: bool = True
    qk_scale: float | None = None
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.1
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    # FPN neck + Semantic FPN head
    fpn_hidden_size: int = 256
    decoder_hidden_size: int = 128
    feature_strides: list[int] | tuple[int, ...] = (4, 8, 16, 32)
    classifier_dropout: float = 0.1
    loss_ignore_index: int = 255
    align_corners: bool = False
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs):
        for name in (
            "embed_dims",
            "num_heads",
            "depths",
            "sr_ratios",
            "agent_sr_ratios",
            "agent_num",
            "feature_strides",
        ):
            setattr(self, name, [int(v) for v in getattr(self, name)])
        self.mlp_ratios = [float(r) for r in self.mlp_ratios]
        self.downstream_agent_shapes = [list(s) for s in self.downstream_agent_shapes]
        self.num_stages = len(self.depths)
        self.hidden_size = self.embed_dims[-1]
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, self.num_stages + 1)]
        out_indices = kwargs.pop("out_indices", None)
        out_features = kwargs.pop("out_features", None)
        if out_indices is None and out_features is None and self._out_features is None and self._out_indices is None:
            out_features = self.stage_names[1:]
        self.set_output_features_output_indices(
            out_indices=out_indices if out_indices is not None else self._out_indices,
            out_features=out_features if out_features is not None else self._out_features,
        )
        kwargs.setdefault("attn_implementation", "sdpa")
        super().__post_init__(**kwargs)
        self._check_consistency()

    def _check_consistency(self) -> None:
        n = self.num_stages
        per_stage = (
            "embed_dims",
            "num_heads",
            "mlp_ratios",
            "sr_ratios",
            "agent_sr_ratios",
            "agent_num",
            "downstream_agent_shapes",
            "feature_strides",
        )
        for name in per_stage:
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"AgentPvtConfig: {name} has {len(getattr(self, name))} entries but depths has {n} stages "
                    f"(depths={self.depths}, {name}={getattr(self, name)}); give one entry per stage"
                )
        if len(self.attn_type) != n or any(c not in "AB" for c in self.attn_type):
            raise ValueError(
                f"AgentPvtConfig: attn_type={self.attn_type!r} must have one 'A' or 'B' per stage ({n} stages)"
            )
        for i in range(n):
            if self.embed_dims[i] % self.num_heads[i]:
                raise ValueError(
                    f"AgentPvtConfig: embed_dims[{i}]={self.embed_dims[i]} is not divisible by "
                    f"num_heads[{i}]={self.num_heads[i]}"
                )
            if self.attn_type[i] == "A":
                if int(round(self.agent_num[i] ** 0.5)) ** 2 != self.agent_num[i]:
                    raise ValueError(f"AgentPvtConfig: agent_num[{i}]={self.agent_num[i]} must be a square number")
                if self.agent_sr_ratios[i] != 1:
                    raise ValueError(
                        f"AgentPvtConfig: agent_sr_ratios[{i}]={self.agent_sr_ratios[i]}; agent attention stages "
                        "support only 1 (the official implementation asserts sr_ratio == 1)"
                    )


__all__ = ["AgentPvtConfig"]
