"""``python -m agent_hf.hub --write|--check``: the presets' model cards and the README's models table, generated
from `agent_hf.model_zoo`, in the checkout this package is installed from (editable install), whatever the current
directory; elsewhere (an installed wheel) in the current directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .generated_files import outdated_files, write_model_cards, write_readme_models_table


def _checkout_root() -> Path:
    """The repository root of an editable install (``src/agent_hf/hub`` lies three folders below it), else the
    current directory."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "model_cards").is_dir() and (root / "README.md").is_file() else Path()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent_hf.hub",
        description="Generate the presets' model cards and the README's models table from agent_hf.model_zoo.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the cards and the README table")
    action.add_argument("--check", action="store_true", help="exit 1 if they differ from the generated ones")
    root = _checkout_root()
    parser.add_argument(
        "--cards_dir", type=Path, default=root / "model_cards", help=f"default: {root / 'model_cards'}"
    )
    parser.add_argument("--readme", type=Path, default=root / "README.md", help=f"default: {root / 'README.md'}")
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
