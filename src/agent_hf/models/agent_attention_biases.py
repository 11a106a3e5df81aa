"""The position biases of agent attention: which learned tables each of the paper's two steps adds, the official
construction of the biases from them (the reference), and the factored form the fast paths use.

The paper's two softmax steps and their biases, with the official names of the learned tables each bias is built
from (names and shapes as in the official checkpoints; h heads, A pretraining agents, (H0, W0) the pretraining
token grid: of the keys for `ah_bias`/`aw_bias`, of the queries for `ha_bias`/`wa_bias`):

    step               equation                           bias (name in the code)     official tables
    agent aggregation  V_A = softmax(A K^T * s + B1) V    B1 (n x N), agent_to_token  an_bias, ah_bias, aw_bias
    agent broadcast    O   = softmax(Q A^T * s + B2) V_A  B2 (N x n), token_to_agent  na_bias, ha_bias, wa_bias

(in the aggregation the n agents A attend to the N keys; in the broadcast the N queries attend to the agents),

with the shapes an_bias, na_bias (h, A, 7, 7); ah_bias (1, h, A, H0, 1); aw_bias (1, h, A, 1, W0); ha_bias
(1, h, H0, 1, A); wa_bias (1, h, 1, W0, A).

`BIAS_TABLES` is this table for the code: every bias below reads its tables through it. Each bias is the 7x7 table
per agent plus the row + column tables, resized bilinearly to the (H, W) map, then along the agent axis (the
pretraining agents viewed as a pool x pool grid) to the downstream agent grid (h_a, w_a).

Shipped to the Hub with the model: imports only torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Side of the square per-agent tables `an_bias`/`na_bias`, fixed by the official implementation.
AGENT_TABLE_SIZE = 7

# The paper's two steps -> the official names of the tables of their bias: (the 7x7 table, the row table, the
# column table). See the module docstring.
BIAS_TABLES = {
    "agent_aggregation": ("an_bias", "ah_bias", "aw_bias"),
    "agent_broadcast": ("na_bias", "ha_bias", "wa_bias"),
}

LOW_PRECISION_DTYPES = (torch.float16, torch.bfloat16)


def step_tables(attention: nn.Module, step: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (7x7, row, column) bias tables of an `AgentAttention` for one of the paper's steps (`BIAS_TABLES`)."""
    return tuple(getattr(attention, name) for name in BIAS_TABLES[step])


# ----------------------------------------------------------------------------------------------------------------
# The official construction (the reference, "eager")
# ----------------------------------------------------------------------------------------------------------------


def _resize_to_map(tables: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(h, A, h0, w0) -> (h, A, H, W): each agent's table bilinearly resized to the feature map."""
    return F.interpolate(tables, size=(height, width), mode="bilinear", align_corners=False)


def _resize_agent_axis(maps: torch.Tensor, pool_size: int, agent_grid: tuple[int, int]) -> torch.Tensor:
    """(h, A, H, W) -> (h, H*W, n): the A = pool x pool pretraining agents resized to the downstream agent grid."""
    heads, _, height, width = maps.shape
    maps = maps.reshape(heads, pool_size, pool_size, height * width).permute(0, 3, 1, 2)
    maps = F.interpolate(maps, size=agent_grid, mode="bilinear", align_corners=False)
    return maps.reshape(heads, height * width, agent_grid[0] * agent_grid[1])


def official_position_biases(attention: nn.Module, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two position biases of an `AgentAttention` for a (height, width) map, built as the official code builds
    them.

    Returns B1 (h, n, H*W) (agent aggregation: agents over tokens) and B2 (h, H*W, n) (agent broadcast: tokens over
    agents). Each is the sum of two terms resized the same way: the 7x7 table and the row + column tables, first to
    the (H, W) map, then along the agent axis to the agent grid.
    """
    heads, pool, grid = attention.num_heads, attention.pool_size, attention.agent_grid

    def position_bias(square, rows_plus_cols):  # (h, A, 7, 7), (h, A, h0, w0) -> (h, H*W, n)
        first = _resize_agent_axis(_resize_to_map(square, height, width), pool, grid)
        second = _resize_agent_axis(_resize_to_map(rows_plus_cols, height, width), pool, grid)
        return first + second

    agent_square, agent_rows, agent_cols = step_tables(attention, "agent_aggregation")
    token_square, token_rows, token_cols = step_tables(attention, "agent_broadcast")
    agent_rows_cols = (agent_rows + agent_cols).squeeze(0)  # (h, A, h0, w0)
    token_rows_cols = (token_rows + token_cols).squeeze(0).permute(0, 3, 1, 2)  # (h, A, H0, W0)
    agent_to_token = position_bias(agent_square, agent_rows_cols).transpose(1, 2)  # B1
    token_to_agent = position_bias(token_square, token_rows_cols)  # B2
    return agent_to_token.reshape(heads, -1, height * width), token_to_agent


# ----------------------------------------------------------------------------------------------------------------
# The factored form (the fast paths)
# ----------------------------------------------------------------------------------------------------------------


def bilinear_matrix(in_size: int, out_size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(out_size, in_size) matrix M with M @ x == 1-D bilinear resize of x (align_corners=False).

    Built by resizing one-hot rows with `F.interpolate`, so the weights are PyTorch's own.
    """
    if device is not None and torch.device(device).type == "meta":
        # Counting FLOPs on the meta device: there F.interpolate runs a Python decomposition (~20 ms a call, most of a
        # large model's count); the matrix is tiny and only its shape matters.
        return bilinear_matrix(in_size, out_size, "cpu", dtype).to("meta")
    eye = torch.eye(in_size, device=device, dtype=torch.float32).view(1, in_size, in_size, 1)
    weights = F.interpolate(eye, size=(out_size, 1), mode="bilinear", align_corners=False)
    return weights.view(in_size, out_size).t().to(dtype)


@dataclass
class AgentBiasFactors:
    """Both position biases of one (H, W) map in factored form: a few small tensors from which any block of rows
    of the map is materialized exactly, with one small GEMM and one broadcast add.

    All agent axes are already resized to the agent grid (n agents). With R_h (H x 7) and R_w (W x 7) PyTorch's
    bilinear resize matrices from the 7x7 tables, S (per head and agent, 7 x 7) the resized 7x7 tables and
    rows / cols the row and column tables resized to H / W, each bias at token (y, x) is

        bias[(y, x), a] = sum_i R_h[y, i] T[i, x, a] + cols[x, a] + rows[y, a],  T[i, x, a] = sum_j S_a[i, j] R_w[x, j]

    i.e. `[R_h | 1]` (H x 8) times a stacked table `[T; cols]` (8 x W per agent), plus the row term.

    Attributes:
        resize_h (`torch.Tensor` of shape `(height, 8)`): `[R_h | 1]`.
        agent_table (`torch.Tensor` of shape `(heads, 8, agents, width)`): `[T; cols]` of B_an.
        agent_rows (`torch.Tensor` of shape `(heads, height, agents, 1)`): rows of B_an.
        token_table (`torch.Tensor` of shape `(heads, 8, width, agents)`): `[T; cols]` of B_na.
        token_rows (`torch.Tensor` of shape `(heads, height, 1, agents)`): rows of B_na.
    """

    resize_h: torch.Tensor
    agent_table: torch.Tensor
    agent_rows: torch.Tensor
    token_table: torch.Tensor
    token_rows: torch.Tensor

    @property
    def height(self) -> int:
        return self.resize_h.shape[0]

    @property
    def width(self) -> int:
        return self.agent_table.shape[-1]

    def _rows_times_table(self, table: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """`[R_h | 1]` rows [start, stop) times each head's stacked table: (heads, rows, *table.shape[2:])."""
        heads, size = table.shape[:2]
        block = torch.matmul(self.resize_h[start:stop], table.reshape(heads, size, -1))
        return block.view(heads, stop - start, *table.shape[2:])

    def agent_to_token_block(self, start: int, stop: int) -> torch.Tensor:
        """B_an for the tokens of map rows [start, stop), one map row per leading index: (rows, heads, agents, W)
        (a transposed view of a contiguous (heads, rows, agents, W) tensor)."""
        block = self._rows_times_table(self.agent_table, start, stop)
        return block.add_(self.agent_rows[:, start:stop]).transpose(0, 1)

    def token_to_agent_block(self, start: int, stop: int) -> torch.Tensor:
        """B_na for the tokens of map rows [start, stop): (heads, (stop - start) * W, agents), contiguous."""
        block = self._rows_times_table(self.token_table, start, stop)
        return block.add_(self.token_rows[:, start:stop]).flatten(1, 2)

    def agent_to_token(self) -> torch.Tensor:
        """The whole B_an: (heads, agents, H * W), contiguous."""
        heads, _, agents, _ = self.agent_table.shape
        return self.agent_to_token_block(0, self.height).permute(1, 2, 0, 3).reshape(heads, agents, -1)

    def token_to_agent(self) -> torch.Tensor:
        """The whole B_na: (heads, H * W, agents), contiguous."""
        return self.token_to_agent_block(0, self.height)


def _to_agent_grid(table: torch.Tensor, agent_h: torch.Tensor, agent_w: torch.Tensor) -> torch.Tensor:
    """(h, p*p, *rest) -> (h, h_a*w_a, *rest): the agent axis, viewed as a p x p grid, bilinearly resized."""
    heads, rest, pool = table.shape[0], table.shape[2:], agent_h.shape[1]
    table = table.reshape(heads, pool, pool, -1)
    table = torch.einsum("ip,hpqr,jq->hijr", agent_h, table, agent_w)
    return table.reshape(heads, agent_h.shape[0] * agent_w.shape[0], *rest)


def agent_bias_factors(attention: nn.Module, height: int, width: int) -> AgentBiasFactors:
    """`AgentBiasFactors` of an `AgentAttention`'s tables for a (height, width) map (differentiable in the tables).

    Computed in fp32 for fp16/bf16 tables and outside autocast: the biases add to fp32 scores.
    """
    tables = attention.an_bias
    if tables.device.type == "meta":  # shape-only runs (FLOP counting): autocast knows no meta device
        return _agent_bias_factors(attention, height, width)
    with torch.autocast(tables.device.type, enabled=False):
        return _agent_bias_factors(attention, height, width)


def _agent_bias_factors(attention: nn.Module, height: int, width: int) -> AgentBiasFactors:
    heads, pool, (grid_h, grid_w) = attention.num_heads, attention.pool_size, attention.agent_grid
    device, table_size = attention.an_bias.device, attention.an_bias.shape[-1]
    dtype = torch.float32 if attention.an_bias.dtype in LOW_PRECISION_DTYPES else attention.an_bias.dtype

    an, ah, aw = step_tables(attention, "agent_aggregation")
    na, ha, wa = step_tables(attention, "agent_broadcast")
    # Every table with the pretraining agents on axis 1, (h, A, r), resized to the agent grid together: one product
    # instead of six (a trace or an eager step runs a few hundred ops fewer per block).
    tables = [
        an.reshape(heads, -1, table_size * table_size),
        aw.reshape(heads, -1, aw.shape[4]),
        ah.reshape(heads, -1, ah.shape[3]),
        na.reshape(heads, -1, table_size * table_size),
        wa.reshape(heads, -1, wa.shape[-1]).transpose(1, 2),
        ha.reshape(heads, -1, ha.shape[-1]).transpose(1, 2),
    ]
    agent_h = bilinear_matrix(pool, grid_h, device, dtype)
    agent_w = agent_h if grid_w == grid_h else bilinear_matrix(pool, grid_w, device, dtype)
    gridded = _to_agent_grid(torch.cat(tables, dim=-1).to(dtype), agent_h, agent_w)
    # (h, n, r) each, contiguous: CPU matmuls over slices of a longer last axis fall back to one GEMM per batch
    an, aw, ah, na, wa, ha = (part.contiguous() for part in gridded.split([table.shape[-1] for table in tables], -1))
    agents = an.shape[1]
    # Each matrix built once: both steps' row and column tables share them. (Not memoized by size: under torch.export
    # the map's height and width are symbols.)
    resize_h = bilinear_matrix(table_size, height, device, dtype)
    resize_w = bilinear_matrix(table_size, width, device, dtype)
    rows_to_height = bilinear_matrix(ah.shape[-1], height, device, dtype).t()
    cols_to_width = bilinear_matrix(aw.shape[-1], width, device, dtype).t()

    # B1 (agent aggregation), agents before tokens: T[i, x] = S_a[i, :] R_w[x, :]^T, stacked as (h, 8, n, W).
    agent_t = torch.matmul(an.reshape(heads, agents, table_size, table_size), resize_w.t()).transpose(1, 2)
    # B2 (agent broadcast), tokens before agents: T[i, x, a] = R_w[x, :] S_a[i, :]^T, stacked as (h, 8, W, n).
    token_t = torch.einsum("xj,haij->hixa", resize_w, na.reshape(heads, agents, table_size, table_size))
    ones = torch.ones(height, 1, device=device, dtype=dtype)
    return AgentBiasFactors(
        resize_h=torch.cat([resize_h, ones], dim=1),
        agent_table=torch.cat([agent_t, (aw @ cols_to_width).unsqueeze(1)], dim=1),
        agent_rows=(ah @ rows_to_height).transpose(1, 2).unsqueeze(-1).contiguous(),
        token_table=torch.cat([token_t, (wa @ cols_to_width).transpose(1, 2).unsqueeze(1)], dim=1),
        token_rows=(ha @ rows_to_height).transpose(1, 2).unsqueeze(2).contiguous(),
    )


def cached_bias_factors(attention: nn.Module, height: int, width: int) -> AgentBiasFactors:
    """`agent_bias_factors` (no gradient), kept on the module for the last few map sizes it ran at.

    The key holds each table's storage and version counter, so that loading or editing the weights (in place, or
    by replacing them, e.g. `model.to(device)`) computes them again. `attention.bias_factor_cache_size` entries at
    most (0: no cache).
    """
    tables = attention._bias_tables()
    key = (height, width) + tuple((t.device, t.dtype, t.data_ptr(), t._version) for t in tables)
    cache = attention._bias_factor_cache
    factors = cache.pop(key, None)
    if factors is None:
        with torch.no_grad():
            factors = agent_bias_factors(attention, height, width)
    if attention.bias_factor_cache_size > 0:
        cache[key] = factors  # most recently used last
        while len(cache) > attention.bias_factor_cache_size:
            cache.pop(next(iter(cache)))
    return factors


__all__ = [
    "AGENT_TABLE_SIZE",
    "BIAS_TABLES",
    "AgentBiasFactors",
    "agent_bias_factors",
    "bilinear_matrix",
    "cached_bias_factors",
    "official_position_biases",
    "step_tables",
]
