#!/usr/bin/env python
"""Publish a converted / trained Agent Attention segmentation model folder to the Hugging Face Hub.

The model files go in one commit, the model card (README.md) in a second, last commit, so that nothing overwrites
the card's metadata. All the logic lives in :mod:`agent_hf.hub`; this script only parses arguments. It starts
without torch or transformers.

The card follows the folder's provenance (``agent_hf_provenance`` in config.json): converted official weights of a
preset get the paper's card; a trained or modified model gets a card with its own architecture, parameter count and
measured results. A folder without provenance (agent-hf 0.1.0) gets the paper's card only with ``--preset`` and the
preset's architecture.

Examples::

    # card chosen from the folder's provenance
    python scripts/push_to_hub.py --model_dir converted/agent-swin-t-upernet-ade20k \\
        --repo_id your-username/agent-swin-t-upernet-ade20k

    # your own card, on a branch, as a pull request
    python scripts/push_to_hub.py --model_dir DIR --repo_id ID --card my_card.md --revision v1 --create_pr

    # the weights went up but the card commit failed: push only the card
    python scripts/push_to_hub.py --model_dir DIR --repo_id ID --card_only

Authentication: ``--token``, else the ``HF_TOKEN`` environment variable, else the token stored by ``hf auth login``.
The endpoint is ``HF_ENDPOINT`` (default https://huggingface.co). Expected errors (bad arguments, incomplete folder,
no token, unreachable or refusing Hub) print one line and exit with code 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

# Publishing needs no model: agent_hf then imports no torch (the Auto classes register on first model use).
os.environ.setdefault("AGENT_HF_LAZY_IMPORT", "1")

from agent_hf.argument_checks import ArgumentChecks, check_arguments_early

if __name__ == "__main__":  # a mistyped preset in one line, with a suggestion (the folder is checked by the library)
    check_arguments_early(ArgumentChecks(presets=("--preset",)))

from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from agent_hf.hub import (
    DEMO_SPACE_URL,
    PAPER_RESULTS,
    CardPushError,
    HubConnectionError,
    HubTokenMissingError,
    card_for_folder,
    push_card_to_hub,
    push_folder_to_hub,
    render_model_card,
)

EXPECTED_ERRORS = (
    ValueError,
    OSError,
    HubTokenMissingError,
    HubConnectionError,
    CardPushError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Push an Agent Attention segmentation model folder and its model card to the Hugging Face Hub."
    )
    parser.add_argument(
        "--model_dir", type=Path, help="folder written by save_pretrained (required unless --card_only)"
    )
    parser.add_argument("--repo_id", required=True, help="target repository, 'namespace/name'")
    parser.add_argument(
        "--preset",
        choices=list(PAPER_RESULTS),
        metavar="NAME",
        help="the paper's card of this preset, for a folder that holds its official weights: "
        f"{', '.join(PAPER_RESULTS)}",
    )
    parser.add_argument("--card", type=Path, help="model card (.md) to use instead of rendering one")
    parser.add_argument("--measured_json", type=Path, help="JSON with measured results to add to the rendered card")
    parser.add_argument(
        "--flops", type=float, help="measured FLOPs at 512x2048 (torch.utils.flop_counter) for the card"
    )
    parser.add_argument(
        "--demo_url", default=DEMO_SPACE_URL, help="URL of the demo Space linked from the rendered card"
    )
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", help="branch to push to (created if missing); default: main")
    parser.add_argument("--create_pr", action="store_true", help="open a pull request instead of committing directly")
    parser.add_argument("--token", help="Hub token with write access (default: HF_TOKEN or the stored login)")
    parser.add_argument(
        "--card_only", action="store_true", help="only push README.md (e.g. after a failed card commit)"
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors")
    args = parser.parse_args(argv)
    if args.model_dir is None and not args.card_only:
        parser.error("--model_dir is required (unless --card_only)")
    if args.card is not None and (args.preset or args.measured_json or args.flops or args.demo_url != DEMO_SPACE_URL):
        parser.error("--preset/--measured_json/--flops/--demo_url only apply to a rendered card, not to --card")
    return args


def read_measured(path: Path | None) -> dict | None:
    """The ``--measured_json`` file (a JSON object), or a ValueError naming it."""
    if path is None:
        return None
    try:
        measured = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"--measured_json {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--measured_json {path} is not valid JSON: {err}") from None
    if not isinstance(measured, dict):
        raise ValueError(f'--measured_json {path} must hold a JSON object, e.g. {{"mean_iou": 46.6}}')
    return measured


def build_card(args: argparse.Namespace):
    """The card to push: ``--card`` as is, else the card the folder's provenance calls for (``--preset`` asks for
    the paper's card), else, for ``--card_only`` without ``--model_dir``, the paper's card of ``--preset``."""
    if args.card is not None:
        return args.card
    options = dict(measured=read_measured(args.measured_json), flops=args.flops, demo_url=args.demo_url)
    if args.model_dir is not None:
        return card_for_folder(args.model_dir, args.repo_id, preset=args.preset, **options)
    if args.preset is None:
        raise ValueError("--card_only without --model_dir needs --card PATH.md or --preset NAME")
    return render_model_card(args.preset, repo_id=args.repo_id, **options)


def publish(args: argparse.Namespace) -> None:
    card = build_card(args)
    if args.card_only:
        commit = push_card_to_hub(
            args.repo_id, card, token=args.token, revision=args.revision, create_pr=args.create_pr
        )
        print(f"Uploaded README.md to {args.repo_id}: {commit.commit_url}")
        if commit.pr_url:
            print(f"Pull request: {commit.pr_url}")
        return
    result = push_folder_to_hub(
        args.model_dir,
        args.repo_id,
        token=args.token,
        private=args.private,
        revision=args.revision,
        create_pr=args.create_pr,
        card=card,
    )
    print(f"Uploaded {len(result.uploaded_files)} file(s) to {result.repo_url}:")
    for name in result.uploaded_files:
        print(f"  {name}")
    print(f"Model files commit: {result.model_commit.commit_url}")
    print(f"Model card commit:  {result.card_commit.commit_url}")
    if result.pr_url:
        print(f"Pull request: {result.pr_url}")


def error_message(error: BaseException) -> str:
    """The error as one line (HTTP errors of the Hub span several), except the card-retry instructions."""
    if isinstance(error, CardPushError):
        return str(error)
    return " ".join(str(error).split())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    try:
        publish(args)
    except EXPECTED_ERRORS as err:
        if args.debug:
            raise
        print(f"error: {error_message(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
