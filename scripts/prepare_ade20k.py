#!/usr/bin/env python
"""Turn an ``ADEChallengeData2016`` folder into a parquet dataset that the training script loads by path or repo id.

``datasets`` 4 and later no longer run loading scripts such as the Hub's ``scene_parse_150``; this writes ADE20K once
in the same schema (columns ``image`` and ``annotation``, both stored as the original file bytes: JPEG images, PNG
masks with 0 = unlabeled and 1..150 = classes), as parquet shards of at most ``--max_shard_size`` MB::

    OUTPUT/data/train-00000-of-00004.parquet ... data/validation-00000-of-00001.parquet
    OUTPUT/id2label.json   (the 150 class names, ids 0..149 after reduce-zero-label)
    OUTPUT/README.md       (dataset card: which files make which split)

Examples::

    python scripts/prepare_ade20k.py --ade_dir data/ADEChallengeData2016 --output_dir data/ade20k
    python scripts/run_semantic_segmentation.py --dataset_name data/ade20k ...          # by path
    python scripts/prepare_ade20k.py --ade_dir data/ADEChallengeData2016 --push_to_hub --hub_dataset_id team/ade20k
    python scripts/run_semantic_segmentation.py --dataset_name team/ade20k [--streaming] ...   # by repo id

Every image needs its mask (``annotations/<split>/<same name>.png``): missing ones are listed and nothing is written.
The output folder is written beside ``--output_dir`` and swapped in when complete; a non-empty one is replaced only
with ``--overwrite_output_dir``, never when it holds ``--ade_dir`` or is the current directory. Errors are one line
(exit code 1); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from agent_hf.argument_checks import (
    ArgumentChecks,
    ArgumentParser,
    ScriptError,
    check_arguments_early,
    folder_error,
    run_script,
)

if __name__ == "__main__":  # answered before torch is imported
    check_arguments_early(ArgumentChecks(folders=("--ade_dir",), output_dir="--output_dir", inputs=("--ade_dir",)))

from tqdm.auto import tqdm

from agent_hf.data.ade20k import ADE_SPLIT_FOLDERS, IMAGE_SUFFIXES, ade20k_id2label, find_split_folders
from agent_hf.output_folders import OutputFolderError, check_output_folder, write_folder

CARD = """---
pretty_name: ADE20K (SceneParsing150), prepared from ADEChallengeData2016
task_categories:
- image-segmentation
configs:
- config_name: default
  data_files:
{data_files}
---

# ADE20K (SceneParsing150)

`ADEChallengeData2016` in the `scene_parse_150` schema, written by agent-hf's `scripts/prepare_ade20k.py`:
`image` (the original JPEG) and `annotation` (the original PNG mask: 0 = unlabeled, 1..150 = classes; train with
reduce-zero-label, which maps 0 to the ignore index and k to k-1). `id2label.json` names the 150 classes.

Splits: {sizes}.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ade_dir", required=True, help="the ADEChallengeData2016 folder (images/, annotations/)")
    parser.add_argument("--output_dir", help="where to write the parquet dataset (optional with --push_to_hub)")
    parser.add_argument(
        "--overwrite_output_dir",
        "--overwrite",
        action="store_true",
        help="replace a non-empty --output_dir (never one that holds --ade_dir or the current directory)",
    )
    parser.add_argument("--splits", nargs="+", default=list(ADE_SPLIT_FOLDERS), choices=list(ADE_SPLIT_FOLDERS))
    parser.add_argument("--max_shard_size", type=float, default=500, help="MB of images and masks per parquet file")
    parser.add_argument("--push_to_hub", action="store_true", help="upload the dataset to --hub_dataset_id")
    parser.add_argument("--hub_dataset_id", help="dataset repository for --push_to_hub, e.g. my-team/ade20k")
    parser.add_argument("--private", action="store_true", help="create the dataset repository private")
    parser.add_argument("--hub_token", help="Hub token (default: HF_TOKEN or `hf auth login`)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if not (args.output_dir or args.push_to_hub):
        raise ScriptError("nothing to do: pass --output_dir and/or --push_to_hub")
    if args.push_to_hub and not args.hub_dataset_id:
        raise ScriptError("--push_to_hub needs --hub_dataset_id NAMESPACE/NAME")
    if args.max_shard_size <= 0:
        raise ScriptError(f"--max_shard_size must be positive, got {args.max_shard_size}")
    return args


def list_pairs(ade_dir: Path, split: str) -> list[tuple[Path, Path]]:
    """``(image, mask)`` files of one split; raises naming every image without its mask."""
    try:
        images_dir, masks_dir = find_split_folders(ade_dir, split)
    except (OSError, ValueError) as error:
        raise ScriptError(str(error)) from error
    images = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    pairs = [(image, masks_dir / f"{image.stem}.png") for image in images]
    missing = [str(image) for image, mask in pairs if not mask.is_file()]
    if missing:
        raise ScriptError(
            f"{len(missing)} {split} image(s) have no mask in {masks_dir} (nothing was written): " + ", ".join(missing)
        )
    return pairs


def shard_pairs(pairs: list[tuple[Path, Path]], max_bytes: float) -> list[list[tuple[Path, Path]]]:
    """Consecutive groups of pairs of at most ``max_bytes`` each (at least one pair per group)."""
    shards: list[list[tuple[Path, Path]]] = [[]]
    size = 0
    for pair in pairs:
        pair_size = pair[0].stat().st_size + pair[1].stat().st_size
        if shards[-1] and size + pair_size > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(pair)
        size += pair_size
    return shards


def write_parquet(folder: Path, splits: dict[str, list[tuple[Path, Path]]], max_shard_size_mb: float) -> None:
    """Writes the parquet shards, ``id2label.json`` and the dataset card into ``folder``."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    (folder / "data").mkdir()
    for split, pairs in splits.items():
        shards = shard_pairs(pairs, max_shard_size_mb * 1e6)
        with tqdm(total=len(pairs), desc=f"Writing {split}", unit="image") as progress:
            for index, shard in enumerate(shards):
                columns = {
                    "image": [{"bytes": image.read_bytes(), "path": image.name} for image, _ in shard],
                    "annotation": [{"bytes": mask.read_bytes(), "path": mask.name} for _, mask in shard],
                }
                table = datasets.Dataset.from_dict(columns, features=features)
                table.to_parquet(str(folder / "data" / f"{split}-{index:05d}-of-{len(shards):05d}.parquet"))
                progress.update(len(shard))
    labels = {str(k): v for k, v in ade20k_id2label().items()}
    (folder / "id2label.json").write_text(json.dumps(labels, indent=2) + "\n")
    data_files = "\n".join(f"  - split: {split}\n    path: data/{split}-*" for split in splits)
    sizes = ", ".join(f"{split} {len(pairs)} images" for split, pairs in splits.items())
    (folder / "README.md").write_text(CARD.format(data_files=data_files, sizes=sizes))


def push(folder: Path, args: argparse.Namespace) -> None:
    from huggingface_hub import HfApi

    api = HfApi(token=args.hub_token)
    try:
        api.create_repo(args.hub_dataset_id, repo_type="dataset", private=args.private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=folder,
            repo_id=args.hub_dataset_id,
            repo_type="dataset",
            commit_message="ADE20K (SceneParsing150) from ADEChallengeData2016, by agent-hf's prepare_ade20k.py",
        )
    except OSError as error:  # the Hub's HTTP errors, an unreachable endpoint, offline mode
        raise ScriptError(f"could not push to the dataset repository {args.hub_dataset_id}: {error}") from error
    print(f"pushed to {args.hub_dataset_id}: {commit.commit_url}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    ade_dir = Path(args.ade_dir)
    if args.output_dir:
        try:  # before reading anything; checked again when the folder is swapped in
            check_output_folder(args.output_dir, overwrite=args.overwrite_output_dir, inputs=[ade_dir])
        except OutputFolderError as error:
            raise folder_error(error) from error
    splits = {split: list_pairs(ade_dir, split) for split in args.splits}
    if args.output_dir:
        try:
            with write_folder(args.output_dir, overwrite=args.overwrite_output_dir, inputs=[ade_dir]) as staging:
                write_parquet(staging, splits, args.max_shard_size)
        except OutputFolderError as error:
            raise folder_error(error) from error
        print(f"wrote {args.output_dir}: " + ", ".join(f"{s} {len(p)} images" for s, p in splits.items()))
        if args.push_to_hub:
            push(Path(args.output_dir), args)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            write_parquet(Path(scratch), splits, args.max_shard_size)
            push(Path(scratch), args)


if __name__ == "__main__":
    sys.exit(run_script(main))
