#!/usr/bin/env python
"""Convert an official Agent Attention checkpoint (mmseg segmentation or ImageNet classification) to a
transformers model folder that loads with `AutoModelForSemanticSegmentation.from_pretrained(dir,
trust_remote_code=True)` and `pipeline("image-segmentation", model=dir, trust_remote_code=True)`.

    python scripts/convert_official_checkpoint.py --checkpoint upernet_agent_swin_t.pth \
        --preset agent-swin-t-upernet-ade20k --output_dir agent-swin-t-upernet-ade20k
    python scripts/convert_official_checkpoint.py --checkpoint ckpt.pth --official_config model.json --output_dir out

The folder is written beside --output_dir first and swapped in only once complete. A folder that is not empty is
replaced only with --overwrite_output_dir, and never when it holds the checkpoint or config being converted, or is the
current directory. Errors are one line (exit code 1); --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from agent_hf.cli import ArgumentChecks, ArgumentParser, ScriptError, check_arguments_early, folder_error, run_script

if __name__ == "__main__":  # answered before torch is imported
    check_arguments_early(
        ArgumentChecks(
            files=("--checkpoint", "--official_config", "--official-config"),
            presets=("--preset",),
            output_dir="--output_dir",
            inputs=("--checkpoint", "--official_config", "--official-config"),
        )
    )

import agent_hf
from agent_hf.folders import OutputFolderError, check_output_folder, write_folder
from agent_hf.processing import make_image_processor, save_model_folder


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="official .pth (torch.load weights_only) or .safetensors")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", choices=agent_hf.PRESETS, help="one of the seven published models")
    source.add_argument(
        "--official_config",
        "--official-config",  # the 0.1.0 spelling
        dest="official_config",
        help="JSON with the official mmseg `model` dict (bare or under 'model')",
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--overwrite_output_dir",
        "--overwrite",
        action="store_true",
        help="replace a non-empty --output_dir (never one that holds the inputs or the current directory)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument(
        "--no_reduce_labels", action="store_true", help="image processor without ADE20K's reduce-zero-label"
    )
    parser.add_argument(
        "--push_to_hub", action="store_true", help="upload the folder (then its model card) to --hub_model_id"
    )
    parser.add_argument("--hub_model_id", help="repo id for --push_to_hub, e.g. user/agent-swin-t-upernet-ade20k")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--hub_token")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.push_to_hub and not args.hub_model_id:
        raise ScriptError("--push_to_hub needs --hub_model_id")
    inputs = [args.checkpoint, args.official_config]
    try:  # before the (slow) conversion; checked again when the folder is swapped in
        check_output_folder(args.output_dir, overwrite=args.overwrite_output_dir, inputs=inputs)
    except OutputFolderError as error:
        raise folder_error(error) from error
    if args.preset:
        config = agent_hf.preset_config(args.preset)
    else:
        try:
            with open(args.official_config) as f:
                config = agent_hf.config_from_official(json.load(f))
        except (OSError, ValueError) as error:
            raise ScriptError(f"could not read the official config {args.official_config}: {error}") from error
    try:
        model = agent_hf.load_official_checkpoint(args.checkpoint, config)
    except (ValueError, FileNotFoundError) as error:
        raise ScriptError(str(error)) from error
    try:
        with write_folder(args.output_dir, overwrite=args.overwrite_output_dir, inputs=inputs) as staging:
            save_model_folder(model, staging, make_image_processor(do_reduce_labels=not args.no_reduce_labels))
    except OutputFolderError as error:
        raise folder_error(error) from error
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output_dir}: {type(model).__name__}, {params:,} parameters")
    if args.push_to_hub:
        from agent_hf.hub import push_folder_to_hub

        # No card given: the folder's provenance picks it (the paper's card only for a preset's official weights).
        print(push_folder_to_hub(args.output_dir, args.hub_model_id, token=args.hub_token, private=args.private))


if __name__ == "__main__":
    sys.exit(run_script(main))
