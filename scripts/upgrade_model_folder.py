#!/usr/bin/env python
"""Upgrade Agent Attention model folders written by earlier agent_hf versions, in place.

Earlier folders carry a `SegformerImageProcessor` (which squashes every photo to 512x512, unlike the paper's
evaluation), no `image-segmentation` pipeline and no Inference Endpoints handler. This rewrites, in each folder:
`preprocessor_config.json` (an `AgentImageProcessor` keeping the old mean, std and reduce-labels setting) and its code,
`pipeline_agent.py`, `handler.py`, `requirements.txt`, and the `auto_map` / `custom_pipelines` entries of
`config.json`. Weights, model code and any other file are left untouched; each file is replaced atomically, after all
new contents were written, so a failure leaves the folder as it was.

    python scripts/upgrade_model_folder.py converted/agent-swin-t-upernet-ade20k [MORE_FOLDERS ...]

Push the upgraded folder again (scripts/push_to_hub.py) to update a Hub repository.
"""

from __future__ import annotations

import argparse
import sys

from agent_hf.argument_checks import ArgumentChecks, check_arguments_early, pop_debug_flag

if __name__ == "__main__":  # each folder is checked (and reported) in turn: nothing to check before torch
    check_arguments_early(ArgumentChecks())

from agent_hf.saving import upgrade_model_folder


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", metavar="DIR", help="model folder(s) with config.json")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    argv, debug = pop_debug_flag(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    failed = 0
    for folder in args.folders:
        try:
            written = upgrade_model_folder(folder)
        except (OSError, ValueError) as error:
            if debug:
                raise
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        print(f"upgraded {folder}: wrote {', '.join(written)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
