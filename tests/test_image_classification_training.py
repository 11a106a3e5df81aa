"""ImageNet classification (issue #24): evaluation on an ImageFolder-layout val/ (streaming top-1/top-5),
fine-tuning with scripts/run_image_classification.py at tiny scale, and a converted classification folder as the
segmentation training's backbone checkpoint."""

import json
import sys

import numpy as np
import pytest
import torch
from conftest import REFERENCE_DIR, TINY_PVT
from PIL import Image
from script_helpers import SCRIPTS, free_port, load_script, run, run_in_process
from skimage import data as skimage_data
from transformers import AutoModelForImageClassification

from agent_hf import load_official_checkpoint, preset_config
from agent_hf.data.imagenet import TopKAccuracy
from agent_hf.models.image_processing_agent_classification import AgentClassificationImageProcessor

PHOTOS = [skimage_data.astronaut(), skimage_data.chelsea(), skimage_data.coffee()]


def image_folder(root, num_classes: int, per_class: int):
    """An ImageFolder split of real photos (crops of different sizes, some grayscale), `class_{i}` folders."""
    generator = np.random.default_rng(0)
    for label in range(num_classes):
        (root / f"class_{label:02d}").mkdir(parents=True)
        for index in range(per_class):
            photo = PHOTOS[(label + index) % len(PHOTOS)]
            top, left = generator.integers(0, 80, size=2)
            crop = photo[top : top + 200 + 10 * index, left : left + 160 + 7 * label]
            image = Image.fromarray(crop)
            (image.convert("L") if index == 1 else image).save(root / f"class_{label:02d}" / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def converted_pvt(tmp_path_factory):
    convert = load_script("convert_official_checkpoint")
    output = tmp_path_factory.mktemp("pvt") / "model"
    argv = ["--checkpoint", REFERENCE_DIR / "cls_agent_pvt_aaaa.pth"]
    argv += ["--official_config", REFERENCE_DIR / "cls_agent_pvt_aaaa.json", "--output_dir", output]
    code, stderr, _ = run_in_process(convert, argv)
    assert code == 0, stderr
    return output


def test_top_k_accuracy_streams_over_batches():
    metric = TopKAccuracy()
    logits = torch.tensor([[0.0, 1, 2, 3, 4, 5], [5.0, 4, 3, 2, 1, 0], [0.0, 3, 9, 1, -1, -2]])
    labels = torch.tensor([5, 5, 1])  # top-1 hit; top-5 miss (rank 6); top-1 miss, top-5 hit (rank 2)
    metric.update(logits[:2], labels[:2])
    metric.update(logits[2:], labels[2:])
    assert metric.compute() == {"accuracy_top1": 1 / 3, "accuracy_top5": 2 / 3}


def test_evaluation_on_an_image_folder(converted_pvt, tmp_path):
    """Top-1/top-5 of the converted official classifier on a 10-class ImageFolder val/, streamed over three batches,
    equal those computed image by image with the official transform."""
    val = image_folder(tmp_path / "val", num_classes=10, per_class=2)
    script = load_script("run_image_classification")
    argv = ["--model_name_or_path", converted_pvt, "--validation_dir", val, "--do_eval"]
    argv += ["--per_device_eval_batch_size", "7", "--output_dir", tmp_path / "out", "--report_to", "none"]
    argv += ["--dataloader_pin_memory", "False"]
    code, stderr, _ = run_in_process(script, argv)
    assert code == 0, stderr
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())

    model = AutoModelForImageClassification.from_pretrained(converted_pvt).eval()
    processor = AgentClassificationImageProcessor(size=224, do_center_crop=True)
    expected = TopKAccuracy()
    for label, folder in enumerate(sorted(val.iterdir())):
        for path in sorted(folder.iterdir()):
            with Image.open(path) as image, torch.no_grad():
                logits = model(processor(image.convert("RGB"), return_tensors="pt")["pixel_values"]).logits
            expected.update(logits, torch.tensor([label]))
    want = expected.compute()
    assert expected.total == 20
    assert results["eval_accuracy_top1"] == pytest.approx(want["accuracy_top1"])
    assert results["eval_accuracy_top5"] == pytest.approx(want["accuracy_top5"])
    assert 0 < results["eval_accuracy_top5"] <= 1


def test_evaluation_refuses_a_val_folder_with_other_classes(converted_pvt, tmp_path):
    val = image_folder(tmp_path / "val", num_classes=3, per_class=1)
    script = load_script("run_image_classification")
    argv = ["--model_name_or_path", converted_pvt, "--validation_dir", val, "--do_eval", "--output_dir", tmp_path]
    code, stderr, _ = run_in_process(script, argv)
    assert code == 1
    assert "has 3 class folders but the model predicts 10 classes" in stderr


def test_fine_tuning_from_a_preset_on_two_processes(tmp_path):
    """The real command line under `accelerate launch` with two CPU processes: fine-tunes a (tiny) preset on an
    ImageFolder train/, saves a complete folder, and evaluates; the two processes' streamed top-1/top-5 equal one
    process evaluating the saved model."""
    train = image_folder(tmp_path / "train", num_classes=3, per_class=3)
    overrides = {**{k: v for k, v in TINY_PVT.items() if k in ("embed_dims", "depths")}, "drop_path_rate": 0.0}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command = [*launcher, "--main_process_port", free_port(), SCRIPTS / "run_image_classification.py"]
    command += ["--model_name_or_path", "agent-pvt-t-in1k-224", "--config_overrides", json.dumps(overrides)]
    command += ["--train_dir", train, "--validation_dir", train, "--do_train", "--do_eval", "--max_steps", "2"]
    command += ["--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2", "--learning_rate", "1e-3"]
    command += ["--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "True", "--use_cpu", "True"]
    command += ["--dataloader_pin_memory", "False", "--output_dir", tmp_path / "out"]
    run(command, timeout=600)
    out = tmp_path / "out"
    model = AutoModelForImageClassification.from_pretrained(out, trust_remote_code=True)
    assert model.config.id2label == {0: "class_00", 1: "class_01", 2: "class_02"}
    assert (out / "handler.py").is_file() and (out / "image_processing_agent_classification.py").is_file()
    assert json.loads((out / "train_results.json").read_text())["train_loss"] > 0
    two_processes = json.loads((out / "eval_results.json").read_text())

    script = load_script("run_image_classification")
    argv = ["--model_name_or_path", out, "--validation_dir", train, "--do_eval", "--report_to", "none"]
    argv += ["--per_device_eval_batch_size", "4", "--dataloader_pin_memory", "False", "--output_dir", tmp_path / "one"]
    code, stderr, _ = run_in_process(script, argv)
    assert code == 0, stderr
    one_process = json.loads((tmp_path / "one" / "eval_results.json").read_text())
    assert two_processes["eval_accuracy_top5"] == one_process["eval_accuracy_top5"] == 1.0  # 3 classes
    assert two_processes["eval_accuracy_top1"] == pytest.approx(one_process["eval_accuracy_top1"])


def test_classification_folder_as_segmentation_backbone_checkpoint(converted_pvt):
    """A converted classification folder is accepted where an official ImageNet checkpoint is (the segmentation
    training's --backbone_checkpoint): its backbone weights, the heads fresh."""
    spec = json.loads((REFERENCE_DIR / "cls_agent_pvt_aaaa.json").read_text())
    kwargs = spec["official_kwargs"]
    config = preset_config(
        "agent-pvt-t-fpn-ade20k",
        embed_dims=kwargs["embed_dims"],
        depths=kwargs["depths"],
        num_heads=kwargs["num_heads"],
        fpn_hidden_size=16,
        decoder_hidden_size=8,
    )
    segmenter = load_official_checkpoint(converted_pvt, config)
    official = torch.load(REFERENCE_DIR / "cls_agent_pvt_aaaa.pth", weights_only=True)["model"]
    backbone = segmenter.backbone.agent_pvt
    torch.testing.assert_close(backbone.stages[2].blocks[1].attn.an_bias, official["block3.1.attn.an_bias"])
    torch.testing.assert_close(backbone.stages[0].pos_embed, official["pos_embed1"])
    assert segmenter.config.agent_hf_provenance["checkpoint_kind"] == "imagenet"
