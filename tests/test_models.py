"""Model behavior beyond parity: presets, Auto classes, losses, saving with code, pipelines, bad input."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_pvt_config, tiny_swin_config
from PIL import Image
from script_helpers import load_script, run_in_process
from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForSemanticSegmentation, pipeline

import agent_hf
from agent_hf import (
    AgentPvtBackbone,
    AgentPvtForSemanticSegmentation,
    AgentPvtModel,
    AgentSwinBackbone,
    AgentSwinForSemanticSegmentation,
    AgentSwinModel,
)
from agent_hf.data.ade20k import ADE20K_CLASSES
from agent_hf.saving import make_image_processor, save_model_folder

OFFICIAL_PARAMETERS = {
    "agent-swin-t-upernet-ade20k": 60_556_472,
    "agent-swin-s-upernet-ade20k": 81_320_192,
    "agent-swin-b-upernet-ade20k": 121_606_588,
    "agent-pvt-t-fpn-ade20k": 15_323_998,
    "agent-pvt-s-fpn-ade20k": 24_388_712,
    "agent-pvt-m-fpn-ade20k": 39_675_392,
    "agent-pvt-l-fpn-ade20k": 52_491_826,
}


@pytest.mark.parametrize("name", list(OFFICIAL_PARAMETERS))
def test_preset_parameter_counts_equal_the_official_ones(name):
    config = agent_hf.preset_config(name)
    assert config.num_labels == 150 and config.id2label[0] == "wall" and config.agent_hf_preset == name
    with torch.device("meta"):
        model = AutoModelForSemanticSegmentation.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMETERS[name]


def test_preset_layouts_are_the_official_ones():
    assert agent_hf.preset_config("agent-swin-t-upernet-ade20k").block_attention_types == [
        ["A"] * 2,
        ["A"] * 2,
        ["A"] * 6,
        ["B"] * 2,
    ]
    assert agent_hf.preset_config("agent-swin-s-upernet-ade20k").block_attention_types[2] == ["B"] * 18
    base = agent_hf.preset_config("agent-swin-b-upernet-ade20k").block_attention_types
    assert base[2] == ["A", "A"] + ["B"] * 16 and base[3] == ["B", "B"]
    assert agent_hf.preset_config("agent-pvt-l-fpn-ade20k").layer_norm_eps == 1e-6


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ValueError, match="Unknown preset 'agent-swin-xl'.*agent-swin-t-upernet-ade20k"):
        agent_hf.preset_config("agent-swin-xl")


@pytest.mark.parametrize(
    "factory,kwargs,message",
    [
        (tiny_swin_config, dict(num_heads=[1, 2, 4]), "num_heads has 3 entries but depths has 4 stages"),
        (tiny_swin_config, dict(agent_num=[9, 16, 49]), "agent_num has 3 entries"),
        (tiny_swin_config, dict(attn_type="AAXB"), "attn_type='AAXB'"),
        (tiny_swin_config, dict(attn_type="AAMB"), "needs the number of agent blocks"),
        (tiny_swin_config, dict(agent_num=[9, 16, 50, 49]), "must be a square number"),
        (tiny_pvt_config, dict(sr_ratios=[8, 4, 2]), "sr_ratios has 3 entries"),
        (tiny_pvt_config, dict(agent_sr_ratios=[2, 1, 1, 1]), "support only 1"),
        (tiny_pvt_config, dict(attn_type="AAA"), "one 'A' or 'B' per stage"),
        # Sizes below 1 are named before any arithmetic fails on them.
        (tiny_swin_config, dict(patch_size=0), r"AgentSwinConfig: patch_size=0; every size must be a number >= 1"),
        (tiny_swin_config, dict(window_size=0), "window_size=0"),
        (tiny_swin_config, dict(downstream_agent_shapes=[[0, 2], [2, 2], [2, 2], [1, 1]]), "downstream_agent_shapes="),
        (tiny_pvt_config, dict(sr_ratios=[0, 1, 1, 1]), r"AgentPvtConfig: sr_ratios=\[0, 1, 1, 1\]"),
        (tiny_pvt_config, dict(embed_dims=[32, 0, 64, 64]), "embed_dims="),
    ],
)
def test_inconsistent_configs_are_rejected_with_a_clear_message(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


def test_mixed_layout_is_expressible():
    config = tiny_swin_config(attn_type="AAMB2", depths=[2, 2, 4, 2])
    assert config.block_attention_types == [["A", "A"], ["A", "A"], ["A", "A", "B", "B"], ["B", "B"]]
    model = AgentSwinModel(config)
    blocks = model.layers[2].blocks
    assert [b.attention_type for b in blocks] == ["A", "A", "B", "B"]
    assert [b.shift_size for b in blocks] == [0, 0, 0, 3], "window blocks shift on odd indices"


def test_auto_classes_resolve_after_import():
    for config, classes in (
        (tiny_swin_config(), (AgentSwinModel, AgentSwinBackbone, AgentSwinForSemanticSegmentation)),
        (tiny_pvt_config(), (AgentPvtModel, AgentPvtBackbone, AgentPvtForSemanticSegmentation)),
    ):
        assert type(AutoConfig.for_model(config.model_type)) is type(config)
        for auto, expected in zip((AutoModel, AutoBackbone, AutoModelForSemanticSegmentation), classes):
            assert type(auto.from_config(config)) is expected


@pytest.mark.parametrize("factory", [tiny_swin_config, tiny_pvt_config])
def test_backbone_outputs_follow_out_features(factory):
    backbone = AutoBackbone.from_config(factory(out_features=["stage2", "stage4"])).eval()
    out = backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in out.feature_maps] == [(8, 12), (2, 3)]
    assert backbone.channels == [backbone.num_features[2], backbone.num_features[4]]
    # plain contiguous (B, C, H, W) maps, as transformers backbones return (`.view` works on them)
    assert all(f.is_contiguous() for f in out.feature_maps)


@pytest.mark.parametrize("factory", [tiny_swin_config, tiny_pvt_config])
def test_loss_is_mmseg_cross_entropy_over_all_pixels(factory):
    torch.manual_seed(0)
    model = AutoModelForSemanticSegmentation.from_config(factory()).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    labels = torch.randint(0, 5, (2, 64, 64))
    labels[:, :10] = 255  # ignored pixels count in the mean as zeros (mmseg 0.x avg_non_ignore=False)
    with torch.no_grad():
        out = model(pixel_values, labels=labels)

    def ce(logits):
        logits = F.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False)
        per_pixel = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
        assert per_pixel[:, :10].abs().sum() == 0
        return per_pixel.sum() / labels.numel()

    expected = ce(out.logits)
    if out.auxiliary_logits is not None:
        expected = expected + 0.4 * ce(out.auxiliary_logits)
    assert torch.allclose(out.loss, expected, rtol=1e-5)
    assert out.logits.shape == (2, 5, 16, 16)


def test_training_step_reaches_every_parameter():
    model = AgentSwinForSemanticSegmentation(tiny_swin_config(attn_type="AAMB1")).train()
    out = model(torch.randn(2, 3, 64, 64), labels=torch.randint(0, 5, (2, 64, 64)))
    out.loss.backward()
    without_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not without_grad, without_grad


@pytest.mark.parametrize(
    "bad,message",
    [
        (torch.randn(3, 64, 64), r"shape \(batch, 3, height, width\)"),
        (torch.randn(1, 1, 64, 64), r"shape \(batch, 3, height, width\)"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating-point"),
    ],
)
def test_bad_pixel_values_get_a_clear_error(bad, message):
    for model in (
        AgentSwinForSemanticSegmentation(tiny_swin_config()),
        AgentPvtForSemanticSegmentation(tiny_pvt_config()),
    ):
        with pytest.raises(ValueError, match=message):
            model(bad)


def test_pvt_rejects_images_smaller_than_its_stride():
    with pytest.raises(ValueError, match="at least 32x32"):
        AgentPvtForSemanticSegmentation(tiny_pvt_config())(torch.randn(1, 3, 16, 64))


def test_checkpoint_of_another_architecture_is_rejected(reference_dir):
    swin_weights = reference_dir / "agent_swin_aaab_upernet.weights.safetensors"
    with pytest.raises(
        ValueError,
        match=r"(?s)does not fit AgentPvtConfig.*Agent-Swin backbone, but the config is for Agent-PVT"
        r".*missing keys.*unexpected keys",
    ):
        agent_hf.load_official_checkpoint(swin_weights, tiny_pvt_config())
    spec = json.loads((reference_dir / "agent_swin_aaab_upernet.json").read_text())["model"]
    wider = json.loads(json.dumps(spec))
    wider["backbone"]["embed_dim"] = 32
    with pytest.raises(ValueError, match="mis-shaped keys"):
        agent_hf.load_official_checkpoint(swin_weights, wider)
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        agent_hf.load_official_checkpoint(reference_dir / "missing.pth", spec)
    with pytest.raises(ValueError, match="not an Agent Attention backbone"):
        agent_hf.config_from_official({"backbone": {"type": "ResNetV1c"}})


def test_save_and_reload_locally_keeps_outputs(tmp_path):
    model = AgentPvtForSemanticSegmentation(tiny_pvt_config()).eval()
    save_model_folder(model, tmp_path)
    reloaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x).logits, reloaded(x).logits)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (
        config["auto_map"]["AutoModelForSemanticSegmentation"] == "modeling_agent_pvt.AgentPvtForSemanticSegmentation"
    )
    shipped = {"modeling_agent_pvt.py", "configuration_agent_pvt.py", "agent_attention.py", "agent_attention_fast.py"}
    assert shipped | {"heads.py", "blocks.py"} <= {p.name for p in tmp_path.iterdir()}


def test_pipeline_returns_one_mask_per_class_with_ade20k_names(tmp_path):
    torch.manual_seed(0)
    config = tiny_swin_config(num_labels=150, id2label=dict(enumerate(ADE20K_CLASSES)))
    model = AgentSwinForSemanticSegmentation(config).eval()
    save_model_folder(model, tmp_path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    segmenter = pipeline("image-segmentation", model=str(tmp_path), trust_remote_code=True)
    results = segmenter(image)
    processor = make_image_processor()
    with torch.no_grad():
        logits = model(**processor(image, return_tensors="pt")).logits
    expected = processor.post_process_semantic_segmentation(
        type("O", (), {"logits": logits})(), target_sizes=[(96, 128)]
    )[0]
    assert sorted(r["label"] for r in results) == sorted(ADE20K_CLASSES[i] for i in expected.unique().tolist())
    for r in results:
        assert r["mask"].size == image.size
        class_id = ADE20K_CLASSES.index(r["label"])
        assert np.array_equal(np.array(r["mask"]) > 0, (expected == class_id).numpy())


def test_conversion_script_fails_cleanly_on_a_mismatched_checkpoint(tmp_path, reference_dir):
    # In-process (the script's command line runs in test_folders.py; its folder loads in test_serving.py).
    folder = tmp_path / "converted"
    code, stderr, _ = run_in_process(
        load_script("convert_official_checkpoint"),
        ["--checkpoint", reference_dir / "agent_pvt_aaaa_fpn.weights.safetensors",
         "--preset", "agent-swin-t-upernet-ade20k", "--output_dir", folder],
    )  # fmt: skip
    assert code == 1 and "does not fit AgentSwinConfig" in stderr
    assert not folder.exists() and [p.name for p in tmp_path.iterdir()] == [], "no half-written output"
