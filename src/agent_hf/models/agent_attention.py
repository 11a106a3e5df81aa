"""Agent attention (Han et al., "Agent Attention: On the Integration of Softmax and Linear Attention").

Written once and used by both Agent-Swin and Agent-PVT. For N = H*W query tokens and n = h_a*w_a agent tokens A
(the queries Q average-pooled to an h_a x w_a grid), per head with scale s = d ** scale_exponent:

    agent aggregation:  V_A = softmax(A K^T * s + B1) V      A: (n, d), K, V: (N, d)   -> (n, d)
    agent broadcast:    O   = softmax(Q A^T * s + B2) V_A    Q: (N, d)                 -> (N, d)
    output:             proj(O + DWC(V))                      DWC: depth-wise convolution of V as an (H, W) map

The agent bias B1 (n x N) is built from the official tables `an_bias`, `ah_bias`, `aw_bias`, and B2 (N x n) from
`na_bias`, `ha_bias`, `wa_bias`: `agent_attention_biases` holds this mapping (`BIAS_TABLES`) and both ways of
building the biases from the tables (the official construction and the factored form of the fast path).

The module has two implementations of the same computation, chosen by the config's `_attn_implementation`:

* ``"eager"`` -- the reference, in this file (`reference_agent_attention`), written to be checked against the
  equations above: the biases built exactly as the official code builds them
  (`agent_attention_biases.official_position_biases`), both softmax steps written out. `output_attentions`
  always uses it (the attention weights only exist there).
* anything else (``"sdpa"``, the default) -- the fast path (`agent_attention_fast.fast_agent_attention`): the
  biases kept in a factored form and materialized a few rows of the map at a time, the fused attention kernels.

Both compute the same values up to floating-point rounding (tests/test_parity.py holds both implementations to the
official outputs at 1e-5; tests/test_performance_features.py compares them, values and gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .agent_attention_biases import AGENT_TABLE_SIZE, official_position_biases
from .agent_attention_fast import fast_agent_attention
from .export_ops import adaptive_avg_pool2d

# The values of a config's `_attn_implementation` that every attention module of both families takes.
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


# ----------------------------------------------------------------------------------------------------------------
# The reference implementation ("eager"): the paper's equations, the biases built the official way
# ----------------------------------------------------------------------------------------------------------------


def reference_agent_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    agents: torch.Tensor,
    agent_to_token: torch.Tensor,
    token_to_agent: torch.Tensor,
    scale: float,
    dropout: float = 0.0,
    training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two softmax steps of agent attention, agent aggregation then agent broadcast, written out.

    Args:
        query (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): Q.
        key (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): K.
        value (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): V.
        agents (`torch.Tensor` of shape `(batch_size, heads, agents, head_dim)`): A, the pooled queries.
        agent_to_token (`torch.Tensor` of shape `(heads, agents, tokens)`): B1.
        token_to_agent (`torch.Tensor` of shape `(heads, tokens, agents)`): B2.
        scale (`float`): s.
        dropout (`float`): dropout on both steps' attention weights (in training).
        training (`bool`): whether dropout is active.

    Returns O (batch_size, heads, tokens, head_dim) and the weights of the agent aggregation (batch_size, heads,
    agents, tokens) and of the agent broadcast (batch_size, heads, tokens, agents).
    """
    # Agent aggregation: the agents attend to the keys.
    agent_weights = torch.softmax((agents * scale) @ key.transpose(-2, -1) + agent_to_token, dim=-1)
    agent_values = F.dropout(agent_weights, dropout, training) @ value  # V_A
    # Agent broadcast: the queries attend to the agents.
    token_weights = torch.softmax((query * scale) @ agents.transpose(-2, -1) + token_to_agent, dim=-1)
    output = F.dropout(token_weights, dropout, training) @ agent_values
    return output, agent_weights, token_weights


# ----------------------------------------------------------------------------------------------------------------
# The module
# ----------------------------------------------------------------------------------------------------------------


class AgentSplitLinear(nn.Linear):
    """A fused projection (Agent-Swin's `qkv`, Agent-PVT's `kv`) that can return its output as separate
    contiguous chunks.

    `forward(x)` is a plain `nn.Linear` ((B, N, C_in) -> (B, N, C_out)); `forward(x, chunks=k)` returns k
    tensors (B, N, C_out / k), each computed with its own row slice of the weight (same weights, same
    products). The slicing happens inside the module's own `forward`, so hooks that load the weight only
    when the module runs (accelerate's CPU/disk offload) see it loaded.
    """

    def forward(self, input: torch.Tensor, chunks: int = 1):
        if chunks == 1:
            return super().forward(input)
        size = self.out_features // chunks
        return tuple(
            F.linear(
                input,
                self.weight[i * size : (i + 1) * size],
                None if self.bias is None else self.bias[i * size : (i + 1) * size],
            )
            for i in range(chunks)
        )


def split_projection(layer: nn.Module, hidden_states: torch.Tensor, chunks: int) -> tuple[torch.Tensor, ...]:
    """`chunks` contiguous outputs (B, N, C) of a fused projection `layer` applied to `hidden_states` (B, N, C_in).

    An `AgentSplitLinear` computes them directly; any other module (e.g. one wrapped by an adapter library) runs
    as a whole and its output is chunked and made contiguous.
    """
    if type(layer) is AgentSplitLinear:
        return layer(hidden_states, chunks=chunks)
    return tuple(t.contiguous() for t in layer(hidden_states).chunk(chunks, dim=-1))


class DepthwiseConv2d(nn.Conv2d):
    """The DWC of the paper: a k x k depth-wise convolution (same padding) over V as a map, (B, C, H, W) -> same.

    On a channels-last input the weight's gradient would come back with channels-last strides ((k*k, 1, k, 1)
    instead of the weight's (k*k, k*k, k, 1)), which DDP warns about ("grad strides do not match bucket view
    strides"); reading the weight through a flat view gives it the weight's own strides. A module (not a function
    call) so that forward hooks, e.g. accelerate's offloading, still see it.
    """

    def __init__(self, channels: int, kernel_size: int):
        super().__init__(channels, channels, kernel_size=kernel_size, padding=kernel_size // 2, groups=channels)

    def forward(self, value_map: torch.Tensor) -> torch.Tensor:
        weight = self.weight.flatten(1).view_as(self.weight)
        return F.conv2d(value_map, weight, self.bias, padding=self.padding, groups=self.groups)


class AgentAttention(nn.Module):
    """Multi-head agent attention over a whole (H, W) feature map.

    Args:
        dim (`int`): channels C.
        num_heads (`int`): heads h (head_dim d = C / h).
        agent_num (`int`): agents at pretraining (square: a sqrt x sqrt grid).
        agent_grid (`tuple[int, int]`): (h_a, w_a) agent grid used at the current (downstream) resolution.
        table_size (`tuple[int, int]`): (H0, W0) grid on which `ah/aw/ha/wa` were learned (pretraining feature size).
        key_table_size (`tuple[int, int]`, *optional*): grid of `ah/aw` if different (PVT with spatial reduction).
        kernel_size (`int`): kernel of the depth-wise convolution on V.
        scale_exponent (`float`): the attention scale is d ** scale_exponent.
        qkv_bias (`bool`): bias of the input projections.
        fused_qkv (`bool`): one `qkv` projection (Swin) or `q` and `kv` projections (PVT), as in the checkpoints.
        attn_drop (`float`): dropout on the attention weights.
        proj_drop (`float`): dropout after `proj`.
        config (`PreTrainedConfig`): the model config, read at call time for `_attn_implementation` ("eager": the
            reference implementation; anything else: the fast path), as transformers models do.

    Input `hidden_states` (B, N=H*W, C), row-major over (H, W); output (B, N, C).

    `bias_block_size` (class attribute, or per instance) bounds the bias elements the fast CPU inference path
    materializes at once per attention step (2**21: 8 MB in fp32; at least one row of the map).
    `bias_factor_cache_size` is the number of map sizes whose bias factors the fast path keeps at inference (0:
    none; Agent-Swin-T's factors at 512x2048 take about 160 MB, its whole biases would take 0.95 GB).
    `fused_kernel` (class attribute, or per instance) selects the fused Triton kernels of the fast path
    (`agent_attention_kernels`): "auto" (on CUDA where Triton is installed), "triton" (wherever Triton runs),
    "flex" (the same computation by FlexAttention, to compare) or "torch" (neither).
    """

    bias_block_size: int = 1 << 21
    bias_factor_cache_size: int = 4
    fused_kernel: str = "auto"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        agent_num: int,
        agent_grid: tuple[int, int],
        table_size: tuple[int, int],
        key_table_size: tuple[int, int] | None = None,
        kernel_size: int = 3,
        scale_exponent: float = -0.5,
        qkv_bias: bool = True,
        fused_qkv: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        config=None,
    ):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**scale_exponent
        self.pool_size = int(round(agent_num**0.5))
        self.agent_grid = tuple(int(s) for s in agent_grid)
        self.config = config
        key_table_size = key_table_size or table_size

        if fused_qkv:
            self.qkv = AgentSplitLinear(dim, dim * 3, bias=qkv_bias)
        else:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = AgentSplitLinear(dim, dim * 2, bias=qkv_bias)
        self.fused_qkv = fused_qkv
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dwc = DepthwiseConv2d(dim, kernel_size)

        t = AGENT_TABLE_SIZE
        # Shapes (and names) exactly as in the official checkpoints; initialized by the model's `_init_weights`
        # (truncated normal, std `initializer_range`). B1 (agent aggregation) is built from an/ah/aw, B2 (agent
        # broadcast) from na/ha/wa: `agent_attention_biases.BIAS_TABLES`.
        self.an_bias = nn.Parameter(torch.zeros(num_heads, agent_num, t, t))
        self.na_bias = nn.Parameter(torch.zeros(num_heads, agent_num, t, t))
        self.ah_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, key_table_size[0], 1))
        self.aw_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, 1, key_table_size[1]))
        self.ha_bias = nn.Parameter(torch.zeros(1, num_heads, table_size[0], 1, agent_num))
        self.wa_bias = nn.Parameter(torch.zeros(1, num_heads, 1, table_size[1], agent_num))
        self._bias_factor_cache = {}  # `agent_attention_biases.cached_bias_factors`; never saved

    def _bias_tables(self) -> tuple[nn.Parameter, ...]:
        # The order in which the weight initialization draws them.
        return (self.an_bias, self.na_bias, self.ah_bias, self.aw_bias, self.ha_bias, self.wa_bias)

    def _project(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """query, key, value (B, N, C) each as its own contiguous tensor.

        The fused `qkv` (or `kv`) projection returns one contiguous tensor per C-row slice of its weight
        (`AgentSplitLinear`) instead of one (B, N, 3C) output chunked into strided views: a contiguous query
        is then a channels-last map that `adaptive_avg_pool2d` reads in place, and a contiguous value one the
        depth-wise convolution reads in place, where the strided views cost a full copy each.
        """
        if self.fused_qkv:
            return split_projection(self.qkv, hidden_states, 3)
        key, value = split_projection(self.kv, hidden_states, 2)
        return self.q(hidden_states), key, value

    def forward(self, hidden_states: torch.Tensor, height: int, width: int, output_attentions: bool = False):
        """Agent attention over a (height, width) map.

        Args:
            hidden_states (`torch.Tensor` of shape `(batch_size, height * width, dim)`): tokens, row-major.
            height (`int`): rows H of the map.
            width (`int`): columns W of the map.
            output_attentions (`bool`): also return both steps' attention weights (computed by the reference).

        Returns the output (B, H*W, C); with `output_attentions`, `(output, (agent_to_token, token_to_agent))`
        where agent_to_token (B, h, n, H*W) are the agent aggregation's weights (each agent over the tokens) and
        token_to_agent (B, h, H*W, n) the agent broadcast's (each token over the agents), n = h_a * w_a agents.
        """
        batch, tokens, channels = hidden_states.shape
        if tokens != height * width:
            raise ValueError(f"AgentAttention: got {tokens} tokens for a {height}x{width} map")
        query, key, value = self._project(hidden_states)
        heads, head_dim = self.num_heads, self.head_dim
        agent_count = self.agent_grid[0] * self.agent_grid[1]

        # Agent tokens A: the queries average-pooled to the agent grid, (B, h, n, d), contiguous (the fused
        # kernel needs a unit stride on the last dim; the pooled map is tiny).
        query_map = query.view(batch, height, width, channels).permute(0, 3, 1, 2)  # channels-last view
        agents = adaptive_avg_pool2d(query_map, self.agent_grid).reshape(batch, heads, head_dim, agent_count)
        agents = agents.transpose(-2, -1).contiguous()

        def split_heads(x):  # (B, N, C) -> (B, h, N, d), a strided view
            return x.view(batch, tokens, heads, head_dim).transpose(1, 2)

        # O, token-major (B, N, h, d): agent aggregation, then agent broadcast.
        weights = None
        if output_attentions or getattr(self.config, "_attn_implementation", None) == "eager":
            agent_to_token, token_to_agent = official_position_biases(self, height, width)  # B1, B2
            dtype = query.dtype
            attention_output, agent_weights, token_weights = reference_agent_attention(
                split_heads(query),
                split_heads(key),
                split_heads(value),
                agents,
                agent_to_token.to(dtype),
                token_to_agent.to(dtype),
                self.scale,
                self.attn_drop,
                self.training,
            )
            attention_output = attention_output.transpose(1, 2)
            weights = (agent_weights, token_weights)
        else:
            attention_output = fast_agent_attention(
                self, split_heads(query), split_heads(key), split_heads(value), agents, height, width
            )
        # Q and K are not read past the attention: their maps go before DWC(V) takes one, so that no more (B, N, C)
        # maps are alive at once than during the attention.
        del query, key, query_map

        # DWC(V): the convolution reads V as a channels-last map in place and writes a channels-last map, i.e.
        # (B, N, C) row-major.
        value_map = value.view(batch, height, width, channels).permute(0, 3, 1, 2)
        dwc_v = self.dwc(value_map).permute(0, 2, 3, 1).reshape(batch, tokens, heads, head_dim)

        # proj(O + DWC(V)). The sum is written into dwc_v, the convolution's fresh output, which autograd does not
        # keep: no new (B, N, C) map, and a head-major O is laid out token-major in the same pass (addition
        # commutes, so these are the bits of O + DWC(V)).
        output = self.proj(dwc_v.add_(attention_output).view(batch, tokens, channels))
        output = self.proj_drop(output)
        return (output, weights) if output_attentions else output

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, agent_grid={self.agent_grid}, pool_size={self.pool_size}"


__all__ = [
    "ATTENTION_IMPLEMENTATIONS",
    "AgentAttention",
    "AgentSplitLinear",
    "reference_agent_attention",
    "split_projection",
]
