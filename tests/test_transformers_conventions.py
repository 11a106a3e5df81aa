"""transformers conventions of the six classes: device_map offload, attention outputs and implementation switch,
config-driven outputs, input embeddings, backbone defaults, loading across classes and from agent-hf 0.1.0 names,
input checks, and the transformers version floor. (Other transformers versions: `make test-compat`.)"""

import json
import logging
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, tiny_pvt_config, tiny_swin_config
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageClassification, AutoModelForSemanticSegmentation

from agent_hf import (
    AgentPvtBackbone,
    AgentPvtForSemanticSegmentation,
    AgentPvtModel,
    AgentSwinBackbone,
    AgentSwinForSemanticSegmentation,
    AgentSwinModel,
)
from agent_hf.models.checkpoint_keys import rename_key

FOUR = ["stage1", "stage2", "stage3", "stage4"]
CLASSES = {
    "swin": (tiny_swin_config, AgentSwinModel, AgentSwinBackbone, AgentSwinForSemanticSegmentation),
    "pvt": (tiny_pvt_config, AgentPvtModel, AgentPvtBackbone, AgentPvtForSemanticSegmentation),
}
SIX = [(family, index) for family in CLASSES for index in (1, 2, 3)]
IDS = [f"{family}-{CLASSES[family][index].__name__}" for family, index in SIX]


def build(family, index, **config_kwargs):
    torch.manual_seed(0)
    factory = CLASSES[family][0]
    model = CLASSES[family][index](factory(out_features=FOUR, **config_kwargs)).eval()
    with torch.no_grad():  # every weight matters (fresh LayerNorms are 1/0)
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def main_output(outputs):
    for name in ("logits", "feature_maps", "last_hidden_state"):
        if getattr(outputs, name, None) is not None:
            value = getattr(outputs, name)
            return torch.cat([v.flatten() for v in value]) if isinstance(value, tuple) else value
    raise AssertionError(outputs)


PIXELS = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family,index", SIX, ids=IDS)
def test_device_map_offload_gives_the_same_outputs(family, index, tmp_path):
    model = build(family, index)
    model.save_pretrained(tmp_path / "model")
    with torch.no_grad():
        expected = main_output(model(PIXELS))
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    offloaded = (
        type(model)
        .from_pretrained(
            tmp_path / "model",
            device_map="auto",
            max_memory={"cpu": size // 3},  # most weights go to disk
            offload_folder=tmp_path / "offload",
        )
        .eval()
    )
    assert "disk" in set(offloaded.hf_device_map.values()), offloaded.hf_device_map
    with torch.no_grad():
        torch.testing.assert_close(main_output(offloaded(PIXELS)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_output_attentions_returns_both_agent_steps_per_block(family):
    model = build(family, 1, attn_type="AAAB")  # agent blocks in stages 1-3, window / spatial-reduction in 4
    with torch.no_grad():
        outputs = model(PIXELS, output_attentions=True)
        plain = model(PIXELS)
    # Two implementations (the reference computes the weights; the fast path never does): fp32 rounding apart, each
    # ~1.5e-6 from a float64 run on this model's outputs of magnitude ~3.
    torch.testing.assert_close(outputs.last_hidden_state, plain.last_hidden_state, rtol=1e-5, atol=1e-5)
    config = model.config
    blocks = [stage for stage in range(4) for _ in range(config.depths[stage])]
    assert len(outputs.attentions) == len(blocks)
    for stage, weights in zip(blocks, outputs.attentions):
        heads, tokens = config.num_heads[stage], (16 // 2**stage) ** 2  # 64x64 input: maps of 16, 8, 4, 2
        if stage < 3:
            agent_to_token, token_to_agent = weights
            agents = config.downstream_agent_shapes[stage][0] * config.downstream_agent_shapes[stage][1]
            assert agent_to_token.shape == (1, heads, agents, tokens)
            assert token_to_agent.shape == (1, heads, tokens, agents)
            for w in (agent_to_token, token_to_agent):
                torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
        elif family == "swin":  # one 7x7 window over the padded 2x2 map
            window = config.window_size
            assert weights.shape == (1, 1, heads, window * window, window * window)
        else:  # sr_ratio 1 in stage 4: every token attends to every token
            assert weights.shape == (1, heads, tokens, tokens)
    model.set_attn_implementation("eager")  # transformers allows config.output_attentions with eager only
    model.config.output_attentions = True  # the config's setting is read too
    assert len(model(PIXELS).attentions) == len(blocks)


class RecordAtenOps(torch.utils._python_dispatch.TorchDispatchMode):
    """The names of the ATen operators that run inside it (``_scaled_dot_product_flash_attention_for_cpu``, ...): what
    actually computes, whether called through ``F.scaled_dot_product_attention`` or ``torch.ops.aten`` directly."""

    def __enter__(self):
        self.ops = set()
        super().__enter__()
        return self.ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_set_attn_implementation_switches_every_attention(family):
    model = build(family, 3)
    with torch.no_grad():
        sdpa = model(PIXELS).logits
    model.set_attn_implementation("eager")
    configs = {id(m.config) for m in model.modules() if hasattr(m, "config")}
    assert {m.config._attn_implementation for m in model.modules() if hasattr(m, "config")} == {"eager"}
    assert len(configs) == 1
    with torch.no_grad(), RecordAtenOps() as eager_ops:
        eager = model(PIXELS).logits
    assert not {op for op in eager_ops if "scaled_dot_product" in op}, "eager attention runs no SDPA kernel"
    model.set_attn_implementation("sdpa")  # the positive control: the same probe sees the fused kernels
    with torch.no_grad(), RecordAtenOps() as sdpa_ops:
        model(PIXELS)
    assert "_scaled_dot_product_flash_attention_for_cpu" in sdpa_ops
    model.set_attn_implementation("eager")
    torch.testing.assert_close(eager, sdpa, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        model.set_attn_implementation("flash_attention_2")


@pytest.mark.parametrize("family,index", SIX, ids=IDS)
def test_config_output_hidden_states_is_read(family, index):
    model = build(family, index)
    assert model(PIXELS).hidden_states is None
    model.config.output_hidden_states = True
    assert len(model(PIXELS).hidden_states) == 4


@pytest.mark.parametrize("family,index", SIX, ids=IDS)
def test_enable_input_require_grads_reaches_the_patch_embedding(family, index):
    model = build(family, index)
    assert isinstance(model.get_input_embeddings(), torch.nn.Conv2d)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    assert not main_output(model(PIXELS)).requires_grad
    model.enable_input_require_grads()
    assert main_output(model(PIXELS)).requires_grad


@pytest.mark.parametrize("factory", [tiny_swin_config, tiny_pvt_config])
def test_backbone_default_is_the_last_stage_and_four_stage_configs_keep_four(factory, tmp_path):
    config = factory()
    assert config.out_features == ["stage4"] and config.out_indices == [4]
    backbone_class = AgentSwinBackbone if config.model_type == "agent_swin" else AgentPvtBackbone
    assert len(backbone_class(config)(PIXELS).feature_maps) == 1
    # a 0.1.0 config.json lists the four stages: it still returns four maps
    config.out_features = FOUR
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["out_features"] == FOUR
    reloaded = type(config).from_pretrained(tmp_path)
    assert len(backbone_class(reloaded)(PIXELS).feature_maps) == 4
    # the segmentation model reads all four stages whatever out_features says
    segmentation = (
        AgentSwinForSemanticSegmentation if config.model_type == "agent_swin" else AgentPvtForSemanticSegmentation
    )(factory())
    assert segmentation.eval()(PIXELS).logits.shape[-2:] == (16, 16)


def base_output(model):
    """The base model's output (B, C_4, H/32, W/32) inside any class of the family."""
    if hasattr(model, "decode_head"):
        return model.backbone(PIXELS, output_hidden_states=True).hidden_states[-1]
    outputs = model(PIXELS)
    return outputs.feature_maps[-1] if hasattr(outputs, "feature_maps") else outputs.last_hidden_state


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_a_folder_of_each_class_loads_into_each_class_with_current_or_0_1_0_names(family, tmp_path):
    """The base model of a model, backbone or segmentation folder (keys bare, `agent_pvt.` or `backbone.agent_pvt.`),
    with the current or agent-hf 0.1.0 parameter names, loads into each of those classes; a reloaded model is saved
    with the current names."""
    base = build(family, 1)
    with torch.no_grad():
        expected = base(PIXELS).last_hidden_state
    for source_index in (1, 2, 3):
        source = CLASSES[family][source_index](base.config)
        prefix = {1: "", 2: f"{base.base_model_prefix}.", 3: f"backbone.{base.base_model_prefix}."}[source_index]
        unexpected = source.load_state_dict({prefix + k: v for k, v in base.state_dict().items()}, strict=False)[1]
        assert not unexpected
        current = tmp_path / f"{source_index}-current"
        source.save_pretrained(current)
        weights = load_file(current / "model.safetensors")
        legacy = tmp_path / f"{source_index}-0.1.0"
        source.save_pretrained(legacy)
        renamed = {legacy_name(family, k): v for k, v in weights.items()}
        assert renamed.keys() != weights.keys()
        save_file(renamed, legacy / "model.safetensors", metadata={"format": "pt"})
        for folder in (current, legacy):
            for target_index in (1, 2, 3):
                loaded = CLASSES[family][target_index].from_pretrained(folder).eval()
                with torch.no_grad():
                    torch.testing.assert_close(base_output(loaded), expected, msg=f"{folder.name} -> {target_index}")
                if folder == legacy and target_index == source_index:  # saved with the current names
                    loaded.save_pretrained(tmp_path / "resaved")
                    assert load_file(tmp_path / "resaved" / "model.safetensors").keys() == weights.keys()


def legacy_name(family, key):
    """The 0.1.0 name of a current parameter name, bare or prefixed (independent of the loader's rules)."""
    import re

    if family == "swin":
        return re.sub(r"(^|agent_swin\.)norms\.(\d)\.", r"\1norm\2.", key)
    key = re.sub(r"(^|agent_pvt\.)stages\.(\d)\.blocks\.", lambda m: f"{m[1]}block{int(m[2]) + 1}.", key)
    key = re.sub(r"(^|agent_pvt\.)stages\.(\d)\.patch_embed\.", lambda m: f"{m[1]}patch_embed{int(m[2]) + 1}.", key)
    return re.sub(r"(^|agent_pvt\.)stages\.(\d)\.pos_embed$", lambda m: f"{m[1]}pos_embed{int(m[2]) + 1}", key)


def test_official_and_0_1_0_names_rename_to_the_current_ones():
    mapping = AgentPvtForSemanticSegmentation._checkpoint_key_mapping()
    assert rename_key("backbone.agent_pvt.block2.0.attn.q.weight", mapping) == (
        "backbone.agent_pvt.stages.1.blocks.0.attn.q.weight"
    )
    assert rename_key("backbone.agent_pvt.pos_embed4", mapping) == "backbone.agent_pvt.stages.3.pos_embed"
    mapping = AgentSwinForSemanticSegmentation._checkpoint_key_mapping()
    assert rename_key("backbone.agent_swin.norm3.bias", mapping) == "backbone.agent_swin.norms.3.bias"
    block_norm = "backbone.agent_swin.layers.0.blocks.0.norm1.weight"
    assert rename_key(block_norm, mapping) == block_norm, "the blocks' own norm1/norm2 keep their names"


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_input_dtype_batch_and_label_checks(family, caplog):
    model = build(family, 3)
    with torch.no_grad():
        expected = model(PIXELS).logits
        torch.testing.assert_close(model(PIXELS.double()).logits, expected)  # cast to the model's dtype
        assert model(PIXELS.half()).logits.dtype == torch.float32
    with pytest.raises(ValueError, match="empty input"):
        model(torch.zeros(0, 3, 64, 64))
    bad = PIXELS.clone()
    bad[0, 0, 0, 0] = float("nan")
    with caplog.at_level(logging.WARNING):
        model(bad)
        model(bad)
    assert sum("NaN or infinite" in r.getMessage() for r in caplog.records) == 1, "warned once"
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[0, 0, :3] = torch.tensor([5, 255, -1])
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 5\) or the ignore index 255; got -1, 5"):
        model(PIXELS, labels=labels)
    labels[0, 0, :3] = 255
    assert torch.isfinite(model(PIXELS, labels=labels).loss)


def test_import_on_a_transformers_below_the_floor_says_what_it_needs(tmp_path):
    # The version is read from the installed distribution's metadata: put an older one first on the path.
    (tmp_path / "transformers-4.57.6.dist-info").mkdir()
    (tmp_path / "transformers-4.57.6.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: transformers\nVersion: 4.57.6\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    code = "import agent_hf"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=300
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: agent_hf needs transformers>=5.0.0, but transformers 4.57.6 is installed")


# The modules transformers loads from a folder's auto_map / custom_pipelines (the model, config, image processor
# and pipeline code).
AUTO_MAP_MODULES = [
    "configuration_agent_swin.py",
    "configuration_agent_pvt.py",
    "modeling_agent_swin.py",
    "modeling_agent_pvt.py",
    "image_processing_agent.py",
    "image_processing_agent_classification.py",
    "pipeline_agent.py",
]


@pytest.mark.parametrize("module", AUTO_MAP_MODULES)
def test_auto_map_modules_import_every_sibling_they_need_themselves(module):
    # transformers 4.57 and 5.0 copy a local folder's auto_map module with its own relative imports only (not
    # theirs), then import it: a sibling reached only through another one would be missing (`make test-compat`).
    from transformers.dynamic_module_utils import get_relative_import_files, get_relative_imports

    path = REPO_ROOT / "src" / "agent_hf" / "models" / module
    needed = {os.path.basename(file)[: -len(".py")] for file in get_relative_import_files(str(path))}
    assert needed, f"{module} imports no sibling module"
    assert needed <= set(get_relative_imports(str(path))), f"{module} reaches them only through other modules"


# ------------------------------------------------------------------------------------------------- the layout
MODELS_DIR = REPO_ROOT / "src" / "agent_hf" / "models"
# What a shipped module may import besides its siblings: what every folder's requirements.txt (or Python) provides.
SHIPPED_MODULE_DEPENDENCIES = {"torch", "transformers", "numpy", "PIL", "safetensors", "huggingface_hub", "triton"}


@pytest.mark.parametrize(
    "path", sorted(set(MODELS_DIR.glob("*.py")) - {MODELS_DIR / "__init__.py"}), ids=lambda p: p.name
)
def test_models_folder_imports_only_siblings_and_the_runtime(path):
    """`agent_hf.models` is what travels with a model folder: its modules import each other relatively (`from .x
    import Y`, which transformers copies), the standard library and the runtime packages, never the rest of agent_hf
    (a Hub repo loaded where agent_hf is not installed would fail)."""
    import ast

    siblings = {p.stem for p in MODELS_DIR.glob("*.py")} - {"__init__"}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            assert node.level == 1, f"{path.name}:{node.lineno} imports from outside agent_hf/models"
            modules = [node.module] if node.module else [alias.name for alias in node.names]
            assert set(modules) <= siblings, f"{path.name}:{node.lineno} imports a missing sibling {modules}"
            continue
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom):
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            assert top in SHIPPED_MODULE_DEPENDENCIES or top in sys.stdlib_module_names or top == "__future__", (
                f"{path.name}:{node.lineno} imports {name}, which a model folder does not provide"
            )


def test_saved_folders_ship_exactly_the_models_folder(tmp_path):
    """Every module of `agent_hf.models` travels with some folder (segmentation or classification, either family), and
    every Python file a folder holds comes from it: the folder on disk is the list of what is shipped."""
    from agent_hf.models.image_processing_agent_classification import AgentClassificationImageProcessor
    from agent_hf.saving import save_model_folder

    shipped = set()
    for factory in (tiny_swin_config, tiny_pvt_config):
        for model_class in (AutoModelForSemanticSegmentation, AutoModelForImageClassification):
            config, processor = factory(), None
            if model_class is AutoModelForImageClassification:
                config.num_labels, processor = 3, AgentClassificationImageProcessor()
            folder = tmp_path / f"{type(config).__name__}-{model_class.__name__}"
            save_model_folder(model_class.from_config(config), folder, image_processor=processor)
            files = {p.name for p in folder.iterdir() if p.suffix in (".py", ".txt")}
            assert files <= {p.name for p in MODELS_DIR.iterdir()} | {"handler.py"}, files
            shipped |= files
    names_in_folder = {"handler.py": "handler.py"}  # the classification handler is written as handler.py
    expected = {names_in_folder.get(p.name, p.name) for p in MODELS_DIR.iterdir() if p.suffix in (".py", ".txt")}
    expected.discard("__init__.py")
    assert expected - {"classification_handler.py"} <= shipped, expected - shipped
