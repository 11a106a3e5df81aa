"""Configuration of Agent-PVT backbones and their Semantic FPN segmentation model; shipped to the Hub with the
model (imports only transformers and sibling modules).
"""

from .configuration_agent_common import (
    BackboneConfigMixin,
    PreTrainedConfig,
    check_agent_attention,
    check_per_stage_lengths,
    check_positive_sizes,
    document_agent_attention,
    pretrained_config_kwargs,
    set_agent_attention,
    set_stage_outputs,
)


@document_agent_attention
class AgentPvtConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of an Agent-PVT (Han et al., ECCV 2024) and of its Semantic FPN segmentation model
    (mmseg `FPN` neck + `FPNHead`), as in the official `AgentPVT`. Defaults build Agent-PVT-T + Semantic FPN.

    Written in the classic `__init__` style, which every supported transformers version (4.57 to the
    newest 5.x) accepts; `config.json` files written by agent-hf 0.1.0 load unchanged.

    Args:
        pretrain_image_size (`int`, *optional*, defaults to 224):
            ImageNet resolution; the position embeddings and agent bias tables of stage i were learned on a
            (224 / 4 / 2**i) grid and are interpolated to the input.
        patch_size (`int`, *optional*, defaults to 4):
            Patch of stage 1 (later stages merge 2x2).
        num_channels (`int`, *optional*, defaults to 3):
            Channels of `pixel_values` (B, num_channels, H, W).
        embed_dims (`list[int]`, *optional*, defaults to `[64, 128, 320, 512]`):
            Width of each stage.
        num_heads (`list[int]`, *optional*, defaults to `[1, 2, 5, 8]`):
            Attention heads per stage.
        mlp_ratios (`list[float]`, *optional*, defaults to `[8, 8, 4, 4]`):
            Hidden width of the MLPs relative to the stage width.
        depths (`list[int]`, *optional*, defaults to `[2, 2, 2, 2]`):
            Blocks per stage.
        attn_type (`str`, *optional*, defaults to `"AAAA"`):
            One character per stage: `A` agent attention, `B` PVT's spatial-reduction softmax attention.
        sr_ratios (`list[int]`, *optional*, defaults to `[8, 4, 2, 1]`):
            Spatial reduction of the keys/values in `B` stages.
        agent_sr_ratios (`list[int]`, *optional*, defaults to `[1, 1, 1, 1]`):
            Spatial reduction in `A` stages (the official code supports only 1).
        {agent_attention_args}
        qkv_bias (`bool`, *optional*, defaults to `True`):
            Bias of the query/key/value projections.
        qk_scale (`float`, *optional*):
            Scale of the `B` stages (default head_dim**-0.5).
        hidden_dropout_prob (`float`, *optional*, defaults to 0.0):
            Official `drop_rate`: dropout after projections, MLPs and position embeddings.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.0):
            Official `attn_drop_rate`: dropout on the attention weights.
        drop_path_rate (`float`, *optional*, defaults to 0.1):
            Stochastic depth of the last block (it grows linearly from 0 over the blocks).
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the MLPs.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the blocks' LayerNorms (the patch-embedding and spatial-reduction LayerNorms keep
            PyTorch's 1e-5, as in the official code).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated-normal initialization of linears, tables and position embeddings.
        fpn_hidden_size (`int`, *optional*, defaults to 256):
            Width of the FPN neck.
        decoder_hidden_size (`int`, *optional*, defaults to 128):
            Width of the Semantic FPN head.
        feature_strides (`list[int]`, *optional*, defaults to `[4, 8, 16, 32]`):
            Stride of each stage's map, which sets the depth of each level of the Semantic FPN head.
        classifier_dropout (`float`, *optional*, defaults to 0.1):
            `Dropout2d` before the classifier.
        loss_ignore_index (`int`, *optional*, defaults to 255):
            Label ignored by the loss.
        align_corners (`bool`, *optional*, defaults to `False`):
            `align_corners` of the head's bilinear resizes.
        out_features (`list[str]`, *optional*):
            Stages (`"stem"`, `"stage1"`, ..., `"stage4"`) the backbone returns; default the last one, as every
            transformers backbone. The segmentation model always reads all four.
        out_indices (`list[int]`, *optional*):
            The same as indices into `stage_names`.
        kwargs:
            `PreTrainedConfig` arguments (`num_labels`, `id2label`, `attn_implementation` ("sdpa" (default) or
            "eager"), ...).
    """

    model_type = "agent_pvt"
    _auto_class = "AutoConfig"  # saved with its code (see AutoMapMixin)
    attribute_map = {"num_attention_heads": "num_heads", "num_hidden_layers": "num_stages"}

    def __init__(
        self,
        pretrain_image_size=224,
        patch_size=4,
        num_channels=3,
        embed_dims=(64, 128, 320, 512),
        num_heads=(1, 2, 5, 8),
        mlp_ratios=(8, 8, 4, 4),
        depths=(2, 2, 2, 2),
        attn_type="AAAA",
        sr_ratios=(8, 4, 2, 1),
        agent_sr_ratios=(1, 1, 1, 1),
        agent_num=(9, 16, 49, 49),
        downstream_agent_shapes=((12, 12), (16, 16), (28, 28), (28, 28)),
        agent_kernel_size=3,
        attention_scale_exponent=-0.5,
        qkv_bias=True,
        qk_scale=None,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.1,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        initializer_range=0.02,
        fpn_hidden_size=256,
        decoder_hidden_size=128,
        feature_strides=(4, 8, 16, 32),
        classifier_dropout=0.1,
        loss_ignore_index=255,
        align_corners=False,
        out_features=None,
        out_indices=None,
        **kwargs,
    ):
        super().__init__(**pretrained_config_kwargs(kwargs, ("num_stages", "hidden_size")))
        self.pretrain_image_size = pretrain_image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.embed_dims = [int(v) for v in embed_dims]
        self.num_heads = [int(v) for v in num_heads]
        self.mlp_ratios = [float(r) for r in mlp_ratios]
        self.depths = [int(v) for v in depths]
        self.attn_type = attn_type
        self.sr_ratios = [int(v) for v in sr_ratios]
        self.agent_sr_ratios = [int(v) for v in agent_sr_ratios]
        set_agent_attention(self, agent_num, downstream_agent_shapes, agent_kernel_size, attention_scale_exponent)
        self.qkv_bias = qkv_bias
        self.qk_scale = qk_scale
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.fpn_hidden_size = fpn_hidden_size
        self.decoder_hidden_size = decoder_hidden_size
        self.feature_strides = [int(v) for v in feature_strides]
        self.classifier_dropout = classifier_dropout
        self.loss_ignore_index = loss_ignore_index
        self.align_corners = align_corners
        self.num_stages = len(self.depths)
        self.hidden_size = self.embed_dims[-1]
        set_stage_outputs(self, self.num_stages, out_features, out_indices)
        self._check_consistency()

    def _check_consistency(self) -> None:
        n = self.num_stages
        check_positive_sizes(
            self,
            (
                *("pretrain_image_size", "patch_size", "embed_dims", "num_heads", "mlp_ratios"),
                *("depths", "sr_ratios", "agent_sr_ratios", "agent_num", "downstream_agent_shapes"),
                *("agent_kernel_size", "fpn_hidden_size", "decoder_hidden_size", "feature_strides"),
            ),
        )
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
        check_per_stage_lengths(self, per_stage, n)
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
            if self.attn_type[i] == "A" and self.agent_sr_ratios[i] != 1:
                raise ValueError(
                    f"AgentPvtConfig: agent_sr_ratios[{i}]={self.agent_sr_ratios[i]}; agent attention stages "
                    "support only 1 (the official implementation asserts sr_ratio == 1)"
                )
        check_agent_attention(self, [i for i in range(n) if self.attn_type[i] == "A"])


__all__ = ["AgentPvtConfig"]
