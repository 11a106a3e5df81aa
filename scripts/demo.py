#!/usr/bin/env python
"""`make demo`: train a small Agent-Swin + UperNet on the generated scene-parsing dataset, on the CPU, in minutes.

It runs the same code as a real training run (mmseg train pipeline, the paper's AdamW + poly schedule with its
no-decay rule, mmseg evaluation streamed into a mean-IoU accumulator), only smaller: a 3M-parameter Agent-Swin
(all four agent/window stages, the paper's "AAAB" layout), 128x128 crops, a few hundred iterations and a higher
learning rate than the paper's fine-tuning value since it starts from random weights.

Outputs, under ``outputs/demo``:

* ``model/``: a complete model folder (``AutoModelForSemanticSegmentation.from_pretrained``, the image processor
  with the demo's test resize, the ``image-segmentation`` pipeline and the Inference Endpoints handler);
* ``prediction.png``: validation images, their ground truth and the predictions side by side;
* ``eval_per_class.json``: per-class IoU and accuracy;
* ``demo_run.json``: the settings and metrics of the run.

The folder is written beside ``--output_dir`` first and swapped in when complete. The demo replaces its own earlier
output (a folder holding only these files, ``demo_run.json`` included), so ``make demo`` can run again; any other
non-empty folder is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from agent_hf.argument_checks import ArgumentChecks, ArgumentParser, check_arguments_early, folder_error, run_script

# What the demo writes into its output folder; a folder holding only these (with the marker) is its own output.
OUTPUT_ENTRIES = frozenset({"model", "prediction.png", "eval_per_class.json", "demo_run.json"})
MARKER = "demo_run.json"


#: Files of a model folder as save_model_folder writes it (for demo outputs written before the manifest).
MODEL_FILE_PATTERNS = ("*.py", "*.json", "*.safetensors", "requirements.txt")


def model_files(folder: Path) -> list[str]:
    """The files under ``folder`` (relative paths, sorted)."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if not path.is_dir())


def is_demo_output(folder: Path) -> bool:
    """Whether ``folder`` was written by this script and holds nothing else (not even a file of the user's inside
    ``model/``), so it may be replaced."""
    names = {entry.name for entry in folder.iterdir()}
    if MARKER not in names or not names <= OUTPUT_ENTRIES:
        return False
    model = folder / "model"
    if not model.exists():
        return True
    if model.is_symlink() or not model.is_dir():
        return False
    try:
        manifest = json.loads((folder / MARKER).read_text()).get("model_files")
    except (OSError, ValueError, AttributeError):
        return False
    found = model_files(model)
    if manifest is not None:
        return found == manifest
    return all("/" not in name and any(Path(name).match(p) for p in MODEL_FILE_PATTERNS) for name in found)


if __name__ == "__main__":  # answered before torch is imported
    check_arguments_early(
        ArgumentChecks(output_dir="--output_dir", default_output_dir="outputs/demo", is_own_output=is_demo_output)
    )

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForSemanticSegmentation, TrainingArguments
from transformers.utils import logging

import agent_hf
from agent_hf.data import ADE20K_PALETTE, TrainTransform, reduce_zero_label, to_label_array
from agent_hf.data.loading import load_scene_parsing
from agent_hf.models.segmentation_inference import multiscale_inputs, segment
from agent_hf.output_folders import OutputFolderError, check_output_folder, write_folder
from agent_hf.saving import make_image_processor, save_model_folder
from agent_hf.training import (
    EvalSettings,
    SegmentationTrainer,
    eval_dataset_for,
    pad_collate,
    recipe_for,
    train_dataset_for,
)

NUM_CLASSES = 8
CROP = (128, 128)
SCALE = (512, 128)  # train and test resize bound (long, short): ADE20K's (2048, 512) divided by 4
MODEL = dict(
    embed_dim=32,
    depths=[2, 2, 2, 2],
    num_heads=[1, 2, 4, 8],
    decoder_hidden_size=64,
    auxiliary_channels=32,
    drop_path_rate=0.1,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/demo"))
    parser.add_argument(
        "--overwrite_output_dir",
        "--overwrite",
        action="store_true",
        help="replace a non-empty --output_dir that is not an earlier demo output",
    )
    parser.add_argument("--max_steps", type=int, default=300, help="training iterations")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--num_train", type=int, default=256, help="generated training images")
    parser.add_argument("--num_val", type=int, default=48, help="generated validation images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--num_threads",
        type=int,
        default=1,
        help="CPU threads. The demo's tensors are small: extra threads gain little and, on a shared or busy "
        "machine, make every operation wait for the slowest thread (10x slower on a loaded 2-core VM).",
    )
    args = parser.parse_args(argv)
    # Checked before the minutes of training, so that no run is lost at its end.
    for name, least in (("max_steps", 1), ("batch_size", 2), ("num_train", 2), ("num_val", 1), ("num_threads", 1)):
        if getattr(args, name) < least:
            why = " (batch normalization needs two images)" if name == "batch_size" else ""
            parser.error(f"--{name} must be at least {least}{why}, got {getattr(args, name)}")
    if args.num_train < args.batch_size:
        parser.error(f"--num_train ({args.num_train}) must be at least --batch_size ({args.batch_size})")
    if not 0 < args.learning_rate < float("inf"):
        parser.error(f"--learning_rate must be a positive number, got {args.learning_rate}")
    return args


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` class ids -> ``(H, W, 3)`` uint8 with the ADE20K palette; the ignore index 255 is black."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(ADE20K_PALETTE)] = ADE20K_PALETTE
    palette[255] = 0
    return palette[labels]


def prediction_panel(model, dataset, settings: EvalSettings, indices: list[int]) -> Image.Image:
    """One row per image: image | ground truth | prediction."""
    rows = []
    for index in indices:
        example = dataset[index]
        image = np.asarray(example["image"].convert("RGB"))
        truth = reduce_zero_label(to_label_array(example["annotation"]))
        inputs = multiscale_inputs(image, settings.scale, settings.ratios, settings.mean, settings.std)
        prediction = (
            segment(model, inputs, truth.shape, flip=settings.flip, mode=settings.mode)[0].numpy().astype(np.uint8)
        )
        gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
        rows.append(np.concatenate([image, gap, colorize_labels(truth), gap, colorize_labels(prediction)], axis=1))
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 4), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    return Image.fromarray(np.concatenate(rows, axis=0))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    folder_checks = dict(overwrite=args.overwrite_output_dir, is_own_output=is_demo_output)
    try:  # before the minutes of training; checked again when the folder is swapped in
        check_output_folder(args.output_dir, **folder_checks)
        with write_folder(args.output_dir, **folder_checks) as staging:
            run_demo(args, staging)
    except OutputFolderError as error:
        raise folder_error(error) from error
    print(f"Model folder: {args.output_dir / 'model'}")
    print(f"Predictions (image | ground truth | prediction): {args.output_dir / 'prediction.png'}")


def run_demo(args: argparse.Namespace, output_dir: Path) -> None:
    """Generates the data, trains, evaluates and writes the outputs into ``output_dir``."""
    logging.set_verbosity_warning()
    start = time.time()
    torch.set_num_threads(args.num_threads)
    torch.manual_seed(args.seed)

    print(f"Generating {args.num_train} + {args.num_val} synthetic scene-parsing images ({NUM_CLASSES} classes)...")
    loaded = load_scene_parsing(
        synthetic_train_samples=args.num_train,
        synthetic_validation_samples=args.num_val,
        synthetic_num_labels=NUM_CLASSES,
        seed=args.seed,
    )
    data, id2label = loaded.splits, loaded.id2label
    config = agent_hf.preset_config(
        "agent-swin-t-upernet-ade20k", id2label=id2label, label2id={v: k for k, v in id2label.items()}, **MODEL
    )
    model = AutoModelForSemanticSegmentation.from_config(config)
    print(
        f"Model: Agent-Swin ({config.attn_type}) + UperNet, {sum(p.numel() for p in model.parameters()):,} parameters"
    )

    recipe = dataclasses.replace(
        recipe_for(config),
        name="paper (demo-sized)",
        learning_rate=args.learning_rate,
        max_steps=args.max_steps,
        warmup_steps=args.max_steps // 10,
        total_batch_size=args.batch_size,
    )
    settings = EvalSettings(scale=SCALE)  # the processor saved with the model serves the same (see below)
    training_args = TrainingArguments(
        output_dir=str(output_dir),
        logging_steps=max(1, args.max_steps // 10),
        save_strategy="no",
        report_to="none",
        dataloader_pin_memory=False,
        seed=args.seed,
    )
    trainer = SegmentationTrainer(
        model,
        training_args,
        recipe=recipe,
        train_dataset=train_dataset_for(
            data["train"], TrainTransform(CROP, SCALE, seed=args.seed), NUM_CLASSES, seed=args.seed
        ),
        eval_dataset=eval_dataset_for(data["validation"], settings),
        data_collator=pad_collate(CROP),
    )
    trainer.train()
    metrics = trainer.evaluate()

    # The processor's keep-ratio resize is the evaluation's (SCALE), so the app and the pipeline see what eval saw.
    save_model_folder(model, output_dir / "model", make_image_processor(do_reduce_labels=True, scale=SCALE))
    panel = prediction_panel(model.eval(), data["validation"], settings, indices=list(range(min(3, args.num_val))))
    panel.save(output_dir / "prediction.png")
    settings_record = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    record = {"arguments": settings_record, "metrics": metrics, "model_files": model_files(output_dir / "model")}
    (output_dir / MARKER).write_text(json.dumps(record, indent=2) + "\n")

    chance = 1 / (2 * NUM_CLASSES - 1)  # mIoU of uniformly random predictions on balanced classes
    print(
        f"\nValidation ({args.num_val} images, {settings.describe()}): mIoU {100 * metrics['eval_mIoU']:.1f}% "
        f"(chance ~{100 * chance:.1f}%), mAcc {100 * metrics['eval_mAcc']:.1f}%, "
        f"aAcc {100 * metrics['eval_aAcc']:.1f}%"
    )
    print(f"Total time: {time.time() - start:.0f} s")


if __name__ == "__main__":
    sys.exit(run_script(main))
