"""Training recipes (parameter groups, mmcv schedules), mmseg inference, and the training script end to end."""

import dataclasses

import pytest
import torch
from conftest import tiny_pvt_config, tiny_swin_config
from hub_server import LocalHubServer
from script_helpers import COMMON, TINY_MODEL, load_script, read_json, run_train_script
from torch import nn
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, TrainingArguments

import agent_hf
from agent_hf.data import TrainTransform, make_synthetic_scene_parsing, save_as_image_folders, synthetic_id2label
from agent_hf.data.ade20k import find_split_folders, scene_parsing_folder
from agent_hf.models.segmentation_inference import predict_multiscale, predict_slide, predict_whole, segment
from agent_hf.training import (
    EvalDataset,
    EvalSettings,
    InvalidSampleError,
    TrainDataset,
    build_optimizer,
    build_scheduler,
    evaluate_segmentation,
    mmcv_poly_lr,
    official_parameter_name,
    pad_collate,
    parameter_groups,
    recipe_for,
)

AGENT_BIASES = ("an_bias", "na_bias", "ah_bias", "aw_bias", "ha_bias", "wa_bias")


def tiny_swin(**kwargs):
    config = tiny_swin_config(**{"attn_type": "AAAB", **kwargs})
    return agent_hf.AgentSwinForSemanticSegmentation(config)


def tiny_pvt():
    return agent_hf.AgentPvtForSemanticSegmentation(tiny_pvt_config())


def groups_by_name(model, recipe):
    return {group["group"]: group for group in parameter_groups(model, recipe)}


# ---------------------------------------------------------------------------------------------- parameter groups
def test_official_parameter_names():
    assert (
        official_parameter_name("backbone.agent_swin.layers.0.blocks.0.attn.an_bias")
        == "backbone.layers.0.blocks.0.attn.an_bias"
    )
    assert official_parameter_name("backbone.agent_swin.norms.3.bias") == "backbone.norm3.bias"
    assert (
        official_parameter_name("backbone.agent_pvt.stages.0.blocks.1.norm1.weight")
        == "backbone.block1.1.norm1.weight"
    )
    assert official_parameter_name("backbone.agent_pvt.stages.3.pos_embed") == "backbone.pos_embed4"
    assert official_parameter_name("backbone.agent_pvt.stages.1.patch_embed.proj.weight") == (
        "backbone.patch_embed2.proj.weight"
    )
    assert official_parameter_name("decode_head.conv_seg.weight") == "decode_head.conv_seg.weight"


def test_swin_paper_groups_follow_mmcv_custom_keys():
    model = tiny_swin(use_absolute_embeddings=True)
    groups = groups_by_name(model, recipe_for(model.config))
    decay, no_decay = set(groups["decay"]["param_names"]), set(groups["no_decay"]["param_names"])
    assert (groups["decay"]["weight_decay"], groups["no_decay"]["weight_decay"]) == (0.01, 0.0)
    all_names = {name for name, _ in model.named_parameters()}
    assert decay | no_decay == all_names and not decay & no_decay

    block = "backbone.agent_swin.layers.0.blocks.0."
    for name in [block + f"attn.{bias}" for bias in AGENT_BIASES] + [
        block + "norm1.weight",
        block + "norm2.bias",
        "backbone.agent_swin.layers.3.blocks.0.attn.relative_position_bias_table",
        "backbone.agent_swin.absolute_pos_embed",
        "backbone.agent_swin.patch_embed.norm.weight",
        "backbone.agent_swin.layers.0.downsample.norm.weight",
        "backbone.agent_swin.norms.3.bias",
    ]:
        assert name in no_decay, name
    for name in [
        block + "attn.qkv.bias",
        block + "attn.qkv.weight",
        block + "attn.dwc.bias",
        block + "mlp.fc1.bias",
        "backbone.agent_swin.patch_embed.proj.bias",
        "decode_head.bottleneck.bn.weight",
        "decode_head.bottleneck.bn.bias",
        "decode_head.conv_seg.bias",
        "auxiliary_head.convs.0.bn.weight",
    ]:
        assert name in decay, name

    # Independent description of the same set: LayerNorm parameters, agent biases, position tables.
    layer_norms = {
        f"{module_name}.{param_name}"
        for module_name, module in model.named_modules()
        if isinstance(module, nn.LayerNorm)
        for param_name, _ in module.named_parameters(recurse=False)
    }
    tables = {
        n
        for n in all_names
        if n.rsplit(".", 1)[-1] in AGENT_BIASES + ("relative_position_bias_table", "absolute_pos_embed")
    }
    assert no_decay == layer_norms | tables


def test_pvt_paper_decays_every_parameter():
    model = tiny_pvt()
    recipe = recipe_for(model.config)
    groups = parameter_groups(model, recipe)
    assert [g["group"] for g in groups] == ["decay"]
    assert groups[0]["weight_decay"] == 1e-4
    assert set(groups[0]["param_names"]) == {name for name, _ in model.named_parameters()}
    optimizer = build_optimizer(model, recipe)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["lr"] == 2e-4 and optimizer.param_groups[0]["betas"] == (0.9, 0.999)


def test_hf_example_recipe_uses_the_trainer_rule():
    model = tiny_swin()
    recipe = recipe_for(model.config, "hf-example").with_overrides(
        TrainingArguments("unused", weight_decay=0.05), {"weight_decay"}
    )
    groups = groups_by_name(model, recipe)
    assert "backbone.agent_swin.layers.0.blocks.0.attn.qkv.bias" in groups["no_decay"]["param_names"]
    assert "backbone.agent_swin.layers.0.blocks.0.norm1.weight" in groups["no_decay"]["param_names"]
    assert "decode_head.bottleneck.bn.weight" in groups["decay"]["param_names"]
    assert groups["decay"]["weight_decay"] == 0.05


def test_recipe_defaults_and_explicit_overrides():
    swin = recipe_for("agent-swin-t-upernet-ade20k")
    pvt = recipe_for("agent-pvt-s-fpn-ade20k")
    assert (swin.learning_rate, swin.weight_decay, swin.max_steps, swin.warmup_steps) == (6e-5, 0.01, 160_000, 1500)
    assert (pvt.learning_rate, pvt.weight_decay, pvt.max_steps, pvt.warmup_steps) == (2e-4, 1e-4, 40_000, 0)
    assert pvt.lr_scheduler_kwargs == {"power": 0.9, "min_lr": 0.0}
    assert swin.total_batch_size == pvt.total_batch_size == 16

    args = TrainingArguments(
        "unused", learning_rate=1e-3, max_steps=10, weight_decay=0.5, gradient_accumulation_steps=4
    )
    merged = swin.with_overrides(args, {"learning_rate", "max_steps", "gradient_accumulation_steps"})
    assert (merged.learning_rate, merged.max_steps, merged.weight_decay) == (1e-3, 10, 0.01)
    assert merged.name == "paper+overrides" and merged.total_batch_size == 16
    merged.configure(args)
    assert (args.learning_rate, args.weight_decay, args.max_steps, args.max_grad_norm) == (1e-3, 0.01, 10, 0.0)
    assert args.per_device_train_batch_size == 4  # 16 images = 4 per device x 4 accumulation steps
    assert swin.with_overrides(args, {"num_train_epochs"}).max_steps == -1


# -------------------------------------------------------------------------------------------------- schedules
def mmcv_swin_lr(i):
    """mmcv 1.x PolyLrUpdaterHook(power=1, min_lr=0) with linear warm-up (1500 iterations, ratio 1e-6), lr 6e-5."""
    regular = (6e-5 - 0.0) * (1 - i / 160_000) ** 1.0 + 0.0
    return regular * (1 - (1 - i / 1500) * (1 - 1e-6)) if i < 1500 else regular


def mmcv_pvt_lr(i):
    return 2e-4 * (1 - i / 40_000) ** 0.9


@pytest.mark.parametrize("i", [0, 1, 750, 1499, 1500, 80_000, 159_999])
def test_swin_schedule_matches_mmcv(i):
    model = tiny_swin()
    recipe = recipe_for(model.config)
    scheduler = build_scheduler(build_optimizer(model, recipe), recipe)
    assert mmcv_poly_lr(
        i, 6e-5, 160_000, power=1.0, min_lr=0.0, warmup_steps=1500, warmup_ratio=1e-6
    ) == pytest.approx(mmcv_swin_lr(i), rel=1e-12)
    for lr_lambda, base_lr in zip(scheduler.lr_lambdas, scheduler.base_lrs, strict=True):
        assert base_lr * lr_lambda(i) == pytest.approx(mmcv_swin_lr(i), rel=1e-12, abs=1e-20)
    assert mmcv_swin_lr(0) == pytest.approx(6e-11) and mmcv_swin_lr(1500) == pytest.approx(6e-5 * (1 - 1500 / 160_000))


@pytest.mark.parametrize("i", [0, 1, 20_000, 39_999])
def test_pvt_schedule_matches_mmcv(i):
    model = tiny_pvt()
    recipe = recipe_for(model.config)
    scheduler = build_scheduler(build_optimizer(model, recipe), recipe)
    assert scheduler.base_lrs[0] * scheduler.lr_lambdas[0](i) == pytest.approx(mmcv_pvt_lr(i), rel=1e-12)


def test_scheduler_steps_an_optimizer_like_mmcv():
    """Iteration i (0-based) runs with lr(i): the Trainer steps the scheduler after each optimizer step."""
    model = tiny_swin()
    recipe = dataclasses.replace(
        recipe_for(model.config),
        learning_rate=1e-3,
        max_steps=20,
        lr_scheduler_kwargs={"power": 0.9, "min_lr": 1e-5, "warmup_ratio": 0.1},
        warmup_steps=5,
    )
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe)
    for i in range(20):
        regular = (1e-3 - 1e-5) * (1 - i / 20) ** 0.9 + 1e-5
        expected = regular * (1 - (1 - i / 5) * (1 - 0.1)) if i < 5 else regular
        assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([expected] * 2, rel=1e-12)
        for param in model.parameters():
            param.grad = torch.ones_like(param)
        optimizer.step()
        scheduler.step()
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.01, 0.0]


# -------------------------------------------------------------------------------------------------- inference
def test_inference_modes_agree_on_small_images():
    torch.manual_seed(0)
    model = tiny_swin().eval()
    pixel_values = torch.randn(1, 3, 48, 80)
    whole = predict_whole(model, pixel_values, (60, 100))
    assert whole.shape == (1, 5, 60, 100)
    # A window larger than the image is the whole image.
    torch.testing.assert_close(
        predict_slide(model, pixel_values, (60, 100), crop_size=(64, 96), stride=(32, 32)), whole
    )
    # Overlapping windows cover every pixel; the result has the same shape.
    assert predict_slide(model, pixel_values, (60, 100), crop_size=(32, 32), stride=(21, 21)).shape == whole.shape
    probabilities = predict_multiscale(model, [pixel_values, pixel_values[..., ::2, ::2]], (60, 100), flip=True)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(1, 60, 100))
    assert torch.equal(segment(model, [pixel_values], (60, 100)), whole.argmax(1))


def test_pad_collate_pads_to_the_crop():
    batch = pad_collate((6, 8))(
        [{"pixel_values": torch.ones(3, 4, 8), "labels": torch.zeros(4, 8, dtype=torch.long)}] * 2
    )
    assert batch["pixel_values"].shape == (2, 3, 6, 8) and batch["labels"].shape == (2, 6, 8)
    assert batch["pixel_values"][:, :, 4:].abs().sum() == 0 and (batch["labels"][:, 4:] == 255).all()


# ------------------------------------------------------------------------------------------------ the script
def test_script_on_ade_folders_trains_evaluates_saves_and_pushes(tmp_path):
    """ADEChallengeData2016-layout folders in, a loadable model folder out, published to a local Hub server."""
    id2label = synthetic_id2label(5)
    root = save_as_image_folders(
        make_synthetic_scene_parsing(6, 5, num_classes=5, max_size=160),
        tmp_path / "ADEChallengeData2016",
        id2label=id2label,
    )
    out = tmp_path / "run"
    with LocalHubServer(tokens={"hf_test_token"}) as hub:
        env = {
            "HF_ENDPOINT": hub.endpoint,
            "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(tmp_path / "hf_home"),
            "NO_PROXY": "127.0.0.1",
        }
        run_train_script(
            [*TINY_MODEL, *COMMON, "--train_dir", str(root), "--validation_dir", str(root), "--max_steps", "3",
             "--do_train", "--do_eval", "--output_dir", str(out),
             "--push_to_hub", "--hub_model_id", "test-user/tiny-agent-swin", "--hub_token", "hf_test_token"],
            env=env,
        )  # fmt: skip
        remote = hub.files("test-user/tiny-agent-swin")
        *_, model_commit, card_commit = hub.commits("test-user/tiny-agent-swin")
    results = read_json(out / "all_results.json")
    assert {"eval_mIoU", "eval_mAcc", "eval_aAcc", "train_loss"} <= set(results)
    assert 0.0 <= results["eval_mIoU"] <= 1.0
    report = read_json(out / "eval_per_class.json")
    assert report["num_images"] == 5 and report["world_size"] == 1
    assert list(report["per_class"]) == list(id2label.values())
    model = AutoModelForSemanticSegmentation.from_pretrained(out)
    assert model.config.id2label == id2label and model.config.embed_dim == 16
    processor = AutoImageProcessor.from_pretrained(out)
    assert processor.do_reduce_labels and processor.scale == [256, 64], "the folder serves what was evaluated"
    provenance = model.config.agent_hf_provenance  # saved before evaluation, completed with its results after
    assert provenance["origin"] == "trained" and provenance["training"]["steps"] == 3
    assert provenance["eval_results"]["mean_iou"] == round(100 * results["eval_mIoU"], 2)

    assert {"config.json", "model.safetensors", "preprocessor_config.json", "all_results.json"} <= set(
        model_commit.added
    )
    assert list(card_commit.added) == ["README.md"]
    assert remote["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert "mean_iou" in remote["README.md"].decode()


# ------------------------------------------------------------------------------------------------ bad data
@pytest.fixture(scope="module")
def script():
    """scripts/run_semantic_segmentation.py imported in-process, for its data helpers."""
    return load_script("run_semantic_segmentation")


@pytest.fixture
def ade_folders(tmp_path):
    return save_as_image_folders(make_synthetic_scene_parsing(2, 1, num_classes=5, max_size=96), tmp_path / "ade")


def test_missing_mask_is_a_row_without_annotation(ade_folders):
    (ade_folders / "annotations" / "training" / "synthetic_train_00000002.png").unlink()
    split = scene_parsing_folder(ade_folders, "train")
    assert split[0]["annotation"] is not None and split[1]["annotation"] is None
    with pytest.raises(InvalidSampleError, match=r"train\[1\] \(synthetic_train_00000002.jpg\): has no annotation"):
        TrainDataset(split, TrainTransform((32, 32), (128, 32), seed=0), num_labels=5)[1]


def test_unknown_folder_layout_and_empty_folders_are_explained(tmp_path, ade_folders):
    with pytest.raises(FileNotFoundError, match="ADEChallengeData2016 layout"):
        find_split_folders(tmp_path / "nothing", "validation")
    for image in (ade_folders / "images" / "validation").iterdir():
        image.unlink()
    with pytest.raises(ValueError, match=r"images/validation is empty: it holds no image file"):
        find_split_folders(ade_folders, "validation")
    (ade_folders / "images" / "validation").rmdir()
    with pytest.raises(FileNotFoundError, match=r"holds only the folders \['training'\]"):
        find_split_folders(ade_folders, "validation")


def test_bad_label_values_name_the_sample(ade_folders):
    split = scene_parsing_folder(ade_folders, "train")
    dataset = TrainDataset(split, TrainTransform((32, 32), (128, 32), seed=0), num_labels=3)  # masks hold 1..5
    with pytest.raises(
        InvalidSampleError, match=r"train\[0\] \(synthetic_train_00000001.jpg\).*outside the 3 classes"
    ):
        dataset[0]
    evaluation = EvalDataset(scene_parsing_folder(ade_folders, "validation"), EvalSettings(scale=(128, 32)))
    with pytest.raises(ValueError, match=r"validation\[0\] \(synthetic_validation_00000001.jpg\)"):
        evaluate_segmentation(tiny_swin(num_labels=3).eval(), evaluation)


def test_unreadable_image_names_the_sample(ade_folders):
    (ade_folders / "images" / "training" / "synthetic_train_00000001.jpg").write_bytes(b"not an image")
    dataset = TrainDataset(scene_parsing_folder(ade_folders, "train"), TrainTransform((32, 32), seed=0), num_labels=5)
    with pytest.raises(
        InvalidSampleError, match=r"sample train\[0\] \(synthetic_train_00000001.jpg\): could not be read"
    ):
        dataset[0]


def test_eval_scales_is_an_alias_of_eval_ratios(script):
    base = ["--model_name_or_path", "x", "--output_dir", "o"]
    _, data_args, _, _, explicit = script.parse_arguments([*base, "--eval_scales", "0.5", "1"])
    assert data_args.eval_ratios == [0.5, 1.0] and "eval_ratios" in explicit
    assert script.parse_arguments(base)[1].eval_ratios == [1.0]
