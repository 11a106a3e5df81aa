"""Configuration of Agent-Swin backbones and their UperNet segmentation model.

Shipped to the Hub with the model: imports only torch/transformers and sibling modules.
"""

from transformers.backbone_utils import BackboneConfigMixin
from transformers.configuration_utils import PreTrainedConfig


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


class AgentSwinConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of an Agent-Swin Transformer (Han et al., ECCV 2024) and of its UperNet segmentation
    model (decode head + auxiliary FCN head), as in the official `AgentSwinTransformer` + `UPerHead` +
    `FCNHead` of mmsegmentation. Defaults build Agent-Swin-T + UperNet for ADE20K.

    Backbone:
        pretrain_image_size (`int`, defaults to 224): image size of the ImageNet pretraining; the agent
            bias tables `ah/aw/ha/wa` of stage i were learned on a (pretrain_image_size / patch_size / 2**i)
            grid and are interpolated to the actual feature size.
        patch_size (`int`, defaults to 4), num_channels (`int`, defaults to 3), embed_dim (`int`, 96),
        depths (`list[int]`, [2, 2, 6, 2]), num_heads (`list[int]`, [3, 6, 12, 24]), mlp_ratio (`float`, 4.0).
        window_size (`int`, defaults to 7): window of the shifted-window (`B`) blocks (official
            `max(7, window_size // 8)` with its `window_size=56`).
        attn_type (`str`, defaults to "AAAB"): official block layout, see `expand_swin_attention_layout`.
        agent_num (`list[int]`, [9, 16, 49, 49]): agents per stage at pretraining (a square number).
        downstream_agent_shapes (`list[list[int]]`, [[9, 9], [12, 12], [14, 14], [7, 7]]): agent grid per
            stage used at segmentation resolution (the agent tokens are an adaptive average pool of the
            queries to this grid; the bias tables are interpolated to it).
        agent_kernel_size (`int`, defaults to 3): kernel of the depth-wise convolution (DWC) on the values.
        attention_scale_exponent (`float`, defaults to -0.5): agent attention scale is head_dim**exponent.
        qkv_bias (`bool`, defaults to True), qk_scale (`float`, optional): scale of the window blocks
            (default head_dim**-0.5).
        hidden_dropout_prob, attention_probs_dropout_prob, drop_path_rate (`float`): official drop_rate,
            attn_drop_rate, drop_path_rate (stochastic depth grows linearly over blocks).
        hidden_act (`str`, "gelu"), layer_norm_eps (`float`, 1e-5), patch_norm (`bool`, True).
        use_absolute_embeddings (`bool`, False): official `ape`.
        attn_implementation: "sdpa" (default) or "eager", as in transformers.

    Segmentation heads (UperNet, mmseg `UPerHead`/`FCNHead`):
        decoder_hidden_size (`int`, 512), pool_scales (`list[int]`, [1, 2, 3, 6]), classifier_dropout
        (`float`, 0.1, `Dropout2d` before the classifier), use_auxiliary_head (`bool`, True),
        auxiliary_in_index (`int`, 2), auxiliary_channels (`int`, 256), auxiliary_num_convs (`int`, 1),
        auxiliary_concat_input (`bool`, False), auxiliary_loss_weight (`float`, 0.4),
        loss_ignore_index (`int`, 255), align_corners (`bool`, False).
    """

    model_type = "agent_swin"
    _auto_class = "AutoConfig"  # saved with its code (see AutoMapMixin)
    attribute_map = {"num_attention_heads": "num_heads", "num_hidden_layers": "num_layers"}

    pretrain_image_size: int = 224
    patch_size: int = 4
    num_channels: int = 3
    embed_dim: int = 96
    depths: list[int] | tuple[int, ...] = (2, 2, 6, 2)
    num_heads: list[int] | tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    attn_type: str = "AAAB"
    agent_num: list[int] | tuple[int, ...] = (9, 16, 49, 49)
    downstream_agent_shapes: list | tuple = ((9, 9), (12, 12), (14, 14), (7, 7))
    agent_kernel_size: int = 3
    attention_scale_exponent: float = -0.5
    qkv_bias: bool = True
    qk_scale: float | None = None
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.3
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    patch_norm: bool = True
    use_absolute_embeddings: bool = False
    initializer_range: float = 0.02
    # UperNet decode head + auxiliary FCN head
    decoder_hidden_size: int = 512
    pool_scales: list[int] | tuple[int, ...] = (1, 2, 3, 6)
    classifier_dropout: float = 0.1
    use_auxiliary_head: bool = True
    auxiliary_in_index: int = 2
    auxiliary_channels: int = 256
    auxiliary_num_convs: int = 1
    auxiliary_concat_input: bool = False
    auxiliary_loss_weight: float = 0.4
    loss_ignore_index: int = 255
    align_corners: bool = False
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs):
        self.depths = list(self.depths)
        self.num_heads = list(self.num_heads)
        self.agent_num = [int(n) for n in self.agent_num]
        self.downstream_agent_shapes = [list(s) for s in self.downstream_agent_shapes]
        self.pool_scales = list(self.pool_scales)
        self.num_layers = len(self.depths)
        self.hidden_size = int(self.embed_dim * 2 ** (self.num_layers - 1))
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, self.num_layers + 1)]
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

    @property
    def block_attention_types(self) -> list[list[str]]:
        """Per stage, per block: ``"A"`` (agent attention) or ``"B"`` (shifted-window attention)."""
        return expand_swin_attention_layout(self.attn_type, self.depths)

    def _check_consistency(self) -> None:
        n = self.num_layers
        for name in ("num_heads", "agent_num", "downstream_agent_shapes"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"AgentSwinConfig: {name} has {len(getattr(self, name))} entries but depths has {n} stages "
                    f"(depths={self.depths}, {name}={getattr(self, name)}); give one entry per stage"
                )
        expand_swin_attention_layout(self.attn_type, self.depths)  # validates attn_type
        for i, (heads, agents, grid) in enumerate(zip(self.num_heads, self.agent_num, self.downstream_agent_shapes)):
            dim = self.embed_dim * 2**i
            if dim % heads:
                raise ValueError(f"AgentSwinConfig: stage {i} width {dim} is not divisible by num_heads={heads}")
            if int(round(agents**0.5)) ** 2 != agents:
                raise ValueError(f"AgentSwinConfig: agent_num[{i}]={agents} must be a square number (e.g. 9, 16, 49)")
            if len(grid) != 2 or min(grid) < 1:
                raise ValueError(f"AgentSwinConfig: downstream_agent_shapes[{i}]={grid} must be [height, width] >= 1")
        if self.pretrain_image_size % (self.patch_size * 2 ** (n - 1)):
            raise ValueError(
                f"AgentSwinConfig: pretrain_image_size={self.pretrain_image_size} must be divisible by "
                f"patch_size * 2**(stages-1) = {self.patch_size * 2 ** (n - 1)}"
            )
        if not 0 <= self.auxiliary_in_index < n:
            raise ValueError(f"AgentSwinConfig: auxiliary_in_index={self.auxiliary_in_index} is not a stage index")


__all__ = ["AgentSwinConfig", "expand_swin_attention_layout"]
