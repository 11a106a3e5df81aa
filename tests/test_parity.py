"""Parity with the official Agent Attention implementation (the definition of "faithful").

`tests/fixtures/reference` holds outputs of the official mmseg code on small random-weight models: the
official state dicts and configs, every AgentAttention module's and block's input/output, the backbone
maps, the FPN neck, and the decode / auxiliary logits. Our models are built from the official config
dict and loaded from the official state dict through the public API, then compared at 1e-5 relative
error in fp32, for both attention implementations.
"""

import json

import pytest
import torch
from conftest import REFERENCE_DIR
from safetensors import safe_open
from safetensors.torch import load_file

from agent_hf import config_from_official, load_official_checkpoint
from agent_hf.layers import rename_key

TOLERANCE = 1e-5
SEGMENTATION_MODELS = ["agent_swin_aaab_upernet", "agent_swin_aamb2_upernet", "agent_pvt_aaaa_fpn"]
IMAGENET_MODELS = ["agent_swin_aaab_imagenet", "agent_pvt_aaaa_imagenet"]
IMPLEMENTATIONS = ["sdpa", "eager"]


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    assert output.shape == reference.shape, f"shape {tuple(output.shape)} != reference {tuple(reference.shape)}"
    return ((output.double() - reference.double()).norm() / reference.double().norm()).item()


def reference_spec(name):
    return json.loads((REFERENCE_DIR / f"{name}.json").read_text())


_MODELS = {}


def official_model(name, implementation):
    """Our segmentation model built from the official config dict and the official state dict."""
    if (name, implementation) not in _MODELS:
        config = config_from_official(reference_spec(name)["model"])
        model = load_official_checkpoint(REFERENCE_DIR / f"{name}.weights.safetensors", config)
        model.config._attn_implementation = implementation
        attention_configs = {
            id(m.config) for m in model.modules() if hasattr(m, "config") and not hasattr(m, "base_model_prefix")
        }
        assert attention_configs == {id(model.config)}, "every attention module reads the model's config"
        _MODELS[name, implementation] = model
    return _MODELS[name, implementation]


def reference_io(name):
    return load_file(REFERENCE_DIR / f"{name}.io.safetensors")


def module_cases(name):
    with safe_open(REFERENCE_DIR / f"{name}.io.safetensors", "pt") as f:
        prefix = "case1.module.backbone."
        return sorted(
            {k[len(prefix) : -len(".input")] for k in f.keys() if k.startswith(prefix) and k.endswith(".input")}  # noqa: SIM118
        )


def our_module(model, official_path):
    """Our module for an official backbone module path, and the index of its stage."""
    if model.config.model_type == "agent_swin":
        stage = int(official_path.split(".")[1])  # layers.{s}.blocks.{b}[.attn]
        return model.backbone.agent_swin.get_submodule(official_path), stage
    stage = int(official_path.split(".")[0][len("block") :]) - 1  # block{s}.{b}[.attn]
    ours = official_path.replace(f"block{stage + 1}.", f"stages.{stage}.blocks.", 1)
    return model.backbone.agent_pvt.get_submodule(ours), stage


MODULE_PARAMS = [(name, path) for name in SEGMENTATION_MODELS for path in module_cases(name)]


def test_module_level_cases_cover_every_block_kind():
    paths = [path for _, path in MODULE_PARAMS]
    assert sum(p.endswith(".attn") for p in paths) >= 10, "every official AgentAttention module is checked"
    swin_window_blocks = [
        p
        for n, p in MODULE_PARAMS
        if n == "agent_swin_aamb2_upernet" and p.startswith(("layers.2.blocks.3", "layers.3"))
    ]
    assert swin_window_blocks, "shifted-window blocks (with padding) are checked"


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name,path", MODULE_PARAMS, ids=[f"{n}:{p}" for n, p in MODULE_PARAMS])
def test_module_parity(name, path, implementation):
    model = official_model(name, implementation)
    io = reference_io(name)
    module, stage = our_module(model, path)
    height, width = io[f"case1.backbone.{stage}"].shape[-2:]
    with torch.no_grad():
        output = module(io[f"case1.module.backbone.{path}.input"], height, width)
    assert relative_error(output, io[f"case1.module.backbone.{path}.output"]) <= TOLERANCE


def segmentation_cases():
    return [(name, case) for name in SEGMENTATION_MODELS for case in range(len(reference_spec(name)["input_shapes"]))]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name,case", segmentation_cases())
def test_segmentation_parity(name, case, implementation):
    model = official_model(name, implementation)
    io = reference_io(name)
    pixel_values = io[f"case{case}.pixel_values"]
    assert list(pixel_values.shape) == reference_spec(name)["input_shapes"][case]
    with torch.no_grad():
        features = model.backbone(pixel_values).feature_maps
        outputs = model(pixel_values, output_auxiliary_logits=True)
    assert len(features) == 4
    for i, feature in enumerate(features):
        assert relative_error(feature, io[f"case{case}.backbone.{i}"]) <= TOLERANCE, f"backbone map {i}"
    if model.config.model_type == "agent_pvt":
        with torch.no_grad():
            neck = model.neck(list(features))
        for i, level in enumerate(neck):
            assert relative_error(level, io[f"case{case}.neck.{i}"]) <= TOLERANCE, f"neck level {i}"
    assert relative_error(outputs.logits, io[f"case{case}.decode_logits"]) <= TOLERANCE
    if model.config.model_type == "agent_swin":
        assert relative_error(outputs.auxiliary_logits, io[f"case{case}.auxiliary_logits"]) <= TOLERANCE
    else:
        assert outputs.auxiliary_logits is None


@pytest.mark.parametrize("name", IMAGENET_MODELS)
def test_imagenet_checkpoint_parity(name):
    """The paper's starting point: an official ImageNet checkpoint loaded into the segmentation backbone."""
    spec = reference_spec(name)
    model = load_official_checkpoint(REFERENCE_DIR / f"{name}.pth", config_from_official(spec["model"]))
    io = reference_io(name)
    with torch.no_grad():
        features = model.backbone(io["case0.pixel_values"]).feature_maps
    for i, feature in enumerate(features):
        assert relative_error(feature, io[f"case0.backbone.{i}"]) <= TOLERANCE, f"backbone map {i}"
    # What the official loader reported missing keeps its official initialization (LayerNorm 1 / 0).
    base_model = model.backbone.get_submodule(model.backbone.base_model_prefix)
    mapping = type(base_model)._checkpoint_key_mapping()
    for key in spec["official_load"]["missing_keys"]:
        # official names (e.g. `norm0.weight`) -> ours (`norms.0.weight`)
        tensor = base_model.get_parameter(rename_key(key, mapping))
        expected = torch.ones_like(tensor) if key.endswith("weight") else torch.zeros_like(tensor)
        assert torch.equal(tensor, expected), key


def test_imagenet_checkpoint_loads_from_a_state_dict(reference_dir):
    raw = torch.load(reference_dir / "agent_pvt_aaaa_imagenet.pth", weights_only=True)
    config = config_from_official(reference_spec("agent_pvt_aaaa_imagenet")["model"])
    from_path = load_official_checkpoint(reference_dir / "agent_pvt_aaaa_imagenet.pth", config)
    from_dict = load_official_checkpoint(raw, config)
    for (key, a), (_, b) in zip(from_path.backbone.state_dict().items(), from_dict.backbone.state_dict().items()):
        assert torch.equal(a, b), key
