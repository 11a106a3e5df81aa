"""Agent attention (Han et al., "Agent Attention: On the Integration of Softmax and Linear Attention").

Written once and used by both Agent-Swin and Agent-PVT. For N = H*W query tokens and n = h_a*w_a
agent tokens (an adaptive average pool of the queries):

    agent step:  V_A = softmax(A K^T * s + B_an) V        A: (n, d), K, V: (N, d)   -> (n, d)
    query step:  O   = softmax(Q A^T * s + B_na) V_A      Q: (N, d)                 -> (N, d)
    output:      proj(O + DWC(V))

The biases B_an (n x N) and B_na (N x n) come from six learned tables: a 7x7 table per agent
(`an_bias`, `na_bias`) plus separable row/column tables learned at the pretraining resolution
(`ah_bias` + `aw_bias`, `ha_bias` + `wa_bias`). The official code bilinearly resizes these tables to
(H, W) and then, viewing the pretraining agents as a sqrt(agent_num)^2 grid, to the downstream agent
grid (h_a, w_a), on every call and once per image. Both resizes are linear maps on different axes, so
we apply them as small 1-D interpolation matrices (exactly PyTorch's bilinear weights), agent axis
first while the tables are tiny, and broadcast over the batch. The result is cached per resolution
when no gradient is needed, and recomputed whenever a table changes (parameter version counters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Side of the square per-agent tables `an_bias`/`na_bias`, fixed by the official implementation.
AGENT_TABLE_SIZE = 7
_BIAS_CACHE_SIZE = 4


def bilinear_matrix(in_size: int, out_size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(out_size, in_size) matrix M with M @ x == 1-D bilinear resize of x (align_corners=False).

    Built by resizing one-hot rows with `F.interpolate`, so the weights are PyTorch's own.
    """
    eye = torch.eye(in_size, device=device, dtype=torch.float32).view(1, in_size, in_size, 1)
    weights = F.interpolate(eye, size=(out_size, 1), mode="bilinear", align_corners=False)
    return weights.view(in_size, out_size).t().to(dtype)


class AgentAttention(nn.Module):
    """Multi-head agent attention over a whole (H, W) feature map.

    Args:
        dim: channels C. num_heads: heads h (head_dim d = C / h).
        agent_num: agents at pretraining (square: a sqrt x sqrt grid).
        agent_grid: (h_a, w_a) agent grid used at the current (downstream) resolution.
        table_size: (H0, W0) grid on which `ah/aw/ha/wa` were learned (the pretraining feature size).
        key_table_size: grid of `ah/aw` if different (PVT with spatial reduction divides it); default `table_size`.
        kernel_size: kernel of the depth-wise convolution on V.
        scale_exponent: attention scale is d ** scale_exponent.
        qkv_bias: bias of the input projections.
        fused_qkv: one `qkv` projection (Swin) or `q` and `kv` projections (PVT), as in the checkpoints.
        attn_drop, proj_drop: dropout on the attention weights / after `proj`.
        config: the model config, read at call time for `_attn_implementation` ("eager" for explicit
            softmax(QK^T)V, anything else for `F.scaled_dot_product_attention`), as transformers models do.

    Input `hidden_states` (B, N=H*W, C), row-major over (H, W); output (B, N, C).
    """

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
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        else:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.fused_qkv = fused_qkv
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dwc = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)

        t = AGENT_TABLE_SIZE
        # Shapes (and names) exactly as in the official checkpoints.
        self.an_bias = nn.Parameter(torch.zeros(num_heads, agent_num, t, t))
        self.na_bias = nn.Parameter(torch.zeros(num_heads, agent_num, t, t))
        self.ah_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, key_table_size[0], 1))
        self.aw_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, 1, key_table_size[1]))
        self.ha_bias = nn.Parameter(torch.zeros(1, num_heads, table_size[0], 1, agent_num))
        self.wa_bias = nn.Parameter(torch.zeros(1, num_heads, 1, table_size[1], agent_num))
        for table in self._bias_tables():
            nn.init.trunc_normal_(table, std=0.02)
        self._bias_cache: dict = {}

    def _bias_tables(self) -> tuple[nn.Parameter, ...]:
        return (self.an_bias, self.na_bias, self.ah_bias, self.aw_bias, self.ha_bias, self.wa_bias)

    def _resize_bias(self, square, rows, cols, height, width) -> torch.Tensor:
        """Bias (h, n_agents, H, W): official bilinear resize of `square` (h, A, 7, 7) + rows (h, A, H0)
        broadcast over columns + cols (h, A, W0) broadcast over rows, to (H, W), then of the agent axis
        (viewed as a pool x pool grid) to the agent grid. The sum of a row table and a column table
        resizes to the sum of their 1-D resizes, so no (H0, W0) map is ever built."""
        heads, p = self.num_heads, self.pool_size
        (ga_h, ga_w), device = self.agent_grid, square.device
        dtype = torch.float32 if square.dtype in (torch.float16, torch.bfloat16) else square.dtype
        agent_h = bilinear_matrix(p, ga_h, device, dtype)
        agent_w = bilinear_matrix(p, ga_w, device, dtype)

        def to_agent_grid(table):  # (h, p*p, *rest) -> (h, ga_h*ga_w, *rest)
            rest = table.shape[2:]
            table = table.to(dtype).reshape(heads, p, p, -1)
            table = torch.einsum("ip,hpqr,jq->hijr", agent_h, table, agent_w)
            return table.reshape(heads, ga_h * ga_w, *rest)

        square, rows, cols = to_agent_grid(square), to_agent_grid(rows), to_agent_grid(cols)
        t = AGENT_TABLE_SIZE
        bias = bilinear_matrix(t, height, device, dtype) @ square @ bilinear_matrix(t, width, device, dtype).t()
        rows = rows @ bilinear_matrix(rows.shape[-1], height, device, dtype).t()
        cols = cols @ bilinear_matrix(cols.shape[-1], width, device, dtype).t()
        return bias + rows.unsqueeze(-1) + cols.unsqueeze(-2)

    def agent_biases(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(agent->token bias (h, n, H*W), token->agent bias (h, H*W, n)) for a (height, width) map."""
        cacheable = not (torch.is_grad_enabled() and self.an_bias.requires_grad) and not torch.compiler.is_compiling()
        if cacheable:
            key = (height, width, self.an_bias.device, self.an_bias.dtype)
            versions = tuple(t._version for t in self._bias_tables()) + tuple(t.data_ptr() for t in self._bias_tables())
            hit = self._bias_cache.get(key)
            if hit is not None and hit[0] == versions:
                return hit[1], hit[2]
        heads, n = self.num_heads, self.agent_grid[0] * self.agent_grid[1]
        agent_to_token = self._resize_bias(
            self.an_bias,
            self.ah_bias.reshape(heads, -1, self.ah_bias.shape[3]),
            self.aw_bias.reshape(heads, -1, self.aw_bias.shape[4]),
            height,
            width,
        ).reshape(heads, n, height * width)
        token_to_agent = self._resize_bias(
            self.na_bias,
            self.ha_bias.reshape(heads, -1, self.ha_bias.shape[-1]).transpose(1, 2),
            self.wa_bias.reshape(heads, -1, self.wa_bias.shape[-1]).transpose(1, 2),
            height,
            width,
        )
        token_to_agent = token_to_agent.reshape(heads, n, height * width).transpose(1, 2)
        if cacheable:
            if len(self._bias_cache) >= _BIAS_CACHE_SIZE:
                self._bias_cache.pop(next(iter(self._bias_cache)))
            self._bias_cache[key] = (versions, agent_to_token, token_to_agent)
        return agent_to_token, token_to_agent

    def _attend(self, query, key, value, bias):
        """softmax(query key^T * scale + bias) value, over the last two dims; bias broadcasts over batch."""
        dropout = self.attn_drop if self.training else 0.0
        bias = bias.to(query.dtype)
        if getattr(self.config, "_attn_implementation", None) != "eager":
            return F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout, scale=self.scale)
        weights = torch.softmax((query * self.scale) @ key.transpose(-2, -1) + bias, dim=-1)
        return F.dropout(weights, dropout, self.training) @ value

    def forward(self, hidden_states: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, tokens, channels = hidden_states.shape
        if tokens != height * width:
            raise ValueError(f"AgentAttention: got {tokens} tokens for a {height}x{width} map")
        if self.fused_qkv:
            query, key, value = self.qkv(hidden_states).chunk(3, dim=-1)
        else:
            query = self.q(hidden_states)
            key, value = self.kv(hidden_states).chunk(2, dim=-1)
        heads, head_dim = self.num_heads, self.head_dim
        agent_count = self.agent_grid[0] * self.agent_grid[1]

        # Agent tokens: the queries average-pooled to the agent grid, (B, h, n, d).
        query_map = query.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        agents = F.adaptive_avg_pool2d(query_map, self.agent_grid).reshape(batch, heads, head_dim, agent_count)
        agents = agents.transpose(-2, -1)

        def split_heads(x):  # (B, N, C) -> (B, h, N, d)
            return x.reshape(batch, tokens, heads, head_dim).transpose(1, 2)

        agent_to_token, token_to_agent = self.agent_biases(height, width)
        agent_values = self._attend(agents, split_heads(key), split_heads(value), agent_to_token)
        output = self._attend(split_heads(query), agents, agent_values, token_to_agent)
        output = output.transpose(1, 2).reshape(batch, tokens, channels)

        value_map = value.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        output = output + self.dwc(value_map).permute(0, 2, 3, 1).reshape(batch, tokens, channels)
        return self.proj_drop(self.proj(output))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, agent_grid={self.agent_grid}, pool_size={self.pool_size}"


__all__ = ["AgentAttention", "bilinear_matrix"]
