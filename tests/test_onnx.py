"""ONNX export (`scripts/export_onnx.py`, `agent_hf.onnx_export`) of both families, run with onnxruntime on the CPU,
and the `torch.export` program the export makes on its way (the entry to ExecuTorch).

One export per family (tiny untrained models, saved as model folders with a small test resize bound), in a test
class of its own (so pytest-xdist's --dist loadscope runs the two exports on two workers), both in-process: Agent-PVT
through the script's `main` (with --fp16 and --quantize), Agent-Swin through `export_model_folder` (with --quantize);
the script's real command line runs once, on a refused input. Each export's `torch.export` program is kept (not
traced a second time) and runs at sizes of every kind the model accepts from `MIN_SIDE` (Agent-Swin: a last-stage
map of one 7x7 window per side, of whole windows, of padded ones; Agent-PVT: odd sides), equal to eager PyTorch
within 1e-5 relative, and refuses smaller sides with its guard. Each exported file serves every size: the logits of
scikit-image's photos at three sizes equal PyTorch's within 1e-4 relative; the label maps after the image processor
equal the `image-segmentation` pipeline's on >= 99.99% of the pixels (int8: >= 99%, its size and speed printed).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import tiny_pvt_config, tiny_swin_config
from helpers import subprocess_env
from PIL import Image
from script_helpers import SCRIPTS, load_script, run_in_process
from transformers import pipeline
from transformers.modeling_outputs import SemanticSegmenterOutput

import agent_hf
from agent_hf import onnx_export
from agent_hf.onnx_export import MAX_OPSET, MIN_SIDE, export_model_folder, export_program
from agent_hf.saving import make_image_processor, save_model_folder

#: The tiny models' test resize bound (long, short edge): mmseg's keep-ratio resize, small so the tests stay fast.
SCALE = (256, 96)
#: Three sizes from one export: the processor's resize to these bounds.
SCALES = [(256, 96), (320, 128), (200, 64)]
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
FAMILIES = {
    # Every kind of Agent-Swin block once, which is what the export has to trace: agent attention in stages 1-3
    # (blocks of one kind repeat the same code) and stage 4's window attention, unshifted and shifted. Fewer blocks
    # than the suite's tiny model make a smaller graph, and the two traces (torch.export, then the ONNX conversion)
    # are most of this file's time.
    "swin": (lambda: tiny_swin_config(depths=[1, 1, 1, 2]), agent_hf.AgentSwinForSemanticSegmentation),
    "pvt": (tiny_pvt_config, agent_hf.AgentPvtForSemanticSegmentation),
}
#: Per family, sizes of every kind from one `torch.export` program. Agent-Swin's last stage (1/32 of the side):
#: 96x420 -> 3x14 tokens, one window tall and exactly two wide (both once refused by the program's guards); 64x64
#: -> 2x2 (the smallest side); 300x400 -> two and two padded windows; 224x448 / 512x1024 -> whole 7x7 windows;
#: 256x288, batches of 1 to 3. Agent-PVT: odd sides and the smallest.
PROGRAM_SHAPES = {
    "swin": [(1, 3, 96, 420), (2, 3, MIN_SIDE, MIN_SIDE), (3, 3, 300, 400), (1, 3, 256, 288), (1, 3, 512, 1024)],
    "pvt": [(1, 3, 97, 131), (2, 3, MIN_SIDE, 301), (1, 3, 513, 257)],
}


def photos() -> dict[str, Image.Image]:
    from skimage import data

    return {name: Image.fromarray(getattr(data, name.split(".")[0])()).convert("RGB") for name in PHOTOS}


def tiny_model(family: str):
    make_config, model_class = FAMILIES[family]
    torch.manual_seed(0)
    return model_class(make_config()).eval()


def save_tiny_model(family: str, folder: Path) -> torch.nn.Module:
    """Writes the tiny model of `family` as a model folder (the processor's resize bound: SCALE); returns the model."""
    model = tiny_model(family)
    save_model_folder(model, folder, image_processor=make_image_processor(scale=SCALE))
    return model


def export(family: str, tmp_path_factory) -> tuple[Path, torch.nn.Module, torch.export.ExportedProgram]:
    """(exported folder, the PyTorch model it came from, the `torch.export` program the export made on its way to
    ONNX: `export_program`'s own answer, kept rather than traced a second time)."""
    source = tmp_path_factory.mktemp(f"tiny_{family}")
    model = save_tiny_model(family, source)
    output = tmp_path_factory.mktemp(f"onnx_{family}") / "exported"
    programs = []

    def keep_program(*args, **kwargs):
        programs.append(export_program(*args, **kwargs))
        return programs[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx_export, "export_program", keep_program)
        if family == "pvt":  # the script's `main` (its command line runs in test_command_line_...)
            arguments = ["--model_name_or_path", source, "--output_dir", output, "--fp16", "--quantize"]
            code, stderr, printed = run_in_process(load_script("export_onnx"), arguments)
            assert code == 0, stderr
            assert f"wrote {output}" in printed
        else:
            export_model_folder(str(source), output, quantize=True)
    [program] = programs
    return output, model, program


@pytest.fixture(scope="class")
def exported(request, tmp_path_factory) -> tuple[Path, torch.nn.Module, torch.export.ExportedProgram]:
    """`export` of the test class's family, once per class: one class per family, so that pytest-xdist's
    --dist loadscope can run the two exports (most of this file's time) on two workers."""
    return export(request.cls.family, tmp_path_factory)


def session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_label_map(ort_session, processor, image: Image.Image) -> np.ndarray:
    """The ONNX model's class map for `image`: processor -> onnxruntime -> the processor's post-processing."""
    pixel_values = processor(image, return_tensors="np")["pixel_values"].astype(np.float32)
    logits = ort_session.run(["logits"], {"pixel_values": pixel_values})[0]
    outputs = SemanticSegmenterOutput(logits=torch.from_numpy(logits))
    return processor.post_process_semantic_segmentation(outputs, target_sizes=[(image.height, image.width)])[0].numpy()


def pipeline_label_map(segmenter, image: Image.Image, label2id: dict[str, int]) -> np.ndarray:
    labels = np.full((image.height, image.width), -1, dtype=np.int64)
    for segment in segmenter(image):
        labels[np.asarray(segment["mask"]) > 0] = label2id[segment["label"]]
    assert (labels >= 0).all()
    return labels


class ExportChecks:
    """What either family's export must do (one subclass per family)."""

    family: str

    def test_folder_is_complete_with_a_dynamic_graph(self, exported):
        folder = exported[0]
        names = {path.name for path in folder.iterdir()}
        assert {"config.json", "model.safetensors", "preprocessor_config.json", "onnx"} <= names
        assert {path.name for path in (folder / "onnx").iterdir()} >= {"model.onnx", "model_quantized.onnx"}
        graph = onnx.load(str(folder / "onnx" / "model.onnx")).graph
        assert [i.name for i in graph.input] == ["pixel_values"] and [o.name for o in graph.output] == ["logits"]
        dims = graph.input[0].type.tensor_type.shape.dim
        assert [d.dim_param != "" for d in dims] == [True, False, True, True]  # batch, height and width are symbolic

    def test_onnxruntime_logits_equal_pytorch_on_photos_at_three_sizes(self, exported):
        folder, model, _ = exported
        family = self.family
        ort_session = session(folder / "onnx" / "model.onnx")
        shapes = set()
        for scale in SCALES:
            processor = make_image_processor(scale=scale)
            for name, image in photos().items():
                pixel_values = processor(image, return_tensors="pt")["pixel_values"]
                with torch.no_grad():
                    expected = model(pixel_values).logits.numpy()
                actual = ort_session.run(["logits"], {"pixel_values": pixel_values.numpy()})[0]
                assert actual.shape == expected.shape
                error = np.abs(actual - expected).max() / np.abs(expected).max()
                assert error < 1e-4, f"{family} {name} at {scale}: relative error {error:.2e}"
                shapes.add(pixel_values.shape[-2:])
        assert len(shapes) >= 3 * 2  # several sizes and aspect ratios, one file
        # batches of two; the smallest side; last-stage maps of whole 7x7 windows (no padding) for Agent-Swin
        for shape in [(2, 3, 96, 160), (2, 3, 64, 64), (2, 3, 224, 448)]:
            pixel_values = torch.randn(*shape)
            with torch.no_grad():
                expected = model(pixel_values).logits.numpy()
            actual = ort_session.run(["logits"], {"pixel_values": pixel_values.numpy()})[0]
            assert np.abs(actual - expected).max() / np.abs(expected).max() < 1e-4, shape

    def test_label_maps_equal_the_pipeline(self, exported):
        folder, model, _ = exported
        family = self.family
        segmenter = pipeline("image-segmentation", model=str(folder), trust_remote_code=True)
        processor = segmenter.image_processor
        fp32, int8 = session(folder / "onnx" / "model.onnx"), session(folder / "onnx" / "model_quantized.onnx")
        agree = {"fp32": [], "int8": []}
        seconds = {"fp32": 0.0, "int8": 0.0}
        for image in photos().values():
            expected = pipeline_label_map(segmenter, image, model.config.label2id)
            for kind, ort_session in (("fp32", fp32), ("int8", int8)):
                start = time.perf_counter()
                labels = onnx_label_map(ort_session, processor, image)
                seconds[kind] += time.perf_counter() - start
                agree[kind].append(labels == expected)
        fp32_agreement = np.concatenate([a.ravel() for a in agree["fp32"]]).mean()
        int8_agreement = np.concatenate([a.ravel() for a in agree["int8"]]).mean()
        sizes = {kind: (folder / "onnx" / name).stat().st_size for kind, name in
                 (("fp32", "model.onnx"), ("int8", "model_quantized.onnx"))}  # fmt: skip
        print(
            f"\n{family}: fp32 agreement {fp32_agreement:.6f}, {sizes['fp32'] / 1e6:.2f} MB, {seconds['fp32']:.2f} s; "
            f"int8 agreement {int8_agreement:.6f}, {sizes['int8'] / 1e6:.2f} MB, {seconds['int8']:.2f} s"
        )
        assert fp32_agreement >= 0.9999
        assert int8_agreement >= 0.99

    def test_page_in_the_browser(self, exported, tmp_path):
        """app/web in headless Chromium on this family's exported folder (tests/test_onnx_web.py)."""
        from test_onnx_web import check_page_segments_photos_like_the_python_onnxruntime_path

        check_page_segments_photos_like_the_python_onnxruntime_path(exported[0], tmp_path)

    def test_torch_export_program_equals_eager_at_every_kind_of_size(self, exported):
        """`torch.export.export` (the entry to ExecuTorch) of the model, the program made on the way to ONNX: one
        program, several sizes and batches."""
        _, model, program = exported
        assert isinstance(program, torch.export.ExportedProgram)
        for shape in PROGRAM_SHAPES[self.family]:
            pixel_values = torch.randn(*shape)
            with torch.no_grad():
                expected = model(pixel_values).logits
                actual = program.module()(pixel_values)
            assert actual.shape == expected.shape
            assert ((actual - expected).abs().max() / expected.abs().max()) < 1e-5, shape

    def test_torch_export_program_refuses_sides_below_the_smallest(self, exported):
        program = exported[2]
        with pytest.raises(Exception, match=f">= {MIN_SIDE}"):
            program.module()(torch.randn(1, 3, MIN_SIDE - 1, 128))


class TestAgentPvtExport(ExportChecks):
    """Agent-PVT, exported by the script's `main` with --fp16 and --quantize."""

    family = "pvt"

    def test_fp16_file_runs_close_to_fp32(self, exported):
        folder, model, _ = exported
        image = photos()["chelsea.png"]
        pixel_values = make_image_processor(scale=SCALE)(image, return_tensors="np")["pixel_values"]
        fp32 = session(folder / "onnx" / "model.onnx").run(["logits"], {"pixel_values": pixel_values})[0]
        fp16 = session(folder / "onnx" / "model_fp16.onnx").run(["logits"], {"pixel_values": pixel_values})[0]
        assert fp16.dtype == np.float32  # fp16 inside, fp32 in and out
        assert np.abs(fp16 - fp32).max() / np.abs(fp32).max() < 1e-2
        assert (fp16.argmax(1) == fp32.argmax(1)).mean() > 0.99


class TestAgentSwinExport(ExportChecks):
    """Agent-Swin, exported in-process with --quantize."""

    family = "swin"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--model_name_or_path", "{tmp}/missing"], "no such model folder, and not a preset"),
        (["--model_name_or_path", "agent-swin-q-upernet"], "no such model folder, and not a preset"),
        (["--model_name_or_path", "agent-pvt-t-fpn-ade20k", "--opset", "11"], "--opset 11 is not supported"),
        (["--model_name_or_path", "agent-pvt-t-fpn-ade20k", "--opset", str(MAX_OPSET + 1)], "is not supported"),
        (["--model_name_or_path", "agent-pvt-t-fpn-ade20k", "--output_dir", "{tmp}/existing"], "is not empty"),
    ],
)
def test_bad_input_is_one_line_and_loses_nothing(tmp_path, arguments, message):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "mine.txt").write_text("keep me")
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    if "--output_dir" not in arguments:
        arguments += ["--output_dir", str(tmp_path / "out")]
    code, _, error = run_in_process(load_script("export_onnx"), arguments)
    assert code == 1
    assert error.startswith("error: ") and error.count("\n") == 1 and message in error, error
    assert (existing / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


def test_command_line_refuses_a_missing_folder_in_one_line(tmp_path):
    """The script's real command line (the exports above run its `main`): exit code 1 and a one-line error."""
    command = [sys.executable, str(SCRIPTS / "export_onnx.py"), "--model_name_or_path", str(tmp_path / "missing")]
    command += ["--output_dir", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "no such model folder, and not a preset" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
