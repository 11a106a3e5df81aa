#!/usr/bin/env python
"""Publish a converted / trained Agent Attention segmentation model folder to the Hugging Face Hub.

The model files go in one commit, the model card (README.md) in a second, last commit, so that nothing overwrites
the card's metadata. All the logic lives in :mod:`agent_hf.hub`; this script only parses arguments.

Examples::

    # card rendered from the preset (read from config.json's `agent_hf_preset` if --preset is omitted)
    python scripts/push_to_hub.py --model_dir converted/agent-swin-t-upernet-ade20k \\
        --repo_id your-username/agent-swin-t-upernet-ade20k

    # your own card, on a branch, as a pull request
    python scripts/push_to_hub.py --model_dir DIR --repo_id ID --card my_card.md --revision v1 --create_pr

    # the weights went up but the card commit failed: push only the card
    python scripts/push_to_hub.py --model_dir DIR --repo_id ID --card_only

Authentication: ``--token``, else the ``HF_TOKEN`` environment variable, else the token stored by ``hf auth login``.
The endpoint is ``HF_ENDPOINT`` (default https://huggingface.co).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from agent_hf.hub import (
    DEMO_SPACE_URL,
    PAPER_RESULTS,
    CardPushError,
    HubTokenMissingError,
    push_card_to_hub,
    push_folder_to_hub,
    render_model_card,
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
        "--preset", choices=list(PAPER_RESULTS), metavar="NAME", help=f"card preset: {', '.join(PAPER_RESULTS)}"
    )
    parser.add_argument("--card", type=Path, help="model card (.md) to use instead of rendering one from the preset")
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
    args = parser.parse_args(argv)
    if args.model_dir is None and not args.card_only:
        parser.error("--model_dir is required (unless --card_only)")
    if args.card is not None and (args.measured_json or args.flops or args.demo_url != DEMO_SPACE_URL):
        parser.error("--measured_json/--flops/--demo_url only apply to a rendered card, not to --card")
    return args


def _preset_from_config(model_dir: Path | None) -> str | None:
    if model_dir is None or not (model_dir / "config.json").is_file():
        return None
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return config.get("agent_hf_preset") if isinstance(config, dict) else None


def build_card(args: argparse.Namespace):
    """The card to push: ``--card`` as is, else rendered from ``--preset`` / the folder's ``agent_hf_preset``."""
    if args.card is not None:
        return args.card
    preset = args.preset or _preset_from_config(args.model_dir)
    if preset is None:
        raise ValueError(
            "No model card to push: pass --card PATH.md or --preset NAME "
            f"(config.json in {args.model_dir} has no `agent_hf_preset`)."
        )
    measured = json.loads(args.measured_json.read_text(encoding="utf-8")) if args.measured_json else None
    return render_model_card(preset, repo_id=args.repo_id, measured=measured, flops=args.flops, demo_url=args.demo_url)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        card = build_card(args)
        if args.card_only:
            commit = push_card_to_hub(
                args.repo_id, card, token=args.token, revision=args.revision, create_pr=args.create_pr
            )
            print(f"Uploaded README.md to {args.repo_id}: {commit.commit_url}")
            if commit.pr_url:
                print(f"Pull request: {commit.pr_url}")
            return 0
        result = push_folder_to_hub(
            args.model_dir,
            args.repo_id,
            token=args.token,
            private=args.private,
            revision=args.revision,
            create_pr=args.create_pr,
            card=card,
        )
    except (
        ValueError,
        FileNotFoundError,
        HubTokenMissingError,
        CardPushError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Uploaded {len(result.uploaded_files)} file(s) to {result.repo_url}:")
    for name in result.uploaded_files:
        print(f"  {name}")
    print(f"Model files commit: {result.model_commit.commit_url}")
    print(f"Model card commit:  {result.card_commit.commit_url}")
    if result.pr_url:
        print(f"Pull request: {result.pr_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
