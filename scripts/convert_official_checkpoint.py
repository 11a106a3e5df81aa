#!/usr/bin/env python
"""Convert an official Agent Attention checkpoint (mmseg segmentation or ImageNet classification) to a
transformers model folder that loads with `AutoModelForSemanticSegmentation.from_pretrained(dir,
trust_remote_code=True)` and `pipeline("image-segmentation", model=dir, trust_remote_code=True)`.

    python scripts/convert_official_checkpoint.py --checkpoint upernet_agent_swin_t.pth \
        --preset agent-swin-t-upernet-ade20k --output_dir agent-swin-t-upernet-ade20k
    python scripts/convert_official_checkpoint.py --checkpoint ckpt.pth --official_config model.json --output_dir out
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import agent_hf
from agent_hf.processing import make_image_processor, save_model_folder


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        "--no_reduce_labels", action="store_true", help="image processor without ADE20K's reduce-zero-label"
    )
    parser.add_argument(
        "--push_to_hub", action="store_true", help="upload the folder (then its model card) to --hub_model_id"
    )
    parser.add_argument("--hub_model_id", help="repo id for --push_to_hub, e.g. user/agent-swin-t-upernet-ade20k")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--hub_token")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.push_to_hub and not args.hub_model_id:
        sys.exit("--push_to_hub needs --hub_model_id")
    if args.preset:
        config = agent_hf.preset_config(args.preset)
    else:
        try:
            with open(args.official_config) as f:
                config = agent_hf.config_from_official(json.load(f))
        except (OSError, json.JSONDecodeError) as error:
            sys.exit(f"could not read the official config {args.official_config}: {error}")
    try:
        model = agent_hf.load_official_checkpoint(args.checkpoint, config)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(str(error))
    # Write next to the destination first, so a failure leaves no half-written model folder.
    parent = os.path.dirname(os.path.abspath(args.output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".convert-", dir=parent)
    try:
        save_model_folder(model, staging, make_image_processor(do_reduce_labels=not args.no_reduce_labels))
        if os.path.isdir(args.output_dir):
            shutil.rmtree(args.output_dir)
        os.replace(staging, args.output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output_dir}: {type(model).__name__}, {params:,} parameters")
    if args.push_to_hub:
        from agent_hf.hub import push_folder_to_hub

        # No card given: the folder's provenance picks it (the paper's card only for a preset's official weights).
        print(push_folder_to_hub(args.output_dir, args.hub_model_id, token=args.hub_token, private=args.private))
    return 0


if __name__ == "__main__":
    sys.exit(main())
