"""Parity with the official Agent Attention implementation (the definition of "faithful").

`tests/fixtures/reference` holds outputs of the official mmseg code on small random-weight models: the
official state dicts and configs, every AgentAttention module's and block's input/output, the backbone
maps, the FPN neck, and the decode / auxiliary logits. Our models are built from the official config
dict and loaded from the official state dict through the public API, then compared at 1e-5 relative
error in fp32, on every implementation path of the attention (`PATHS`): the eager reference, the fused
CPU kernel with the bias in one block and in one-row blocks (the log-sum-exp merge), the training paths
(with gradients: the fused kernel with its recomputing backward, and SDPA when the bias tables are
frozen), whose gradients must also equal the eager path's. `AGENT_HF_TEST_DEVICE=cuda` adds the
accelerator paths (inference and training) on the GPU; they then fail, not skip, without one.
"""

import json
import os
from contextlib import contextmanager

import pytest
import torch
from conftest import REFERENCE_DIR
from official_names import DERIVED_BUFFERS, expected_state_dict, our_backbone_key
from safetensors import safe_open
from safetensors.torch import load_file

import agent_hf.models.agent_attention as agent_attention_module
import agent_hf.models.agent_attention_fast as fast_module
from agent_hf import config_from_official, load_official_checkpoint
from agent_hf.models.agent_attention import AgentAttention

TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 1e-4  # gradients sum many more products than the forward
SEGMENTATION_MODELS = ["agent_swin_aaab_upernet", "agent_swin_aamb2_upernet", "agent_pvt_aaaa_fpn"]
IMAGENET_MODELS = ["agent_swin_aaab_imagenet", "agent_pvt_aaaa_imagenet"]
IMPLEMENTATIONS = ["sdpa", "eager"]
#: How each path is set up: the attention implementation, gradients on (the training paths; eval mode all the same,
#: as the fixtures were made), `bias_block_size` (1: one map row of bias per kernel call, so every map is many
#: blocks merged through their log-sum-exp), frozen bias tables (the fine-tuning case that takes SDPA), the device.
PATHS = {
    "eager": dict(implementation="eager"),
    "sdpa": dict(implementation="sdpa"),
    "sdpa-blocks": dict(implementation="sdpa", bias_block_size=1),
    "training": dict(implementation="sdpa", grad=True),
    "training-frozen-bias": dict(implementation="sdpa", grad=True, frozen_bias=True),
    "eager-training": dict(implementation="eager", grad=True),  # also the gradients' reference
}
BIAS_TABLES = ("an_bias", "na_bias", "ah_bias", "aw_bias", "ha_bias", "wa_bias")
TEST_DEVICE = os.environ.get("AGENT_HF_TEST_DEVICE", "cpu")
if TEST_DEVICE != "cpu":  # asked for: these cases fail (never skip) where the device is missing
    PATHS[f"{TEST_DEVICE}"] = dict(implementation="sdpa", device=TEST_DEVICE)
    PATHS[f"{TEST_DEVICE}-training"] = dict(implementation="sdpa", grad=True, device=TEST_DEVICE)
    PATHS[f"{TEST_DEVICE}-eager"] = dict(implementation="eager", device=TEST_DEVICE)


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    assert output.shape == reference.shape, f"shape {tuple(output.shape)} != reference {tuple(reference.shape)}"
    output, reference = output.detach().cpu().double(), reference.detach().cpu().double()
    return ((output - reference).norm() / reference.norm()).item()


def reference_spec(name):
    return json.loads((REFERENCE_DIR / f"{name}.json").read_text())


def device_of(path: str) -> torch.device:
    device = torch.device(PATHS[path].get("device", "cpu"))
    if device.type == "cuda":
        assert torch.cuda.is_available(), "AGENT_HF_TEST_DEVICE=cuda: no CUDA device here"
        # fp32 means fp32: no TF32 in the convolutions and products compared at 1e-5.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


_MODELS = {}


def official_model(name, path="sdpa"):
    """Our segmentation model built from the official config dict and the official state dict, set up for `path`."""
    if (name, path) not in _MODELS:
        settings = PATHS[path]
        config = config_from_official(reference_spec(name)["model"])
        model = load_official_checkpoint(REFERENCE_DIR / f"{name}.weights.safetensors", config)
        model.config._attn_implementation = settings["implementation"]
        attention_configs = {
            id(m.config) for m in model.modules() if hasattr(m, "config") and not hasattr(m, "base_model_prefix")
        }
        assert attention_configs == {id(model.config)}, "every attention module reads the model's config"
        for attention in attention_modules(model):
            if "bias_block_size" in settings:
                attention.bias_block_size = settings["bias_block_size"]
            for table in attention._bias_tables() if settings.get("frozen_bias") else ():
                table.requires_grad_(False)
        _MODELS[name, path] = model.to(device_of(path))
    return _MODELS[name, path]


def attention_modules(module):
    return [m for m in module.modules() if isinstance(m, AgentAttention)]


@contextmanager
def path_probe(monkeypatch):
    """Counts the calls of each kernel of the attention paths (the real functions run: spies, not mocks)."""
    calls = {"reference": 0, "blocked": [], "fused": 0, "products": 0}

    def spy(module, name, record):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            record(args)
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    def count(key):
        return lambda args: calls.__setitem__(key, calls[key] + 1)

    spy(agent_attention_module, "reference_agent_attention", count("reference"))
    spy(fast_module, "blocked_agent_aggregation", lambda args: calls["blocked"].append((args[3].height, args[5])))
    spy(fast_module, "agent_aggregation_by_products", count("products"))
    spy(fast_module.FusedAttentionWithBiasGrad, "apply", count("fused"))
    yield calls
    monkeypatch.undo()


def assert_path_taken(path: str, calls: dict, attentions: int) -> None:
    """The kernels `path` is meant to run ran, once per attention module, and no other path's."""
    settings, kind = PATHS[path], PATHS[path].get("device", "cpu")
    blocked, fused, products = len(calls["blocked"]), calls["fused"], calls["products"]
    if settings["implementation"] == "eager":
        assert (calls["reference"], blocked, fused, products) == (attentions, 0, 0, 0), calls
    elif settings.get("grad"):
        expected_fused = 2 * attentions if kind == "cpu" and not settings.get("frozen_bias") else 0
        assert (calls["reference"], blocked, fused, products) == (0, 0, expected_fused, 0), calls
    elif kind == "cpu":
        assert (calls["reference"], blocked, fused, products) == (0, attentions, 0, 0), calls
        for height, rows_per_block in calls["blocked"]:
            if "bias_block_size" in settings:
                assert rows_per_block == 1 and height >= 2, "several blocks, merged"
            else:
                assert rows_per_block >= height, "one block"
    else:
        assert (calls["reference"], blocked, fused, products) == (0, 0, 0, attentions), calls


def run_path(path: str, function, *inputs):
    """`function(*inputs)` as `path` runs it: with gradients (inputs requiring them) on the training paths."""
    device = device_of(path)
    inputs = [x.to(device) for x in inputs]
    if PATHS[path].get("grad"):
        inputs = [x.requires_grad_(True) for x in inputs]
        with torch.enable_grad():
            return function(*inputs), inputs
    with torch.no_grad():
        return function(*inputs), inputs


def gradients(module, output, inputs, seed: int = 0):
    """d(sum(output * G))/d(inputs and parameters) for a fixed random G: what a loss sends back."""
    upstream = torch.randn(output.shape, generator=torch.Generator().manual_seed(seed)).to(output.device)
    parameters = dict(module.named_parameters())
    wanted = {name: p for name, p in parameters.items() if p.requires_grad}
    grads = torch.autograd.grad(output, [*inputs, *wanted.values()], upstream, allow_unused=True)
    named = {f"input{i}": g for i, g in enumerate(grads[: len(inputs)])}
    named.update({name: g for name, g in zip(wanted, grads[len(inputs) :]) if g is not None})
    return named


def assert_gradients_equal_the_eager_path(path, module, output, inputs, eager_module, eager_output, eager_inputs):
    """The training path's gradients (inputs and parameters, bias tables included unless frozen) equal those of the
    eager path, itself held to the official values."""
    ours = gradients(module, output, inputs)
    reference = gradients(eager_module, eager_output, eager_inputs)
    assert set(ours) <= set(reference) and "input0" in ours
    tables = {name for name in ours if name.rsplit(".", 1)[-1] in BIAS_TABLES}
    if attention_modules(module) and not PATHS[path].get("frozen_bias"):
        assert len(tables) == len(BIAS_TABLES) * len(attention_modules(module)), "every bias table gets a gradient"
    for name, grad in ours.items():
        assert relative_error(grad, reference[name]) <= GRADIENT_TOLERANCE, name


def reference_io(name):
    return load_file(REFERENCE_DIR / f"{name}.io.safetensors")


def module_cases(name):
    with safe_open(REFERENCE_DIR / f"{name}.io.safetensors", "pt") as f:
        prefix = "case1.module.backbone."
        return sorted(
            {k[len(prefix) : -len(".input")] for k in f.keys() if k.startswith(prefix) and k.endswith(".input")}  # noqa: SIM118
        )


def expected_module_cases(name):
    """The official module paths the fixture must hold, from the official config: every block of every stage, and
    the AgentAttention of every agent block ('A' stages; the first N blocks of an 'M' stage of `attn_type` 'AAMBN';
    'B' stages are shifted-window blocks)."""
    backbone = reference_spec(name)["model"]["backbone"]
    kinds, mixed = backbone["attn_type"][:4], int(backbone["attn_type"][4:] or 0)
    cases = set()
    for stage, (kind, depth) in enumerate(zip(kinds, backbone["depths"])):
        for block in range(depth):
            path = f"layers.{stage}.blocks.{block}" if "Swin" in backbone["type"] else f"block{stage + 1}.{block}"
            cases.add(path)
            if kind == "A" or (kind == "M" and block < mixed):
                cases.add(f"{path}.attn")
    return cases


def our_module(model, official_path):
    """Our module for an official backbone module path, and the index of its stage."""
    if model.config.model_type == "agent_swin":
        stage = int(official_path.split(".")[1])  # layers.{s}.blocks.{b}[.attn]
        return model.backbone.agent_swin.get_submodule(official_path), stage
    stage = int(official_path.split(".")[0][len("block") :]) - 1  # block{s}.{b}[.attn]
    ours = official_path.replace(f"block{stage + 1}.", f"stages.{stage}.blocks.", 1)
    return model.backbone.agent_pvt.get_submodule(ours), stage


MODULE_PARAMS = [(name, path) for name in SEGMENTATION_MODELS for path in module_cases(name)]


@pytest.mark.parametrize("name", SEGMENTATION_MODELS)
def test_module_level_cases_are_every_official_block_and_attention(name):
    """Each model's exact module cases, from its official depths and attn_type: none can vanish unnoticed."""
    expected = expected_module_cases(name)
    assert set(module_cases(name)) == expected
    assert {path for n, path in MODULE_PARAMS if n == name} == expected
    assert sum(path.endswith(".attn") for path in expected) == len(attention_modules(official_model(name)))
    if name == "agent_swin_aamb2_upernet":  # shifted-window blocks (with padding) after the mixed stage's agents
        assert {"layers.2.blocks.2", "layers.2.blocks.3", "layers.3.blocks.1"} <= expected


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name,module_path", MODULE_PARAMS, ids=[f"{n}:{p}" for n, p in MODULE_PARAMS])
def test_module_parity(name, module_path, path, monkeypatch):
    model = official_model(name, path)
    io = reference_io(name)
    module, stage = our_module(model, module_path)
    height, width = io[f"case1.backbone.{stage}"].shape[-2:]
    hidden_states = io[f"case1.module.backbone.{module_path}.input"]
    with path_probe(monkeypatch) as calls:
        output, inputs = run_path(path, lambda x: module(x, height, width), hidden_states)
    assert relative_error(output, io[f"case1.module.backbone.{module_path}.output"]) <= TOLERANCE
    assert_path_taken(path, calls, len(attention_modules(module)))
    if PATHS[path].get("grad") and PATHS[path]["implementation"] != "eager":
        eager_module, _ = our_module(official_model(name, "eager-training"), module_path)
        eager_output, eager_inputs = run_path(
            "eager-training", lambda x: eager_module(x, height, width), hidden_states
        )
        assert_gradients_equal_the_eager_path(path, module, output, inputs, eager_module, eager_output, eager_inputs)


def segmentation_cases():
    return [(name, case) for name in SEGMENTATION_MODELS for case in range(len(reference_spec(name)["input_shapes"]))]


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name,case", segmentation_cases())
def test_segmentation_parity(name, case, path, monkeypatch):
    model = official_model(name, path)
    io = reference_io(name)
    pixel_values = io[f"case{case}.pixel_values"]
    assert list(pixel_values.shape) == reference_spec(name)["input_shapes"][case]
    with path_probe(monkeypatch) as calls:
        features, _ = run_path(path, lambda x: model.backbone(x).feature_maps, pixel_values)
    assert_path_taken(path, calls, len(attention_modules(model)))
    outputs, inputs = run_path(path, lambda x: model(x, output_auxiliary_logits=True), pixel_values)
    assert len(features) == 4
    for i, feature in enumerate(features):
        assert relative_error(feature, io[f"case{case}.backbone.{i}"]) <= TOLERANCE, f"backbone map {i}"
    if model.config.model_type == "agent_pvt":
        neck, _ = run_path(path, lambda *maps: model.neck(list(maps)), *[f.detach() for f in features])
        for i, level in enumerate(neck):
            assert relative_error(level, io[f"case{case}.neck.{i}"]) <= TOLERANCE, f"neck level {i}"
    assert relative_error(outputs.logits, io[f"case{case}.decode_logits"]) <= TOLERANCE
    if model.config.model_type == "agent_swin":
        assert relative_error(outputs.auxiliary_logits, io[f"case{case}.auxiliary_logits"]) <= TOLERANCE
    else:
        assert outputs.auxiliary_logits is None
    if PATHS[path].get("grad") and PATHS[path]["implementation"] != "eager" and case == 0:
        # What a training step sends back through the whole model, from the decode logits.
        eager = official_model(name, "eager-training")
        eager_outputs, eager_inputs = run_path("eager-training", lambda x: eager(x), pixel_values)
        assert_gradients_equal_the_eager_path(
            path, model, outputs.logits, inputs, eager, eager_outputs.logits, eager_inputs
        )


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", IMAGENET_MODELS)
def test_imagenet_checkpoint_parity(name, implementation):
    """The paper's starting point: an official ImageNet checkpoint loaded into the segmentation backbone takes every
    tensor the official loading took, drops what it reported unexpected, and keeps the official initialization of
    what it reported missing; its four maps equal the official ones."""
    spec = reference_spec(name)
    model = load_official_checkpoint(REFERENCE_DIR / f"{name}.pth", config_from_official(spec["model"]))
    model.config._attn_implementation = implementation
    io = reference_io(name)
    with torch.no_grad():
        features = model.backbone(io["case0.pixel_values"]).feature_maps
    for i, feature in enumerate(features):
        assert relative_error(feature, io[f"case0.backbone.{i}"]) <= TOLERANCE, f"backbone map {i}"

    model_type, official_load = model.config.model_type, spec["official_load"]
    checkpoint = torch.load(REFERENCE_DIR / f"{name}.pth", weights_only=True)["model"]
    state = model.state_dict()
    backbone_keys = {key for key in state if key.startswith("backbone.")}
    taken = expected_state_dict(checkpoint, model_type, skip=official_load["unexpected_keys"])
    missing = {our_backbone_key(key, model_type) for key in official_load["missing_keys"]}
    derived = {our_backbone_key(key, model_type) for key in checkpoint if key.endswith(DERIVED_BUFFERS)}
    assert backbone_keys == set(taken) | missing, "exactly the official loading's keys"
    for key, tensor in taken.items():
        assert torch.equal(state[key], tensor.to(state[key].dtype)), key
    buffers = dict(model.named_buffers())
    for key in derived:  # a buffer our model recomputes (not saved): the same numbers
        assert torch.equal(buffers[key], checkpoint[key.split(".", 2)[2]]), key
    for key in missing:  # LayerNorms the checkpoint lacks: official initialization, weight 1 and bias 0
        expected = torch.ones_like(state[key]) if key.endswith("weight") else torch.zeros_like(state[key])
        assert torch.equal(state[key], expected), key
    for key in official_load["unexpected_keys"]:  # classification head, Swin's final norm: not taken
        assert our_backbone_key(key, model_type) not in state, key


def test_imagenet_checkpoint_loads_from_a_state_dict(reference_dir):
    raw = torch.load(reference_dir / "agent_pvt_aaaa_imagenet.pth", weights_only=True)
    config = config_from_official(reference_spec("agent_pvt_aaaa_imagenet")["model"])
    from_path = load_official_checkpoint(reference_dir / "agent_pvt_aaaa_imagenet.pth", config)
    from_dict = load_official_checkpoint(raw, config)
    for (key, a), (_, b) in zip(from_path.backbone.state_dict().items(), from_dict.backbone.state_dict().items()):
        assert torch.equal(a, b), key


def test_a_device_asked_for_adds_its_paths_which_fail_where_it_is_missing(monkeypatch):
    """`AGENT_HF_TEST_DEVICE=cuda` (scripts/gpu_checks.sh, a GPU session) adds the device's inference, training and
    eager paths to every parity case; on a machine without the device they fail, never skip."""
    import importlib.util

    monkeypatch.setenv("AGENT_HF_TEST_DEVICE", "cuda")
    spec = importlib.util.spec_from_file_location("test_parity_on_cuda", __file__)
    on_cuda = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(on_cuda)
    assert {"cuda", "cuda-training", "cuda-eager"} <= set(on_cuda.PATHS)
    assert {on_cuda.PATHS[path]["device"] for path in ("cuda", "cuda-training", "cuda-eager")} == {"cuda"}
    if torch.cuda.is_available():
        assert on_cuda.device_of("cuda").type == "cuda"
    else:
        with pytest.raises(AssertionError, match="no CUDA device here"):
            on_cuda.device_of("cuda")
