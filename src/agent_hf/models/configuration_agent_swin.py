"""Configuration of Agent-Swin backbones and their UperNet segmentation model, and the parser of the official block
layout string (`expand_swin_attention_layout`); shipped to the Hub with the model (imports only transformers and
sibling modules).
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


def expand_swin_attention_layout(attn_type: str, depths) -> list[list[str]]:
    """Per-block attention kinds from the official layout string.

    One character per stage: ``A`` agent attention over the whole map, ``B`` shifted-window softmax
    attention, ``M`` mixed, in which case the digits after the per-stage characters give how many
    leading blocks of that stage are agent blocks (``"AAMB2"``: stage 3 = 2 agent blocks, then
    window blocks). Returns e.g. ``[["A", "A"], ["A", "A"], ["A", "A", "B", "B"], ["B", "B"]]``.
    """
    num_stages = len(depths)
    head, tail = attn_type[:num_stages], attn_type[num_stages:]
    if len(head) != num_stages or any(c not in "ABM" for c in head):
        raise ValueError(
            f"attn_type={attn_type!r}: expected one of 'A', 'B', 'M' per stage ({num_stages} stages), "
            "followed by the number of agent blocks if a stage is 'M' (e.g. 'AAMB2')"
        )
    if "M" in head and not tail.isdigit():
        raise ValueError(
            f"attn_type={attn_type!r}: a mixed stage 'M' needs the number of agent blocks after the layout"
        )
    if "M" not in head and tail:
        raise ValueError(f"attn_type={attn_type!r}: trailing {tail!r} is only allowed with a mixed stage 'M'")
    layout = []
    for kind, depth in zip(head, depths):
        if kind == "M":
            num_agent = int(tail)
            layout.append(["A" if i < num_agent else "B" for i in range(depth)])
        else:
            layout.append([kind] * depth)
    return layout


@document_agent_attention
class AgentSwinConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of an Agent-Swin Transformer (Han et al., ECCV 2024) and of its UperNet segmentation
    model (decode head + auxiliary FCN head), as in the official `AgentSwinTransformer` + `UPerHead` +
    `FCNHead` of mmsegmentation. Defaults build Agent-Swin-T + UperNet for ADE20K.

    Written in the classic `__init__` style, which every supported transformers version (4.57 to the
    newest 5.x) accepts; `config.json` files written by agent-hf 0.1.0 load unchanged.

    Args:
        pretrain_image_size (`int`, *optional*, defaults to 224):
            Image size of the ImageNet pretraining; the agent bias tables `ah/aw/ha/wa` of stage i were learned
            on a (pretrain_image_size / patch_size / 2**i) grid and are interpolated to the actual feature size.
        patch_size (`int`, *optional*, defaults to 4):
            Side of the non-overlapping patches of the patch embedding.
        num_channels (`int`, *optional*, defaults to 3):
            Channels of `pixel_values` (B, num_channels, H, W).
        embed_dim (`int`, *optional*, defaults to 96):
            Width C of stage 1; stage i has C * 2**i channels.
        depths (`list[int]`, *optional*, defaults to `[2, 2, 6, 2]`):
            Blocks per stage.
        num_heads (`list[int]`, *optional*, defaults to `[3, 6, 12, 24]`):
            Attention heads per stage.
        window_size (`int`, *optional*, defaults to 7):
            Window of the shifted-window (`B`) blocks (official `max(7, window_size // 8)` with its `window_size=56`).
        mlp_ratio (`float`, *optional*, defaults to 4.0):
            Hidden width of the MLPs relative to the block width.
        attn_type (`str`, *optional*, defaults to `"AAAB"`):
            Official block layout, one character per stage (see `expand_swin_attention_layout`).
        {agent_attention_args}
        qkv_bias (`bool`, *optional*, defaults to `True`):
            Bias of the query/key/value projections.
        qk_scale (`float`, *optional*):
            Scale of the window blocks (default head_dim**-0.5).
        hidden_dropout_prob (`float`, *optional*, defaults to 0.0):
            Official `drop_rate`: dropout after projections, MLPs and the patch embedding.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.0):
            Official `attn_drop_rate`: dropout on the attention weights.
        drop_path_rate (`float`, *optional*, defaults to 0.3):
            Stochastic depth of the last block (it grows linearly from 0 over the blocks).
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the MLPs.
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of every LayerNorm.
        patch_norm (`bool`, *optional*, defaults to `True`):
            LayerNorm after the patch embedding.
        use_absolute_embeddings (`bool`, *optional*, defaults to `False`):
            Official `ape`: a learned absolute position embedding, resized to the input.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated-normal initialization of linears and tables.
        decoder_hidden_size (`int`, *optional*, defaults to 512):
            Width of the UperNet head.
        pool_scales (`list[int]`, *optional*, defaults to `[1, 2, 3, 6]`):
            Output sizes of UperNet's pyramid pooling module.
        classifier_dropout (`float`, *optional*, defaults to 0.1):
            `Dropout2d` before each head's classifier.
        use_auxiliary_head (`bool`, *optional*, defaults to `True`):
            Whether the segmentation model has the auxiliary FCN head.
        auxiliary_in_index (`int`, *optional*, defaults to 2):
            Stage (0-based) the auxiliary head reads.
        auxiliary_channels (`int`, *optional*, defaults to 256):
            Width of the auxiliary head.
        auxiliary_num_convs (`int`, *optional*, defaults to 1):
            3x3 convolutions of the auxiliary head.
        auxiliary_concat_input (`bool`, *optional*, defaults to `False`):
            Whether the auxiliary head concatenates its input before the classifier.
        auxiliary_loss_weight (`float`, *optional*, defaults to 0.4):
            Weight of the auxiliary loss in the total loss.
        loss_ignore_index (`int`, *optional*, defaults to 255):
            Label ignored by the loss.
        align_corners (`bool`, *optional*, defaults to `False`):
            `align_corners` of the heads' bilinear resizes.
        out_features (`list[str]`, *optional*):
            Stages (`"stem"`, `"stage1"`, ..., `"stage4"`) the backbone returns; default the last one, as every
            transformers backbone. The segmentation model always reads all four.
        out_indices (`list[int]`, *optional*):
            The same as indices into `stage_names`.
        kwargs:
            `PreTrainedConfig` arguments (`num_labels`, `id2label`, `attn_implementation` ("sdpa" (default) or
            "eager"), ...).
    """

    model_type = "agent_swin"
    _auto_class = "AutoConfig"  # saved with its code (see AutoMapMixin)
    attribute_map = {"num_attention_heads": "num_heads", "num_hidden_layers": "num_layers"}

    def __init__(
        self,
        pretrain_image_size=224,
        patch_size=4,
        num_channels=3,
        embed_dim=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size=7,
        mlp_ratio=4.0,
        attn_type="AAAB",
        agent_num=(9, 16, 49, 49),
        downstream_agent_shapes=((9, 9), (12, 12), (14, 14), (7, 7)),
        agent_kernel_size=3,
        attention_scale_exponent=-0.5,
        qkv_bias=True,
        qk_scale=None,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.3,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        patch_norm=True,
        use_absolute_embeddings=False,
        initializer_range=0.02,
        decoder_hidden_size=512,
        pool_scales=(1, 2, 3, 6),
        classifier_dropout=0.1,
        use_auxiliary_head=True,
        auxiliary_in_index=2,
        auxiliary_channels=256,
        auxiliary_num_convs=1,
        auxiliary_concat_input=False,
        auxiliary_loss_weight=0.4,
        loss_ignore_index=255,
        align_corners=False,
        out_features=None,
        out_indices=None,
        **kwargs,
    ):
        super().__init__(**pretrained_config_kwargs(kwargs, ("num_layers", "hidden_size")))
        self.pretrain_image_size = pretrain_image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.embed_dim = embed_dim
        self.depths = list(depths)
        self.num_heads = list(num_heads)
        self.window_size = window_size
        self.mlp_ratio = mlp_ratio
        self.attn_type = attn_type
        set_agent_attention(self, agent_num, downstream_agent_shapes, agent_kernel_size, attention_scale_exponent)
        self.qkv_bias = qkv_bias
        self.qk_scale = qk_scale
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.patch_norm = patch_norm
        self.use_absolute_embeddings = use_absolute_embeddings
        self.initializer_range = initializer_range
        self.decoder_hidden_size = decoder_hidden_size
        self.pool_scales = list(pool_scales)
        self.classifier_dropout = classifier_dropout
        self.use_auxiliary_head = use_auxiliary_head
        self.auxiliary_in_index = auxiliary_in_index
        self.auxiliary_channels = auxiliary_channels
        self.auxiliary_num_convs = auxiliary_num_convs
        self.auxiliary_concat_input = auxiliary_concat_input
        self.auxiliary_loss_weight = auxiliary_loss_weight
        self.loss_ignore_index = loss_ignore_index
        self.align_corners = align_corners
        self.num_layers = len(self.depths)
        self.hidden_size = int(self.embed_dim * 2 ** (self.num_layers - 1))
        set_stage_outputs(self, self.num_layers, out_features, out_indices)
        self._check_consistency()

    @property
    def block_attention_types(self) -> list[list[str]]:
        """Per stage, per block: ``"A"`` (agent attention) or ``"B"`` (shifted-window attention)."""
        return expand_swin_attention_layout(self.attn_type, self.depths)

    def _check_consistency(self) -> None:
        n = self.num_layers
        check_positive_sizes(
            self,
            (
                *("pretrain_image_size", "patch_size", "embed_dim", "depths", "num_heads"),
                *("window_size", "mlp_ratio", "agent_num", "downstream_agent_shapes", "agent_kernel_size"),
                *("decoder_hidden_size", "pool_scales", "auxiliary_channels"),
            ),
        )
        check_per_stage_lengths(self, ("num_heads", "agent_num", "downstream_agent_shapes"), n)
        expand_swin_attention_layout(self.attn_type, self.depths)  # validates attn_type
        for i, heads in enumerate(self.num_heads):
            dim = self.embed_dim * 2**i
            if dim % heads:
                raise ValueError(f"AgentSwinConfig: stage {i} width {dim} is not divisible by num_heads={heads}")
        check_agent_attention(self, range(n))
        if self.pretrain_image_size % (self.patch_size * 2 ** (n - 1)):
            raise ValueError(
                f"AgentSwinConfig: pretrain_image_size={self.pretrain_image_size} must be divisible by "
                f"patch_size * 2**(stages-1) = {self.patch_size * 2 ** (n - 1)}"
            )
        if not 0 <= self.auxiliary_in_index < n:
            raise ValueError(f"AgentSwinConfig: auxiliary_in_index={self.auxiliary_in_index} is not a stage index")


__all__ = ["AgentSwinConfig", "expand_swin_attention_layout"]
