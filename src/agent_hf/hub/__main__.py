"""``python -m agent_hf.hub --write|--check``: the presets' model cards and the README's models table, generated
from `agent_hf.registry` (run from the repository root)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cards import outdated_files, write_model_cards, write_readme_models_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent_hf.hub",
        description="Generate the presets' model cards and the README's models table from agent_hf.registry.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the cards and the README table")
    action.add_argument("--check", action="store_true", help="exit 1 if they differ from the generated ones")
    parser.add_argument("--cards_dir", type=Path, default=Path("model_cards"), help="default: model_cards")
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="default: README.md")
    args = parser.parse_args(argv)
    try:
        if args.write:
            written = write_model_cards(args.cards_dir)
            changed = write_readme_models_table(args.readme)
            state = "updated" if changed else "unchanged"
            print(f"wrote {len(written)} cards to {args.cards_dir}; models table of {args.readme} {state}")
            return 0
        outdated = outdated_files(args.cards_dir, args.readme)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if outdated:
        print("out of date (run `python -m agent_hf.hub --write`): " + ", ".join(outdated), file=sys.stderr)
        return 1
    print("model cards and README models table are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
