"""The generated files of the checkout: ``model_cards/*.md`` (the seven segmentation presets' cards and the ten
ImageNet classifiers') and the README's models tables, written or checked from the registry.

    python -m agent_hf.hub --write   # rewrite model_cards/*.md and the README's model table
    python -m agent_hf.hub --check   # exit 1 if they are out of date
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from ..model_zoo import IMAGENET_MODELS, MODELS
from .cards import MODELS_TABLE_END, MODELS_TABLE_START, models_table, render_model_card
from .imagenet_cards import render_imagenet_model_card, with_imagenet_table

__all__ = ["outdated_files", "write_model_cards", "write_readme_models_table"]

PathLike = Union[str, "os.PathLike[str]"]


def write_model_cards(output_dir: PathLike = "model_cards") -> list[Path]:
    """Writes ``<output_dir>/<preset>.md`` for the seven segmentation presets and the ten ImageNet presets (default
    repo ids, paper numbers only).

    Returns:
        The written paths, in :data:`PAPER_RESULTS` order.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for preset_name in MODELS:
        path = output_dir / f"{preset_name}.md"
        render_model_card(preset_name).save(path)
        paths.append(path)
    for preset_name in IMAGENET_MODELS:  # then the ten ImageNet classifiers' cards
        path = output_dir / f"{preset_name}.md"
        render_imagenet_model_card(preset_name).save(path)
        paths.append(path)
    return paths


def _with_models_table(readme: str, source: Path) -> str:
    start, end = readme.find(MODELS_TABLE_START), readme.find(MODELS_TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"{source} has no models table markers ({MODELS_TABLE_START!r} ... {MODELS_TABLE_END!r}).")
    readme = readme[: start + len(MODELS_TABLE_START)] + "\n" + models_table() + "\n" + readme[end:]
    return with_imagenet_table(readme)


def write_readme_models_table(readme: PathLike = "README.md") -> bool:
    """Rewrites the models table of `readme` between its markers. Returns whether the file changed."""
    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    updated = _with_models_table(text, path)
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text


def outdated_files(cards_dir: PathLike = "model_cards", readme: PathLike = "README.md") -> list[str]:
    """Generated files that differ from what the registry and the templates give (empty: all up to date)."""
    cards_dir, readme = Path(cards_dir), Path(readme)
    outdated = []
    expected = {f"{name}.md": str(render_model_card(name)) for name in MODELS}
    expected.update({f"{name}.md": str(render_imagenet_model_card(name)) for name in IMAGENET_MODELS})
    present = {path.name for path in cards_dir.glob("*.md")} if cards_dir.is_dir() else set()
    for name in sorted(present | set(expected)):
        path = cards_dir / name
        if name not in expected:
            outdated.append(f"{path} (not a preset's card)")
        elif not path.is_file() or path.read_text(encoding="utf-8") != expected[name]:
            outdated.append(str(path))
    text = readme.read_text(encoding="utf-8")
    if _with_models_table(text, readme) != text:
        outdated.append(f"{readme} (models table)")
    return outdated
