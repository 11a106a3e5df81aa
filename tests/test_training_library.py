"""The library parts of the training script, called directly: loading the data (agent_hf.data.loading), the output
folder and resume policy (agent_hf.training.run_folder), the sample and batch checks (agent_hf.training.validation),
the model a run starts from (agent_hf.training.model_setup), the image processor (agent_hf.saving) and the results
added to a trained folder's provenance (agent_hf.provenance).

The script end to end: tests/test_training_runs.py, test_journeys.py, test_folders.py, test_hostile_*.py."""

import json
import logging

import datasets
import pytest
import torch
from conftest import tiny_swin_config
from official_names import expected_state_dict
from transformers import SegformerImageProcessor, TrainingArguments

import agent_hf
from agent_hf.argument_checks import ScriptError
from agent_hf.data import make_synthetic_scene_parsing, save_as_image_folders, synthetic_id2label
from agent_hf.data.ade20k import scene_parsing_folder
from agent_hf.data.loading import LoadedData, load_scene_parsing, select_splits, standard_columns
from agent_hf.provenance import PROVENANCE_KEY, add_eval_results
from agent_hf.saving import make_image_processor
from agent_hf.training import SegmentationTrainer, check_batchnorm_batch, check_splits, describe_batch, recipe_for
from agent_hf.training.model_setup import load_model_to_train
from agent_hf.training.run_folder import plan_output


# ---------------------------------------------------------------------------------------------------------- data
def test_missing_columns_and_splits_are_named():
    images = make_synthetic_scene_parsing(2, 1, min_size=48, max_size=64)
    with pytest.raises(ScriptError, match=r"needs 'image' and 'annotation'.*missing: \['annotation'\]"):
        standard_columns(images.rename_column("annotation", "mask"))
    data = LoadedData(images, None, True, "synthetic")
    with pytest.raises(ScriptError, match="the train split of synthetic is empty"):
        select_splits(data, do_train=True, do_eval=False, max_train_samples=0)
    with pytest.raises(ScriptError, match=r"--do_eval needs a validation split; x has \['train'\]"):
        select_splits(
            LoadedData(datasets.DatasetDict(train=images["train"]), None, True, "x"),
            do_train=False,
            do_eval=True,
            train_val_split=0,
        )


def test_a_validation_split_is_divided_off_the_training_split():
    images = make_synthetic_scene_parsing(8, 1, min_size=48, max_size=64)
    data = LoadedData(datasets.DatasetDict(train=images["train"]), None, True, "x")
    splits = select_splits(data, do_train=True, do_eval=True, train_val_split=0.25, max_train_samples=4)
    assert {name: len(split) for name, split in splits.items()} == {"train": 4, "validation": 2}


def test_local_dataset_folders_load_by_path(tmp_path):
    """A `save_to_disk` folder and a parquet folder (the layout scripts/prepare_ade20k.py writes) load by path, with
    their id2label.json."""
    data = make_synthetic_scene_parsing(2, 1, num_classes=5, min_size=48, max_size=64)
    data.save_to_disk(tmp_path / "arrow")
    (tmp_path / "parquet" / "data").mkdir(parents=True)
    for split, part in data.items():
        part.to_parquet(str(tmp_path / "parquet" / "data" / f"{split}-00000-of-00001.parquet"))
    (tmp_path / "parquet" / "id2label.json").write_text(json.dumps(synthetic_id2label(5)))
    for folder in ("arrow", "parquet"):
        loaded = load_scene_parsing(dataset_name=str(tmp_path / folder))
        assert {split: len(part) for split, part in loaded.splits.items()} == {"train": 2, "validation": 1}
        assert loaded.splits["train"][0]["image"].size == data["train"][0]["image"].size
    assert loaded.id2label == synthetic_id2label(5)


def test_image_folders_load_with_their_class_names(tmp_path):
    root = save_as_image_folders(
        make_synthetic_scene_parsing(3, 2, num_classes=5, min_size=48, max_size=64),
        tmp_path / "ADE",
        id2label=synthetic_id2label(5),
    )
    loaded = load_scene_parsing(train_dir=str(root), validation_dir=str(root))
    assert {split: len(part) for split, part in loaded.splits.items()} == {"train": 3, "validation": 2}
    assert loaded.id2label == synthetic_id2label(5) and loaded.reduce_labels_default  # the ADE layout
    assert loaded.description == "ADE"


# ---------------------------------------------------------------------------------------------------- the samples
def test_bad_samples_stop_the_run_or_are_left_out(tmp_path):
    root = save_as_image_folders(
        make_synthetic_scene_parsing(3, 1, num_classes=5, min_size=48, max_size=64), tmp_path / "ade"
    )
    (root / "images" / "training" / "synthetic_train_00000002.jpg").write_bytes(b"not an image")
    splits = {"train": scene_parsing_folder(root, "train")}
    checks = dict(reduce_labels=True, progress=False)
    with pytest.raises(
        ScriptError, match=r"(?s)1 of 3 train samples cannot be used:\n  train\[1\] .*Nothing was trained"
    ):
        check_splits(dict(splits), ["train"], 5, **checks)
    kept = check_splits(dict(splits), ["train"], 5, skip_invalid=True, **checks)
    assert len(kept["train"]) == 2
    with pytest.raises(ScriptError, match="hint: check --do_reduce_labels"):  # masks hold 1..5, 2 classes
        check_splits(dict(splits), ["train"], 2, **checks)
    with pytest.raises(ScriptError, match="no usable sample left in the train split"):
        check_splits(dict(splits), ["train"], 2, skip_invalid=True, **checks)


# ------------------------------------------------------------------------------------------------------ the batch
def test_the_batch_is_described_against_the_recipe(tmp_path):
    model = agent_hf.AgentSwinForSemanticSegmentation(tiny_swin_config())
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=2, report_to="none", use_cpu=True)
    recipe = recipe_for(model.config)
    trainer = SegmentationTrainer(model, args, recipe=recipe.with_overrides(args, {"per_device_train_batch_size"}))
    description = describe_batch(trainer, recipe)
    assert "The recipe 'paper' uses 16 images per iteration: pass --gradient_accumulation_steps 8." in description
    assert "BatchNorm: a single process" in description
    check_batchnorm_batch(trainer)
    trainer.args.per_device_train_batch_size = 1
    with pytest.raises(ScriptError, match="one image per device cannot train the UperNet heads"):
        check_batchnorm_batch(trainer)


# ----------------------------------------------------------------------------------------------- the output folder
def complete_checkpoint(folder, step):
    model = agent_hf.AgentSwinForSemanticSegmentation(tiny_swin_config())
    model.save_pretrained(folder)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_a_folder_with_checkpoints_resumes_the_newest_complete_one(tmp_path, caplog):
    out = tmp_path / "run"
    complete_checkpoint(out / "checkpoint-2", 2)
    (out / "checkpoint-4").mkdir()  # half-written: no trainer_state.json
    with caplog.at_level(logging.WARNING, logger="agent_hf"):
        plan = plan_output(out, do_train=True, overwrite=False, resume_from_checkpoint=None, inputs=[])
    assert plan.resume_from == str(out / "checkpoint-2") and plan.run_dir == out and not plan.staged
    assert "Skipped incomplete checkpoint(s): checkpoint-4 (no trainer_state.json" in caplog.text
    with pytest.raises(ScriptError, match="cannot also resume its last checkpoint"):
        plan_output(out, do_train=True, overwrite=True, resume_from_checkpoint="last", inputs=[])


def test_another_non_empty_folder_is_refused_or_replaced_from_beside_it(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ScriptError, match="is not empty and holds no checkpoint to resume"):
        plan_output(out, do_train=True, overwrite=False, resume_from_checkpoint=None, inputs=[])
    plan = plan_output(out, do_train=True, overwrite=True, resume_from_checkpoint=None, inputs=[None, "missing"])
    assert plan.staged and plan.run_dir.parent == tmp_path and plan.output_dir == out and plan.inputs == []
    (out / "data").mkdir()
    with pytest.raises(ScriptError):  # never replacing a folder that holds an input
        plan_output(out, do_train=True, overwrite=True, resume_from_checkpoint=None, inputs=[str(out / "data")])
    (out / "eval_results.json").write_text("{}")
    with pytest.raises(ScriptError, match="already holds evaluation results"):
        plan_output(out, do_train=False, overwrite=False, resume_from_checkpoint=None, inputs=[])
    assert plan_output(out, do_train=False, overwrite=True, resume_from_checkpoint=None, inputs=[]).run_dir == out


# ------------------------------------------------------------------------------------------ the model, its processor
def test_backbone_checkpoint_initializes_a_preset(reference_dir):
    """An official ImageNet checkpoint in the preset's backbone, fresh heads for our classes."""
    checkpoint = reference_dir / "agent_pvt_aaaa_imagenet.pth"
    backbone = json.loads((reference_dir / "agent_pvt_aaaa_imagenet.json").read_text())["model"]["backbone"]
    overrides = {key: backbone[key] for key in ("embed_dims", "num_heads", "mlp_ratios", "depths")}
    model = load_model_to_train(
        "agent-pvt-t-fpn-ade20k",
        synthetic_id2label(5),
        overrides=json.dumps({**overrides, "fpn_hidden_size": 32, "decoder_hidden_size": 16}),
        backbone_checkpoint=str(checkpoint),
    )
    assert model.training and model.config.num_labels == 5
    state = model.state_dict()
    official = torch.load(checkpoint, weights_only=True)["model"]
    expected = expected_state_dict(official, model.config.model_type, skip=("head.weight", "head.bias"))
    assert len(expected) == len(official) - 2  # all but the classification head
    assert all(torch.equal(state[key], tensor) for key, tensor in expected.items())
    with pytest.raises(ScriptError, match="--backbone_checkpoint needs a preset"):
        load_model_to_train("some/model", None, backbone_checkpoint=str(checkpoint))
    with pytest.raises(ScriptError, match="--config_overrides must be a JSON object"):
        load_model_to_train("agent-pvt-t-fpn-ade20k", None, overrides="[1]")


def test_one_function_builds_every_image_processor(caplog):
    """make_image_processor: from the defaults, from a saved agent_hf processor (its settings, then the given ones)
    or from another model's processor (its mean, std and reduce-labels only, with a warning)."""
    saved = make_image_processor(False, (1024, 256), image_mean=[0.5, 0.5, 0.5], mode="slide", flip=True)
    processor = make_image_processor(scale=(256, 64), source=saved, model_config={"align_corners": True}, ratios=[2.0])
    assert processor.scale == [256, 64] and processor.image_mean == [0.5, 0.5, 0.5] and not processor.do_reduce_labels
    assert (processor.mode, processor.flip, list(processor.ratios), processor.align_corners) == (
        "slide",
        True,
        [2.0],
        True,
    )
    assert make_image_processor(True, source=saved).do_reduce_labels
    segformer = SegformerImageProcessor(image_mean=[0.1, 0.2, 0.3], do_reduce_labels=False)
    with caplog.at_level(logging.WARNING, logger="agent_hf"):
        converted = make_image_processor(source=segformer)
    assert "Replacing SegformerImageProcessor" in caplog.text
    assert converted.image_mean == [0.1, 0.2, 0.3] and not converted.do_reduce_labels
    assert converted.scale == make_image_processor().scale


# ----------------------------------------------------------------------------------------------------- provenance
def test_eval_results_are_added_to_a_trained_folder_only(tmp_path):
    trained = {"origin": "trained", "training": {"steps": 3}, "eval_results": None}
    config = {"model_type": "agent_swin", "auto_map": {"AutoImageProcessor": "x.Y"}, PROVENANCE_KEY: trained}
    (tmp_path / "config.json").write_text(json.dumps(config))
    metrics = {"eval_mIoU": 0.4567, "eval_mAcc": 0.5, "eval_aAcc": 0.75, "eval_runtime": 1.0}
    assert add_eval_results(tmp_path, metrics, "synthetic")
    written = json.loads((tmp_path / "config.json").read_text())
    results = {"dataset": "synthetic", "split": "validation", "mean_iou": 45.67, "mean_accuracy": 50.0}
    assert written == {**config, PROVENANCE_KEY: {**trained, "eval_results": {**results, "overall_accuracy": 75.0}}}
    before = (tmp_path / "config.json").read_bytes()
    assert not add_eval_results(tmp_path, {"eval_runtime": 1.0}, "synthetic")  # no mIoU
    config[PROVENANCE_KEY] = {"origin": "official-checkpoint"}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps(config))
    assert not add_eval_results(tmp_path / "other", metrics, "synthetic")
    assert (tmp_path / "config.json").read_bytes() == before
    assert json.loads((tmp_path / "other" / "config.json").read_text()) == config
