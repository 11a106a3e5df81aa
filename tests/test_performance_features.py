"""Behavior of the performance features (never timings): gradient checkpointing, bf16 autocast,
torch.compile, the agent-bias cache, and the CPU training path of AgentAttention (fused SDPA forward
with a recomputing backward) against the explicit eager attention."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_pvt_config, tiny_swin_config

import agent_hf
from agent_hf import AgentPvtForSemanticSegmentation, AgentSwinForSemanticSegmentation
from agent_hf.agent_attention import AgentAttention

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
# Inference without gradients: in-place activation and residual adds
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_no_grad_inference_equals_the_recorded_forward(family):
    """Without autograd the MLP's activation runs in place and the residual sums are written into the
    branch outputs; the logits and every stage map must equal those of a forward that records a graph."""
    model = tiny_model(family).eval()
    pixels, _ = batch(height=64, width=256)
    recorded = model(pixel_values=pixels, output_hidden_states=True)
    assert recorded.logits.requires_grad
    with torch.inference_mode():
        fast = model(pixel_values=pixels, output_hidden_states=True)
    torch.testing.assert_close(fast.logits, recorded.logits.detach(), rtol=0, atol=1e-6)
    for got, expected in zip(fast.hidden_states, recorded.hidden_states, strict=True):
        torch.testing.assert_close(got, expected.detach(), rtol=0, atol=1e-6)


def test_residual_stream_stays_fp32_when_branches_are_bf16():
    """Under autocast the attention and MLP branches come out bf16; the residual sum must not be written
    into them (it would round the fp32 stream to bf16 at every block)."""
    residual = torch.randn(2, 10, 8)
    branch = torch.randn(2, 10, 8).bfloat16()
    total = agent_hf.layers.add_residual(residual, branch)
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


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_torch_compile_fullgraph_backbone_matches_eager(family):
    torch._dynamo.reset()
    backbone = tiny_model(family, out_features=["stage1", "stage2", "stage3", "stage4"]).backbone.eval()
    pixels, _ = batch(height=64, width=96, size=1)
    with torch.no_grad():
        expected = backbone(pixels).feature_maps
        hits_before = sum(m.bias_cache_hits + m.bias_cache_misses for m in attention_modules(backbone))
        # aot_eager: Dynamo's full-graph capture and AOTAutograd, without Inductor's (slow) C++ codegen.
        compiled = torch.compile(backbone, fullgraph=True, backend="aot_eager")
        actual = compiled(pixels).feature_maps
        hits_after = sum(m.bias_cache_hits + m.bias_cache_misses for m in attention_modules(backbone))
    assert len(actual) == len(expected) == 4
    for a, e in zip(actual, expected):
        assert torch.allclose(a, e, rtol=1e-4, atol=1e-5)
    assert hits_after == hits_before, "the bias cache is bypassed while torch.compile traces"
    torch._dynamo.reset()


def test_torch_compile_reports_no_graph_breaks_in_training():
    torch._dynamo.reset()
    model = tiny_model("swin", attn_type="AAAA").train()
    pixels, labels = batch(height=64, width=64)
    explanation = torch._dynamo.explain(model.backbone)(pixels)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    torch._dynamo.reset()


# ----------------------------------------------------------------------------------------------------
# The agent-bias cache
# ----------------------------------------------------------------------------------------------------


def first_attention(family="swin"):
    model = tiny_model(family).eval()
    return model, attention_modules(model)[0]


def test_bias_cache_hits_on_a_second_no_grad_call_at_the_same_size():
    _, attention = first_attention()
    x = torch.randn(1, 16 * 24, attention.dim)
    with torch.no_grad():
        first = attention(x, 16, 24)
        biases = attention.agent_biases(16, 24, x.dtype)
        second = attention(x, 16, 24)
        again = attention.agent_biases(16, 24, x.dtype)
    assert (attention.bias_cache_misses, attention.bias_cache_hits) == (1, 3)
    assert again[0] is biases[0] and again[1] is biases[1]
    assert torch.equal(first, second)
    with torch.no_grad():  # another size is another entry
        attention(torch.randn(1, 8 * 8, attention.dim), 8, 8)
    assert attention.bias_cache_misses == 2 and len(attention._bias_cache) == 2


def test_bias_cache_values_equal_a_fresh_computation():
    _, attention = first_attention("pvt")
    with torch.no_grad():
        cached = attention.agent_biases(10, 14, torch.float32)
        cached = attention.agent_biases(10, 14, torch.float32)
    assert attention.bias_cache_hits == 1
    with torch.enable_grad():
        fresh = attention.agent_biases(10, 14, torch.float32)
    assert fresh[0].requires_grad and fresh[1].requires_grad
    assert fresh[0].shape == (1, attention.num_heads, 144, 140) and fresh[1].shape == (
        1,
        attention.num_heads,
        140,
        144,
    )
    assert torch.equal(cached[0], fresh[0].detach()) and torch.equal(cached[1], fresh[1].detach())


@pytest.mark.parametrize("table", ["an_bias", "na_bias", "ah_bias", "aw_bias", "ha_bias", "wa_bias"])
def test_bias_cache_is_recomputed_after_an_in_place_table_change(table):
    _, attention = first_attention()
    x = torch.randn(1, 16 * 24, attention.dim)
    with torch.no_grad():
        before = attention(x, 16, 24)
        getattr(attention, table).add_(1)
        after = attention(x, 16, 24)
        expected = (attention._agent_to_token_bias(16, 24, x.dtype), attention._token_to_agent_bias(16, 24, x.dtype))
        cached = attention.agent_biases(16, 24, x.dtype)
    assert attention.bias_cache_misses == 2 and attention.bias_cache_hits == 1
    assert not torch.equal(before, after)
    assert torch.equal(cached[0], expected[0]) and torch.equal(cached[1], expected[1])


def test_bias_cache_is_invalidated_by_load_state_dict_and_an_optimizer_step():
    model, attention = first_attention()
    x = torch.randn(1, 16 * 24, attention.dim)
    with torch.no_grad():
        attention(x, 16, 24)
    state = {k: v + 0.5 if k.endswith("an_bias") else v for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    with torch.no_grad():
        attention(x, 16, 24)
    assert attention.bias_cache_misses == 2
    optimizer = torch.optim.SGD(attention.parameters(), lr=0.1)
    attention.train()
    attention(x, 16, 24).sum().backward()
    optimizer.step()
    attention.eval()
    with torch.no_grad():
        attention(x, 16, 24)
    assert attention.bias_cache_misses == 3


def test_bias_cache_is_not_used_when_grad_is_enabled_in_training():
    model, attention = first_attention()
    model.train()
    x = torch.randn(2, 16 * 24, attention.dim)
    for _ in range(2):
        attention(x, 16, 24).sum().backward()
    assert attention.bias_cache_hits == attention.bias_cache_misses == 0
    assert len(attention._bias_cache) == 0
    biases = attention.agent_biases(16, 24, x.dtype)
    assert biases[0].requires_grad and biases[1].requires_grad
    assert attention.an_bias.grad is not None and attention.an_bias.grad.abs().sum() > 0
    # Frozen tables need no gradient: then the cache serves training too.
    for table in attention._bias_tables():
        table.requires_grad_(False)
    attention(x, 16, 24)
    attention(x, 16, 24)
    assert attention.bias_cache_hits == 1


def test_bias_cache_is_keyed_by_dtype():
    _, attention = first_attention()
    with torch.no_grad():
        fp32 = attention.agent_biases(8, 8, torch.float32)
        bf16 = attention.agent_biases(8, 8, torch.bfloat16)
    assert fp32[0].dtype == torch.float32 and bf16[0].dtype == torch.bfloat16
    assert attention.bias_cache_misses == 2


def test_bias_cache_size_zero_disables_the_cache_and_clear_frees_it():
    _, attention = first_attention()
    x = torch.randn(1, 8 * 8, attention.dim)
    with torch.no_grad():
        attention(x, 8, 8)
        attention(torch.randn(1, 8 * 10, attention.dim), 8, 10)
    assert len(attention._bias_cache) == 2
    attention.clear_bias_cache()
    assert len(attention._bias_cache) == 0
    attention.bias_cache_size = 1
    with torch.no_grad():
        attention(x, 8, 8)
        attention(torch.randn(1, 8 * 10, attention.dim), 8, 10)
    assert list(attention._bias_cache) == [(8, 10, attention.an_bias.device, torch.float32, torch.float32)]
    attention.bias_cache_size = 0
    attention.clear_bias_cache()
    hits, misses = attention.bias_cache_hits, attention.bias_cache_misses
    with torch.no_grad():
        first, second = attention(x, 8, 8), attention(x, 8, 8)
    assert len(attention._bias_cache) == 0 and (attention.bias_cache_hits, attention.bias_cache_misses) == (
        hits,
        misses,
    )
    assert torch.equal(first, second)


def naive_biases(attention, height, width):
    """The biases as the paper's code builds them: the 7x7 and row+column tables bilinearly resized to
    (H, W) as full maps, then the agent axis (a pool x pool grid) resized to the agent grid."""
    heads, pool, grid = attention.num_heads, attention.pool_size, attention.agent_grid

    def resize(square, row_plus_col):  # (h, A, 7, 7), (h, A, H0, W0) -> (h, H*W, n)
        full = F.interpolate(square, size=(height, width), mode="bilinear", align_corners=False)
        full = full + F.interpolate(row_plus_col, size=(height, width), mode="bilinear", align_corners=False)
        full = full.reshape(heads, pool, pool, height * width).permute(0, 3, 1, 2)
        full = F.interpolate(full, size=grid, mode="bilinear", align_corners=False)
        return full.reshape(heads, height * width, grid[0] * grid[1])

    an_rows = (attention.ah_bias + attention.aw_bias)[0]  # (h, A, H0, W0)
    na_rows = (attention.ha_bias + attention.wa_bias)[0].permute(0, 3, 1, 2)  # (h, A, H0, W0)
    return resize(attention.an_bias, an_rows).transpose(1, 2), resize(attention.na_bias, na_rows)


@pytest.mark.parametrize("family", ["swin", "pvt"])
@pytest.mark.parametrize("size", [(7, 9), (16, 24), (5, 31)])
def test_separable_biases_equal_the_full_map_resize(family, size):
    shapes = [[9, 12], [12, 8], [14, 14], [7, 7]] if family == "swin" else [[12, 10], [16, 16], [28, 20], [28, 28]]
    model = tiny_model(family, downstream_agent_shapes=shapes)
    attentions = attention_modules(model)
    for attention in (attentions[0], attentions[-1]):
        with torch.no_grad():
            for table in attention._bias_tables():  # make every table matter
                table.normal_()
            agent_to_token, token_to_agent = attention.agent_biases(*size, torch.float32)
            expected = naive_biases(attention, *size)
        assert agent_to_token.shape == (1, *expected[0].shape) and agent_to_token.is_contiguous()
        assert token_to_agent.shape == (1, *expected[1].shape) and token_to_agent.is_contiguous()
        for actual, reference in zip((agent_to_token[0], token_to_agent[0]), expected):
            assert (actual - reference).norm() <= 1e-5 * reference.norm()


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
    bias_shapes = {tuple(b.shape) for b in attention.agent_biases(16, 24, x.dtype)}
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
