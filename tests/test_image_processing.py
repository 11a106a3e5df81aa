"""The image processor (mmseg's test pipeline), its post-processing, the shared image functions and model folders.

Where agent_hf is not installed, the same processor is checked by tests/test_serving.py.
"""

from __future__ import annotations

import ast
import base64
import functools
import http.server
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, tiny_swin_config
from helpers import mmcv_rescale_size
from PIL import Image
from transformers import (
    AutoImageProcessor,
    SegformerConfig,
    SegformerForSemanticSegmentation,
    SegformerImageProcessorPil,
)
from transformers.modeling_outputs import SemanticSegmenterOutput

import agent_hf
from agent_hf import saving as processing
from agent_hf.data.transforms import ADE20K_MEAN, ADE20K_STD, EvalTransform, to_rgb_array
from agent_hf.models.image_ops import open_image
from agent_hf.models.image_processing_agent import AgentImageProcessor
from agent_hf.models.segmentation_inference import multiscale_inputs, segment, upsampled_argmax
from agent_hf.saving import make_image_processor, save_model_folder


def skimage_photos() -> dict[str, Image.Image]:
    """All five photos of scikit-image's data folder, plus portrait and panorama versions."""
    from skimage import data

    folder = Path(data.__file__).parent
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png"]
    photos = {name: Image.open(folder / name).convert("RGB") for name in names}
    photos["rocket portrait"] = photos["rocket.jpg"].transpose(Image.Transpose.ROTATE_90)
    photos["coffee panorama"] = photos["coffee.png"].crop((0, 100, 600, 250))
    return photos


class PerPixelModel(torch.nn.Module):
    """A 1x1-convolution "segmenter": each pixel's logits depend on that pixel only, at the input resolution."""

    def __init__(self, num_labels: int = 6):
        super().__init__()
        torch.manual_seed(0)
        self.classifier = torch.nn.Conv2d(3, num_labels, 1)
        self.config = SegformerConfig(num_labels=num_labels)  # align_corners: absent, i.e. False

    def forward(self, pixel_values):
        return SemanticSegmenterOutput(logits=self.classifier(pixel_values))


# ---------------------------------------------------------------------------------------------- preprocessing
def test_mean_and_std_are_mmseg_ade20k_and_exist_once():
    processor = AgentImageProcessor()
    assert processor.normalization == (ADE20K_MEAN, ADE20K_STD)  # exactly, after the 0-1 round trip
    assert not hasattr(processing, "IMAGE_MEAN") and not hasattr(processing, "IMAGE_STD")
    reloaded = AgentImageProcessor.from_dict(json.loads(processor.to_json_string()))
    assert reloaded.normalization == (ADE20K_MEAN, ADE20K_STD)


@pytest.mark.parametrize("scale", [(2048, 512), (1024, 256)])
def test_output_size_is_mmcv_rescale_size_on_real_photos(scale):
    processor = make_image_processor(scale=scale)
    for name, photo in skimage_photos().items():
        pixel_values = processor(photo, return_tensors="pt")["pixel_values"]
        assert tuple(pixel_values.shape) == (1, 3, *mmcv_rescale_size(photo.width, photo.height, scale)), name
        assert processor.resized_size(photo.height, photo.width) == tuple(pixel_values.shape[-2:])
    assert make_image_processor().resized_size(375, 500) == (512, 683)


def test_pixel_values_are_those_of_the_evaluation_path():
    processor = make_image_processor()
    for name, photo in skimage_photos().items():
        pixel_values = processor(photo, return_tensors="pt")["pixel_values"]
        assert torch.equal(pixel_values, multiscale_inputs(photo)[0]), name
        assert torch.equal(pixel_values[0], EvalTransform()(photo)["pixel_values"]), name
    ratios = [0.5, 1.25]
    views = processor.multiscale_pixel_values(photo, ratios)
    assert all(torch.equal(a, b) for a, b in zip(views, multiscale_inputs(photo, ratios=ratios)))


@torch.no_grad()
def test_post_process_equals_the_evaluation_path():
    torch.manual_seed(0)
    model = agent_hf.AgentSwinForSemanticSegmentation(tiny_swin_config(num_labels=7)).eval()
    processor = make_image_processor()
    photo = skimage_photos()["chelsea.png"]
    outputs = model(**processor(photo, return_tensors="pt"))
    labels = processor.post_process_semantic_segmentation(outputs, target_sizes=[(photo.height, photo.width)])[0]
    expected = segment(model, multiscale_inputs(photo), (photo.height, photo.width))[0]
    assert labels.shape == (300, 451) and len(labels.unique()) > 1
    assert torch.equal(labels, expected)
    # Squashing the logits straight to the photo (a one-step resize) is not what mmseg does, and differs.
    direct = torch.nn.functional.interpolate(outputs.logits, (300, 451), mode="bilinear").argmax(1)[0]
    assert not torch.equal(direct, expected)
    # Without target sizes: the argmax at the logits' resolution (transformers' convention).
    assert processor.post_process_semantic_segmentation(outputs)[0].shape == outputs.logits.shape[-2:]


@torch.no_grad()
def test_a_batch_of_different_sizes_is_padded_then_cropped_back():
    model = PerPixelModel()
    processor = make_image_processor(scale=(256, 64))
    photos = skimage_photos()
    images = [photos["rocket portrait"], photos["coffee panorama"], photos["astronaut.png"]]
    batch = processor(images, return_tensors="pt")["pixel_values"]
    singles = [processor(image, return_tensors="pt")["pixel_values"] for image in images]
    assert batch.shape[-2:] == (max(s.shape[-2] for s in singles), max(s.shape[-1] for s in singles))
    for padded, single in zip(batch, singles):
        height, width = single.shape[-2:]
        assert torch.equal(padded[:, :height, :width], single[0])
        assert not padded[:, height:].any() and not padded[:, :, width:].any()  # zero padding, as mmseg's Pad
    sizes = [(image.height, image.width) for image in images]
    maps = processor.post_process_semantic_segmentation(model(batch), target_sizes=sizes)
    for labels, single, size in zip(maps, singles, sizes):
        expected = processor.post_process_semantic_segmentation(model(single), target_sizes=[size])[0]
        assert labels.shape == size and torch.equal(labels, expected)


def test_upsampled_argmax_in_slices_equals_the_full_argmax():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 11, 9, 13, generator=generator)
    logits[:, 4] = logits[:, 2]  # ties resolve to the first class
    logits[0, 7, 3, 5] = float("nan")  # so does a NaN, as in argmax
    for size, align_corners in [((40, 31), False), ((17, 60), True)]:
        full = torch.nn.functional.interpolate(logits, size, mode="bilinear", align_corners=align_corners).argmax(1)
        for max_bytes in (1, 4 * 40 * 31 * 3, 1 << 30):  # one class at a time, three, everything at once
            assert torch.equal(upsampled_argmax(logits, size, align_corners, max_bytes=max_bytes), full)


# ----------------------------------------------------------------------------------------------------- inputs
def encoded(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def test_images_of_every_kind_are_converted_like_training_data():
    processor = make_image_processor(scale=(128, 64))
    rgb = np.asarray(skimage_photos()["chelsea.png"].resize((90, 60)))

    def pixels(image):
        return processor(image, return_tensors="pt")["pixel_values"]

    gray = rgb[..., 0]
    sixteen = Image.fromarray(gray.astype(np.uint16) * 257)  # 16-bit PNG: the high byte is the 8-bit gray
    assert Image.open(io.BytesIO(encoded(sixteen))).mode.startswith("I")
    assert torch.equal(pixels(encoded(sixteen)), pixels(gray))  # not almost white
    assert torch.equal(pixels(Image.fromarray(gray)), pixels(np.repeat(gray[..., None], 3, axis=2)))
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    assert torch.equal(pixels(Image.fromarray(rgba)), pixels(rgb))  # alpha dropped, not composited
    for image in (Image.fromarray(rgb).convert("P"), Image.fromarray(rgb).convert("CMYK")):
        assert torch.equal(pixels(image), pixels(to_rgb_array(image)))
    assert tuple(pixels(Image.new("RGB", (1, 1))).shape) == (1, 3, 64, 64)  # 1x1: scaled up to the short side
    assert tuple(pixels(np.zeros((4000, 6000, 3), np.uint8)).shape) == (1, 3, 64, 96)  # 24 MP: resized first

    with pytest.raises(ValueError, match="float32 is not supported"):
        pixels(rgb.astype(np.float32) / 255)  # 0-1 floats would be black: refused
    with pytest.raises(ValueError, match="mode 'F'"):
        pixels(Image.fromarray(rgb[..., 0].astype(np.float32) / 255))
    with pytest.raises(ValueError, match="not a decodable image"):
        pixels(b"GIF89a but not really")
    with pytest.raises(ValueError, match="empty"):
        pixels(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(TypeError, match="got Tensor"):
        pixels(torch.zeros(3, 8, 8))
    with pytest.raises(TypeError, match="unexpected argument"):
        processor(rgb, do_resize=False)


def test_open_image_reads_paths_bytes_base64_and_urls(tmp_path):
    photo = skimage_photos()["coffee.png"].resize((60, 40))
    png = encoded(photo)
    (tmp_path / "photo.png").write_bytes(png)
    expected = np.asarray(photo)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/photo.png"
        sources = [
            str(tmp_path / "photo.png"),
            tmp_path / "photo.png",
            png,
            base64.b64encode(png).decode(),
            "data:image/png;base64," + base64.b64encode(png).decode(),
            url,
        ]
        for source in sources:
            assert np.array_equal(to_rgb_array(open_image(source, timeout=30)), expected), type(source)
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ValueError, match="neither an existing file"):
        open_image(str(tmp_path / "missing.png"))
    with pytest.raises(TypeError, match="got int"):
        open_image(3)


def test_exif_orientation_is_applied_like_opencv_imread():
    photo = skimage_photos()["rocket.jpg"].resize((64, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", exif=exif.tobytes())
    assert open_image(buffer.getvalue()).size == (40, 64)


# ------------------------------------------------------------------------------------------- settings, saving
def test_settings_are_validated_saved_and_overridable(tmp_path):
    with pytest.raises(ValueError, match="mode must be one of 'whole', 'slide', got 'tiled'"):
        AgentImageProcessor(mode="tiled")
    with pytest.raises(ValueError, match="ratios"):
        AgentImageProcessor(ratios=[])
    with pytest.raises(ValueError, match="scale"):
        AgentImageProcessor(scale=(2048,))
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['size'\].*scale=\(long_edge, short_edge\)"):
        make_image_processor(size=512)  # the fixed square size of earlier versions
    processor = make_image_processor(scale=(1024, 256), mode="slide", ratios=[0.75, 1.0], flip=True)
    with pytest.raises(ValueError, match="unknown inference setting"):
        processor.inference_settings(window=3)
    assert processor.inference_settings(crop_size=256, stride=170)["crop_size"] == (256, 256)
    with pytest.raises(ValueError, match="must not exceed crop_size"):  # 341 > 256: pixels would get no window
        processor.inference_settings(crop_size=256)

    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_agent.AgentImageProcessor"}
    assert (tmp_path / "image_processing_agent.py").is_file() and (tmp_path / "image_ops.py").is_file()
    reloaded = AutoImageProcessor.from_pretrained(tmp_path)  # agent_hf registers the class: no remote code
    assert type(reloaded) is AgentImageProcessor and reloaded.to_dict() == processor.to_dict()
    overridden = AutoImageProcessor.from_pretrained(tmp_path, mode="whole", scale=[512, 128], do_reduce_labels=False)
    assert (overridden.mode, overridden.scale, overridden.do_reduce_labels) == ("whole", [512, 128], False)


def test_save_model_folder_replaces_an_earlier_processor_and_uses_the_model_alignment(tmp_path, caplog):
    model = agent_hf.AgentSwinForSemanticSegmentation(tiny_swin_config(align_corners=True)).eval()
    legacy = SegformerImageProcessorPil(
        size={"height": 512, "width": 512}, image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25]
    )
    legacy.do_reduce_labels = False
    save_model_folder(model, tmp_path, legacy)
    assert "Replacing SegformerImageProcessorPil by AgentImageProcessor" in caplog.text
    saved = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(saved) is AgentImageProcessor and saved.scale == [2048, 512]
    assert (saved.image_mean, saved.image_std, saved.do_reduce_labels) == ([0.5] * 3, [0.25] * 3, False)
    assert saved.align_corners is True
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["custom_pipelines"]["image-segmentation"]["impl"] == "pipeline_agent.AgentImageSegmentationPipeline"
    assert config["auto_map"]["AutoImageProcessor"] == "image_processing_agent.AgentImageProcessor"
    assert config["auto_map"]["AutoModelForSemanticSegmentation"].startswith("modeling_agent_swin.")


def test_other_models_keep_their_processor_and_get_the_endpoint_handler(tmp_path):
    torch.manual_seed(0)
    config = SegformerConfig(num_labels=3, hidden_sizes=[8, 8, 8, 8], decoder_hidden_size=8, depths=[1, 1, 1, 1])
    processor = SegformerImageProcessorPil()
    save_model_folder(SegformerForSemanticSegmentation(config), tmp_path, processor)
    assert type(AutoImageProcessor.from_pretrained(tmp_path)).__name__.startswith("SegformerImageProcessor")
    assert "custom_pipelines" not in json.loads((tmp_path / "config.json").read_text())
    assert {"handler.py", "requirements.txt"} <= {p.name for p in tmp_path.iterdir()}
    assert not (tmp_path / "pipeline_agent.py").exists()


def test_every_tool_builds_the_processor_through_one_function():
    """Training, evaluation, the demo, conversion, the app and folder writing all build the AgentImageProcessor with
    agent_hf.saving.make_image_processor: nothing else constructs one."""
    sources = [*(REPO_ROOT / "src" / "agent_hf").rglob("*.py"), *(REPO_ROOT / "scripts").glob("*.py")]
    sources += [*(REPO_ROOT / "app").glob("*.py")]
    constructing = sorted(
        str(path.relative_to(REPO_ROOT))
        for path in sources
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "AgentImageProcessor"
    )
    assert constructing == ["src/agent_hf/saving.py"]
