#!/usr/bin/env python
"""Export an agent_hf segmentation model to ONNX, inside a complete model folder.

    python scripts/export_onnx.py --model_name_or_path outputs/demo/model --output_dir outputs/demo-onnx
    python scripts/export_onnx.py --model_name_or_path agent-pvt-t-fpn-ade20k --output_dir pvt-t-onnx --fp16 --quantize

Writes --output_dir as the other scripts write a model folder (config, weights, model code, image processor, serving
files) plus `onnx/model.onnx`: `pixel_values` (B, 3, H, W) -> `logits` (B, num_labels, H/4, W/4), with a dynamic
batch, height and width (64 to 8192 pixels a side); --fp16 adds `onnx/model_fp16.onnx`, --quantize
`onnx/model_quantized.onnx` (int8 weights). The folder is written beside --output_dir and moved there only when
complete; an existing non-empty --output_dir is refused. Errors are one line (exit code 1); --debug shows the
traceback. Needs the `onnx` extra (`pip install -e '.[onnx]'`).
"""

from __future__ import annotations

import argparse
import sys

from agent_hf.argument_checks import ArgumentParser, ScriptError, run_script
from agent_hf.onnx_export import DEFAULT_OPSET, ExportError, export_model_folder


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="a model folder or a preset name")
    parser.add_argument("--output_dir", required=True, help="the model folder to write (must not exist or be empty)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--fp16", action="store_true", help="also write onnx/model_fp16.onnx")
    parser.add_argument("--quantize", action="store_true", help="also write onnx/model_quantized.onnx (int8)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        exported = export_model_folder(
            args.model_name_or_path, args.output_dir, opset=args.opset, fp16=args.fp16, quantize=args.quantize
        )
    except ExportError as error:
        raise ScriptError(str(error)) from error
    print(f"wrote {exported.folder}: {', '.join(str(path) for path in exported.files)}")


if __name__ == "__main__":
    sys.exit(run_script(main))
