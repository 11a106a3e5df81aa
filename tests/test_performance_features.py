"""Behavior of the performance features (never timings): gradient checkpointing, bf16 autocast, torch.compile,
the fast paths of AgentAttention (factored biases materialized in blocks at inference, the fused kernel with a
recomputing backward in training) against the reference implementation, the inference paths of the blocks and
heads (in-place feed-forward, folded BatchNorm, Winograd convolutions, no auxiliary head), all against the plain
computation."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_pvt_config, tiny_swin_config

import agent_hf
from agent_hf import AgentPvtForSemanticSegmentation, AgentSwinForSemanticSegmentation
from agent_hf.flops import FlopCounter
from agent_hf.models import conv_inference, heads
from agent_hf.models.agent_attention import AgentAttention, reference_agent_attention
from agent_hf.models.agent_attention_biases import agent_bias_factors, cached_bias_factors, official_position_biases
from agent_hf.models.agent_attention_fast import agent_aggregation_by_products, blocked_agent_aggregation

FAMILIES = {
    "swin": (tiny_swin_config, AgentSwinForSemanticSegmentation),
    "pvt": (tiny_pvt_config, AgentPvtForSemanticSegmentation),
}


def tiny_model(family, **config_kwargs):
    torch.manual_seed(0)
    factory, cls = FAMILIES[family]
    return cls(factory(**config_kwargs))


def batch(height=64, width=96, size=2, seed=1):
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(size, 3, height, width, generator=generator)
    labels = torch.randint(0, 5, (size, height, width), generator=generator)
    labels[:, :4] = 255  # some ignored pixels, as in ADE20K
    return pixels, labels


def attention_modules(model):
    return [m for m in model.modules() if isinstance(m, AgentAttention)]


def loss_and_grads(model, pixels, labels, seed=0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # drop path / dropout draw the same numbers in every run
    loss = model(pixel_values=pixels, labels=labels).loss
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def assert_close_grads(grads, reference, rtol, atol=1e-8):
    """Each gradient within `rtol` of the reference's norm (plus `atol` for gradients that are ~0)."""
    assert grads.keys() == reference.keys()
    for name, grad in grads.items():
        error, scale = (grad - reference[name]).norm().item(), reference[name].norm().item()
        assert error <= rtol * scale + atol, f"{name}: |error| {error:.3g} vs |grad| {scale:.3g}"


# ----------------------------------------------------------------------------------------------------
# Gradient checkpointing
# ----------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*deprecated:FutureWarning")
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*deprecated:FutureWarning")
@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(family):
    model = tiny_model(family).train()  # drop path and dropout active (default rates)
    pixels, labels = batch()
    loss, grads = loss_and_grads(model, pixels, labels)

    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    calls = []
    hook = attention_modules(model)[0].register_forward_hook(lambda *args: calls.append(1))
    loss_ckpt, grads_ckpt = loss_and_grads(model, pixels, labels)
    hook.remove()
    assert len(calls) == 2, "the block is recomputed in backward, so checkpointing is really on"

    assert torch.allclose(loss_ckpt, loss, rtol=1e-5, atol=0)
    assert_close_grads(grads_ckpt, grads, rtol=1e-5)
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing


# ----------------------------------------------------------------------------------------------------
# bf16 autocast
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_bf16_autocast_forward_and_backward_are_finite(family):
    model = tiny_model(family).train()
    pixels, labels = batch(height=64, width=256)  # the 1:4 aspect ratio of 512x2048
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(pixel_values=pixels, labels=labels)
    assert outputs.logits.dtype == torch.bfloat16
    assert torch.isfinite(outputs.loss)
    outputs.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    for attention in attention_modules(model):  # the bias tables are trained too
        assert attention.an_bias.grad.abs().sum() > 0 and attention.wa_bias.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------
# The residual stream under autocast
# ----------------------------------------------------------------------------------------------------


def test_residual_stream_stays_fp32_when_branches_are_bf16():
    """Under autocast the attention and MLP branches come out bf16; the residual sum must not be written
    into them (it would round the fp32 stream to bf16 at every block)."""
    residual = torch.randn(2, 10, 8)
    branch = torch.randn(2, 10, 8).bfloat16()
    total = agent_hf.models.blocks.add_residual(residual, branch)
    assert total.dtype == torch.float32
    torch.testing.assert_close(total, residual + branch.float(), rtol=0, atol=0)

    # A block fed an fp32 stream (as on CUDA, where autocast runs LayerNorm in fp32) returns fp32.
    for family, blocks in (
        ("swin", lambda m: m.backbone.agent_swin.layers[0].blocks),
        ("pvt", lambda m: m.backbone.agent_pvt.stages[0].blocks),
    ):
        block = blocks(tiny_model(family).eval())[0]
        hidden_states = torch.randn(2, 16 * 16, 16)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert block(hidden_states, 16, 16).dtype == torch.float32


# ----------------------------------------------------------------------------------------------------
# torch.compile
# ----------------------------------------------------------------------------------------------------


# Tracing takes time per block, and one block of each kind says as much: every stage, one agent-attention block each
# and, in the Swin's last stage (a "B" stage of the default "AAAB"), a window block and a shifted-window block.
FEWEST_BLOCKS = {"swin": dict(depths=[1, 1, 1, 2]), "pvt": dict(depths=[1, 1, 1, 1])}


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_torch_compile_fullgraph_backbone_matches_eager(family):
    torch._dynamo.reset()
    stages = ["stage1", "stage2", "stage3", "stage4"]
    backbone = tiny_model(family, out_features=stages, **FEWEST_BLOCKS[family]).backbone.eval()
    pixels, _ = batch(height=64, width=96, size=1)
    with torch.no_grad():
        expected = backbone(pixels).feature_maps
        # aot_eager: Dynamo's full-graph capture and AOTAutograd, without Inductor's (slow) C++ codegen.
        compiled = torch.compile(backbone, fullgraph=True, backend="aot_eager")
        actual = compiled(pixels).feature_maps
    assert len(actual) == len(expected) == 4
    for a, e in zip(actual, expected):
        assert torch.allclose(a, e, rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


def test_torch_compile_reports_no_graph_breaks_in_training():
    torch._dynamo.reset()
    model = tiny_model("swin", attn_type="AAAA", depths=[1, 1, 1, 1]).train()  # an agent-attention block per stage
    pixels, labels = batch(height=64, width=64)
    explanation = torch._dynamo.explain(model.backbone)(pixels)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    torch._dynamo.reset()


# ----------------------------------------------------------------------------------------------------
# AgentAttention: the fast path against the reference
# ----------------------------------------------------------------------------------------------------


def first_attention(family="swin"):
    model = tiny_model(family).eval()
    return model, attention_modules(model)[0]


def randomize_tables(attention):
    with torch.no_grad():
        for table in attention._bias_tables():  # make every table matter
            table.normal_()


@pytest.mark.parametrize("family", ["swin", "pvt"])
@pytest.mark.parametrize("size", [(7, 9), (16, 24), (5, 31)])
def test_factored_biases_equal_the_official_construction(family, size):
    shapes = [[9, 12], [12, 8], [14, 14], [7, 7]] if family == "swin" else [[12, 10], [16, 16], [28, 20], [28, 28]]
    attentions = attention_modules(tiny_model(family, downstream_agent_shapes=shapes))
    for attention in (attentions[0], attentions[-1]):
        randomize_tables(attention)
        with torch.no_grad():
            factors = agent_bias_factors(attention, *size)
            expected = official_position_biases(attention, *size)
            actual = (factors.agent_to_token(), factors.token_to_agent())
            # The blocks of rows the inference path materializes, put back together.
            blocks = [(start, min(start + 2, size[0])) for start in range(0, size[0], 2)]
            agent_blocks = torch.cat([factors.agent_to_token_block(a, b) for a, b in blocks])  # (H, h, n, W)
            token_blocks = torch.cat([factors.token_to_agent_block(a, b) for a, b in blocks], dim=1)
        heads, agents = attention.num_heads, attention.agent_grid[0] * attention.agent_grid[1]
        assert actual[0].shape == expected[0].shape == (heads, agents, size[0] * size[1])
        assert actual[1].shape == expected[1].shape == (heads, size[0] * size[1], agents)
        assert actual[0].is_contiguous() and actual[1].is_contiguous()
        for got, reference in zip(actual, expected):
            assert (got - reference).norm() <= 1e-6 * reference.norm()
        torch.testing.assert_close(agent_blocks.permute(1, 2, 0, 3).reshape(heads, agents, -1), actual[0])
        torch.testing.assert_close(token_blocks, actual[1])


def agent_step_case(height=6, width=10):
    """(attention with random tables, A, K, V, the fused kernel's V_A on the whole bias, the factors) for a batch
    of two on a (height, width) map."""
    _, attention = first_attention()
    randomize_tables(attention)
    heads, dim = attention.num_heads, attention.head_dim
    agents = attention.agent_grid[0] * attention.agent_grid[1]
    generator = torch.Generator().manual_seed(0)
    query_agents = torch.randn(2, heads, agents, dim, generator=generator)
    key, value = torch.randn(2, 2, heads, height * width, dim, generator=generator).unbind(0)
    with torch.no_grad():
        factors = agent_bias_factors(attention, height, width)
        expected = F.scaled_dot_product_attention(
            query_agents, key, value, attn_mask=factors.agent_to_token(), scale=attention.scale
        )
    return attention, query_agents, key, value, expected, factors


def test_blocked_agent_step_merges_the_blocks_exactly():
    """The agent step's softmax runs over all tokens; per-row kernel calls merged through their log-sum-exp must
    give the one-call result."""
    attention, query_agents, key, value, expected, factors = agent_step_case(height=6)
    with torch.no_grad():
        for rows in (1, 4, 6):
            actual = blocked_agent_aggregation(query_agents, key, value, factors, attention.scale, rows)
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_agent_step_by_products_equals_the_fused_kernel():
    """The accelerators' inference agent step (explicit products) computes the fused kernel's V_A."""
    attention, query_agents, key, value, expected, factors = agent_step_case()
    with torch.no_grad():
        bias = factors.agent_to_token().unsqueeze(0)
        actual = agent_aggregation_by_products(query_agents, key, value, bias, attention.scale)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_cached_bias_factors_follow_the_weights_and_stay_bounded():
    """Kept per map size, computed again after any change of a table (in place or loaded), at most
    `bias_factor_cache_size` sizes."""
    _, attention = first_attention()
    randomize_tables(attention)
    first = cached_bias_factors(attention, 6, 10)
    assert cached_bias_factors(attention, 6, 10) is first
    with torch.no_grad():
        attention.na_bias.add_(0.5)
    changed = cached_bias_factors(attention, 6, 10)
    assert changed is not first
    torch.testing.assert_close(changed.token_to_agent(), agent_bias_factors(attention, 6, 10).token_to_agent())
    state = {name: value + 1 for name, value in attention.state_dict().items()}
    attention.load_state_dict(state)
    assert cached_bias_factors(attention, 6, 10) is not changed
    attention.bias_factor_cache_size = 2
    for height in (7, 8, 9):
        cached_bias_factors(attention, height, 10)
    assert len(attention._bias_factor_cache) == 2
    assert "_bias_factor_cache" not in str(list(attention.state_dict()))


@pytest.mark.parametrize("family", ["swin", "pvt"])
@pytest.mark.parametrize("block_size", [1, 1 << 21])
def test_fast_inference_path_equals_the_reference(family, block_size):
    """No gradient: the fast path builds its biases in blocks of map rows (one row with `bias_block_size` 1);
    batch of two, a non-square map, every table random."""
    _, attention = first_attention(family)
    randomize_tables(attention)
    attention.bias_block_size = block_size
    x = torch.randn(2, 10 * 14, attention.dim)
    kernel_calls = []

    class CountFusedKernels(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ == "_scaled_dot_product_flash_attention_for_cpu":
                kernel_calls.append(1)
            return func(*args, **(kwargs or {}))

    with torch.no_grad():
        with CountFusedKernels():
            fast = attention(x, 10, 14)
        reference, _ = attention(x, 10, 14, output_attentions=True)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)
    # The blocks ran: the agent step once per block and image, the query step once per block (10 map rows).
    blocks = 10 if block_size == 1 else 1
    assert len(kernel_calls) == blocks * 2 + blocks


def test_fast_inference_path_never_builds_a_whole_bias():
    """The point of the blocks: no (h, n, H*W) tensor exists at inference, only blocks of `bias_block_size`."""
    _, attention = first_attention()
    height, width = 32, 64
    heads, agents = attention.num_heads, attention.agent_grid[0] * attention.agent_grid[1]
    attention.bias_block_size = heads * agents * width * 2  # two map rows per block
    sizes = []

    class RecordSizes(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            outputs = func(*args, **(kwargs or {}))
            for t in outputs if isinstance(outputs, tuple) else (outputs,):
                if isinstance(t, torch.Tensor):
                    sizes.append(t.numel())
            return outputs

    x = torch.randn(1, height * width, attention.dim)
    with torch.no_grad(), RecordSizes():
        attention(x, height, width)
    assert max(sizes) <= heads * agents * height * width / 4, max(sizes)
    # ... whereas the reference builds both whole biases.
    sizes.clear()
    with torch.no_grad(), RecordSizes():
        attention(x, height, width, output_attentions=True)
    assert max(sizes) >= heads * agents * height * width


def test_reference_implementation_is_the_paper_equations():
    """`reference_agent_attention` computes the two softmax steps as written."""
    generator = torch.Generator().manual_seed(0)
    batch_size, heads, tokens, agents, dim = 2, 3, 12, 4, 8
    query, key, value = torch.randn(3, batch_size, heads, tokens, dim, generator=generator).unbind(0)
    pooled = torch.randn(batch_size, heads, agents, dim, generator=generator)
    agent_bias, token_bias = torch.randn(heads, agents, tokens), torch.randn(heads, tokens, agents)
    output, agent_weights, token_weights = reference_agent_attention(
        query, key, value, pooled, agent_bias, token_bias, scale=0.3
    )
    for b in range(batch_size):
        for h in range(heads):
            p1 = torch.softmax(0.3 * pooled[b, h] @ key[b, h].T + agent_bias[h], dim=-1)
            p2 = torch.softmax(0.3 * query[b, h] @ pooled[b, h].T + token_bias[h], dim=-1)
            torch.testing.assert_close(agent_weights[b, h], p1)
            torch.testing.assert_close(token_weights[b, h], p2)
            torch.testing.assert_close(output[b, h], p2 @ (p1 @ value[b, h]))


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_fast_training_path_gradients_equal_the_reference(family):
    """With gradients the fast path runs the fused kernel (`FusedAttentionWithBiasGrad`); the reference runs plain
    autograd through the official construction: same values and gradients, tables included."""
    results = {}
    for implementation in ("sdpa", "eager"):
        _, attention = first_attention(family)
        randomize_tables(attention)
        attention.train()
        attention.config._attn_implementation = implementation
        x = torch.randn(2, 10 * 14, attention.dim, generator=torch.Generator().manual_seed(3), requires_grad=True)
        output = attention(x, 10, 14)
        output.pow(2).sum().backward()
        grads = {name: p.grad.clone() for name, p in attention.named_parameters()}
        results[implementation] = (output.detach(), x.grad.clone(), grads)
    (output, grad_x, grads), (output_eager, grad_x_eager, grads_eager) = results["sdpa"], results["eager"]
    torch.testing.assert_close(output, output_eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_x, grad_x_eager, rtol=1e-4, atol=1e-6)
    assert_close_grads(grads, grads_eager, rtol=1e-4, atol=1e-7)
    assert grads["an_bias"].abs().sum() > 0 and grads["wa_bias"].abs().sum() > 0


def test_inference_flop_count_is_the_same_on_meta_and_on_cpu():
    """The blocked CPU path does the products of the whole-bias path (the FLOP counts of the model cards are taken on
    the meta device, where the whole biases are built)."""
    _, attention = first_attention()
    attention.bias_block_size = 1
    with torch.no_grad(), FlopCounter() as counter:
        attention(torch.randn(1, 16 * 24, attention.dim), 16, 24)
    with torch.device("meta"):
        meta = AgentAttention(
            attention.dim, attention.num_heads, 9, attention.agent_grid, (56, 56), config=attention.config
        )
    with torch.no_grad(), FlopCounter() as meta_counter:
        meta(torch.empty(1, 16 * 24, attention.dim, device="meta"), 16, 24)
    assert counter.get_total_flops() == meta_counter.get_total_flops() > 0


# ----------------------------------------------------------------------------------------------------
# Inference paths of the blocks and heads
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_inference_paths_give_the_plain_models_outputs(family, monkeypatch):
    """Every inference shortcut forced on tiny maps (one bias row per block, a few tokens per feed-forward block,
    Winograd on every 3x3 convolution): the logits equal those of a forward that records a graph, where none runs."""
    monkeypatch.setattr(agent_hf.models.blocks, "FEED_FORWARD_BLOCK_SIZE", 100)
    monkeypatch.setattr(conv_inference, "WINOGRAD_MIN_PIXELS", 1)
    monkeypatch.setattr(AgentAttention, "bias_block_size", 1)
    model = tiny_model(family).eval()
    with torch.no_grad():
        for module in model.modules():  # BatchNorm statistics that matter
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    pixels, _ = batch(height=64, width=96)
    recorded = model(pixel_values=pixels, output_hidden_states=True)
    with torch.inference_mode():
        fast = model(pixel_values=pixels, output_hidden_states=True)
    torch.testing.assert_close(fast.logits, recorded.logits.detach(), rtol=1e-5, atol=1e-5)
    for got, expected in zip(fast.hidden_states, recorded.hidden_states, strict=True):
        torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-5)


def test_winograd_convolution_equals_the_direct_one():
    torch.manual_seed(0)
    for batch_size, channels, height, width in [(1, [8], 7, 9), (2, [3, 5], 6, 6), (1, [16, 16], 33, 70)]:
        parts = [torch.randn(batch_size, c, height, width) for c in channels]
        weight, bias = torch.randn(5, sum(channels), 3, 3), torch.randn(5)
        expected = F.conv2d(torch.cat(parts, 1).double(), weight.double(), bias.double(), padding=1)
        actual = conv_inference.winograd_conv3x3(parts, conv_inference.winograd_weights(weight), bias)
        assert actual.shape == expected.shape and actual.dtype == torch.float32
        assert (actual.double() - expected).norm() <= 1e-6 * expected.norm()


def test_winograd_runs_only_where_it_is_exact_and_allowed(monkeypatch):
    monkeypatch.setattr(conv_inference, "WINOGRAD_MIN_PIXELS", 64)
    conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        assert conv_inference.can_use_winograd(x, conv, conv.weight)
        assert not conv_inference.can_use_winograd(x[..., :7], conv, conv.weight)  # below the size threshold
        assert not conv_inference.can_use_winograd(x.double(), conv, conv.weight)
        assert not conv_inference.can_use_winograd(x, torch.nn.Conv2d(4, 4, 3, padding=1, stride=2), conv.weight)
        assert not conv_inference.can_use_winograd(x, torch.nn.Conv2d(4, 4, 1), conv.weight)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not conv_inference.can_use_winograd(x, conv, conv.weight)
        with FlopCounter():  # FLOP counting sees the model's own convolution
            assert not conv_inference.can_use_winograd(x, conv, conv.weight)
    assert not conv_inference.can_use_winograd(x, conv, conv.weight)  # the weight needs a gradient


def test_folded_batchnorm_follows_the_current_statistics():
    module = heads.AgentConvBNReLU(4, 6, 3, padding=1).eval()
    x = torch.randn(2, 4, 9, 9)
    for _ in range(2):
        with torch.no_grad():
            module.bn.running_mean.normal_()
            module.bn.running_var.uniform_(0.5, 2.0)
            module.bn.weight.normal_()
            assert module.can_fold(x)
            folded = module(x)
        plain = module.activate(module.bn(module.conv(x))).detach()  # grad enabled: the unfolded modules
        torch.testing.assert_close(folded, plain, rtol=1e-5, atol=1e-6)
    module.train()
    with torch.no_grad():
        assert not module.can_fold(x)  # batch statistics in training


def test_auxiliary_head_runs_only_for_the_loss_or_on_request():
    model = tiny_model("swin").eval()
    calls = []
    model.auxiliary_head.register_forward_hook(lambda *args: calls.append(1))
    pixels, labels = batch()
    with torch.no_grad():
        assert model(pixel_values=pixels).auxiliary_logits is None
        assert calls == []
        requested = model(pixel_values=pixels, output_auxiliary_logits=True).auxiliary_logits
        assert requested.shape == (2, 5, 4, 6) and len(calls) == 1
        with_labels = model(pixel_values=pixels, labels=labels)
    assert len(calls) == 2 and torch.equal(with_labels.auxiliary_logits, requested)


# ----------------------------------------------------------------------------------------------------
# The CPU training path of the "sdpa" implementation against the explicit eager attention
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_sdpa_training_gradients_match_eager(family):
    """The sdpa path trains through `_FlashAttentionWithBiasGrad` (fused forward, bias rebuilt and
    probabilities recomputed in backward); it must give the eager path's loss and gradients."""
    pixels, labels = batch(height=64, width=128)
    results = {}
    for implementation in ("sdpa", "eager"):
        model = tiny_model(family).train()
        model.set_attn_implementation(implementation)
        # The heads' BatchNorms use running statistics: batch statistics over two tiny maps (the pyramid pooling's
        # 1x1 maps) turn the implementations' last-bit differences into large gradient differences.
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
        results[implementation] = loss_and_grads(model, pixels, labels)
    (loss, grads), (loss_eager, grads_eager) = results["sdpa"], results["eager"]
    assert torch.allclose(loss, loss_eager, rtol=1e-5, atol=0)
    assert_close_grads(grads, grads_eager, rtol=1e-4, atol=1e-7)
    assert any(name.endswith("an_bias") for name in grads) and any(name.endswith("wa_bias") for name in grads)


def test_sdpa_training_path_does_not_keep_the_bias_for_backward():
    _, attention = first_attention()
    attention.train()
    x = torch.randn(2, 16 * 24, attention.dim, requires_grad=True)
    factors = agent_bias_factors(attention, 16, 24)
    bias_shapes = {(1, *factors.agent_to_token().shape), (1, *factors.token_to_agent().shape)}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        output = attention(x, 16, 24)
    assert not bias_shapes & set(saved)
    output.sum().backward()
    assert attention.na_bias.grad.abs().sum() > 0 and x.grad is not None


def test_sdpa_training_path_detects_a_table_changed_before_backward():
    _, attention = first_attention()
    attention.train()
    output = attention(torch.randn(1, 16 * 24, attention.dim), 16, 24)
    with torch.no_grad():
        attention.ah_bias.add_(1)
    with pytest.raises(RuntimeError, match="modified in place between forward and backward"):
        output.sum().backward()
