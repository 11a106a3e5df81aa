#!/usr/bin/env python
"""Convert an official Agent Attention checkpoint to a transformers model folder.

A segmentation preset or an official mmseg `model` dict (JSON) gives a segmentation folder that loads with
`AutoModelForSemanticSegmentation.from_pretrained(dir, trust_remote_code=True)` and `pipeline("image-segmentation",
model=dir, trust_remote_code=True)` (from an mmseg checkpoint, or an ImageNet one whose head is dropped).

An ImageNet preset (`agent-swin-t-in1k-224`, ...), an official classification config (`agent_transformer/cfgs/*.yaml`)
or its JSON form (`{"official_class": ..., "official_kwargs": {...}, "img_size": 224}`) gives an image-classification
folder (ImageNet-1k labels, the official evaluation transform as its image processor) that loads with
`AutoModelForImageClassification` and `pipeline("image-classification", model=dir, trust_remote_code=True)`.

    python scripts/convert_official_checkpoint.py --checkpoint upernet_agent_swin_t.pth \
        --preset agent-swin-t-upernet-ade20k --output_dir agent-swin-t-upernet-ade20k
    python scripts/convert_official_checkpoint.py --checkpoint ckpt.pth --official_config model.json --output_dir out
    python scripts/convert_official_checkpoint.py --checkpoint agent_swin_t_max_acc.pth \
        --official_config agent_swin_t.yaml --output_dir agent-swin-t-in1k-224

The folder is written beside --output_dir first and swapped in only once complete. A folder that is not empty is
replaced only with --overwrite_output_dir, and never when it holds the checkpoint or config being converted, or is the
current directory. Errors are one line (exit code 1); --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from agent_hf.argument_checks import (
    ArgumentChecks,
    ArgumentParser,
    ScriptError,
    check_arguments_early,
    folder_error,
    run_script,
)

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
from agent_hf.model_zoo import get_imagenet_model_spec
from agent_hf.models.image_processing_agent_classification import AgentClassificationImageProcessor
from agent_hf.official import load_official_classifier, official_classification_config
from agent_hf.output_folders import OutputFolderError, check_output_folder, write_folder
from agent_hf.saving import make_image_processor, save_model_folder


def read_official_config(path: str) -> dict:
    """An official config file as a dict: `.yaml`/`.yml` (the classification `cfgs/*.yaml`) or JSON."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) if path.endswith((".yaml", ".yml")) else json.load(f)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise ScriptError(f"could not read the official config {path}: {error}") from error
    if not isinstance(values, dict):
        raise ScriptError(f"the official config {path} must hold a mapping, got {type(values).__name__}")
    return values


def is_classification_config(official: dict) -> bool:
    """An official classification config (a `cfgs/*.yaml` or its JSON form) rather than an mmseg `model` dict."""
    return "MODEL" in official or "official_class" in official


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="official .pth (torch.load weights_only) or .safetensors")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--preset",
        choices=agent_hf.PRESETS + agent_hf.IMAGENET_PRESETS,
        help="one of the seven segmentation or ten ImageNet models",
    )
    source.add_argument(
        "--official_config",
        "--official-config",  # the 0.1.0 spelling
        dest="official_config",
        help="JSON with the official mmseg `model` dict (bare or under 'model'), or an official classification "
        "config: agent_transformer/cfgs/*.yaml, or JSON with official_class, official_kwargs and img_size",
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
    if args.push_to_hub:  # before the work: a bad id or a missing token must not lose a finished conversion
        from huggingface_hub.errors import OfflineModeIsEnabled

        from agent_hf.hub import HubTokenMissingError, check_publishable

        if not args.hub_model_id:
            raise ScriptError("--push_to_hub needs --hub_model_id")
        try:
            check_publishable(args.hub_model_id, args.hub_token)
        except (ValueError, HubTokenMissingError, OfflineModeIsEnabled) as error:
            raise ScriptError(f"--push_to_hub: {' '.join(str(error).split())}") from error
    inputs = [args.checkpoint, args.official_config]
    try:  # before the (slow) conversion; checked again when the folder is swapped in
        check_output_folder(args.output_dir, overwrite=args.overwrite_output_dir, inputs=inputs)
    except OutputFolderError as error:
        raise folder_error(error) from error
    transform = None  # the classification processor's settings, for a classifier
    if args.preset in agent_hf.IMAGENET_PRESETS:
        spec = get_imagenet_model_spec(args.preset)
        config = agent_hf.preset_config(args.preset)
        transform = {"size": spec.image_size, "do_center_crop": spec.center_crop}
    elif args.preset:
        config = agent_hf.preset_config(args.preset)
    else:
        official = read_official_config(args.official_config)
        try:
            if is_classification_config(official):
                config, transform = official_classification_config(official)
            else:
                config = agent_hf.config_from_official(official)
        except (TypeError, ValueError) as error:
            raise ScriptError(f"--official_config {args.official_config}: {error}") from error
    try:
        if transform is None:
            model = agent_hf.load_official_checkpoint(args.checkpoint, config)
            processor = make_image_processor(do_reduce_labels=not args.no_reduce_labels)
        else:
            model = load_official_classifier(args.checkpoint, config)
            processor = AgentClassificationImageProcessor(**transform)
    except (ValueError, FileNotFoundError) as error:
        raise ScriptError(str(error)) from error
    try:
        with write_folder(args.output_dir, overwrite=args.overwrite_output_dir, inputs=inputs) as staging:
            save_model_folder(model, staging, processor)
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
