"""The fast path of agent attention: the computation of `agent_attention.reference_agent_attention` (the paper's
agent aggregation, then its agent broadcast), with the position biases never built whole where it can be avoided.

The official bias construction (`agent_attention_biases.official_position_biases`) resizes the tables bilinearly,
which is linear and separable: each bias is a small GEMM of 1-D interpolation matrices with the tiny tables, so it
is kept in a factored form (`agent_attention_biases.AgentBiasFactors`) from which any block of rows of the (H, W)
map is materialized exactly. `fast_agent_attention` picks the kernel:

- where `AgentAttention.fused_kernel` selects them (by default on CUDA with Triton installed), the fused Triton
  kernels of `agent_attention_kernels` (both steps, forward and backward, the biases computed in the kernel from
  these factors), except for dropout on the attention weights in training, which takes the paths below;
- at inference (no gradients) the factors are kept per map size (`cached_bias_factors`; for Agent-Swin-T at
  512x2048 about 160 MB, a sixth of the whole biases, which the CPU path never builds);
- on CPU without gradients, `blocked_agent_aggregation` / `blocked_agent_broadcast` run PyTorch's fused CPU
  attention kernel block by block, with the bias block built on the fly; the agent aggregation's softmax runs over
  all N tokens, so its blocks of keys are merged exactly through their log-sum-exp. No (h, n, N) tensor ever
  exists, and the blocks are small enough to stay in the CPU cache;
- on CPU with gradients (training), `FusedAttentionWithBiasGrad` runs the fused kernel on the whole bias and
  rebuilds the bias and the probabilities in backward instead of saving them;
- on accelerators without gradients, the agent aggregation as explicit products (`agent_aggregation_by_products`:
  its few agent queries would leave most of a GPU idle in a fused kernel), the agent broadcast through
  `F.scaled_dot_product_attention`;
- otherwise (accelerators in training, torch.compile), `F.scaled_dot_product_attention` with the whole bias.

Every path computes the reference's values up to floating-point rounding (tests/test_performance_features.py
compares them, values and gradients; tests/test_parity.py holds both to the official outputs at 1e-5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .agent_attention_biases import LOW_PRECISION_DTYPES, AgentBiasFactors, agent_bias_factors, cached_bias_factors
from .agent_attention_kernels import (
    flex_agent_attention,
    fused_agent_attention,
    kernel_runs_on,
    kernel_supports,
    triton_available,
)


def _row_blocks(height: int, rows_per_block: int):
    for start in range(0, height, rows_per_block):
        yield start, min(start + rows_per_block, height)


def blocked_agent_aggregation(
    agents: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    factors: AgentBiasFactors,
    scale: float,
    rows_per_block: int,
) -> torch.Tensor:
    """V_A = softmax(A K^T * s + B1) V, one map row of keys at a time, merged exactly through log-sum-exp (CPU).

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


def blocked_agent_broadcast(
    query: torch.Tensor,
    agents: torch.Tensor,
    agent_values: torch.Tensor,
    factors: AgentBiasFactors,
    scale: float,
    rows_per_block: int,
    out: torch.Tensor,
) -> None:
    """O = softmax(Q A^T * s + B2) V_A, one block of query rows at a time, written into `out` (CPU).

    Args:
        query (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): Q (a strided view is fine).
        agents (`torch.Tensor` of shape `(batch_size, heads, agents, head_dim)`): A, contiguous.
        agent_values (`torch.Tensor` of shape `(batch_size, heads, agents, head_dim)`): V_A.
        factors (`AgentBiasFactors`): the biases of the (H, W) map of the tokens.
        scale (`float`): s.
        rows_per_block (`int`): map rows whose queries (and bias block) one kernel call processes.
        out (`torch.Tensor` of shape `(batch_size, tokens, heads, head_dim)`): O is written into it, token-major.
    """
    width = factors.width
    for start, stop in _row_blocks(factors.height, rows_per_block):
        bias = factors.token_to_agent_block(start, stop).unsqueeze(0)  # (1, h, rows * W, n)
        tokens = slice(start * width, stop * width)
        output, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query[:, :, tokens], agents, agent_values, attn_mask=bias, scale=scale
        )
        out[:, tokens].copy_(output.transpose(1, 2))  # the kernel writes token-major: a contiguous copy


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
        compute = torch.float32 if dtype in LOW_PRECISION_DTYPES else dtype  # probabilities and gradients in fp32
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


def agent_aggregation_by_products(
    agents: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor, scale: float
) -> torch.Tensor:
    """V_A = softmax(A K^T * s + B1) V with explicit matrix products (accelerators, no gradient).

    The fused attention kernels split their work over the queries, and the agent aggregation has only n = 49-196 agent
    queries against N = H*W keys: a handful of thread blocks on a GPU. Two large matrix products and a softmax use
    the whole device; the (B, h, n, N) scores live for this one step.

    Args:
        agents (`torch.Tensor` of shape `(batch_size, heads, agents, head_dim)`): A.
        key (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): K.
        value (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): V.
        bias (`torch.Tensor` of shape `(1, heads, agents, tokens)`): B1.
        scale (`float`): s.
    """
    scores = torch.matmul(agents * scale, key.transpose(-2, -1))
    scores = scores.add_(bias) if scores.dtype == bias.dtype else scores + bias
    weights = torch.softmax(scores, dim=-1)
    return torch.matmul(weights.to(value.dtype), value)


def selected_fused_kernel(attention: nn.Module, query: torch.Tensor, agents: torch.Tensor) -> str | None:
    """The fused kernels `attention.fused_kernel` picks for this call ("triton" or "flex"), or None.

    "auto": the Triton kernels (`agent_attention_kernels`) on CUDA where Triton imports and they take the shapes;
    "triton": wherever they can run (CUDA, or CPU tensors under `TRITON_INTERPRET=1`; an error elsewhere), for
    the shapes they take (up to 256 agents; larger grids take the paths below);
    "flex": the same computation by FlexAttention (`torch.nn.attention.flex_attention`, compiled; to compare);
    "torch": never. Decided from the tensors' metadata only.
    """
    choice = attention.fused_kernel
    if choice not in ("auto", "triton", "flex", "torch"):
        raise ValueError(f'AgentAttention.fused_kernel: {choice!r} is not one of "auto", "triton", "flex", "torch"')
    if choice == "torch" or query.device.type == "meta" or (choice == "auto" and query.device.type != "cuda"):
        return None
    if choice == "flex":
        return "flex"
    if choice == "triton" and not kernel_runs_on(query.device):
        reason = "Triton is not installed" if not triton_available() else f"Triton does not run on {query.device}"
        raise RuntimeError(
            f'AgentAttention.fused_kernel="triton": {reason} (on CPU set TRITON_INTERPRET=1 before importing)'
        )
    return "triton" if kernel_supports(query, agents) else None


def fast_agent_attention(
    attention: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    agents: torch.Tensor,
    height: int,
    width: int,
) -> torch.Tensor:
    """O of `attention` over a (height, width) map, by the fastest exact kernel for the call.

    Args:
        attention (`AgentAttention`): the module (its bias tables, scale, dropout and `bias_block_size`).
        query (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): Q (a strided view is fine).
        key (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): K (a strided view is fine).
        value (`torch.Tensor` of shape `(batch_size, heads, tokens, head_dim)`): V (a strided view is fine).
        agents (`torch.Tensor` of shape `(batch_size, heads, agents, head_dim)`): A, contiguous.
        height (`int`): rows H of the map.
        width (`int`): columns W of the map.

    Returns O token-major, `(batch_size, tokens, heads, head_dim)` (a transposed view of a head-major result, or
    contiguous).
    """
    scale = attention.scale
    dropout = attention.attn_drop if attention.training else 0.0
    tables = attention._bias_tables()
    grad = torch.is_grad_enabled()
    tables_need_grad = grad and any(t.requires_grad for t in tables)
    needs_grad = tables_need_grad or (grad and any(t.requires_grad for t in (query, key, value, agents)))
    kernel = selected_fused_kernel(attention, query, agents) if dropout == 0.0 else None
    if kernel is not None:
        if tables_need_grad or torch.compiler.is_compiling():  # the cache's keys are not traceable
            factors = agent_bias_factors(attention, height, width)
        else:
            factors = cached_bias_factors(attention, height, width)
        attend = fused_agent_attention if kernel == "triton" else flex_agent_attention
        return attend(query, key, value, agents, factors, scale).transpose(1, 2)
    compiling = torch.compiler.is_compiling()
    cpu = query.device.type == "cpu" and not compiling
    if cpu and not needs_grad and dropout == 0.0:
        factors = cached_bias_factors(attention, height, width)
        bias_per_row = attention.num_heads * agents.shape[2] * width
        rows = max(1, attention.bias_block_size // bias_per_row)
        agent_values = blocked_agent_aggregation(agents, key, value, factors, scale, rows)
        batch, heads, tokens, head_dim = query.shape
        output = query.new_empty(batch, tokens, heads, head_dim)  # O, token-major
        blocked_agent_broadcast(query, agents, agent_values, factors, scale, rows, output)
        return output
    accelerator = query.device.type not in ("cpu", "meta") and not compiling
    accelerator_inference = accelerator and not needs_grad and dropout == 0.0
    if accelerator_inference:
        factors = cached_bias_factors(attention, height, width)
    else:
        factors = agent_bias_factors(attention, height, width)
    dtype = query.dtype
    agent_to_token = factors.agent_to_token().unsqueeze(0).to(dtype)  # (1, h, n, N)
    token_to_agent = factors.token_to_agent().unsqueeze(0).to(dtype)  # (1, h, N, n)
    if accelerator_inference:
        agent_values = agent_aggregation_by_products(agents, key, value, agent_to_token, scale)
        output = F.scaled_dot_product_attention(query, agents, agent_values, attn_mask=token_to_agent, scale=scale)
    elif cpu and dropout == 0.0 and tables_need_grad:

        def rebuild(name):  # a no-grad callable giving the bias again, for backward
            return lambda: getattr(agent_bias_factors(attention, height, width), name)().unsqueeze(0).to(dtype)

        def versions():  # checked in backward, as autograd checks saved tensors
            return tuple(t._version for t in tables)

        agent_values = FusedAttentionWithBiasGrad.apply(
            agents, key, value, agent_to_token, scale, rebuild("agent_to_token"), versions
        )
        output = FusedAttentionWithBiasGrad.apply(
            query, agents, agent_values, token_to_agent, scale, rebuild("token_to_agent"), versions
        )
    else:
        agent_values = F.scaled_dot_product_attention(
            agents, key, value, attn_mask=agent_to_token, dropout_p=dropout, scale=scale
        )
        output = F.scaled_dot_product_attention(
            query, agents, agent_values, attn_mask=token_to_agent, dropout_p=dropout, scale=scale
        )
    return output.transpose(1, 2)


__all__ = [
    "FusedAttentionWithBiasGrad",
    "agent_aggregation_by_products",
    "blocked_agent_aggregation",
    "blocked_agent_broadcast",
    "fast_agent_attention",
    "selected_fused_kernel",
]
