"""ONNX export of the segmentation models: `pixel_values` (B, 3, H, W) -> `logits` (B, num_labels, H', W') with a
dynamic batch, height and width, written into a complete model folder as `onnx/model.onnx` (transformers.js's
layout), optionally with `onnx/model_fp16.onnx` and `onnx/model_quantized.onnx` (int8 weights).

The graph comes from `torch.onnx.export(dynamo=True)`, i.e. `torch.export` with symbolic sizes: the model code takes
its shape-generic forms there (`agent_hf.models.export_ops`: the agent pooling and the pyramid pooling as products with
pooling matrices, padding by symbolic amounts), and the agent biases' bilinear resizes are computed in the graph
from the map's size. Not shipped with the model folders (it needs onnx, onnxscript and onnxruntime: the `onnx`
extra).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .output_folders import check_output_folder, write_folder
from .presets import PRESETS, preset_config
from .saving import make_image_processor, save_model_folder

ONNX_FOLDER = "onnx"
MODEL_FILE = "model.onnx"
FP16_FILE = "model_fp16.onnx"
QUANTIZED_FILE = "model_quantized.onnx"
#: The dynamo exporter writes opset 18 and later; onnxruntime 1.20+ runs up to 23 (the fp16 and int8 conversions
#: too).
MIN_OPSET, MAX_OPSET = 18, 23
DEFAULT_OPSET = 18
#: Bounds of the exported graph's height and width (at least two tokens per side in the last stage: a 1-token side
#: would be a broadcast the trace cannot leave symbolic).
MIN_SIDE, MAX_SIDE = 64, 8192
#: The traced sample: a batch of two, sides that are no multiple of 32 and span at least two 7x7 windows in every
#: stage. Both the ONNX graph and the `torch.export` program run at every size from MIN_SIDE (Agent-Swin's window
#: partition is traced size-obliviously, see `export_ops.size_oblivious_trace`).
SAMPLE_SIZE = (2, 3, 263, 351)


class ExportError(ValueError):
    """An input the exporter cannot use (one line, naming the argument)."""


@dataclass
class ExportedFolder:
    """What `export_model_folder` wrote: the folder and its ONNX files (paths inside the folder)."""

    folder: Path
    files: list[Path]


class LogitsOnly(torch.nn.Module):
    """The segmentation model as `pixel_values` -> `logits` (the graph's one output)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"--opset {opset} is not supported: the exporter writes opsets {MIN_OPSET} to {MAX_OPSET}")


def load_model(name_or_path: str):
    """(model in eval mode, its `AgentImageProcessor`) from a preset name (random weights) or a model folder."""
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    import agent_hf  # noqa: F401  (registers the Auto classes)

    if name_or_path in PRESETS:
        config = preset_config(name_or_path)
        return AutoModelForSemanticSegmentation.from_config(config).eval(), make_image_processor(model_config=config)
    folder = Path(name_or_path)
    if not folder.is_dir():
        raise ExportError(
            f"--model_name_or_path {name_or_path}: no such model folder, and not a preset "
            f"(presets: {', '.join(PRESETS)})"
        )
    if not (folder / "config.json").is_file():
        raise ExportError(f"--model_name_or_path {name_or_path}: not a model folder (it has no config.json)")
    model = AutoModelForSemanticSegmentation.from_pretrained(folder).eval()
    processor = None
    if (folder / "preprocessor_config.json").is_file():
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    return model, make_image_processor(source=processor, model_config=model.config)


def dynamic_shapes() -> dict:
    """`torch.export` dynamic shapes of `pixel_values`: batch, height and width. `Dim.DYNAMIC` lets the trace record
    the guards that hold for every allowed size (e.g. `1 % (W // 4) != 0` from the reshapes) instead of failing."""
    from torch.export import Dim

    return {
        "pixel_values": {
            0: Dim.DYNAMIC(min=1, max=1024),
            2: Dim.DYNAMIC(min=MIN_SIDE, max=MAX_SIDE),
            3: Dim.DYNAMIC(min=MIN_SIDE, max=MAX_SIDE),
        }
    }


def export_program(model: torch.nn.Module) -> torch.export.ExportedProgram:
    """`torch.export.export` of `LogitsOnly(model)` with a dynamic batch, height and width (the entry to the ONNX
    exporter and to ExecuTorch)."""
    sample = torch.randn(*SAMPLE_SIZE, dtype=next(model.parameters()).dtype)
    with torch.no_grad():
        return torch.export.export(LogitsOnly(model.eval()), (sample,), dynamic_shapes=dynamic_shapes())


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, opset: int = DEFAULT_OPSET) -> Path:
    """Writes `model` (an agent_hf segmentation model) to `path` as one self-contained fp32 ONNX file."""
    check_opset(opset)
    program = export_program(model.float())
    onnx_program = torch.onnx.export(
        program,
        input_names=["pixel_values"],
        output_names=["logits"],
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    onnx_program.save(os.fspath(path), external_data=False)
    return Path(path)


def convert_to_fp16(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """An fp16 copy of the fp32 ONNX file `source` (weights and computation; `pixel_values` and `logits` stay fp32)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(onnx.load(os.fspath(source)), keep_io_types=True)
    onnx.save(converted, os.fspath(target))
    return Path(target)


def quantize_int8(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """A dynamically quantized copy of `source`: int8 weights for the matrix products (the attention and MLP
    projections), activations quantized at run time; convolutions and the rest stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        os.fspath(source), os.fspath(target), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8
    )
    return Path(target)


def export_model_folder(
    name_or_path: str,
    output_dir: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    quantize: bool = False,
) -> ExportedFolder:
    """Writes `output_dir`: the model folder of `name_or_path` (config, weights, model code, image processor, card
    files, as `save_model_folder` writes it) plus `onnx/model.onnx` (and the fp16 / int8 files when asked).

    The arguments are checked before anything is loaded; the folder is written beside `output_dir` and moved there
    only when complete. An existing non-empty `output_dir` is refused (`ExportError`), never replaced.
    """
    from .output_folders import OutputFolderError

    check_opset(opset)
    inputs = [name_or_path]
    try:
        check_output_folder(output_dir, inputs=inputs)
    except OutputFolderError as error:
        raise ExportError(f"--output_dir: {error}") from error
    model, processor = load_model(name_or_path)
    written = []
    try:
        with write_folder(output_dir, inputs=inputs) as staging:
            save_model_folder(model, staging, processor)
            onnx_dir = staging / ONNX_FOLDER
            onnx_dir.mkdir()
            fp32 = export_onnx(model, onnx_dir / MODEL_FILE, opset)
            written.append(fp32)
            if fp16:
                written.append(convert_to_fp16(fp32, onnx_dir / FP16_FILE))
            if quantize:
                written.append(quantize_int8(fp32, onnx_dir / QUANTIZED_FILE))
            written = [Path(ONNX_FOLDER) / path.name for path in written]
    except OutputFolderError as error:
        raise ExportError(f"--output_dir: {error}") from error
    return ExportedFolder(Path(output_dir), written)


__all__ = [
    "DEFAULT_OPSET",
    "ExportError",
    "ExportedFolder",
    "LogitsOnly",
    "convert_to_fp16",
    "dynamic_shapes",
    "export_model_folder",
    "export_onnx",
    "export_program",
    "load_model",
    "quantize_int8",
]
