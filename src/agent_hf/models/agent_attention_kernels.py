"""Fused Triton kernels for both softmax steps of agent attention, forward and backward (the CUDA default).

Both steps are attention between the N = H*W tokens of a map and its n agents, with a position bias whose value at
(token (y, x), agent a) the kernels compute from the factored tables of `agent_attention_biases.AgentBiasFactors`:

    bias[(y, x), a] = sum_i resize_h[y, i] * table[i, x, a] + rows[y, a]        i < 8

so no (n x N) score, probability or bias matrix ever exists in memory (forward or backward):

- agent aggregation, V_A = softmax(A K^T * s + B1) V: every program owns all n agents (one block of queries) and a
  contiguous range of map rows of keys, with an online softmax over them; the ranges' partial outputs are merged
  exactly through their log-sum-exp (flash-decoding: the few agent queries would otherwise leave most of a GPU
  idle);
- agent broadcast, O = softmax(Q A^T * s + B2) V_A: every program owns a block of tokens of one map row and all
  n agents (one block of keys), so its softmax is complete in registers.

Backward recomputes the probabilities from the saved log-sum-exp (FlashAttention-2 style); the gradients of the
agent-side tensors are summed per program in registers, those of the bias tables by atomic adds in fp32 (the
tables are tiny; the gradient of the factors flows back to the six learned tables through autograd).

Scope: q/k/v in fp32, bf16 or fp16 (dot products in the inputs' dtype, fp32 accumulation; fp32 dot products are
exact IEEE, never TF32, so fp32 results match the reference to rounding), any map size, head_dim <= 256 and up to
256 agents (all agents of a program are one block in registers: Agent-Swin's 81 to 196 agents, Agent-PVT's 144 and
256; a larger grid, such as Agent-PVT's first stage with 784 agents, takes the SDPA path, as does `attn_drop > 0`
in training: dropout on the attention weights is not fused).

The kernels run wherever Triton does: CUDA (and ROCm) GPUs, and CPU tensors under `TRITON_INTERPRET=1` (slow, for
the tests). Without Triton this module still imports (`triton_available()` is False) and nothing dispatches here.
"""

from __future__ import annotations

import math
import os

import torch

try:  # the fused kernels need Triton; the shipped model code works without it (transformers skips try blocks)
    import triton
    import triton.language as tl
except ImportError:
    triton = tl = None

from .agent_attention_biases import AgentBiasFactors

# Rows of the stacked bias table: the 7x7 table's 7 resize weights and the column table's 1.
BIAS_TERMS = 8
MAX_AGENTS = 256
MAX_HEAD_DIM = 256


def triton_available() -> bool:
    """Whether the fused kernels can run here (Triton imports)."""
    return triton is not None


def kernel_runs_on(device: torch.device) -> bool:
    """Whether the fused kernels can run on `device`: Triton imports, and the device is a GPU or, under
    `TRITON_INTERPRET=1` (read by Triton when this module is imported), the CPU."""
    if triton is None:
        return False
    if device.type == "cpu":
        return os.environ.get("TRITON_INTERPRET") == "1"
    return device.type in ("cuda", "xpu")


def kernel_supports(query: torch.Tensor, agents: torch.Tensor) -> bool:
    """Whether the fused kernels take this call (device, dtype and shapes; decided from metadata only)."""
    if not kernel_runs_on(query.device) or query.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    return agents.shape[2] <= MAX_AGENTS and query.shape[-1] <= MAX_HEAD_DIM


if triton is not None:

    @triton.jit
    def _bias_tile(
        resize_ptr, table_ptr, rows_ptr, head, y, offs_x, offs_a, mask_x, mask_a,
        st_h, st_i, st_x, st_a, sr_h, sr_y, sr_a,
    ):  # fmt: skip
        """Bias of map row y's tokens offs_x against agents offs_a: (BX, NA), fp32."""
        mask = mask_x[:, None] & mask_a[None, :]
        rows = tl.load(rows_ptr + head * sr_h + y * sr_y + offs_a * sr_a, mask=mask_a, other=0.0)
        table = table_ptr + head * st_h + offs_x[:, None] * st_x + offs_a[None, :] * st_a
        bias = tl.load(resize_ptr + y * 8) * tl.load(table, mask=mask, other=0.0).to(tl.float32)
        bias += rows.to(tl.float32)[None, :]
        for i in tl.static_range(1, 8):
            weight = tl.load(resize_ptr + y * 8 + i)
            bias += weight * tl.load(table + i * st_i, mask=mask, other=0.0).to(tl.float32)
        return bias

    @triton.jit
    def _bias_grad_tile(
        resize_ptr, grad_table_ptr, grad_rows_ptr, head, y, offs_x, offs_a, mask_x, mask_a, grad, width, agents,
        height,
    ):  # fmt: skip
        """Adds the gradient `grad` (BX, NA) of a bias tile into the contiguous fp32 table gradients."""
        mask = mask_x[:, None] & mask_a[None, :]
        tl.atomic_add(grad_rows_ptr + (head * height + y) * agents + offs_a, tl.sum(grad, 0), mask=mask_a)
        table = grad_table_ptr + head * 8 * width * agents + offs_x[:, None] * agents + offs_a[None, :]
        for i in tl.static_range(8):
            weight = tl.load(resize_ptr + y * 8 + i)
            if weight != 0.0:  # a bilinear row has two nonzero weights out of seven
                tl.atomic_add(table + i * width * agents, weight * grad, mask=mask)

    @triton.jit
    def _agent_step_forward(
        a_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, resize_ptr, table_ptr, rows_ptr,
        scale, heads, height, width, agents, rows_per_split, splits,
        sa_b, sa_h, sa_n, sa_d, sk_b, sk_h, sk_t, sk_d, sv_b, sv_h, sv_t, sv_d,
        st_h, st_i, st_x, st_a, sr_h, sr_y, sr_a,
        HEAD_DIM: tl.constexpr, BD: tl.constexpr, BX: tl.constexpr, NA: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        """Partial V_A of one range of map rows, normalized, and its log-sum-exp: out (B*h, splits, n, d) fp32,
        lse (B*h, splits, n) fp32."""
        split = tl.program_id(0)
        batch_head = tl.program_id(1)
        b = batch_head // heads
        head = batch_head % heads
        offs_a = tl.arange(0, NA)
        offs_d = tl.arange(0, BD)
        offs_x0 = tl.arange(0, BX)
        mask_a = offs_a < agents
        mask_d = offs_d < HEAD_DIM
        a = tl.load(
            a_ptr + b * sa_b + head * sa_h + offs_a[:, None] * sa_n + offs_d[None, :] * sa_d,
            mask=mask_a[:, None] & mask_d[None, :],
            other=0.0,
        )
        m_i = tl.full((NA,), float("-inf"), tl.float32)
        l_i = tl.zeros((NA,), tl.float32)
        acc = tl.zeros((NA, BD), tl.float32)
        k_base = k_ptr + b * sk_b + head * sk_h
        v_base = v_ptr + b * sv_b + head * sv_h
        y_start = split * rows_per_split
        y_stop = tl.minimum(y_start + rows_per_split, height)
        for y in range(y_start, y_stop):
            for x0 in range(0, width, BX):
                offs_x = x0 + offs_x0
                mask_x = offs_x < width
                tokens = y * width + offs_x
                mask_xd = mask_x[:, None] & mask_d[None, :]
                k = tl.load(k_base + tokens[:, None] * sk_t + offs_d[None, :] * sk_d, mask=mask_xd, other=0.0)
                v = tl.load(v_base + tokens[:, None] * sv_t + offs_d[None, :] * sv_d, mask=mask_xd, other=0.0)
                bias = _bias_tile(
                    resize_ptr, table_ptr, rows_ptr, head, y, offs_x, offs_a, mask_x, mask_a,
                    st_h, st_i, st_x, st_a, sr_h, sr_y, sr_a,
                )  # fmt: skip
                scores = tl.dot(a, tl.trans(k), input_precision=PRECISION) * scale + tl.trans(bias)
                scores = tl.where(mask_x[None, :], scores, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(scores, 1))
                alpha = tl.exp(m_i - m_new)
                p = tl.exp(scores - m_new[:, None])
                l_i = l_i * alpha + tl.sum(p, 1)
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
                m_i = m_new
        part = batch_head * splits + split
        mask_ad = mask_a[:, None] & mask_d[None, :]
        tl.store(out_ptr + (part * agents + offs_a[:, None]) * HEAD_DIM + offs_d[None, :], acc / l_i[:, None], mask_ad)
        tl.store(lse_ptr + part * agents + offs_a, m_i + tl.log(l_i), mask=mask_a)

    @triton.jit
    def _agent_step_backward(
        a_ptr, k_ptr, v_ptr, grad_out_ptr, lse_ptr, delta_ptr, grad_a_ptr, grad_k_ptr, grad_v_ptr,
        resize_ptr, table_ptr, rows_ptr, grad_table_ptr, grad_rows_ptr,
        scale, heads, height, width, agents, rows_per_split, splits,
        sa_b, sa_h, sa_n, sa_d, sk_b, sk_h, sk_t, sk_d, sv_b, sv_h, sv_t, sv_d,
        sg_b, sg_h, sg_t, sg_d, st_h, st_i, st_x, st_a, sr_h, sr_y, sr_a,
        HEAD_DIM: tl.constexpr, BD: tl.constexpr, BX: tl.constexpr, NA: tl.constexpr, PRECISION: tl.constexpr,
        TABLE_GRAD: tl.constexpr,
    ):  # fmt: skip
        """dK, dV of one range of map rows (written in K's layout, `sg_*` strides), this range's share of dA
        (B*h, splits, n, d) fp32, and the bias tables' gradient (atomic adds)."""
        split = tl.program_id(0)
        batch_head = tl.program_id(1)
        b = batch_head // heads
        head = batch_head % heads
        offs_a = tl.arange(0, NA)
        offs_d = tl.arange(0, BD)
        offs_x0 = tl.arange(0, BX)
        mask_a = offs_a < agents
        mask_d = offs_d < HEAD_DIM
        mask_ad = mask_a[:, None] & mask_d[None, :]
        a = tl.load(a_ptr + b * sa_b + head * sa_h + offs_a[:, None] * sa_n + offs_d[None, :] * sa_d, mask_ad, 0.0)
        agent_rows = batch_head * agents + offs_a
        grad_out = tl.load(grad_out_ptr + agent_rows[:, None] * HEAD_DIM + offs_d[None, :], mask_ad, 0.0).to(a.dtype)
        lse = tl.load(lse_ptr + agent_rows, mask=mask_a, other=0.0)
        delta = tl.load(delta_ptr + agent_rows, mask=mask_a, other=0.0)
        grad_a = tl.zeros((NA, BD), tl.float32)
        k_base = k_ptr + b * sk_b + head * sk_h
        v_base = v_ptr + b * sv_b + head * sv_h
        y_start = split * rows_per_split
        y_stop = tl.minimum(y_start + rows_per_split, height)
        for y in range(y_start, y_stop):
            for x0 in range(0, width, BX):
                offs_x = x0 + offs_x0
                mask_x = offs_x < width
                tokens = y * width + offs_x
                mask_xd = mask_x[:, None] & mask_d[None, :]
                k = tl.load(k_base + tokens[:, None] * sk_t + offs_d[None, :] * sk_d, mask=mask_xd, other=0.0)
                v = tl.load(v_base + tokens[:, None] * sv_t + offs_d[None, :] * sv_d, mask=mask_xd, other=0.0)
                bias = _bias_tile(
                    resize_ptr, table_ptr, rows_ptr, head, y, offs_x, offs_a, mask_x, mask_a,
                    st_h, st_i, st_x, st_a, sr_h, sr_y, sr_a,
                )  # fmt: skip
                scores = tl.dot(a, tl.trans(k), input_precision=PRECISION) * scale + tl.trans(bias)
                p = tl.exp(scores - lse[:, None])
                p = tl.where(mask_a[:, None] & mask_x[None, :], p, 0.0)  # (NA, BX)
                grad_v = tl.dot(tl.trans(p).to(a.dtype), grad_out, input_precision=PRECISION)
                grad_p = tl.dot(grad_out, tl.trans(v), input_precision=PRECISION)
                grad_s = p * (grad_p - delta[:, None])
                grad_k = tl.dot(tl.trans(grad_s).to(a.dtype), a, input_precision=PRECISION) * scale
                grad_a += tl.dot(grad_s.to(a.dtype), k, input_precision=PRECISION)
                grad_ptrs = grad_k_ptr + b * sg_b + head * sg_h + tokens[:, None] * sg_t + offs_d[None, :] * sg_d
                tl.store(grad_ptrs, grad_k, mask=mask_xd)
                grad_ptrs = grad_v_ptr + b * sg_b + head * sg_h + tokens[:, None] * sg_t + offs_d[None, :] * sg_d
                tl.store(grad_ptrs, grad_v, mask=mask_xd)
                if TABLE_GRAD:
                    _bias_grad_tile(
                        resize_ptr, grad_table_ptr, grad_rows_ptr, head, y, offs_x, offs_a, mask_x, mask_a,
                        tl.trans(grad_s), width, agents, height,
                    )  # fmt: skip
        part = batch_head * splits + split
        tl.store(grad_a_ptr + (part * agents + offs_a[:, None]) * HEAD_DIM + offs_d[None, :], grad_a * scale, mask_ad)

    @triton.jit
    def _query_step_forward(
        q_ptr, a_ptr, va_ptr, out_ptr, lse_ptr, resize_ptr, table_ptr, rows_ptr,
        scale, heads, height, width, agents, x_blocks,
        sq_b, sq_h, sq_t, sq_d, so_b, so_h, so_t, so_d,
        st_h, st_i, st_x, st_a, sr_h, sr_y, sr_a,
        HEAD_DIM: tl.constexpr, BD: tl.constexpr, BX: tl.constexpr, NA: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        """O of one block of tokens of one map row (written with `so_*` strides) and its log-sum-exp
        (B*h, N) fp32. A and V_A are contiguous (B, h, n, d)."""
        block = tl.program_id(0)
        batch_head = tl.program_id(1)
        b = batch_head // heads
        head = batch_head % heads
        y = block // x_blocks
        offs_x = (block % x_blocks) * BX + tl.arange(0, BX)
        offs_a = tl.arange(0, NA)
        offs_d = tl.arange(0, BD)
        mask_x = offs_x < width
        mask_a = offs_a < agents
        mask_d = offs_d < HEAD_DIM
        mask_ad = mask_a[:, None] & mask_d[None, :]
        mask_xd = mask_x[:, None] & mask_d[None, :]
        tokens = y * width + offs_x
        q = tl.load(q_ptr + b * sq_b + head * sq_h + tokens[:, None] * sq_t + offs_d[None, :] * sq_d, mask_xd, 0.0)
        agent_rows = batch_head * agents + offs_a
        a = tl.load(a_ptr + agent_rows[:, None] * HEAD_DIM + offs_d[None, :], mask_ad, 0.0)
        va = tl.load(va_ptr + agent_rows[:, None] * HEAD_DIM + offs_d[None, :], mask_ad, 0.0)
        bias = _bias_tile(
            resize_ptr, table_ptr, rows_ptr, head, y, offs_x, offs_a, mask_x, mask_a,
            st_h, st_i, st_x, st_a, sr_h, sr_y, sr_a,
        )  # fmt: skip
        scores = tl.dot(q, tl.trans(a), input_precision=PRECISION) * scale + bias
        scores = tl.where(mask_a[None, :], scores, float("-inf"))
        m = tl.max(scores, 1)
        p = tl.exp(scores - m[:, None])
        total = tl.sum(p, 1)
        out = tl.dot(p.to(va.dtype), va, input_precision=PRECISION) / total[:, None]
        tl.store(out_ptr + b * so_b + head * so_h + tokens[:, None] * so_t + offs_d[None, :] * so_d, out, mask_xd)
        tl.store(lse_ptr + batch_head * height * width + tokens, m + tl.log(total), mask=mask_x)

    @triton.jit
    def _query_step_backward(
        q_ptr, a_ptr, va_ptr, out_ptr, grad_out_ptr, lse_ptr, grad_q_ptr, grad_a_ptr, grad_va_ptr,
        resize_ptr, table_ptr, rows_ptr, grad_table_ptr, grad_rows_ptr,
        scale, heads, height, width, agents, rows_per_split, splits,
        sq_b, sq_h, sq_t, sq_d, so_b, so_h, so_t, so_d, sd_b, sd_h, sd_t, sd_d, sg_b, sg_h, sg_t, sg_d,
        st_h, st_i, st_x, st_a, sr_h, sr_y, sr_a,
        HEAD_DIM: tl.constexpr, BD: tl.constexpr, BX: tl.constexpr, NA: tl.constexpr, PRECISION: tl.constexpr,
        TABLE_GRAD: tl.constexpr,
    ):  # fmt: skip
        """dQ of one range of map rows (`sg_*` strides), this range's shares of dA and dV_A (B*h, splits, n, d)
        fp32, and the bias tables' gradient (atomic adds)."""
        split = tl.program_id(0)
        batch_head = tl.program_id(1)
        b = batch_head // heads
        head = batch_head % heads
        offs_a = tl.arange(0, NA)
        offs_d = tl.arange(0, BD)
        offs_x0 = tl.arange(0, BX)
        mask_a = offs_a < agents
        mask_d = offs_d < HEAD_DIM
        mask_ad = mask_a[:, None] & mask_d[None, :]
        agent_rows = batch_head * agents + offs_a
        a = tl.load(a_ptr + agent_rows[:, None] * HEAD_DIM + offs_d[None, :], mask_ad, 0.0)
        va = tl.load(va_ptr + agent_rows[:, None] * HEAD_DIM + offs_d[None, :], mask_ad, 0.0)
        grad_a = tl.zeros((NA, BD), tl.float32)
        grad_va = tl.zeros((NA, BD), tl.float32)
        y_start = split * rows_per_split
        y_stop = tl.minimum(y_start + rows_per_split, height)
        for y in range(y_start, y_stop):
            for x0 in range(0, width, BX):
                offs_x = x0 + offs_x0
                mask_x = offs_x < width
                tokens = y * width + offs_x
                mask_xd = mask_x[:, None] & mask_d[None, :]
                token_d = tokens[:, None]
                q = tl.load(q_ptr + b * sq_b + head * sq_h + token_d * sq_t + offs_d[None, :] * sq_d, mask_xd, 0.0)
                o = tl.load(out_ptr + b * so_b + head * so_h + token_d * so_t + offs_d[None, :] * so_d, mask_xd, 0.0)
                grad_out = tl.load(
                    grad_out_ptr + b * sd_b + head * sd_h + token_d * sd_t + offs_d[None, :] * sd_d, mask_xd, 0.0
                )
                delta = tl.sum(grad_out.to(tl.float32) * o.to(tl.float32), 1)
                grad_out = grad_out.to(q.dtype)
                lse = tl.load(lse_ptr + batch_head * height * width + tokens, mask=mask_x, other=0.0)
                bias = _bias_tile(
                    resize_ptr, table_ptr, rows_ptr, head, y, offs_x, offs_a, mask_x, mask_a,
                    st_h, st_i, st_x, st_a, sr_h, sr_y, sr_a,
                )  # fmt: skip
                scores = tl.dot(q, tl.trans(a), input_precision=PRECISION) * scale + bias
                p = tl.exp(scores - lse[:, None])
                p = tl.where(mask_x[:, None] & mask_a[None, :], p, 0.0)  # (BX, NA)
                grad_va += tl.dot(tl.trans(p).to(q.dtype), grad_out, input_precision=PRECISION)
                grad_p = tl.dot(grad_out, tl.trans(va), input_precision=PRECISION)
                grad_s = p * (grad_p - delta[:, None])
                grad_q = tl.dot(grad_s.to(q.dtype), a, input_precision=PRECISION) * scale
                grad_a += tl.dot(tl.trans(grad_s).to(q.dtype), q, input_precision=PRECISION)
                grad_ptrs = grad_q_ptr + b * sg_b + head * sg_h + token_d * sg_t + offs_d[None, :] * sg_d
                tl.store(grad_ptrs, grad_q, mask=mask_xd)
                if TABLE_GRAD:
                    _bias_grad_tile(
                        resize_ptr, grad_table_ptr, grad_rows_ptr, head, y, offs_x, offs_a, mask_x, mask_a,
                        grad_s, width, agents, height,
                    )  # fmt: skip
        part = (batch_head * splits + split) * agents + offs_a[:, None]
        tl.store(grad_a_ptr + part * HEAD_DIM + offs_d[None, :], grad_a * scale, mask_ad)
        tl.store(grad_va_ptr + part * HEAD_DIM + offs_d[None, :], grad_va, mask_ad)


# ----------------------------------------------------------------------------------------------------------------
# Launch parameters (from shapes only: no host synchronization, the same launches every call)
# ----------------------------------------------------------------------------------------------------------------

# Programs per device the agent-side reductions aim for (split over map rows), and the score-tile size. Each tile
# loads eight (BX x NA) fp32 slices of the bias table; with two pipeline stages a 4096-element tile takes about
# 180 KB of shared memory on sm_90 (three stages would pass the 227 KB a block may have), a 2048-element one about
# 100 KB (two blocks per SM). tests/test_kernels.py compiles the kernels for sm_90 and checks this.
TARGET_PROGRAMS = 512
TILE_ELEMENTS = 2048
MAX_SHARED_BYTES = 232448  # sm_90's opt-in shared memory per block


def _tile_sizes(agents: int, head_dim: int) -> tuple[int, int, int]:
    """(NA, BD, BX): agents and head_dim padded to powers of two (at least 16, for tl.dot), tokens per tile."""
    padded_agents = max(16, triton.next_power_of_2(agents))
    padded_dim = max(16, triton.next_power_of_2(head_dim))
    tokens = max(16, min(64, TILE_ELEMENTS // padded_agents))
    return padded_agents, padded_dim, tokens


def _rows_per_split(batch_heads: int, height: int) -> tuple[int, int]:
    """(rows per split, splits): every split gets at least one map row."""
    splits = min(height, max(1, math.ceil(TARGET_PROGRAMS / batch_heads)))
    rows = math.ceil(height / splits)
    return rows, math.ceil(height / rows)


def launch_options(agents: int, head_dim: int, dtype: torch.dtype) -> dict:
    """The compile-time arguments of every kernel launch for `agents` agents of `head_dim` channels in `dtype`."""
    padded_agents, padded_dim, tile = _tile_sizes(agents, head_dim)
    return dict(
        HEAD_DIM=head_dim,
        BD=padded_dim,
        BX=tile,
        NA=padded_agents,
        # fp32 stays fp32 (IEEE dot products; TF32 would break parity at 1e-5); fp16/bf16 accumulate in fp32.
        PRECISION="ieee" if dtype == torch.float32 else "tf32",
        num_warps=8 if padded_agents >= 256 else 4,
        # see TILE_ELEMENTS; the (NA x BD) operand tiles count too (256 agents x 64 channels: 290 KB with two)
        num_stages=2 if padded_agents * tile <= 4096 and padded_agents * padded_dim <= 8192 else 1,
    )


def _token_major(shape, dtype, device) -> torch.Tensor:
    """An empty (B, h, N, d) tensor laid out as (B, N, h, d): the layout of the projections and of `out`."""
    batch, heads, tokens, head_dim = shape
    return torch.empty(batch, tokens, heads, head_dim, dtype=dtype, device=device).transpose(1, 2)


# ----------------------------------------------------------------------------------------------------------------
# The two steps as autograd functions
# ----------------------------------------------------------------------------------------------------------------


class FusedAgentStep(torch.autograd.Function):
    """V_A = softmax(A K^T * s + B1) V with the bias computed in the kernel from (resize_h, table, rows).

    `table` is (h, 8, W, n) and `rows` (h, H, n) (any strides); returns V_A (B, h, n, d) contiguous in A's dtype.
    """

    @staticmethod
    def forward(ctx, agents, key, value, resize_h, table, rows, scale):
        batch, heads, agent_count, head_dim = agents.shape
        height, width = rows.shape[1], table.shape[2]
        agents = agents.contiguous()
        options = launch_options(agent_count, head_dim, agents.dtype)
        rows_per_split, splits = _rows_per_split(batch * heads, height)
        device = agents.device
        parts = torch.empty(batch * heads, splits, agent_count, head_dim, dtype=torch.float32, device=device)
        part_lse = torch.empty(batch * heads, splits, agent_count, dtype=torch.float32, device=device)
        _agent_step_forward[(splits, batch * heads)](
            agents, key, value, parts, part_lse, resize_h, table, rows,
            scale, heads, height, width, agent_count, rows_per_split, splits,
            *agents.stride(), *key.stride(), *value.stride(), *table.stride(), *rows.stride(),
            **options,
        )  # fmt: skip
        lse = torch.logsumexp(part_lse, dim=1)  # (B*h, n)
        output = (parts * torch.exp(part_lse - lse.unsqueeze(1)).unsqueeze(-1)).sum(dim=1)
        output = output.view(batch, heads, agent_count, head_dim).to(agents.dtype)
        ctx.save_for_backward(agents, key, value, resize_h, table, rows, output, lse)
        ctx.scale = scale
        return output

    @staticmethod
    def backward(ctx, grad_output):
        agents, key, value, resize_h, table, rows, output, lse = ctx.saved_tensors
        batch, heads, agent_count, head_dim = agents.shape
        height, width = rows.shape[1], table.shape[2]
        options = launch_options(agent_count, head_dim, agents.dtype)
        rows_per_split, splits = _rows_per_split(batch * heads, height)
        device = agents.device
        grad_output = grad_output.contiguous()
        delta = (grad_output.float() * output.float()).sum(-1)  # (B, h, n)
        grad_key = _token_major(key.shape, key.dtype, device)
        grad_value = _token_major(value.shape, value.dtype, device)
        grad_parts = torch.empty(batch * heads, splits, agent_count, head_dim, dtype=torch.float32, device=device)
        table_grad = ctx.needs_input_grad[4] or ctx.needs_input_grad[5]
        grad_table = torch.zeros(heads, BIAS_TERMS, width, agent_count, dtype=torch.float32, device=device)
        grad_rows = torch.zeros(heads, height, agent_count, dtype=torch.float32, device=device)
        _agent_step_backward[(splits, batch * heads)](
            agents, key, value, grad_output, lse, delta, grad_parts, grad_key, grad_value,
            resize_h, table, rows, grad_table, grad_rows,
            ctx.scale, heads, height, width, agent_count, rows_per_split, splits,
            *agents.stride(), *key.stride(), *value.stride(), *grad_key.stride(),
            *table.stride(), *rows.stride(),
            TABLE_GRAD=table_grad, **options,
        )  # fmt: skip
        grad_agents = grad_parts.sum(dim=1).view(agents.shape).to(agents.dtype)
        grad_table = grad_table.to(table.dtype) if table_grad else None
        grad_rows = grad_rows.to(rows.dtype) if table_grad else None
        return grad_agents, grad_key, grad_value, None, grad_table, grad_rows, None


class FusedBroadcastStep(torch.autograd.Function):
    """O = softmax(Q A^T * s + B2) V_A with the bias computed in the kernel from (resize_h, table, rows).

    `table` is (h, 8, W, n) and `rows` (h, H, n) (any strides); returns O (B, h, N, d) in Q's dtype, a view of a
    token-major (B, N, h, d) tensor.
    """

    @staticmethod
    def forward(ctx, query, agents, agent_values, resize_h, table, rows, scale):
        batch, heads, tokens, head_dim = query.shape
        agent_count = agents.shape[2]
        height, width = rows.shape[1], table.shape[2]
        agents, agent_values = agents.contiguous(), agent_values.contiguous()
        options = launch_options(agent_count, head_dim, query.dtype)
        x_blocks = triton.cdiv(width, options["BX"])
        output = _token_major(query.shape, query.dtype, query.device)
        lse = torch.empty(batch * heads, tokens, dtype=torch.float32, device=query.device)
        _query_step_forward[(height * x_blocks, batch * heads)](
            query, agents, agent_values, output, lse, resize_h, table, rows,
            scale, heads, height, width, agent_count, x_blocks,
            *query.stride(), *output.stride(), *table.stride(), *rows.stride(),
            **options,
        )  # fmt: skip
        ctx.save_for_backward(query, agents, agent_values, resize_h, table, rows, output, lse)
        ctx.scale = scale
        return output

    @staticmethod
    def backward(ctx, grad_output):
        query, agents, agent_values, resize_h, table, rows, output, lse = ctx.saved_tensors
        batch, heads, tokens, head_dim = query.shape
        agent_count = agents.shape[2]
        height, width = rows.shape[1], table.shape[2]
        options = launch_options(agent_count, head_dim, query.dtype)
        rows_per_split, splits = _rows_per_split(batch * heads, height)
        device = query.device
        grad_query = _token_major(query.shape, query.dtype, device)
        grad_agent_parts = torch.empty(
            batch * heads, splits, agent_count, head_dim, dtype=torch.float32, device=device
        )
        grad_value_parts = torch.empty_like(grad_agent_parts)
        table_grad = ctx.needs_input_grad[4] or ctx.needs_input_grad[5]
        grad_table = torch.zeros(heads, BIAS_TERMS, width, agent_count, dtype=torch.float32, device=device)
        grad_rows = torch.zeros(heads, height, agent_count, dtype=torch.float32, device=device)
        _query_step_backward[(splits, batch * heads)](
            query, agents, agent_values, output, grad_output, lse, grad_query, grad_agent_parts, grad_value_parts,
            resize_h, table, rows, grad_table, grad_rows,
            ctx.scale, heads, height, width, agent_count, rows_per_split, splits,
            *query.stride(), *output.stride(), *grad_output.stride(), *grad_query.stride(),
            *table.stride(), *rows.stride(),
            TABLE_GRAD=table_grad, **options,
        )  # fmt: skip
        grad_agents = grad_agent_parts.sum(dim=1).view(agents.shape).to(agents.dtype)
        grad_values = grad_value_parts.sum(dim=1).view(agents.shape).to(agent_values.dtype)
        grad_table = grad_table.to(table.dtype) if table_grad else None
        grad_rows = grad_rows.to(rows.dtype) if table_grad else None
        return grad_query, grad_agents, grad_values, None, grad_table, grad_rows, None


def fused_agent_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    agents: torch.Tensor,
    factors: AgentBiasFactors,
    scale: float,
) -> torch.Tensor:
    """O = softmax(Q A^T s + B2) softmax(A K^T s + B1) V by the two fused kernels.

    Args:
        query (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): Q (a strided view is fine).
        key (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): K (a strided view is fine).
        value (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): V (a strided view is fine).
        agents (`torch.Tensor` of shape `(batch_size, heads, agents, head_dim)`): A.
        factors (`AgentBiasFactors`): both biases of the (H, W) map (fp32; differentiable in the tables).
        scale (`float`): s.

    Returns O (batch_size, heads, tokens, head_dim) in the query's dtype, a view of a token-major tensor.
    """
    dtype = query.dtype
    key, value, agents = key.to(dtype), value.to(dtype), agents.to(dtype)
    resize_h = factors.resize_h.contiguous()
    agent_values = FusedAgentStep.apply(
        agents, key, value, resize_h, factors.agent_table.transpose(2, 3), factors.agent_rows.squeeze(-1), scale
    )
    return FusedBroadcastStep.apply(
        query, agents, agent_values, resize_h, factors.token_table, factors.token_rows.squeeze(2), scale
    )


# ----------------------------------------------------------------------------------------------------------------
# The same computation with FlexAttention (`fused_kernel="flex"`), to measure against the Triton kernels
# ----------------------------------------------------------------------------------------------------------------

_compiled_flex_attention = None


def _flex_attention_function(device_type: str):
    """FlexAttention compiled once (its fused kernel; uncompiled it materializes the scores), or as it is inside a
    compiled model and on the CPU (there compiled FlexAttention has no backward, so the tests run it uncompiled)."""
    global _compiled_flex_attention
    from torch.nn.attention.flex_attention import flex_attention

    if device_type == "cpu" or torch.compiler.is_compiling():
        return flex_attention
    if _compiled_flex_attention is None:
        _compiled_flex_attention = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex_attention


def flex_agent_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    agents: torch.Tensor,
    factors: AgentBiasFactors,
    scale: float,
) -> torch.Tensor:
    """`fused_agent_attention` by FlexAttention: each step one `flex_attention` call whose `score_mod` computes the
    bias from the same factored tables (an 8-term sum of table reads per score). Same arguments and result."""
    attend = _flex_attention_function(query.device.type)
    width, resize_h = factors.width, factors.resize_h
    agent_table, agent_rows = factors.agent_table, factors.agent_rows.squeeze(-1)  # (h, 8, n, W), (h, H, n)
    token_table, token_rows = factors.token_table, factors.token_rows.squeeze(2)  # (h, 8, W, n), (h, H, n)

    def agent_to_token(score, batch, head, agent, token):
        row, column = token // width, token % width
        bias = agent_rows[head, row, agent]
        for i in range(BIAS_TERMS):
            bias = bias + resize_h[row, i] * agent_table[head, i, agent, column]
        return score + bias

    def token_to_agent(score, batch, head, token, agent):
        row, column = token // width, token % width
        bias = token_rows[head, row, agent]
        for i in range(BIAS_TERMS):
            bias = bias + resize_h[row, i] * token_table[head, i, column, agent]
        return score + bias

    dtype = query.dtype
    agents = agents.to(dtype)
    agent_values = attend(agents, key.to(dtype), value.to(dtype), score_mod=agent_to_token, scale=scale)
    return attend(query, agents, agent_values, score_mod=token_to_agent, scale=scale)


__all__ = [
    "FusedAgentStep",
    "FusedBroadcastStep",
    "flex_agent_attention",
    "fused_agent_attention",
    "kernel_runs_on",
    "kernel_supports",
    "launch_options",
    "triton_available",
]
