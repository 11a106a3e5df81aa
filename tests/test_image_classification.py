"""ImageNet classification (issue #24): the official Agent-Swin and Agent-PVT ImageNet models as transformers image
classifiers.

Parity: `tests/fixtures/reference/cls_*` hold the official classification code's logits (head included) on small
random-weight models; our classifiers are built from the official config (the JSON constructor form and the
official yaml form) and loaded from the official `{'model': state_dict}` checkpoint, for both attention
implementations. Presets: the ten published models with the official parameter counts.
"""

import json

import pytest
import torch
import yaml
from conftest import REFERENCE_DIR, tiny_pvt_config, tiny_swin_config
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForImageClassification
from transformers.modeling_outputs import ImageClassifierOutput

import agent_hf
from agent_hf import (
    IMAGENET_PRESETS,
    AgentPvtForImageClassification,
    AgentSwinForImageClassification,
    load_official_classifier,
    official_classification_config,
    preset_config,
)
from agent_hf.model_zoo import IMAGENET_MODELS

TOLERANCE = 1e-5
FIXTURES = ["cls_agent_swin_aaab", "cls_agent_pvt_aaaa"]

# The official parameter counts (issue #24, counted on the official classification code, head included).
OFFICIAL_PARAMETERS = {
    "agent-swin-t-in1k-224": 28_902_964,
    "agent-swin-s-in1k-224": 49_666_684,
    "agent-swin-s-in1k-288": 49_707_964,
    "agent-swin-b-in1k-224": 88_095_096,
    "agent-swin-b-in1k-384": 88_305_016,
    "agent-pvt-t-in1k-224": 11_570_352,
    "agent-pvt-s-in1k-224": 20_635_066,
    "agent-pvt-m-in1k-224": 35_921_746,
    "agent-pvt-m-in1k-256": 36_083_682,
    "agent-pvt-l-in1k-224": 48_738_180,
}


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    assert output.shape == reference.shape, f"shape {tuple(output.shape)} != reference {tuple(reference.shape)}"
    return ((output.double() - reference.double()).norm() / reference.double().norm()).item()


def fixture_spec(name):
    return json.loads((REFERENCE_DIR / f"{name}.json").read_text())


def reference_cases(name):
    io = load_file(REFERENCE_DIR / f"{name}.io.safetensors")
    cases = sorted({key.split(".")[0] for key in io})
    assert len(cases) >= 2
    return [(io[f"{case}.pixel_values"], io[f"{case}.logits"]) for case in cases]


_MODELS = {}


def official_classifier(name):
    if name not in _MODELS:
        config, transform = official_classification_config(fixture_spec(name))
        assert transform == {"size": 224, "do_center_crop": True}
        _MODELS[name] = load_official_classifier(REFERENCE_DIR / f"{name}.pth", config)
    return _MODELS[name]


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("name", FIXTURES)
def test_logits_match_the_official_classifier(name, implementation):
    model = official_classifier(name)
    model.set_attn_implementation(implementation)
    expected_class = AgentSwinForImageClassification if "swin" in name else AgentPvtForImageClassification
    assert type(model) is expected_class
    for pixel_values, logits in reference_cases(name):
        with torch.no_grad():
            output = model(pixel_values)
        assert isinstance(output, ImageClassifierOutput)
        assert relative_error(output.logits, logits) < TOLERANCE
        # Element-wise too: a wrong class score in a batch of two is not hidden by the norm.
        torch.testing.assert_close(output.logits, logits, rtol=0, atol=1e-5 * logits.abs().max().item())


def test_official_yaml_form_builds_the_same_classifier():
    """The Swin fixture's `official_yaml` (the `cfgs/*.yaml` format, num_classes from MODEL.NUM_CLASSES) gives the
    same architecture as its constructor form, and the same logits."""
    spec = fixture_spec("cls_agent_swin_aaab")
    official_yaml = json.loads(json.dumps(spec["official_yaml"]))
    official_yaml["MODEL"]["NUM_CLASSES"] = spec["num_classes"]
    official_yaml["MODEL"]["DROP_PATH_RATE"] = 0.0
    config, transform = official_classification_config(official_yaml)
    reference, _ = official_classification_config(spec)
    assert transform == {"size": 224, "do_center_crop": True}
    assert config.to_diff_dict() == reference.to_diff_dict()
    model = load_official_classifier(REFERENCE_DIR / "cls_agent_swin_aaab.pth", config)
    pixel_values, logits = reference_cases("cls_agent_swin_aaab")[0]
    with torch.no_grad():
        assert relative_error(model(pixel_values).logits, logits) < TOLERANCE


def test_official_yaml_files_of_the_published_models():
    """Small yamls in the official format: each published model's yaml gives its preset's architecture and the
    official evaluation transform (TEST.CROP False for the 288/384 models)."""
    swin_s_288 = """
DATA:
  IMG_SIZE: 288
  BATCH_SIZE: 64
MODEL:
  TYPE: agent_swin
  NAME: agent_swin_small_288
  DROP_PATH_RATE: 0.3
  SWIN:
    EMBED_DIM: 96
    DEPTHS: [ 2, 2, 18, 2 ]
    NUM_HEADS: [ 3, 6, 12, 24 ]
    WINDOW_SIZE: 72
  AGENT:
    ATTN_TYPE: AABB
    NUM: 9-16-49-49
TEST:
  CROP: False
"""
    pvt_m_256 = """
DATA:
  IMG_SIZE: 256
MODEL:
  TYPE: agent_pvt_medium
  NAME: agent_pvt_medium_256
  DROP_PATH_RATE: 0.3
  AGENT:
    ATTN_TYPE: AAAA
    NUM: 9-16-49-49
"""
    for text, preset, transform in (
        (swin_s_288, "agent-swin-s-in1k-288", {"size": 288, "do_center_crop": False}),
        (pvt_m_256, "agent-pvt-m-in1k-256", {"size": 256, "do_center_crop": True}),
    ):
        config, got_transform = official_classification_config(yaml.safe_load(text))
        assert got_transform == transform
        expected = preset_config(preset)
        for key in IMAGENET_MODELS[preset].config_kwargs:
            assert getattr(config, key) == getattr(expected, key), key
        assert config.id2label[0] == "tench" and config.num_labels == 1000


def test_unsupported_official_configs_fail_clearly():
    with pytest.raises(ValueError, match="MODEL.TYPE 'agent_deit_tiny'"):
        official_classification_config({"MODEL": {"TYPE": "agent_deit_tiny"}})
    with pytest.raises(ValueError, match="windows is not supported"):
        # config.py's default WINDOW_SIZE 7 with agent blocks: windowed agent attention, not the published layout.
        official_classification_config({"MODEL": {"TYPE": "agent_swin", "AGENT": {"ATTN_TYPE": "AAAB"}}})
    with pytest.raises(ValueError, match=r"BASE \['base.yaml'\] is not merged"):
        official_classification_config({"BASE": ["base.yaml"], "MODEL": {"TYPE": "agent_swin"}})
    with pytest.raises(ValueError, match="official_class"):
        official_classification_config({"official_class": "VisionTransformer", "official_kwargs": {}})


def test_checkpoint_that_does_not_fit_lists_the_keys():
    config, _ = official_classification_config(fixture_spec("cls_agent_pvt_aaaa"))
    with pytest.raises(ValueError, match=r"missing keys: .*classifier\.weight"):
        state = torch.load(REFERENCE_DIR / "cls_agent_pvt_aaaa.pth", weights_only=True)["model"]
        load_official_classifier({k: v for k, v in state.items() if not k.startswith("head.")}, config)


@pytest.mark.parametrize("preset", list(OFFICIAL_PARAMETERS))
def test_presets_have_the_official_parameter_counts(preset):
    assert preset in IMAGENET_PRESETS
    config = preset_config(preset)
    assert config.agent_hf_preset == preset and config.num_labels == 1000
    with torch.device("meta"):
        model = AutoModelForImageClassification.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMETERS[preset]
    assert IMAGENET_MODELS[preset].num_parameters == OFFICIAL_PARAMETERS[preset]


def test_registry_facts_of_the_imagenet_models():
    assert list(IMAGENET_MODELS) == [
        "agent-pvt-t-in1k-224",
        "agent-pvt-s-in1k-224",
        "agent-pvt-m-in1k-224",
        "agent-pvt-m-in1k-256",
        "agent-pvt-l-in1k-224",
        "agent-swin-t-in1k-224",
        "agent-swin-s-in1k-224",
        "agent-swin-s-in1k-288",
        "agent-swin-b-in1k-224",
        "agent-swin-b-in1k-384",
    ]
    swin_t = IMAGENET_MODELS["agent-swin-t-in1k-224"]
    assert (swin_t.top1_accuracy, swin_t.reported_gflops, swin_t.image_size, swin_t.center_crop) == (
        82.6,
        4.5,
        224,
        True,
    )
    assert swin_t.official_checkpoint_url == "https://cloud.tsinghua.edu.cn/f/a2ddc1190c224f768a41/?dl=1"
    assert swin_t.upstream_config == "cfgs/agent_swin_t.yaml"
    swin_b_384 = IMAGENET_MODELS["agent-swin-b-in1k-384"]
    assert (swin_b_384.top1_accuracy, swin_b_384.center_crop, swin_b_384.architecture["window_size"]) == (
        84.9,
        False,
        12,
    )
    assert IMAGENET_MODELS["agent-pvt-l-in1k-224"].upstream_config == "cfgs/agent_pvt_b.yaml"
    assert IMAGENET_MODELS["agent-pvt-m-in1k-256"].top1_accuracy == 83.8


@pytest.mark.parametrize("make_config", [tiny_swin_config, tiny_pvt_config])
def test_labels_and_problem_types(make_config):
    torch.manual_seed(0)
    model = AutoModelForImageClassification.from_config(make_config(num_labels=3)).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    logits = model(pixel_values).logits
    assert logits.shape == (2, 3)
    labels = torch.tensor([0, 2])
    loss = model(pixel_values, labels=labels).loss
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, labels))
    model.config.problem_type = "multi_label_classification"
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(
        model(pixel_values, labels=targets).loss, torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    )
    hidden = model(pixel_values, output_hidden_states=True).hidden_states
    assert len(hidden) == 4 and hidden[-1].shape[0] == 2


def test_swin_classifier_has_no_stage_norms_and_unshifted_last_stage():
    model = AgentSwinForImageClassification(tiny_swin_config(pretrain_image_size=224))
    assert not any(".norms." in key for key in model.state_dict())
    assert [block.shift_size for block in model.agent_swin.layers[3].blocks] == [0, 0]
    assert [block.shift_size for block in model.agent_swin.layers[2].blocks] == [0, 0]  # 'A' blocks: no windows


def test_saved_folder_loads_through_the_auto_classes(tmp_path):
    torch.manual_seed(0)
    model = AgentPvtForImageClassification(tiny_pvt_config(num_labels=4)).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageClassification"] == (
        "modeling_agent_pvt.AgentPvtForImageClassification"
    )
    assert (tmp_path / "modeling_agent_pvt.py").is_file()
    assert isinstance(AutoConfig.from_pretrained(tmp_path), agent_hf.AgentPvtConfig)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values).logits, model(pixel_values).logits)
