"""Agent attention (Han et al., "Agent Attention: On the Integration of Softmax and Linear Attention").

Written once and used by both Agent-Swin and Agent-PVT. For N = H*W query tokens and n = h_a*w_a agent tokens A
(the queries Q average-pooled to an h_a x w_a grid), per head with scale s = d ** scale_exponent:

    agent step:  V_A = softmax(A K^T * s + B_an) V        A: (n, d), K, V: (N, d)   -> (n, d)
    query step:  O   = softmax(Q A^T * s + B_na) V_A      Q: (N, d)                 -> (N, d)
    output:      proj(O + DWC(V))                          DWC: depth-wise convolution of V as an (H, W) map

The position biases B_an (n x N) and B_na (N x n) come from six learned tables: a 7x7 table per pretraining agent
(`an_bias`, `na_bias`) plus row and column tables learned at the pretraining resolution (`ah_bias` + `aw_bias`,
`ha_bias` + `wa_bias`). The official code resizes each table bilinearly to the (H, W) map, then resizes the agent
axis (the pretraining agents viewed as a pool x pool grid) to the downstream agent grid (h_a, w_a).

The module has two implementations of the same computation, chosen by the config's `_attn_implementation`:

* ``"eager"`` -- the reference (`reference_agent_attention`), written to be checked against the equations above:
  the biases built exactly as the official code builds them (`official_position_biases`), both softmax steps
  written out. `output_attentions` always uses it (the attention weights only exist there).
* anything else (``"sdpa"``, the default) -- the fast path. The bias resizes are linear and separable, so the
  biases are kept in a factored form built from the tiny tables with 1-D interpolation matrices
  (`AgentBiasFactors`), and materialized a few rows of the map at a time:

  - on CPU without gradients (inference), `blocked_agent_step` / `blocked_query_step` run PyTorch's fused CPU
    attention kernel block by block, with the bias block built on the fly; the agent step's softmax runs over all
    N tokens, so its blocks of keys are merged exactly through their log-sum-exp. No (h, n, N) tensor ever
    exists, and the blocks are small enough to stay in the CPU cache;
  - on CPU with gradients (training), `FusedAttentionWithBiasGrad` runs the fused kernel on the whole bias and
    rebuilds the bias and the probabilities in backward instead of saving them;
  - on other devices and under torch.compile, `F.scaled_dot_product_attention` with the whole bias.

Every path computes the same values up to floating-point rounding (tests/test_parity.py holds both
implementations to the official outputs at 1e-5; tests/test_performance_features.py compares them, values and
gradients).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Side of the square per-agent tables `an_bias`/`na_bias`, fixed by the official implementation.
AGENT_TABLE_SIZE = 7
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def bilinear_matrix(in_size: int, out_size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(out_size, in_size) matrix M with M @ x == 1-D bilinear resize of x (align_corners=False).

    Built by resizing one-hot rows with `F.interpolate`, so the weights are PyTorch's own.
    """
    eye = torch.eye(in_size, device=device, dtype=torch.float32).view(1, in_size, in_size, 1)
    weights = F.interpolate(eye, size=(out_size, 1), mode="bilinear", align_corners=False)
    return weights.view(in_size, out_size).t().to(dtype)


# ----------------------------------------------------------------------------------------------------------------
# The reference implementation ("eager"): the paper's equations, the biases built the official way
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


def official_position_biases(attention: AgentAttention, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two position biases of `attention` for a (height, width) map, built as the official code builds them.

    Returns B_an (h, n, H*W) (agent step: agents over tokens) and B_na (h, H*W, n) (query step: tokens over
    agents). Each is the sum of two terms resized the same way: the 7x7 table and the row + column tables, first to
    the (H, W) map, then along the agent axis to the agent grid.
    """
    heads, pool, grid = attention.num_heads, attention.pool_size, attention.agent_grid

    def position_bias(square, rows_plus_cols):  # (h, A, 7, 7), (h, A, h0, w0) -> (h, H*W, n)
        first = _resize_agent_axis(_resize_to_map(square, height, width), pool, grid)
        second = _resize_agent_axis(_resize_to_map(rows_plus_cols, height, width), pool, grid)
        return first + second

    agent_rows_cols = (attention.ah_bias + attention.aw_bias).squeeze(0)  # (h, A, h0, w0)
    token_rows_cols = (attention.ha_bias + attention.wa_bias).squeeze(0).permute(0, 3, 1, 2)  # (h, A, H0, W0)
    agent_to_token = position_bias(attention.an_bias, agent_rows_cols).transpose(1, 2)
    token_to_agent = position_bias(attention.na_bias, token_rows_cols)
    return agent_to_token.reshape(heads, -1, height * width), token_to_agent


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
    """The two softmax steps of agent attention, written out.

    Args:
        query (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): Q.
        key (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): K.
        value (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): V.
        agents (`torch.Tensor` of shape `(batch_size, heads, agents, head_dim)`): A, the pooled queries.
        agent_to_token (`torch.Tensor` of shape `(heads, agents, tokens)`): B_an.
        token_to_agent (`torch.Tensor` of shape `(heads, tokens, agents)`): B_na.
        scale (`float`): s.
        dropout (`float`): dropout on both steps' attention weights (in training).
        training (`bool`): whether dropout is active.

    Returns O (batch_size, heads, tokens, head_dim) and the weights of the agent step (batch_size, heads, agents,
    tokens) and of the query step (batch_size, heads, tokens, agents).
    """
    agent_weights = torch.softmax((agents * scale) @ key.transpose(-2, -1) + agent_to_token, dim=-1)
    agent_values = F.dropout(agent_weights, dropout, training) @ value  # V_A
    token_weights = torch.softmax((query * scale) @ agents.transpose(-2, -1) + token_to_agent, dim=-1)
    output = F.dropout(token_weights, dropout, training) @ agent_values
    return output, agent_weights, token_weights


# ----------------------------------------------------------------------------------------------------------------
# The fast path: factored biases, materialized a block of rows at a time
# ----------------------------------------------------------------------------------------------------------------


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


def agent_bias_factors(attention: AgentAttention, height: int, width: int) -> AgentBiasFactors:
    """`AgentBiasFactors` of `attention`'s tables for a (height, width) map (differentiable in the tables).

    Computed in fp32 for fp16/bf16 tables and outside autocast: the biases add to fp32 scores.
    """
    tables = attention.an_bias
    if tables.device.type == "meta":  # shape-only runs (FLOP counting): autocast knows no meta device
        return _agent_bias_factors(attention, height, width)
    with torch.autocast(tables.device.type, enabled=False):
        return _agent_bias_factors(attention, height, width)


def _agent_bias_factors(attention: AgentAttention, height: int, width: int) -> AgentBiasFactors:
    heads, pool, (grid_h, grid_w) = attention.num_heads, attention.pool_size, attention.agent_grid
    device = attention.an_bias.device
    dtype = torch.float32 if attention.an_bias.dtype in _LOW_PRECISION else attention.an_bias.dtype
    agent_h, agent_w = bilinear_matrix(pool, grid_h, device, dtype), bilinear_matrix(pool, grid_w, device, dtype)
    resize_h = bilinear_matrix(AGENT_TABLE_SIZE, height, device, dtype)
    resize_w = bilinear_matrix(AGENT_TABLE_SIZE, width, device, dtype)

    def grid(table):  # (h, A, ...) -> (h, n, ...)
        return _to_agent_grid(table.to(dtype), agent_h, agent_w)

    def resized(table, size):  # (h, n, s0) -> (h, n, size)
        return table @ bilinear_matrix(table.shape[-1], size, device, dtype).t()

    # B_an, agents before tokens: T[i, x] = S_a[i, :] R_w[x, :]^T, stacked as (h, 8, n, W).
    agent_square = grid(attention.an_bias)  # (h, n, 7, 7)
    agent_t = torch.matmul(agent_square, resize_w.t()).transpose(1, 2)  # (h, 7, n, W)
    agent_cols = resized(grid(attention.aw_bias.reshape(heads, -1, attention.aw_bias.shape[4])), width)
    agent_rows = resized(grid(attention.ah_bias.reshape(heads, -1, attention.ah_bias.shape[3])), height)
    # B_na, tokens before agents: T[i, x, a] = R_w[x, :] S_a[i, :]^T, stacked as (h, 8, W, n).
    token_square = grid(attention.na_bias)  # (h, n, 7, 7)
    token_t = torch.einsum("xj,haij->hixa", resize_w, token_square)  # (h, 7, W, n)
    token_cols = resized(
        grid(attention.wa_bias.reshape(heads, -1, attention.wa_bias.shape[-1]).transpose(1, 2)), width
    )
    token_rows = resized(
        grid(attention.ha_bias.reshape(heads, -1, attention.ha_bias.shape[-1]).transpose(1, 2)), height
    )
    ones = torch.ones(height, 1, device=device, dtype=dtype)
    return AgentBiasFactors(
        resize_h=torch.cat([resize_h, ones], dim=1),
        agent_table=torch.cat([agent_t, agent_cols.unsqueeze(1)], dim=1),
        agent_rows=agent_rows.transpose(1, 2).unsqueeze(-1).contiguous(),
        token_table=torch.cat([token_t, token_cols.transpose(1, 2).unsqueeze(1)], dim=1),
        token_rows=token_rows.transpose(1, 2).unsqueeze(2).contiguous(),
    )


def _row_blocks(height: int, rows_per_block: int):
    for start in range(0, height, rows_per_block):
        yield start, min(start + rows_per_block, height)


def blocked_agent_step(
    agents: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    factors: AgentBiasFactors,
    scale: float,
    rows_per_block: int,
) -> torch.Tensor:
    """V_A = softmax(A K^T * s + B_an) V, one map row of keys at a time, merged exactly through log-sum-exp (CPU).

    Args:
        agents (`torch.Tensor` of shape `(batch_size, heads, agents, head_dim)`): A, contiguous.
        key (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): K (a strided view is fine).
        value (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): V (a strided view is fine).
        factors (`AgentBiasFactors`): the biases of the (H, W) map of the tokens.
        scale (`float`): s.
        rows_per_block (`int`): map rows whose bias one kernel call takes (each row is one item of its batch).

    Row y of the map gives O_y = softmax_y(...) V_y over its W keys, and its log-sum-exp L_y; with
    L = logsumexp_y L_y, V_A = sum_y exp(L_y - L) O_y. Returns V_A (batch_size, heads, agents, head_dim) in the
    inputs' dtype.
    """
    batch, heads, agent_count, head_dim = agents.shape
    height, width = factors.height, factors.width
    outputs = [[] for _ in range(batch)]
    log_sums = [[] for _ in range(batch)]
    for start, stop in _row_blocks(height, rows_per_block):
        bias = factors.agent_to_token_block(start, stop)  # (rows, h, n, W)
        rows = stop - start
        for i in range(batch):
            # The block's rows are the kernel's batch: (rows, h, W, d) views of K and V, A shared by all rows.
            tokens = slice(start * width, stop * width)
            row_keys = key[i, :, tokens].unflatten(1, (rows, width)).transpose(0, 1)
            row_values = value[i, :, tokens].unflatten(1, (rows, width)).transpose(0, 1)
            output, log_sum = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                agents[i].expand(rows, heads, agent_count, head_dim), row_keys, row_values, attn_mask=bias, scale=scale
            )
            outputs[i].append(output)
            log_sums[i].append(log_sum)
    merged = []
    for image_outputs, image_log_sums in zip(outputs, log_sums):
        log_sum = torch.cat(image_log_sums)  # (H, h, n), fp32
        weights = torch.softmax(log_sum, dim=0).unsqueeze(-1)  # exp(L_y - L)
        merged.append((torch.cat(image_outputs).to(weights.dtype) * weights).sum(dim=0))
    return torch.stack(merged).to(agents.dtype)


def blocked_query_step(
    query: torch.Tensor,
    agents: torch.Tensor,
    agent_values: torch.Tensor,
    factors: AgentBiasFactors,
    scale: float,
    rows_per_block: int,
    out: torch.Tensor,
) -> None:
    """O = softmax(Q A^T * s + B_na) V_A, one block of query rows at a time, added into `out` (CPU).

    Args:
        query (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): Q (a strided view is fine).
        agents (`torch.Tensor` of shape `(batch_size, heads, agents, head_dim)`): A, contiguous.
        agent_values (`torch.Tensor` of shape `(batch_size, heads, agents, head_dim)`): V_A.
        factors (`AgentBiasFactors`): the biases of the (H, W) map of the tokens.
        scale (`float`): s.
        rows_per_block (`int`): map rows whose queries (and bias block) one kernel call processes.
        out (`torch.Tensor` of shape `(batch_size, tokens, heads, head_dim)`): O is added into it, token-major.
    """
    width = factors.width
    for start, stop in _row_blocks(factors.height, rows_per_block):
        bias = factors.token_to_agent_block(start, stop).unsqueeze(0)  # (1, h, rows * W, n)
        tokens = slice(start * width, stop * width)
        output, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query[:, :, tokens], agents, agent_values, attn_mask=bias, scale=scale
        )
        out[:, tokens].add_(output.transpose(1, 2))  # the kernel writes token-major: a contiguous add


class FusedAttentionWithBiasGrad(torch.autograd.Function):
    """softmax(q k^T * scale + bias) v with the fused SDPA kernel in forward and a gradient for `bias`.

    PyTorch's fused CPU kernel does not differentiate the mask, so SDPA with a mask that requires grad uses the
    unfused math kernel, which saves every (M x N) probability matrix for backward. Here forward saves only q, k
    and v; backward recomputes this call's probabilities (one image at a time, FlashAttention-style) and returns
    dq, dk, dv and dbias.

    `rebuild_bias`, when given, is a no-grad callable that returns the same bias again: the bias is then not saved
    either (it is batch-independent but as large as one image's score matrix, and the tables it is built from are
    tiny), and is rebuilt in backward. `table_versions` is a callable returning the tables' version counters,
    checked in backward like autograd checks saved tensors.
    """

    @staticmethod
    def forward(ctx, query, key, value, bias, scale, rebuild_bias=None, table_versions=None):
        if bias.dim() != 4 or bias.shape[0] not in (1, query.shape[0]):
            raise ValueError(f"FusedAttentionWithBiasGrad: bias of shape {tuple(bias.shape)} is not (1 or B, h, M, N)")
        # Detached: SDPA picks its kernel from `requires_grad`, even with grad mode off as it is here.
        output = F.scaled_dot_product_attention(
            query.detach(), key.detach(), value.detach(), attn_mask=bias.detach(), scale=scale
        )
        ctx.scale, ctx.bias_shape = scale, bias.shape
        ctx.rebuild_bias, ctx.table_versions = rebuild_bias, table_versions
        ctx.versions = table_versions() if table_versions is not None else None
        if rebuild_bias is None:
            ctx.save_for_backward(query, key, value, bias)
        else:
            ctx.save_for_backward(query, key, value)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.rebuild_bias is None:
            query, key, value, bias = ctx.saved_tensors
        else:
            query, key, value = ctx.saved_tensors
            if ctx.table_versions is not None and ctx.table_versions() != ctx.versions:
                raise RuntimeError(
                    "AgentAttention: a bias table was modified in place between forward and backward; "
                    "the attention bias cannot be recomputed for the gradient"
                )
            with torch.no_grad():
                bias = ctx.rebuild_bias()
        scale, dtype = ctx.scale, query.dtype
        compute = torch.float32 if dtype in _LOW_PRECISION else dtype  # probabilities and gradients in fp32
        batch = query.shape[0]
        shared_bias = bias.shape[0] == 1  # broadcast over the batch (AgentAttention's case)
        bias = bias.to(compute)
        grad_query = torch.empty(query.shape, dtype=compute, device=query.device)
        grad_key = torch.empty(key.shape, dtype=compute, device=key.device)
        grad_value = torch.empty(value.shape, dtype=compute, device=value.device)
        grad_bias = None
        # One image at a time: 3-D GEMMs straight on the strided per-head views (no copies), with the bias as the
        # GEMM accumulator, and (h, M, N) temporaries for one image only.
        for i in range(batch):
            q, k, v = query[i].to(compute), key[i].to(compute), value[i].to(compute)
            grad_out = grad_output[i].to(compute)
            bias_i = bias[0] if shared_bias else bias[i]
            probs = torch.softmax(torch.baddbmm(bias_i, q, k.transpose(1, 2), alpha=scale), dim=-1)
            # delta = rowsum(dO * O), with O = P V recomputed (cheaper to keep than the forward's output).
            delta = (grad_out * torch.bmm(probs, v)).sum(dim=-1, keepdim=True)
            torch.bmm(probs.transpose(1, 2), grad_out, out=grad_value[i])
            grad_scores = torch.bmm(grad_out, v.transpose(1, 2)).sub_(delta).mul_(probs)
            del probs
            torch.bmm(grad_scores, k, out=grad_query[i])
            torch.bmm(grad_scores.transpose(1, 2), q, out=grad_key[i])
            if ctx.needs_input_grad[3]:
                if not shared_bias:
                    if grad_bias is None:
                        grad_bias = torch.empty(bias.shape, dtype=compute, device=bias.device)
                    grad_bias[i] = grad_scores
                else:
                    grad_bias = grad_scores if grad_bias is None else grad_bias.add_(grad_scores)
            del grad_scores
        grad_query.mul_(scale)
        grad_key.mul_(scale)
        if grad_bias is not None:
            grad_bias = grad_bias.reshape(ctx.bias_shape).to(dtype)
        return grad_query.to(dtype), grad_key.to(dtype), grad_value.to(dtype), grad_bias, None, None, None


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
    """

    bias_block_size: int = 1 << 21

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
        self.dwc = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)

        t = AGENT_TABLE_SIZE
        # Shapes (and names) exactly as in the official checkpoints; initialized by the model's `_init_weights`
        # (truncated normal, std `initializer_range`).
        self.an_bias = nn.Parameter(torch.zeros(num_heads, agent_num, t, t))
        self.na_bias = nn.Parameter(torch.zeros(num_heads, agent_num, t, t))
        self.ah_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, key_table_size[0], 1))
        self.aw_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, 1, key_table_size[1]))
        self.ha_bias = nn.Parameter(torch.zeros(1, num_heads, table_size[0], 1, agent_num))
        self.wa_bias = nn.Parameter(torch.zeros(1, num_heads, 1, table_size[1], agent_num))

    def _bias_tables(self) -> tuple[nn.Parameter, ...]:
        return (self.an_bias, self.na_bias, self.ah_bias, self.aw_bias, self.ha_bias, self.wa_bias)

    def _table_versions(self) -> tuple[int, ...]:
        return tuple(t._version for t in self._bias_tables())

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

    def _rows_per_block(self, width: int) -> int:
        agents = self.agent_grid[0] * self.agent_grid[1]
        return max(1, self.bias_block_size // (self.num_heads * agents * width))

    def _fast_attention(self, query, key, value, agents, height: int, width: int, out: torch.Tensor) -> None:
        """The fast path: O added into `out` (B, N, h, d). query/key/value (B, h, N, d), agents (B, h, n, d)."""
        dropout = self.attn_drop if self.training else 0.0
        grad = torch.is_grad_enabled()
        tables_need_grad = grad and any(t.requires_grad for t in self._bias_tables())
        needs_grad = tables_need_grad or (grad and any(t.requires_grad for t in (query, key, value, agents)))
        cpu = query.device.type == "cpu" and not torch.compiler.is_compiling()
        if cpu and not needs_grad and dropout == 0.0:
            with torch.no_grad():
                factors = agent_bias_factors(self, height, width)
            rows = self._rows_per_block(width)
            agent_values = blocked_agent_step(agents, key, value, factors, self.scale, rows)
            blocked_query_step(query, agents, agent_values, factors, self.scale, rows, out)
            return
        factors = agent_bias_factors(self, height, width)
        dtype = query.dtype
        agent_to_token = factors.agent_to_token().unsqueeze(0).to(dtype)  # (1, h, n, N)
        token_to_agent = factors.token_to_agent().unsqueeze(0).to(dtype)  # (1, h, N, n)
        if cpu and dropout == 0.0 and tables_need_grad:

            def rebuild(name):  # a no-grad callable giving the bias again, for backward
                return lambda: getattr(agent_bias_factors(self, height, width), name)().unsqueeze(0).to(dtype)

            versions = self._table_versions
            agent_values = FusedAttentionWithBiasGrad.apply(
                agents, key, value, agent_to_token, self.scale, rebuild("agent_to_token"), versions
            )
            output = FusedAttentionWithBiasGrad.apply(
                query, agents, agent_values, token_to_agent, self.scale, rebuild("token_to_agent"), versions
            )
        else:
            agent_values = F.scaled_dot_product_attention(
                agents, key, value, attn_mask=agent_to_token, dropout_p=dropout, scale=self.scale
            )
            output = F.scaled_dot_product_attention(
                query, agents, agent_values, attn_mask=token_to_agent, dropout_p=dropout, scale=self.scale
            )
        out.add_(output.transpose(1, 2))

    def forward(self, hidden_states: torch.Tensor, height: int, width: int, output_attentions: bool = False):
        """Agent attention over a (height, width) map.

        Args:
            hidden_states (`torch.Tensor` of shape `(batch_size, height * width, dim)`): tokens, row-major.
            height (`int`): rows H of the map.
            width (`int`): columns W of the map.
            output_attentions (`bool`): also return both steps' attention weights (computed by the reference).

        Returns the output (B, H*W, C); with `output_attentions`, `(output, (agent_to_token, token_to_agent))`
        where agent_to_token (B, h, n, H*W) are the agent step's weights (each agent over the tokens) and
        token_to_agent (B, h, H*W, n) the query step's (each token over the agents), n = h_a * w_a agents.
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
        agents = F.adaptive_avg_pool2d(query_map, self.agent_grid).reshape(batch, heads, head_dim, agent_count)
        agents = agents.transpose(-2, -1).contiguous()

        def split_heads(x):  # (B, N, C) -> (B, h, N, d), a strided view
            return x.view(batch, tokens, heads, head_dim).transpose(1, 2)

        # DWC(V): the convolution reads V as a channels-last map in place and writes a channels-last map, i.e.
        # (B, N, C) row-major, into which O is added, undoing its head-major layout in the same pass.
        value_map = value.view(batch, height, width, channels).permute(0, 3, 1, 2)
        mixed = self.dwc(value_map).permute(0, 2, 3, 1).reshape(batch, tokens, heads, head_dim)
        weights = None
        if output_attentions or getattr(self.config, "_attn_implementation", None) == "eager":
            agent_to_token, token_to_agent = official_position_biases(self, height, width)
            dtype = query.dtype
            output, agent_weights, token_weights = reference_agent_attention(
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
            mixed = mixed + output.transpose(1, 2)
            weights = (agent_weights, token_weights)
        else:
            self._fast_attention(
                split_heads(query), split_heads(key), split_heads(value), agents, height, width, mixed
            )
        output = self.proj_drop(self.proj(mixed.view(batch, tokens, channels)))
        return (output, weights) if output_attentions else output

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, agent_grid={self.agent_grid}, pool_size={self.pool_size}"


__all__ = [
    "AgentAttention",
    "AgentBiasFactors",
    "AgentSplitLinear",
    "FusedAttentionWithBiasGrad",
    "agent_bias_factors",
    "bilinear_matrix",
    "blocked_agent_step",
    "blocked_query_step",
    "official_position_biases",
    "reference_agent_attention",
    "split_projection",
]
