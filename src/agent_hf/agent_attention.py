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
(and attention dtype) when no gradient is needed, and recomputed whenever a table changes (parameter
version counters); never cached while torch.compile traces.

Performance notes (CPU; measurements in docs/benchmarks.md):

* With ``attn_implementation="sdpa"`` both steps go through `F.scaled_dot_product_attention` with a
  contiguous 4-D float mask and contiguous agent tokens: that is what lets PyTorch pick its fused
  (flash) CPU kernel, which never materializes the (n x N) score matrices. A 3-D mask or a strided
  agent tensor silently falls back to the unfused "math" kernel (~7x slower for the stage-1 agent
  step at 512x2048).
* q, k and v are projected as three contiguous tensors, so the agent pooling and the depth-wise
  convolution read them in place (channels-last views); the convolution's channels-last output is
  where the attention output is added, in the same pass that undoes the head-major layout.
* The biases are written once, directly in the layout the kernel reads (agent->token (h, n, N),
  token->agent (h, N, n)), from rank-9 / Kronecker-factored forms of the separable resize.
* PyTorch's fused CPU kernel has no gradient for the mask, so with a bias that needs one (training)
  SDPA would fall back to the math kernel, which keeps the probability matrices alive for backward.
  `_FlashAttentionWithBiasGrad` runs the fused forward and saves only q, k, v; its backward rebuilds
  the bias from the (tiny) tables and recomputes the probabilities one image at a time.
* ``attn_implementation="eager"`` stays an explicit softmax(QK^T * s + B) V, with the bias added
  inside the GEMM (`torch.baddbmm`) rather than as a separate pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Side of the square per-agent tables `an_bias`/`na_bias`, fixed by the official implementation.
AGENT_TABLE_SIZE = 7
_BIAS_CACHE_SIZE = 4
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def bilinear_matrix(in_size: int, out_size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(out_size, in_size) matrix M with M @ x == 1-D bilinear resize of x (align_corners=False).

    Built by resizing one-hot rows with `F.interpolate`, so the weights are PyTorch's own.
    """
    eye = torch.eye(in_size, device=device, dtype=torch.float32).view(1, in_size, in_size, 1)
    weights = F.interpolate(eye, size=(out_size, 1), mode="bilinear", align_corners=False)
    return weights.view(in_size, out_size).t().to(dtype)


def attention_scores(query: torch.Tensor, key: torch.Tensor, bias: torch.Tensor, scale: float) -> torch.Tensor:
    """query key^T * scale + bias, for query (B, h, M, d), key (B, h, N, d), bias (1 or B, h, M, N).

    For one image the bias is the GEMM's accumulator (`baddbmm`: no separate pass over the scores);
    otherwise the product is scaled and biased in place.
    """
    batch, heads, rows, _ = query.shape
    if batch == 1:
        return torch.baddbmm(bias.reshape(heads, rows, -1), query[0], key[0].transpose(-2, -1), alpha=scale).unsqueeze(
            0
        )
    return torch.matmul(query, key.transpose(-2, -1)).mul_(scale).add_(bias)


class _FlashAttentionWithBiasGrad(torch.autograd.Function):
    """softmax(q k^T * scale + bias) v with the fused SDPA kernel in forward and a gradient for `bias`.

    PyTorch's fused CPU kernel does not differentiate the mask, so SDPA with a mask that requires grad
    uses the unfused math kernel, which saves every (M x N) probability matrix for backward. Here the
    forward saves only q, k and v; backward recomputes this call's probabilities (one call at a time,
    FlashAttention-style) and returns dq, dk, dv and dbias.

    `recompute_bias`, when given, is a no-grad callable that returns the same bias again: the bias is
    then not saved either (it is batch-independent but as large as one image's score matrix, and the
    tables it is resized from are tiny), and is rebuilt in backward. `table_versions` is a callable
    returning the tables' version counters, checked in backward like autograd checks saved tensors.
    """

    @staticmethod
    def forward(ctx, query, key, value, bias, scale, recompute_bias=None, table_versions=None):
        if bias.dim() != 4 or bias.shape[0] not in (1, query.shape[0]):
            raise ValueError(
                f"_FlashAttentionWithBiasGrad: bias of shape {tuple(bias.shape)} is not (1 or B, h, M, N)"
            )
        # Detached: SDPA picks its kernel from `requires_grad`, even with grad mode off as it is here.
        output = F.scaled_dot_product_attention(
            query.detach(), key.detach(), value.detach(), attn_mask=bias.detach(), scale=scale
        )
        ctx.scale, ctx.bias_shape = scale, bias.shape
        ctx.recompute_bias, ctx.table_versions = recompute_bias, table_versions
        ctx.versions = table_versions() if table_versions is not None else None
        if recompute_bias is None:
            ctx.save_for_backward(query, key, value, bias)
        else:
            ctx.save_for_backward(query, key, value)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.recompute_bias is None:
            query, key, value, bias = ctx.saved_tensors
        else:
            query, key, value = ctx.saved_tensors
            if ctx.table_versions is not None and ctx.table_versions() != ctx.versions:
                raise RuntimeError(
                    "AgentAttention: a bias table was modified in place between forward and backward; "
                    "the attention bias cannot be recomputed for the gradient"
                )
            with torch.no_grad():
                bias = ctx.recompute_bias()
        scale, dtype = ctx.scale, query.dtype
        compute = torch.float32 if dtype in _LOW_PRECISION else dtype  # probabilities and gradients in fp32
        batch = query.shape[0]
        shared_bias = bias.shape[0] == 1  # broadcast over the batch (AgentAttention's case)
        bias = bias.to(compute)
        grad_query = torch.empty(query.shape, dtype=compute, device=query.device)
        grad_key = torch.empty(key.shape, dtype=compute, device=key.device)
        grad_value = torch.empty(value.shape, dtype=compute, device=value.device)
        grad_bias = None
        # One image at a time: 3-D GEMMs straight on the strided per-head views (no copies), with the
        # bias as the GEMM accumulator, and (h, M, N) temporaries for one image only.
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
                    grad_bias = (
                        torch.empty(bias.shape, dtype=compute, device=bias.device) if grad_bias is None else grad_bias
                    )
                    grad_bias[i] = grad_scores
                else:
                    grad_bias = grad_scores if grad_bias is None else grad_bias.add_(grad_scores)
            del grad_scores
        grad_query.mul_(scale)
        grad_key.mul_(scale)
        if grad_bias is not None:
            grad_bias = grad_bias.reshape(ctx.bias_shape).to(dtype)
        return grad_query.to(dtype), grad_key.to(dtype), grad_value.to(dtype), grad_bias, None, None, None


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
        config (`PreTrainedConfig`): the model config, read at call time for `_attn_implementation` ("eager" for
            explicit softmax(QK^T)V, anything else for `F.scaled_dot_product_attention`), as transformers models do.

    Input `hidden_states` (B, N=H*W, C), row-major over (H, W); output (B, N, C).

    Bias cache: `bias_cache_size` (class attribute, or per instance) resolutions are kept per module, FIFO;
    0 disables caching. A cached entry holds both biases, 2 * h * n * H * W values: for Agent-Swin-T at
    512x2048 about 0.95 GB over all its agent blocks (fp32); without it the backbone is ~30% slower
    there on a 2-core CPU (mostly first-touch page faults of the large bias buffers).
    `clear_bias_cache()` frees it.
    """

    bias_cache_size: int = _BIAS_CACHE_SIZE

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
        self._bias_cache: dict = {}
        # Counters for tests and profiling: bias computations served from / added to the cache.
        self.bias_cache_hits = 0
        self.bias_cache_misses = 0

    def _bias_tables(self) -> tuple[nn.Parameter, ...]:
        return (self.an_bias, self.na_bias, self.ah_bias, self.aw_bias, self.ha_bias, self.wa_bias)

    def _resize_bias(self, square, rows, cols, height, width, agents_last: bool = False) -> torch.Tensor:
        """Bias (h, n_agents, H, W), or (h, H, W, n_agents) with `agents_last`: official bilinear resize of
        `square` (h, A, 7, 7) + rows (h, A, H0) broadcast over columns + cols (h, A, W0) broadcast over
        rows, to (H, W), then of the agent axis (viewed as a pool x pool grid) to the agent grid.

        Everything is linear and separable, so the tables are first resized along each axis with small
        1-D interpolation matrices (PyTorch's own bilinear weights; no (H0, W0) map is built), and the
        full-size result is then written once, in the layout the attention reads:
        agents first, per agent a rank-9 product U V^T with U = [R_h, rows, 1] (H x 9) and
        V = [R_w S^T, 1, cols] (W x 9); agents last, rows + cols broadcast and the square term added in
        place as one GEMM, kron(R_h, R_w) (H*W x 49) @ S (49 x n) per head. Computed in fp32 even
        under autocast (the caller casts the result to the attention's dtype).
        """
        if square.device.type == "meta":  # shape-only runs (FLOP counting): autocast knows no meta device
            return self._resize_bias_fp(square, rows, cols, height, width, agents_last)
        with torch.autocast(square.device.type, enabled=False):
            return self._resize_bias_fp(square, rows, cols, height, width, agents_last)

    def _resize_bias_fp(self, square, rows, cols, height, width, agents_last: bool) -> torch.Tensor:
        heads, p = self.num_heads, self.pool_size
        (ga_h, ga_w), device = self.agent_grid, square.device
        dtype = torch.float32 if square.dtype in _LOW_PRECISION else square.dtype
        agent_h = bilinear_matrix(p, ga_h, device, dtype)
        agent_w = bilinear_matrix(p, ga_w, device, dtype)

        def to_agent_grid(table):  # (h, p*p, *rest) -> (h, ga_h*ga_w, *rest)
            rest = table.shape[2:]
            table = table.to(dtype).reshape(heads, p, p, -1)
            table = torch.einsum("ip,hpqr,jq->hijr", agent_h, table, agent_w)
            return table.reshape(heads, ga_h * ga_w, *rest)

        square, rows, cols = to_agent_grid(square), to_agent_grid(rows), to_agent_grid(cols)
        t, n = AGENT_TABLE_SIZE, square.shape[1]
        resize_h, resize_w = bilinear_matrix(t, height, device, dtype), bilinear_matrix(t, width, device, dtype)
        rows = rows @ bilinear_matrix(rows.shape[-1], height, device, dtype).t()  # (h, n, H)
        cols = cols @ bilinear_matrix(cols.shape[-1], width, device, dtype).t()  # (h, n, W)
        if not agents_last:
            ones_h = torch.ones(1, 1, height, 1, device=device, dtype=dtype).expand(heads, n, height, 1)
            ones_w = torch.ones(1, 1, width, 1, device=device, dtype=dtype).expand(heads, n, width, 1)
            u = torch.cat([resize_h.expand(heads, n, height, t), rows.unsqueeze(-1), ones_h], dim=-1)  # (h, n, H, 9)
            v = torch.cat([resize_w @ square.transpose(-1, -2), ones_w, cols.unsqueeze(-1)], dim=-1)  # (h, n, W, 9)
            return torch.matmul(u, v.transpose(-1, -2))  # (h, n, H, W)
        kron = (resize_h[:, None, :, None] * resize_w[None, :, None, :]).reshape(height * width, t * t)
        # (h, H, W, n), row-major: the (small) addends are made contiguous in that order first, since a
        # broadcast add lays its output out like its inputs.
        bias = rows.transpose(1, 2).contiguous().unsqueeze(2) + cols.transpose(1, 2).contiguous().unsqueeze(1)
        square = square.reshape(heads, n, t * t).transpose(1, 2)  # (h, 49, n)
        bias.view(heads, height * width, n).baddbmm_(kron.expand(heads, -1, -1), square)
        return bias

    def clear_bias_cache(self) -> None:
        self._bias_cache.clear()

    def _bias_cacheable(self) -> bool:
        if self.bias_cache_size <= 0:
            return False
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in self._bias_tables())
        return not needs_grad and not torch.compiler.is_compiling()

    def _table_versions(self) -> tuple[int, ...]:
        return tuple(t._version for t in self._bias_tables())

    def _agent_to_token_bias(self, height: int, width: int, dtype: torch.dtype | None) -> torch.Tensor:
        """B_an as a contiguous (1, h, n, H*W) mask (not cached)."""
        heads, n = self.num_heads, self.agent_grid[0] * self.agent_grid[1]
        bias = self._resize_bias(
            self.an_bias,
            self.ah_bias.reshape(heads, -1, self.ah_bias.shape[3]),
            self.aw_bias.reshape(heads, -1, self.aw_bias.shape[4]),
            height,
            width,
        ).reshape(1, heads, n, height * width)
        return bias if dtype is None else bias.to(dtype)

    def _token_to_agent_bias(self, height: int, width: int, dtype: torch.dtype | None) -> torch.Tensor:
        """B_na as a contiguous (1, h, H*W, n) mask (not cached), built agents-last: the fused SDPA
        kernel reads the mask row by row, and a transposed (strided) mask would need a copy."""
        heads, n = self.num_heads, self.agent_grid[0] * self.agent_grid[1]
        bias = self._resize_bias(
            self.na_bias,
            self.ha_bias.reshape(heads, -1, self.ha_bias.shape[-1]).transpose(1, 2),
            self.wa_bias.reshape(heads, -1, self.wa_bias.shape[-1]).transpose(1, 2),
            height,
            width,
            agents_last=True,
        ).reshape(1, heads, height * width, n)
        return bias if dtype is None else bias.to(dtype)

    def agent_biases(
        self, height: int, width: int, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(agent->token bias (1, h, n, H*W), token->agent bias (1, h, H*W, n)), both contiguous, for a
        (height, width) map, in `dtype` (default: the tables' compute dtype, fp32 for fp16/bf16 tables).

        Served from a small per-module cache keyed by (height, width, device, tables' dtype, dtype) when no
        gradient is needed and torch.compile is not tracing; a hit also requires every table's version
        counter and storage to be unchanged, so in-place updates (optimizer steps, `load_state_dict`,
        `with torch.no_grad(): table.add_(1)`) invalidate it. `bias_cache_hits` / `bias_cache_misses`
        count the cacheable calls.
        """
        cacheable = self._bias_cacheable()
        if cacheable:
            tables = self._bias_tables()
            key = (height, width, self.an_bias.device, self.an_bias.dtype, dtype)
            versions = self._table_versions() + tuple(t.data_ptr() for t in tables)
            hit = self._bias_cache.get(key)
            if hit is not None:
                if hit[0] == versions:
                    self.bias_cache_hits += 1
                    return hit[1], hit[2]
                del self._bias_cache[key]  # stale: free it before building its replacement
            self.bias_cache_misses += 1
        agent_to_token = self._agent_to_token_bias(height, width, dtype)
        token_to_agent = self._token_to_agent_bias(height, width, dtype)
        if cacheable:
            while len(self._bias_cache) >= self.bias_cache_size:
                self._bias_cache.pop(next(iter(self._bias_cache)))
            self._bias_cache[key] = (versions, agent_to_token, token_to_agent)
        return agent_to_token, token_to_agent

    def _attend(self, query, key, value, bias, recompute_bias=None):
        """softmax(query key^T * scale + bias) value for (B, h, M, d) / (B, h, N, d) inputs and a
        (1, h, M, N) bias that broadcasts over the batch. `recompute_bias` (a no-grad callable giving
        `bias` again) lets the CPU training path drop the bias after forward."""
        dropout = self.attn_drop if self.training else 0.0
        if getattr(self.config, "_attn_implementation", None) != "eager":
            if (
                dropout == 0.0
                and bias.requires_grad
                and torch.is_grad_enabled()
                and query.device.type == "cpu"
                and not torch.compiler.is_compiling()
            ):
                versions = self._table_versions if recompute_bias is not None else None
                return _FlashAttentionWithBiasGrad.apply(query, key, value, bias, self.scale, recompute_bias, versions)
            return F.scaled_dot_product_attention(
                query, key, value, attn_mask=bias, dropout_p=dropout, scale=self.scale
            )
        weights = torch.softmax(attention_scores(query, key, bias, self.scale), dim=-1)
        return torch.matmul(F.dropout(weights, dropout, self.training), value)

    def _project(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """query, key, value (B, N, C) each as its own contiguous tensor.

        The fused `qkv` (or `kv`) projection returns one contiguous tensor per C-row slice of its weight
        (`AgentSplitLinear`) instead of one (B, N, 3C) output chunked into strided views: a contiguous query
        is then a channels-last map that `adaptive_avg_pool2d` reads in place, and a contiguous value one the
        depth-wise convolution reads in place, where the strided views cost a full copy each (~25 ms per
        stage-1 block at 512x2048 on one core). Three (N, C) x (C, C) GEMMs run as fast as one (N, C) x (C, 3C).
        """
        if self.fused_qkv:
            return split_projection(self.qkv, hidden_states, 3)
        key, value = split_projection(self.kv, hidden_states, 2)
        return self.q(hidden_states), key, value

    def _attend_with_weights(self, query, key, value, bias) -> tuple[torch.Tensor, torch.Tensor]:
        """The explicit softmax(query key^T * scale + bias) value, and the attention weights (B, h, M, N)."""
        weights = torch.softmax(attention_scores(query, key, bias, self.scale), dim=-1)
        dropout = self.attn_drop if self.training else 0.0
        return torch.matmul(F.dropout(weights, dropout, self.training), value), weights

    def forward(self, hidden_states: torch.Tensor, height: int, width: int, output_attentions: bool = False):
        """Agent attention over a (height, width) map.

        Args:
            hidden_states (`torch.Tensor` of shape `(batch_size, height * width, dim)`): tokens, row-major.
            height (`int`): rows H of the map.
            width (`int`): columns W of the map.
            output_attentions (`bool`): also return both steps' attention weights (computed explicitly, as eager).

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

        # Agent tokens: the queries average-pooled to the agent grid, (B, h, n, d), contiguous (the fused
        # SDPA kernel needs a unit stride on the last dim; the pooled map is tiny).
        query_map = query.view(batch, height, width, channels).permute(0, 3, 1, 2)  # channels-last view
        agents = F.adaptive_avg_pool2d(query_map, self.agent_grid).reshape(batch, heads, head_dim, agent_count)
        agents = agents.transpose(-2, -1).contiguous()

        def split_heads(x):  # (B, N, C) -> (B, h, N, d), a strided view
            return x.view(batch, tokens, heads, head_dim).transpose(1, 2)

        dtype = query.dtype
        agent_to_token, token_to_agent = self.agent_biases(height, width, dtype)
        weights = None
        if output_attentions:
            agent_values, agent_weights = self._attend_with_weights(
                agents, split_heads(key), split_heads(value), agent_to_token
            )
            output, token_weights = self._attend_with_weights(split_heads(query), agents, agent_values, token_to_agent)
            weights = (agent_weights, token_weights)
        else:
            agent_values = self._attend(
                agents,
                split_heads(key),
                split_heads(value),
                agent_to_token,
                lambda: self._agent_to_token_bias(height, width, dtype),
            )
            output = self._attend(
                split_heads(query),
                agents,
                agent_values,
                token_to_agent,
                lambda: self._token_to_agent_bias(height, width, dtype),
            )  # (B, h, N, d)

        # The depth-wise convolution reads the value as a channels-last map in place and writes a
        # channels-last map, i.e. (B, N, C) row-major; the attention output is added into it in the same
        # pass that undoes its head-major layout (the conv does not need its output for backward).
        value_map = value.view(batch, height, width, channels).permute(0, 3, 1, 2)
        mixed = self.dwc(value_map).permute(0, 2, 3, 1).reshape(batch, tokens, heads, head_dim)
        mixed = mixed.add_(output.transpose(1, 2)).view(batch, tokens, channels)
        output = self.proj_drop(self.proj(mixed))
        return (output, weights) if output_attentions else output

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, agent_grid={self.agent_grid}, pool_size={self.pool_size}"


__all__ = ["AgentAttention", "AgentSplitLinear", "attention_scores", "bilinear_matrix", "split_projection"]
