"""Serving where agent_hf is not installed: saved and converted folders loading with ``trust_remote_code=True``, the
``image-segmentation`` pipeline, the Inference Endpoints handler and folders written by earlier versions, on real
photos (scikit-image's), against mmseg's test-time inference.

Each check runs the shipped code (the copies transformers makes from a model folder with ``trust_remote_code=True``)
in a fresh Python process in which importing agent_hf fails; the reference is computed here by mmseg's whole / slide
/ multi-scale inference as tests/mmseg_reference.py writes it, on
``agent_hf.models.segmentation_inference.multiscale_inputs``.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import textwrap
from pathlib import Path
from typing import NamedTuple

import helpers
import numpy as np
import pytest
import torch
from conftest import tiny_pvt_config, tiny_swin_config
from helpers import mmcv_rescale_size
from mmseg_reference import aug_test, slide_inference, whole_inference
from PIL import Image
from safetensors.torch import load_file
from script_helpers import load_script, run_in_process
from transformers import AutoModelForSemanticSegmentation, SegformerImageProcessorPil

from agent_hf.data.ade20k import ade20k_id2label
from agent_hf.models.segmentation_inference import multiscale_inputs
from agent_hf.saving import ENDPOINT_FILES, make_image_processor, save_model_folder, upgrade_model_folder

#: Collects transformers' log records (the "not supported for image-segmentation" error among them).
COLLECT_LOGS = textwrap.dedent(
    """
    import logging
    import transformers
    LOGS = []
    class _Collect(logging.Handler):
        def emit(self, record):
            LOGS.append(record.getMessage())
    transformers.utils.logging.get_logger("transformers").addHandler(_Collect())
    """
)
#: The served folders' test scale: a quarter of mmseg's ADE20K (2048, 512), about the half-size photos' own size (the
#: resize still changes every photo's size); the checks are of the same arithmetic at any scale.
SCALE = (512, 128)
SLIDE = {"mode": "slide", "crop_size": [96, 96], "stride": [64, 64]}  # 2 x 3 overlapping windows over chelsea
TTA = {"ratios": [0.5, 1.0], "flip": True}


def run_without_agent_hf(code: str, cwd: Path, timeout: int = 600) -> str:
    """`helpers.run_without_agent_hf` with transformers' log records collected in ``LOGS``."""
    return helpers.run_without_agent_hf(code, cwd, prelude=COLLECT_LOGS, timeout=timeout)


def real_photos() -> dict[str, Image.Image]:
    """scikit-image's photos, in several aspect ratios: 3:2 landscape, square, 2:3 portrait, 3:1 panorama; at half
    their size (the post-processing works at the photo's size: 150 classes there cost more than the tiny model)."""
    from skimage import data

    folder = Path(data.__file__).parent
    rocket = Image.open(folder / "rocket.jpg").convert("RGB")  # 640x427
    motorcycle = Image.open(folder / "motorcycle_left.png").convert("RGB")  # 741x500
    photos = {
        "chelsea": Image.open(folder / "chelsea.png").convert("RGB"),  # 451x300
        "astronaut": Image.open(folder / "astronaut.png").convert("RGB"),  # 512x512
        "rocket_portrait": rocket.transpose(Image.Transpose.ROTATE_90),  # 427x640
        "motorcycle_panorama": motorcycle.crop((0, 130, 741, 377)),  # 741x247
    }
    return {name: photo.reduce(2) for name, photo in photos.items()}


def save_photos(folder: Path) -> dict[str, str]:
    """The photos as PNG files (lossless: both processes see the same pixels)."""
    folder.mkdir(exist_ok=True)
    paths = {}
    for name, photo in real_photos().items():
        paths[name] = str(folder / f"{name}.png")
        photo.save(paths[name])
    return paths


def ade20k_tiny_model(factory) -> torch.nn.Module:
    id2label = ade20k_id2label()
    config = factory(num_labels=150, id2label=id2label, label2id={name: i for i, name in id2label.items()})
    torch.manual_seed(0)
    return AutoModelForSemanticSegmentation.from_config(config).eval()


@torch.no_grad()
def evaluation_path(model, photo: Image.Image, scale=SCALE, **settings) -> np.ndarray:
    """mmseg's test-time inference (tests/mmseg_reference.py, not agent_hf's) on agent_hf's resized inputs."""
    ratios, flip = settings.pop("ratios", (1.0,)), settings.pop("flip", False)
    size, views = (photo.height, photo.width), multiscale_inputs(photo, scale=scale, ratios=ratios)
    slide = (
        dict(crop_size=settings.pop("crop_size"), stride=settings.pop("stride"))
        if settings.pop("mode", "whole") == "slide"
        else None
    )
    assert not settings, settings
    if len(views) == 1 and not flip:  # mmseg's simple_test: the argmax of the logits
        logits = (
            whole_inference(model, views[0], size)
            if slide is None
            else slide_inference(model, views[0], size, **slide)
        )
        return logits.argmax(1)[0].numpy()
    return aug_test(model, views, size, flip, slide).argmax(1)[0].numpy()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Two model folders (tiny Agent-Swin and Agent-PVT with ADE20K's 150 classes), the photos, the references."""
    root = tmp_path_factory.mktemp("serving")
    paths = save_photos(root / "photos")
    photos = {name: Image.open(path) for name, path in paths.items()}
    folders, reference = {}, {}
    for family, factory in (("swin", tiny_swin_config), ("pvt", tiny_pvt_config)):
        model = ade20k_tiny_model(factory)
        processor = make_image_processor(scale=SCALE)
        folders[family] = save_model_folder(model, root / f"agent-{family}-served", image_processor=processor)
        x = torch.randn(1, 3, 64, 80)
        with torch.no_grad():
            torch.save({"x": x, "logits": model(x).logits}, root / f"{family}.pt")  # what REMOTE_CODE must find
        for name, photo in photos.items():
            reference[f"{family}/{name}/whole"] = evaluation_path(model, photo)
        reference[f"{family}/chelsea/slide"] = evaluation_path(model, photos["chelsea"], **SLIDE)
        reference[f"{family}/chelsea/tta"] = evaluation_path(model, photos["chelsea"], **TTA)
    return root, paths, folders, reference


#: Requests the handler must refuse with a ValueError naming the problem: {name: (request, message)}.
BAD_REQUESTS = {
    "undecodable bytes": ({"inputs": "these bytes are not an image"}, "not a decodable image"),
    "no inputs": ({"parameters": {}}, "inputs"),
    "unknown mode": ({"inputs": "<photo>", "parameters": {"mode": "tiled"}}, "mode must be one of"),
    "unknown argument": ({"inputs": "<photo>", "parameters": {"threshold": 0.5}}, "unknown argument"),
    "a number": ({"inputs": 42}, "must be an image (encoded bytes or base64), got int"),
    "a nested list": ({"inputs": [["<photo>"]]}, "got list"),
    "parameters not an object": ({"inputs": "<photo>", "parameters": []}, "must be a JSON object"),
}

PIPELINE_AND_HANDLER = """
import base64, io, json, sys
import numpy as np
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor, pipeline

PATHS, FOLDERS, SLIDE, TTA, BAD_REQUESTS = json.loads(sys.argv[1])
photos = {name: Image.open(path) for name, path in PATHS.items()}
# Label maps in `out`; everything else this process observes in FACTS, checked by the tests (one failing check
# fails its own test, not the whole module).
out, FACTS = {}, {"mask_problems": []}

def label_map(segments, size, label2id):
    labels = np.full(size, -1)
    for segment in segments:
        mask = np.asarray(segment["mask"])
        if mask.shape != size or segment["score"] is not None or (labels[mask > 0] >= 0).any():
            FACTS["mask_problems"].append((segment["label"], mask.shape, segment["score"]))  # wrong size / overlap
        labels[mask > 0] = label2id[segment["label"]]
    return labels

def decoded(answer, size, label2id, key):
    masks = [{"label": a["label"], "score": a["score"],
              "mask": Image.open(io.BytesIO(base64.b64decode(a["mask"])))} for a in answer]
    FACTS[key + "/formats"] = sorted({(m["mask"].format, m["mask"].mode) for m in masks})
    FACTS[key + "/keys"] = sorted({tuple(sorted(a)) for a in answer})
    return label_map(masks, size, label2id)

for family, folder in FOLDERS.items():
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    FACTS[f"{family}/classes"] = {
        "image processor": [type(processor).__module__.split(".")[0], type(processor).__name__],
        "processor": type(AutoProcessor.from_pretrained(folder, trust_remote_code=True)).__name__,
    }
    segmenter = pipeline("image-segmentation", model=folder, trust_remote_code=True)
    FACTS[f"{family}/classes"]["pipeline"] = type(segmenter).__name__
    label2id = {name: int(i) for i, name in segmenter.model.config.id2label.items()}
    for name, photo in photos.items():
        size = (photo.height, photo.width)
        out[f"{family}/{name}/size"] = processor(photo, return_tensors="np")["pixel_values"].shape[-2:]
        out[f"{family}/{name}/whole"] = label_map(segmenter(photo), size, label2id)
    chelsea = photos["chelsea"]
    size = (chelsea.height, chelsea.width)
    out[f"{family}/chelsea/path"] = label_map(segmenter(PATHS["chelsea"]), size, label2id)
    out[f"{family}/chelsea/slide"] = label_map(segmenter(chelsea, **SLIDE), size, label2id)
    out[f"{family}/chelsea/tta"] = label_map(segmenter(chelsea, **TTA), size, label2id)
    batch = segmenter([photos["astronaut"], chelsea], batch_size=2)
    astronaut = photos["astronaut"]
    out[f"{family}/astronaut/batched"] = label_map(batch[0], (astronaut.height, astronaut.width), label2id)
    out[f"{family}/chelsea/batched"] = label_map(batch[1], size, label2id)

    # Inference Endpoints: the folder's handler.py, as the endpoint's toolkit calls it.
    sys.path.insert(0, folder)
    from handler import EndpointHandler
    sys.path.pop(0)
    handler = EndpointHandler(folder)
    png = io.BytesIO()
    chelsea.save(png, format="PNG")
    requests = {
        "pil": {"inputs": chelsea},
        "bytes": {"inputs": png.getvalue()},
        "base64": {"inputs": base64.b64encode(png.getvalue()).decode("ascii")},
        "slide": {"inputs": base64.b64encode(png.getvalue()).decode("ascii"), "parameters": SLIDE},
    }
    for kind, request in requests.items():
        answer = json.loads(json.dumps(handler(request)))  # what goes over the wire
        key = f"{family}/chelsea/handler_{kind}"
        out[key] = decoded(answer, size, label2id, key)
    for name, bad in BAD_REQUESTS.items():
        request = {key: (chelsea if value == "<photo>" else value) for key, value in bad.items()}
        if name == "undecodable bytes":
            request["inputs"] = request["inputs"].encode()
        try:
            handler(request)
            FACTS[f"{family}/bad/{name}"] = "no error"
        except Exception as error:
            FACTS[f"{family}/bad/{name}"] = f"{type(error).__name__}: {error}"

np.savez(sys.argv[2], **out)
print(json.dumps([LOGS, FACTS]))
"""


@pytest.fixture(scope="module")
def converted(served, reference_dir):
    """An official checkpoint converted by scripts/convert_official_checkpoint.py's `main` (in-process: the script's
    command line runs in test_folders.py) into the serving folder's "converted", with the official logits of its
    input beside it (converted.pt). Returns the conversion's (exit code, stderr) and the folder."""
    root = served[0]
    conversion = run_in_process(
        load_script("convert_official_checkpoint"),
        ["--checkpoint", reference_dir / "agent_swin_aaab_upernet.weights.safetensors",
         "--official-config", reference_dir / "agent_swin_aaab_upernet.json", "--output_dir", root / "converted"],
    )[:2]  # fmt: skip
    io = load_file(reference_dir / "agent_swin_aaab_upernet.io.safetensors")
    torch.save({"x": io["case1.pixel_values"], "logits": io["case1.decode_logits"]}, root / "converted.pt")
    return conversion, root / "converted"


#: Appended last (after OLD_AND_UPGRADED's line): each served folder's model, base model and config through the Auto
#: classes, its logits against those of agent_hf's model (FAMILY.pt), and the converted official checkpoint's logits
#: against the official ones and its pipeline. Prints one line: {name: facts}.
REMOTE_CODE = """
import os
import torch
from transformers import AutoConfig, AutoModel
REMOTE = {}
for family, folder in FOLDERS.items():
    try:
        io = torch.load(family + ".pt")
        model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
        with torch.no_grad():
            same = torch.equal(model(io["x"]).logits, io["logits"])
        REMOTE[family] = [type(model).__name__, type(model).__module__.split(".")[0], same,
                          type(AutoModel.from_pretrained(folder, trust_remote_code=True)).__name__,
                          type(AutoConfig.from_pretrained(folder, trust_remote_code=True)).__name__]
    except Exception:
        REMOTE[family] = traceback.format_exc()
if os.path.isfile("converted/model.safetensors"):  # the conversion's test says why not
    try:
        io = torch.load("converted.pt")
        model = AutoModelForSemanticSegmentation.from_pretrained("converted", trust_remote_code=True).eval()
        with torch.no_grad():
            err = (model(io["x"]).logits - io["logits"]).norm() / io["logits"].norm()
        masks = pipeline("image-segmentation", model="converted", trust_remote_code=True)(Image.new("RGB", (120, 90)))
        REMOTE["converted"] = [bool(err < 1e-5), len(masks) >= 1, all(m["mask"].size == (120, 90) for m in masks)]
    except Exception:
        REMOTE["converted"] = traceback.format_exc()
print(json.dumps(REMOTE))
"""


class ServedResults(NamedTuple):
    """What the agent_hf-less serving process answered."""

    label_maps: dict  # PIPELINE_AND_HANDLER's label maps and processor sizes, by "family/photo/kind"
    logs: list  # transformers' log records while serving
    facts: dict  # everything else PIPELINE_AND_HANDLER observed
    old_and_upgraded: list  # OLD_AND_UPGRADED's [old folder's logs, upgraded folder's logs, error or None]
    remote: dict  # REMOTE_CODE's facts by family, and "converted"


@pytest.fixture(scope="module")
def served_results(served, upgraded, converted) -> ServedResults:
    """The label maps the pipeline and the handler return, in a process without agent_hf; the same process then
    loads the old and the upgraded folder (OLD_AND_UPGRADED), and the served and converted folders through the Auto
    classes (REMOTE_CODE): one interpreter start for all."""
    root, paths, folders, _ = served
    arguments = json.dumps([paths, folders, SLIDE, TTA, {name: bad for name, (bad, _) in BAD_REQUESTS.items()}])
    old_and_upgraded = json.dumps([str(upgraded["old"]), str(upgraded["upgraded"]), paths["chelsea"]])
    code = f"sys.argv[1:] = [{arguments!r}, {str(root / 'results.npz')!r}, {old_and_upgraded!r}]\n"
    script = code + PIPELINE_AND_HANDLER + OLD_AND_UPGRADED + REMOTE_CODE
    lines = run_without_agent_hf(script, root).strip().splitlines()
    logs, facts = json.loads(lines[-3])
    return ServedResults(
        dict(np.load(root / "results.npz")), logs, facts, json.loads(lines[-2]), json.loads(lines[-1])
    )


# ------------------------------------------------------------------------------------------ loading with code
@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_saved_folder_loads_with_trust_remote_code_without_agent_hf(served_results, family):
    """The folder's own code (copied by transformers) builds the model, its base model and its config; the logits are
    agent_hf's, bit for bit."""
    remote = served_results.remote
    prefix = {"swin": "AgentSwin", "pvt": "AgentPvt"}[family]
    assert remote[family] == [
        f"{prefix}ForSemanticSegmentation", "transformers_modules", True, f"{prefix}Model", f"{prefix}Config"
    ]  # fmt: skip


def test_conversion_script_writes_a_folder_that_loads_everywhere(converted, served_results):
    (code, stderr), folder = converted
    assert code == 0, stderr
    assert (folder / "preprocessor_config.json").exists() and (folder / "model.safetensors").exists()
    # where agent_hf is not installed: the official logits (relative error < 1e-5), and the pipeline's masks
    assert served_results.remote.get("converted") == [True, True, True]


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_processor_output_size_is_mmseg_test_resize(served, served_results, family):
    _, _, _, reference = served
    results = served_results.label_maps
    for name, photo in real_photos().items():
        assert tuple(results[f"{family}/{name}/size"]) == mmcv_rescale_size(photo.width, photo.height, SCALE)
    assert mmcv_rescale_size(500, 375) == (512, 683)  # the photo: keep-ratio, not squashed to 512x512


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_pipeline_equals_the_evaluation_path_pixel_for_pixel(served, served_results, family):
    _, _, _, reference = served
    results, logs, facts = served_results.label_maps, served_results.logs, served_results.facts
    for name in real_photos():
        expected = reference[f"{family}/{name}/whole"]
        assert len(np.unique(expected)) > 1, "a degenerate reference would prove nothing"
        np.testing.assert_array_equal(results[f"{family}/{name}/whole"], expected, err_msg=name)
    np.testing.assert_array_equal(results[f"{family}/chelsea/path"], reference[f"{family}/chelsea/whole"])
    # batch_size=2 runs each image alone: no padding, same maps
    np.testing.assert_array_equal(results[f"{family}/astronaut/batched"], reference[f"{family}/astronaut/whole"])
    np.testing.assert_array_equal(results[f"{family}/chelsea/batched"], reference[f"{family}/chelsea/whole"])
    assert not [message for message in logs if "not supported" in message], logs
    assert not facts["mask_problems"], "one mask per label, at the photo's size, no score, none overlapping"


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_pipeline_slide_and_multiscale_flip_equal_agent_hf_inference(served, served_results, family):
    _, _, _, reference = served
    results = served_results.label_maps
    for mode in ("slide", "tta"):
        expected = reference[f"{family}/chelsea/{mode}"]
        np.testing.assert_array_equal(results[f"{family}/chelsea/{mode}"], expected, err_msg=mode)
    # the modes really differ from whole inference (otherwise the check above would be vacuous)
    assert not np.array_equal(reference[f"{family}/chelsea/tta"], reference[f"{family}/chelsea/whole"])
    assert not np.array_equal(reference[f"{family}/chelsea/slide"], reference[f"{family}/chelsea/whole"])


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_endpoint_handler_answers_image_bytes_and_base64(served, served_results, family):
    _, _, folders, reference = served
    results = served_results.label_maps
    for kind in ("pil", "bytes", "base64"):
        np.testing.assert_array_equal(
            results[f"{family}/chelsea/handler_{kind}"], reference[f"{family}/chelsea/whole"]
        )
    np.testing.assert_array_equal(results[f"{family}/chelsea/handler_slide"], reference[f"{family}/chelsea/slide"])
    folder = Path(folders[family])
    assert {*ENDPOINT_FILES, "pipeline_agent.py", "image_processing_agent.py"} <= {p.name for p in folder.iterdir()}
    requirements = [line for line in (folder / "requirements.txt").read_text().splitlines() if line[:1].isalpha()]
    assert any(line.startswith("transformers") for line in requirements)
    assert not [line for line in requirements if "agent" in line]  # the folder's code is all it needs


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_served_classes_are_the_folders_own_code(served_results, family):
    facts = served_results.facts
    assert facts[f"{family}/classes"] == {
        "image processor": ["transformers_modules", "AgentImageProcessor"],  # copied from the folder
        "processor": "AgentImageProcessor",
        "pipeline": "AgentImageSegmentationPipeline",
    }


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_endpoint_handler_answers_png_masks_and_refuses_bad_requests(served_results, family):
    facts = served_results.facts
    for kind in ("pil", "bytes", "base64", "slide"):
        key = f"{family}/chelsea/handler_{kind}"
        assert facts[key + "/formats"] == [["PNG", "L"]] and facts[key + "/keys"] == [["label", "mask", "score"]]
    for name, (_, message) in BAD_REQUESTS.items():
        error = facts[f"{family}/bad/{name}"]
        assert error.startswith("ValueError: ") and message in error, (name, error)


# ------------------------------------------------------------------------------------------ earlier versions
def write_old_folder(model, folder: Path) -> None:
    """A model folder as agent_hf 0.1.0 wrote it: save_pretrained + a 512x512 SegformerImageProcessor."""
    model.save_pretrained(folder)
    SegformerImageProcessorPil(
        do_resize=True,
        size={"height": 512, "width": 512},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_reduce_labels=True,
    ).save_pretrained(folder)
    (folder / "NOTES.md").write_text("my notes\n")


#: Appended to PIPELINE_AND_HANDLER's script (after its output line): the old folder still loads and runs (its
#: processor squashes the photo: that is what the upgrade fixes); the upgraded folder's label map goes to
#: results.npz's neighbour. Prints one line: [old folder's logs, upgraded folder's logs, error or None].
OLD_AND_UPGRADED = """
import traceback
OLD, UPGRADED, PHOTO = json.loads(sys.argv[3])
from transformers import AutoModelForSemanticSegmentation
LOGS.clear()
OLD_LOGS, error = [], None
try:
    photo = Image.open(PHOTO)
    processor = AutoImageProcessor.from_pretrained(OLD, trust_remote_code=True)
    model = AutoModelForSemanticSegmentation.from_pretrained(OLD, trust_remote_code=True)
    assert type(processor).__name__.startswith("SegformerImageProcessor"), type(processor)
    assert processor(photo, return_tensors="pt")["pixel_values"].shape[-2:] == (512, 512)
    assert len(pipeline("image-segmentation", model=OLD, trust_remote_code=True)(photo)) >= 1
    OLD_LOGS = list(LOGS)  # transformers' own pipeline logs "not supported" for the old folder
    LOGS.clear()

    segmenter = pipeline("image-segmentation", model=UPGRADED, trust_remote_code=True)
    label2id = {name: int(i) for i, name in segmenter.model.config.id2label.items()}
    labels = np.full((photo.height, photo.width), -1)
    for segment in segmenter(photo):
        labels[np.asarray(segment["mask"]) > 0] = label2id[segment["label"]]
    np.save(sys.argv[2].replace("results.npz", "upgraded_labels.npy"), labels)
except Exception:
    error = traceback.format_exc()
print(json.dumps([OLD_LOGS, LOGS, error]))
"""


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory) -> dict:
    """A folder as agent_hf 0.1.0 wrote it (tiny Agent-Swin, ADE20K's classes) and a copy of it upgraded by
    scripts/upgrade_model_folder.py's `main` in-process (its command line runs in the next test): the folders, the
    model, the copy's files before and after, what the script printed."""
    root = tmp_path_factory.mktemp("upgrade")
    model = ade20k_tiny_model(tiny_swin_config)
    old, upgraded = root / "old-agent-swin", root / "upgraded-agent-swin"
    write_old_folder(model, old)
    shutil.copytree(old, upgraded)
    before = folder_bytes(upgraded)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = load_script("upgrade_model_folder").main([str(upgraded)])
    return dict(old=old, upgraded=upgraded, model=model, code=code, printed=printed.getvalue(), before=before,
                after=folder_bytes(upgraded))  # fmt: skip


def test_old_folders_load_and_upgrade_to_the_evaluation_path(served, upgraded, served_results):
    folder, before, after = upgraded["upgraded"], upgraded["before"], upgraded["after"]
    assert upgraded["code"] == 0
    assert f"upgraded {folder}" in upgraded["printed"]
    # every earlier file but the two configs is byte for byte the same; nothing was deleted, no temp file is left
    changed = {name for name in before if after[name] != before[name]}
    assert changed == {"config.json", "preprocessor_config.json"}
    added = set(after) - set(before)
    assert added == {*ENDPOINT_FILES, "image_processing_agent.py", "image_ops.py", "segmentation_inference.py",
                     "pipeline_agent.py"}  # fmt: skip
    preprocessor = json.loads(after["preprocessor_config.json"])
    assert preprocessor["image_processor_type"] == "AgentImageProcessor" and preprocessor["do_reduce_labels"]
    assert preprocessor["auto_map"] == {"AutoImageProcessor": "image_processing_agent.AgentImageProcessor"}
    old_config, new_config = json.loads(before["config.json"]), json.loads(after["config.json"])
    assert {k: v for k, v in new_config.items() if k != "custom_pipelines"} == {
        **old_config,
        "auto_map": {**old_config["auto_map"], "AutoImageProcessor": "image_processing_agent.AgentImageProcessor"},
    }
    # upgrading twice changes nothing
    assert upgrade_model_folder(folder) and folder_bytes(folder) == after

    # where agent_hf is not installed (served_results' process): the old folder loads and runs, the upgraded one
    # serves the evaluation path
    old_logs, new_logs, error = served_results.old_and_upgraded
    assert error is None, error
    assert [message for message in old_logs if "is not supported for image-segmentation" in message]  # caught...
    assert not [message for message in new_logs if "not supported" in message]  # ...and gone after the upgrade
    root, paths, _, _ = served
    upgraded_scale = (2048, 512)  # the default test scale an upgrade writes
    expected = evaluation_path(upgraded["model"], Image.open(paths["chelsea"]), upgraded_scale)
    np.testing.assert_array_equal(np.load(root / "upgraded_labels.npy"), expected)


def test_upgrade_fails_cleanly_and_changes_nothing(tmp_path):
    model = ade20k_tiny_model(tiny_pvt_config)
    folder = tmp_path / "old-agent-pvt"
    write_old_folder(model, folder)
    (folder / "handler.py").mkdir()  # a destination the upgrade cannot replace
    before = folder_bytes(folder)
    with pytest.raises(IsADirectoryError, match="handler.py"):
        upgrade_model_folder(folder)
    assert folder_bytes(folder) == before and (folder / "handler.py").is_dir()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]

    (folder / "handler.py").rmdir()
    (folder / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="preprocessor_config.json is not valid JSON"):
        upgrade_model_folder(folder)
    assert not (folder / "handler.py").exists()

    segformer = tmp_path / "segformer"
    segformer.mkdir()
    (segformer / "config.json").write_text(json.dumps({"model_type": "segformer"}))
    # In-process: the script's command line (an installed `agent-hf-upgrade`) runs in test_journeys.py.
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = load_script("upgrade_model_folder").main([str(segformer), str(tmp_path / "no")])
    assert code == 1
    errors = [line for line in stderr.getvalue().splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "not an agent_hf model folder" in errors[0] and "is not a folder" in errors[1]
    assert [p.name for p in segformer.iterdir()] == ["config.json"]


def test_saved_folders_are_readable_by_everyone(served):
    _, _, folders, _ = served
    for path in Path(folders["swin"]).iterdir():
        if path.name in {*ENDPOINT_FILES, "preprocessor_config.json", "config.json", "pipeline_agent.py"}:
            assert path.stat().st_mode & 0o044 == 0o044, f"{path.name} is not readable by group/others"
