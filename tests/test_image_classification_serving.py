"""ImageNet classification folders (issue #24): conversion of official classification checkpoints (official yaml,
its JSON form, presets), the official evaluation transform as the image processor, the image-classification
pipeline on a real photo, and the Inference Endpoints handler."""

import base64
import io
import json
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import REFERENCE_DIR
from PIL import Image
from safetensors.torch import load_file, save_file
from script_helpers import load_script, run_in_process
from skimage import data as skimage_data
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from agent_hf.data.imagenet import imagenet_id2label
from agent_hf.models.image_processing_agent_classification import AgentClassificationImageProcessor

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def official_transform(image: Image.Image, size: int, crop: bool) -> np.ndarray:
    """The official `build_transform(is_train=False)`, written out with PIL: torchvision's Resize((s, s)) of a PIL
    image is PIL's resize, its CenterCrop rounds the corner, ToTensor divides by 255, Normalize."""
    side = int((256 / 224) * size) if crop else size
    image = image.convert("RGB").resize((side, side), Image.BICUBIC)
    if crop:
        top = int(round((side - size) / 2.0))
        left = int(round((side - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
    array = (np.asarray(image, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return array.transpose(2, 0, 1)


@pytest.fixture(scope="module")
def convert():
    return load_script("convert_official_checkpoint")


@pytest.fixture(scope="module")
def imagenet_checkpoint(tmp_path_factory):
    """The Swin fixture's official checkpoint with a 1000-class head (random), as the official code saves it."""
    state = torch.load(REFERENCE_DIR / "cls_agent_swin_aaab.pth", weights_only=True)["model"]
    generator = torch.Generator().manual_seed(0)
    state["head.weight"] = torch.randn(1000, state["head.weight"].shape[1], generator=generator)
    state["head.bias"] = torch.randn(1000, generator=generator)
    path = tmp_path_factory.mktemp("ckpt") / "agent_swin_tiny_max_acc.pth"
    torch.save({"model": state, "epoch": 299}, path)
    return path


@pytest.fixture(scope="module")
def imagenet_folder(convert, imagenet_checkpoint, tmp_path_factory):
    """A classification folder converted from an official-format yaml (1000 classes: MODEL.NUM_CLASSES default)."""
    spec = json.loads((REFERENCE_DIR / "cls_agent_swin_aaab.json").read_text())
    official_yaml = spec["official_yaml"]
    official_yaml["MODEL"]["DROP_PATH_RATE"] = 0.0
    root = tmp_path_factory.mktemp("folder")
    (root / "agent_swin_tiny.yaml").write_text(yaml.safe_dump(official_yaml))
    output = root / "model"
    argv = ["--checkpoint", imagenet_checkpoint, "--official_config", root / "agent_swin_tiny.yaml"]
    code, stderr, _ = run_in_process(convert, [*argv, "--output_dir", output])
    assert code == 0, stderr
    return output


def test_yaml_conversion_writes_an_imagenet_classification_folder(imagenet_folder, imagenet_checkpoint):
    config = json.loads((imagenet_folder / "config.json").read_text())
    assert config["architectures"] == ["AgentSwinForImageClassification"]
    assert len(config["id2label"]) == 1000
    assert config["id2label"]["0"] == "tench" and config["id2label"]["999"] == imagenet_id2label()[999]
    assert (
        config["auto_map"]["AutoModelForImageClassification"] == "modeling_agent_swin.AgentSwinForImageClassification"
    )
    assert config["agent_hf_provenance"]["checkpoint"] == imagenet_checkpoint.name
    processor = json.loads((imagenet_folder / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "AgentClassificationImageProcessor"
    assert (processor["size"], processor["do_center_crop"]) == (224, True)
    for name in ("handler.py", "requirements.txt", "image_processing_agent_classification.py", "image_ops.py"):
        assert (imagenet_folder / name).is_file(), name
    weights = load_file(imagenet_folder / "model.safetensors")
    official = torch.load(imagenet_checkpoint, weights_only=True)["model"]
    torch.testing.assert_close(weights["classifier.weight"], official["head.weight"])
    torch.testing.assert_close(weights["norm.bias"], official["norm.bias"])


def test_json_form_conversion_reproduces_the_official_logits(convert, tmp_path):
    """The JSON form of the shared fixture (`official_class`, `official_kwargs`, `img_size`), converted by the
    script, loads through AutoModelForImageClassification and gives the official logits."""
    output = tmp_path / "pvt"
    argv = ["--checkpoint", REFERENCE_DIR / "cls_agent_pvt_aaaa.pth"]
    argv += ["--official_config", REFERENCE_DIR / "cls_agent_pvt_aaaa.json", "--output_dir", output]
    code, stderr, printed = run_in_process(convert, argv)
    assert code == 0, stderr
    assert "AgentPvtForImageClassification, " in printed
    model = AutoModelForImageClassification.from_pretrained(output, trust_remote_code=True).eval()
    io_tensors = load_file(REFERENCE_DIR / "cls_agent_pvt_aaaa.io.safetensors")
    with torch.no_grad():
        logits = model(io_tensors["case0.pixel_values"]).logits
    torch.testing.assert_close(logits, io_tensors["case0.logits"], rtol=1e-5, atol=1e-5)


def test_preset_conversion_checks_the_checkpoint(convert, tmp_path):
    """A preset names the published architecture: the tiny fixture checkpoint does not fit it, and the one-line error
    says which keys, leaving nothing behind."""
    output = tmp_path / "out"
    argv = ["--checkpoint", REFERENCE_DIR / "cls_agent_pvt_aaaa.pth", "--preset", "agent-pvt-t-in1k-224"]
    code, stderr, _ = run_in_process(convert, [*argv, "--output_dir", output])
    assert code == 1
    assert "ImageNet classification checkpoint" in stderr and "mis-shaped keys" in stderr
    assert not output.exists()


def test_bad_official_yaml_fails_in_one_line(convert, tmp_path):
    bad = tmp_path / "agent_deit_t.yaml"
    bad.write_text("MODEL:\n  TYPE: agent_deit_tiny\n")
    argv = ["--checkpoint", REFERENCE_DIR / "cls_agent_pvt_aaaa.pth", "--official_config", bad]
    code, stderr, _ = run_in_process(convert, [*argv, "--output_dir", tmp_path / "out"])
    assert code == 1
    assert str(bad) in stderr and "agent_deit_tiny" in stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("MODEL: [unclosed\n")
    code, stderr, _ = run_in_process(
        convert, ["--checkpoint", "x.pth", "--official_config", broken, "--output_dir", "o"]
    )
    assert code == 1 and "could not read the official config" in stderr


@pytest.mark.parametrize(("size", "crop"), [(224, True), (256, True), (288, False)])
def test_processor_is_the_official_evaluation_transform(size, crop):
    photo = Image.fromarray(skimage_data.chelsea())  # 451x300: a square resize, not the shorter side
    processor = AgentClassificationImageProcessor(size=size, do_center_crop=crop)
    pixel_values = processor(photo, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, size, size)
    np.testing.assert_allclose(pixel_values[0].numpy(), official_transform(photo, size, crop), rtol=0, atol=1e-6)
    # Grayscale and RGBA inputs are converted to RGB as the official ImageFolder loader does (PIL convert).
    gray = Image.fromarray(skimage_data.camera())
    np.testing.assert_allclose(processor(gray)["pixel_values"][0], official_transform(gray, size, crop), atol=1e-6)


def test_processor_rejects_bad_settings():
    with pytest.raises(ValueError, match="size must be a positive int"):
        AgentClassificationImageProcessor(size=0)
    with pytest.raises(ValueError, match="square"):
        AgentClassificationImageProcessor(size={"height": 224, "width": 256})
    with pytest.raises(TypeError, match="unexpected argument"):
        AgentClassificationImageProcessor()(Image.new("RGB", (8, 8)), size=3)


def test_pipeline_returns_imagenet_top_k_on_a_real_photo(imagenet_folder):
    photo = Image.fromarray(skimage_data.coffee())
    classifier = pipeline("image-classification", model=str(imagenet_folder), trust_remote_code=True)
    assert type(classifier.image_processor).__name__ == "AgentClassificationImageProcessor"
    predictions = classifier(photo, top_k=5)
    assert len(predictions) == 5
    # Independently: the official transform, the model, softmax, top 5.
    model = AutoModelForImageClassification.from_pretrained(imagenet_folder, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(official_transform(photo, 224, True))[None]).logits[0]
    scores, ids = logits.softmax(-1).topk(5)
    names = imagenet_id2label()
    assert [p["label"] for p in predictions] == [names[i] for i in ids.tolist()]
    np.testing.assert_allclose([p["score"] for p in predictions], scores.numpy(), rtol=1e-4)
    auto = AutoImageProcessor.from_pretrained(imagenet_folder, trust_remote_code=True)
    assert (auto.size, auto.do_center_crop) == (224, True)


def test_endpoint_handler_answers_top_k(imagenet_folder, monkeypatch):
    monkeypatch.syspath_prepend(str(imagenet_folder))
    monkeypatch.chdir(imagenet_folder)
    sys.modules.pop("handler", None)
    import handler

    endpoint = handler.EndpointHandler(str(imagenet_folder))
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.astronaut()).save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    answer = endpoint({"inputs": encoded, "parameters": {"top_k": 3}})
    expected = pipeline("image-classification", model=str(imagenet_folder), trust_remote_code=True)(
        Image.fromarray(skimage_data.astronaut()), top_k=3
    )
    assert [a["label"] for a in answer] == [e["label"] for e in expected]
    assert len(endpoint({"inputs": [buffer.getvalue(), encoded]})) == 2  # raw bytes and base64, one list each
    with pytest.raises(ValueError, match="unknown parameter"):
        endpoint({"inputs": encoded, "parameters": {"mode": "slide"}})
    with pytest.raises(ValueError, match="inputs"):
        endpoint({"parameters": {}})
    with pytest.raises(ValueError, match="not a decodable image|base64"):
        endpoint({"inputs": "not an image"})
    sys.modules.pop("handler", None)


def test_endpoint_handler_reads_no_server_file_and_fetches_no_url(imagenet_folder, monkeypatch, tmp_path):
    """What a stranger can send the classifier's endpoint: a server image's path and an URL are refused with the same
    answer whether or not they exist (nothing read, nothing fetched); requests beyond the limits, before decoding.
    The owner's settings (constructor or environment) open paths."""
    monkeypatch.syspath_prepend(str(imagenet_folder))
    for name in ("AGENT_HF_ALLOW_PATHS", "AGENT_HF_ALLOW_URLS", "AGENT_HF_MAX_PIXELS", "AGENT_HF_MAX_IMAGES"):
        monkeypatch.delenv(name, raising=False)
    sys.modules.pop("handler", None)
    import handler

    endpoint = handler.EndpointHandler(str(imagenet_folder))
    server_image = tmp_path / "server.png"
    Image.fromarray(skimage_data.astronaut()).save(server_image)
    png = server_image.read_bytes()
    refusals = {
        str(server_image): "file paths are not accepted here",
        str(tmp_path / "missing.png"): "file paths are not accepted here",
        "http://169.254.169.254/latest/meta-data/": "image URLs are not accepted here",
        "https://example.com/cat.png": "image URLs are not accepted here",
    }
    for inputs, message in refusals.items():
        with pytest.raises(ValueError, match=message):
            endpoint({"inputs": inputs})
    for inputs, message in (
        (3, "got int"),
        ({"url": "x"}, "got dict"),
        ([[png]], "got list"),
        ([], "empty list"),
        ([png] * 17, "17 images in one request, more than the limit of 16"),
        (b"", "not a decodable image"),
    ):
        with pytest.raises(ValueError, match=message):
            endpoint({"inputs": inputs})
    with pytest.raises(ValueError, match="must be a JSON object"):
        endpoint({"inputs": png, "parameters": []})
    monkeypatch.setenv("AGENT_HF_MAX_PIXELS", "1000")  # read per request: the owner's limit
    with pytest.raises(ValueError, match="max_pixels"):
        endpoint({"inputs": png})
    monkeypatch.delenv("AGENT_HF_MAX_PIXELS")
    owner = handler.EndpointHandler(str(imagenet_folder), allow_paths=True)
    assert owner({"inputs": str(server_image), "parameters": {"top_k": 2}}) == endpoint(
        {"inputs": png, "parameters": {"top_k": 2}}
    )
    sys.modules.pop("handler", None)


def official_pvt_state_dict(model) -> dict:
    """Our Agent-PVT classifier's weights under the official classification code's names (`patch_embed1.`,
    `pos_embed1`, `block1.0.`, `head.`), as an official checkpoint holds them."""
    import re

    renamed = {}
    for key, tensor in model.state_dict().items():
        key = key.removeprefix("agent_pvt.").replace("classifier.", "head.")
        key = re.sub(r"^stages\.(\d+)\.(patch_embed|pos_embed|blocks)", lambda m: f"{m[2]}{int(m[1]) + 1}", key)
        renamed[key.replace("blocks", "block")] = tensor.clone()
    return renamed


def test_official_pvt_t_converts_to_the_paper_card(convert, tmp_path):
    """The published Agent-PVT-T: an official-format checkpoint converted with the official yaml (or the preset)
    gives the preset's architecture and ImageNet labels, and its folder gets the paper's ImageNet card."""
    from agent_hf import AgentPvtForImageClassification, preset_config
    from agent_hf.hub import card_for_folder

    torch.manual_seed(0)
    model = AgentPvtForImageClassification(preset_config("agent-pvt-t-in1k-224")).eval()
    checkpoint = tmp_path / "agent_pvt_t.pth"
    torch.save({"model": official_pvt_state_dict(model)}, checkpoint)
    config_file = tmp_path / "agent_pvt_t.yaml"
    config_file.write_text(
        "DATA:\n  IMG_SIZE: 224\nMODEL:\n  TYPE: agent_pvt_tiny\n  NAME: agent_pvt_tiny\n  DROP_PATH_RATE: 0.1\n"
        "  AGENT:\n    ATTN_TYPE: AAAA\n    NUM: 9-16-49-49\n"
    )
    for source in (["--official_config", config_file], ["--preset", "agent-pvt-t-in1k-224"]):
        output = tmp_path / ("from_preset" if source[0] == "--preset" else "from_yaml")
        code, stderr, _ = run_in_process(convert, ["--checkpoint", checkpoint, *source, "--output_dir", output])
        assert code == 0, stderr
        converted = AutoModelForImageClassification.from_pretrained(output).eval()
        pixel_values = torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            torch.testing.assert_close(converted(pixel_values).logits, model(pixel_values).logits)
        card = str(card_for_folder(output, "me/agent-pvt-t"))
        assert "# Agent-PVT-T for ImageNet-1K image classification" in card and "78.4" in card
    with pytest.raises(ValueError, match="holds the official weights of agent-pvt-t-in1k-224"):
        card_for_folder(tmp_path / "from_yaml", "me/x", preset="agent-pvt-s-in1k-224")
    weights = load_file(tmp_path / "from_yaml" / "model.safetensors")
    weights["classifier.bias"] += 1  # no longer the converted weights: no card is generated
    save_file(weights, tmp_path / "from_yaml" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="weights changed after their provenance record"):
        card_for_folder(tmp_path / "from_yaml", "me/x")


def test_upgrading_a_classification_folder_keeps_it_a_classifier(imagenet_folder, tmp_path):
    """`upgrade_model_folder` rewrites a classification folder's serving files as classification ones (its
    processor's settings kept), never the segmentation processor and handler."""
    import shutil

    from agent_hf.saving import upgrade_model_folder

    folder = tmp_path / "folder"
    shutil.copytree(imagenet_folder, folder)
    (folder / "handler.py").write_text("# an older handler\n")
    processor_config = json.loads((folder / "preprocessor_config.json").read_text())
    processor_config["do_center_crop"] = False
    (folder / "preprocessor_config.json").write_text(json.dumps(processor_config))
    written = upgrade_model_folder(folder)
    assert "pipeline_agent.py" not in written and not (folder / "pipeline_agent.py").exists()
    assert (folder / "handler.py").read_text() == (imagenet_folder / "handler.py").read_text()
    upgraded = json.loads((folder / "preprocessor_config.json").read_text())
    assert upgraded["image_processor_type"] == "AgentClassificationImageProcessor"
    assert (upgraded["size"], upgraded["do_center_crop"]) == (224, False)
    assert "custom_pipelines" not in json.loads((folder / "config.json").read_text())
