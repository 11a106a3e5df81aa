#!/usr/bin/env python
"""Evaluate and fine-tune Agent Attention image classifiers on ImageFolder-layout data.

The command line follows transformers' ``examples/pytorch/image-classification/run_image_classification.py``
(``--model_name_or_path``, ``--train_dir``, ``--validation_dir``, ``--max_train_samples``, ``--max_eval_samples``,
``--ignore_mismatched_sizes``, plus every ``TrainingArguments`` option) and runs under ``python``, ``accelerate
launch`` and ``torchrun``. Differences:

* the model is a classification folder or Hub id (e.g. written by ``convert_official_checkpoint.py``), or an ImageNet
  preset (``agent-swin-t-in1k-224``, ...: random init; ``--config_overrides`` changes its config);
* data are ImageFolder-layout folders (``<split>/<class>/<image>``, as the official code reads ImageNet): class ids are
  the sorted class folders' positions, so an ImageNet ``val/`` with its WordNet-id folders is scored against the
  official models' outputs directly; images are read one at a time by the data loader;
* evaluation uses the model folder's image processor (the official evaluation transform) and streams top-1 / top-5
  accuracy over the batches (``eval_accuracy_top1``, ``eval_accuracy_top5``, gathered over processes, in
  ``{output_dir}/eval_results.json``);
* fine-tuning (``--do_train``) takes the classes of ``--train_dir`` (a new head with ``--ignore_mismatched_sizes``
  when they differ from the model's), trains with random-resized crops and flips, and saves a complete model folder
  (weights, model code, image processor, Endpoints handler) into ``--output_dir``.

Examples::

    # ImageNet-1k validation accuracy of a converted official model
    python scripts/run_image_classification.py --model_name_or_path agent-swin-t-in1k-224 \\
        --validation_dir imagenet/val --do_eval --per_device_eval_batch_size 64 --output_dir outputs/eval
    # fine-tune on your own classes
    python scripts/run_image_classification.py --model_name_or_path agent-swin-t-in1k-224 \\
        --train_dir flowers/train --validation_dir flowers/val --ignore_mismatched_sizes \\
        --do_train --do_eval --learning_rate 5e-5 --num_train_epochs 3 --output_dir outputs/flowers

Errors in the arguments, model or data are one line (exit code 1); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field

import transformers
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)

import agent_hf
from agent_hf.argument_checks import ScriptError, run_script
from agent_hf.data.imagenet import ImageFolderDataset, TopKAccuracy, random_resized_crop_transform
from agent_hf.model_zoo import get_imagenet_model_spec
from agent_hf.models.image_processing_agent_classification import AgentClassificationImageProcessor
from agent_hf.saving import save_model_folder

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        metadata={"help": "a classification model folder or Hub id, or an ImageNet preset (random init)"}
    )
    config_overrides: str | None = field(default=None, metadata={"help": "JSON of config values (presets only)"})
    ignore_mismatched_sizes: bool = field(
        default=False, metadata={"help": "a new classifier head when --train_dir's classes differ from the model's"}
    )
    trust_remote_code: bool = field(default=True, metadata={"help": "load the folder's model code"})


@dataclass
class DataTrainingArguments:
    train_dir: str | None = field(default=None, metadata={"help": "ImageFolder-layout training split"})
    validation_dir: str | None = field(default=None, metadata={"help": "ImageFolder-layout validation split"})
    max_train_samples: int | None = field(default=None, metadata={"help": "use the first N training images"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "use the first N validation images"})


def classification_processor(processor) -> AgentClassificationImageProcessor:
    """agent_hf's own processor with the settings of the folder's (which may be its remote-code copy)."""
    values = processor.to_dict()
    if "AgentClassificationImageProcessor" not in str(values.get("image_processor_type", type(processor).__name__)):
        raise ScriptError(
            f"the model's image processor is a {type(processor).__name__}, not agent_hf's classification processor: "
            "convert the model with scripts/convert_official_checkpoint.py"
        )
    keys = ("size", "do_center_crop", "image_mean", "image_std")
    return AgentClassificationImageProcessor(**{key: values[key] for key in keys if key in values})


def load_model(model_args: ModelArguments, label_kwargs: dict):
    """(model, image processor) of --model_name_or_path, with the classes in `label_kwargs` (if any)."""
    name = model_args.model_name_or_path
    if name in agent_hf.IMAGENET_PRESETS:
        spec = get_imagenet_model_spec(name)
        try:
            overrides = json.loads(model_args.config_overrides) if model_args.config_overrides else {}
            config = agent_hf.preset_config(name, **overrides, **label_kwargs)
        except (TypeError, ValueError) as error:
            raise ScriptError(f"--config_overrides: {error}") from error
        processor = AgentClassificationImageProcessor(size=spec.image_size, do_center_crop=spec.center_crop)
        return AutoModelForImageClassification.from_config(config), processor
    if model_args.config_overrides:
        raise ScriptError("--config_overrides applies to presets only")
    try:
        processor = AutoImageProcessor.from_pretrained(name, trust_remote_code=model_args.trust_remote_code)
        model = AutoModelForImageClassification.from_pretrained(
            name,
            trust_remote_code=model_args.trust_remote_code,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
            **label_kwargs,
        )
    except (OSError, ValueError) as error:
        raise ScriptError(f"--model_name_or_path {name}: {error}") from error
    return model, classification_processor(processor)


def main(argv: list[str] | None = None) -> None:
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    if not (training_args.do_train or training_args.do_eval):
        raise ScriptError("nothing to do: give --do_train and/or --do_eval")
    if training_args.do_train and not data_args.train_dir:
        raise ScriptError("--do_train needs --train_dir")
    if training_args.do_eval and not data_args.validation_dir:
        raise ScriptError("--do_eval needs --validation_dir")
    set_seed(training_args.seed)

    try:
        train_dataset = (
            ImageFolderDataset(data_args.train_dir, None, data_args.max_train_samples)
            if training_args.do_train
            else None
        )
        eval_dataset = (
            ImageFolderDataset(data_args.validation_dir, None, data_args.max_eval_samples)
            if training_args.do_eval
            else None
        )
    except (OSError, ValueError) as error:
        raise ScriptError(str(error)) from error
    label_kwargs = {}
    if train_dataset is not None:
        id2label = dict(enumerate(train_dataset.classes))
        label_kwargs = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    model, processor = load_model(model_args, label_kwargs)
    for split, dataset in (("--train_dir", train_dataset), ("--validation_dir", eval_dataset)):
        if dataset is not None and len(dataset.classes) != model.config.num_labels:
            raise ScriptError(
                f"{split} {dataset.root} has {len(dataset.classes)} class folders but the model predicts "
                f"{model.config.num_labels} classes"
            )
    if train_dataset is not None:
        train_dataset.transform = random_resized_crop_transform(
            processor.size, processor.image_mean, processor.image_std
        )
    if eval_dataset is not None:
        eval_dataset.transform = processor.transform

    # Top-1/top-5 are accumulated batch by batch (gathered over processes), never holding all logits.
    training_args.batch_eval_metrics = True
    training_args.remove_unused_columns = False
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        compute_metrics=TopKAccuracy(),
    )
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        if trainer.is_world_process_zero():
            save_model_folder(trainer.model, training_args.output_dir, processor)
    if training_args.do_eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)


if __name__ == "__main__":
    sys.exit(run_script(main))
