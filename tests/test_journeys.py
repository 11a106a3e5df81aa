"""The documented journeys end to end (issue 19): every way a model folder is written keeps its serving setup, data
folders are never served from another's cache, and no run reports silently wrong numbers.

The training runs are tiny (a 0.7M-parameter Agent-Swin, 2 steps on 8 generated images) and run in-process; the
serving checks load the written folders in a fresh interpreter that cannot import agent_hf (``test_serving``'s
``run_without_agent_hf``) and compare the pipeline's label maps with agent_hf's evaluation path.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from PIL import Image
from script_helpers import COMMON, SCRIPTS, TINY_MODEL, load_script, read_json, run_in_process, script_env
from test_serving import real_photos, run_without_agent_hf

# This file's own datasets cache, inside the session's temporary caches (conftest), never the user's: set before
# `datasets` is imported by the scripts' runs, and patched into `datasets.config` where another test file imported it
# first (see `own_datasets_cache`).
DATASETS_CACHE = tempfile.mkdtemp(prefix="journeys-datasets-", dir=os.environ["AGENT_HF_TEST_CACHES"])
os.environ["HF_DATASETS_CACHE"] = DATASETS_CACHE

import datasets  # noqa: E402

from agent_hf.data import make_synthetic_scene_parsing, save_as_image_folders  # noqa: E402
from agent_hf.models.segmentation_inference import multiscale_inputs, segment  # noqa: E402

# Small test scale, tiny slide windows: slide and multi-scale inference differ from whole-image inference.
EVAL_SCALE = (256, 64)
WINDOW = ["--eval_crop_size", "32", "--eval_stride", "21"]
TTA = {"ratios": [0.5, 1.0], "flip": True}


@pytest.fixture(autouse=True)
def own_datasets_cache(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", DATASETS_CACHE)
    monkeypatch.setenv("HF_DATASETS_CACHE", DATASETS_CACHE)


@pytest.fixture(scope="module")
def train_script():
    return load_script("run_semantic_segmentation")


def train(script, *args) -> tuple[int, str, str]:
    return run_in_process(script, [*TINY_MODEL, *COMMON, *WINDOW, *args])


@pytest.fixture(scope="module")
def runs(train_script, tmp_path_factory):
    """A --do_train --do_eval run with a checkpoint, a --do_train-only run, then --do_eval into that folder."""
    root = tmp_path_factory.mktemp("journeys")
    steps = ["--max_steps", "2", "--save_strategy", "steps", "--save_steps", "2"]
    answers = {
        "train_eval": train(train_script, *steps, "--do_train", "--do_eval", "--output_dir", root / "train_eval"),
        "train_only": train(train_script, *steps, "--do_train", "--output_dir", root / "train_only"),
    }
    answers["eval_into"] = run_in_process(
        train_script,
        ["--model_name_or_path", root / "train_only", *COMMON, "--do_eval", "--output_dir", root / "train_only"],
    )
    answers["eval_checkpoint"] = run_in_process(
        train_script,
        [
            "--model_name_or_path", root / "train_eval" / "checkpoint-2", *COMMON, "--do_eval",
            "--output_dir", root / "checkpoint_eval",
        ],
    )  # fmt: skip
    return root, answers


def assert_serving_setup(folder: Path) -> None:
    config = read_json(folder / "config.json")
    assert config["auto_map"]["AutoImageProcessor"] == "image_processing_agent.AgentImageProcessor", folder
    assert config["custom_pipelines"]["image-segmentation"]["impl"].startswith("pipeline_agent."), folder
    processor = read_json(folder / "preprocessor_config.json")
    assert processor["image_processor_type"] == "AgentImageProcessor" and processor["auto_map"], folder
    for name in ("pipeline_agent.py", "image_processing_agent.py", "segmentation_inference.py", "handler.py"):
        assert (folder / name).is_file(), (folder, name)


def test_every_training_folder_and_checkpoint_keeps_the_serving_setup(runs):
    """Issue point 1 (train+eval rewrote config.json without custom_pipelines / auto_map) and point 5 (checkpoints
    without image processor)."""
    root, answers = runs
    assert all(code == 0 for code, _, _ in answers.values()), {k: v[1] for k, v in answers.items()}
    for folder in ("train_eval", "train_eval/checkpoint-2", "train_only"):
        assert_serving_setup(root / folder)
    # The evaluation results of --do_train --do_eval are recorded too.
    provenance = read_json(root / "train_eval" / "config.json")["agent_hf_provenance"]
    assert provenance["eval_results"]


def test_eval_into_a_train_only_folder_adds_results_for_the_card(runs):
    """Issue point 5: --do_eval into a --do_train-only folder works (README: it adds its result files) and records its
    results in the folder's config.json, which the model card reports."""
    from agent_hf.hub import card_for_folder

    root, answers = runs
    folder = root / "train_only"
    assert answers["eval_into"][0] == 0, answers["eval_into"][1]
    assert (folder / "eval_per_class.json").is_file() and "eval_mIoU" in read_json(folder / "all_results.json")
    assert "train_runtime" in read_json(folder / "all_results.json")  # merged, not replaced
    assert read_json(folder / "config.json")["agent_hf_provenance"]["eval_results"]
    assert_serving_setup(folder)
    card = str(card_for_folder(folder, "someone/tiny"))
    assert "No results are recorded" not in card and "mIoU" in card
    # A second evaluation into the same folder needs --overwrite_output_dir (it replaces the first one's results).
    code, error, _ = run_in_process(
        load_script("run_semantic_segmentation"),
        ["--model_name_or_path", folder, *COMMON, "--do_eval", "--output_dir", folder],
    )
    assert code == 1 and "already holds evaluation results" in error
    config = read_json(folder / "config.json")
    config["agent_hf_provenance"].pop("eval_results")
    (folder / "config.json").write_text(json.dumps(config))
    code, error, _ = run_in_process(
        load_script("run_semantic_segmentation"),
        ["--model_name_or_path", folder, *COMMON, "--do_eval", "--overwrite_output_dir", "--output_dir", folder],
    )
    assert code == 0, error
    assert read_json(folder / "config.json")["agent_hf_provenance"]["eval_results"]  # recorded again
    assert_serving_setup(folder)


def test_a_checkpoint_evaluates_with_its_own_image_processor(runs):
    root, answers = runs
    assert answers["eval_checkpoint"][0] == 0, answers["eval_checkpoint"][1]
    report = read_json(root / "checkpoint_eval" / "eval_per_class.json")
    assert report["num_images"] == 5 and len(report["per_class"]) == 8


SERVE = """
import json, sys
import numpy as np
from PIL import Image
from transformers import pipeline

photo_path, folders, tta, out_path = json.loads(sys.argv[1])
photo = Image.open(photo_path)
out = {}
for name, folder in folders.items():
    segmenter = pipeline("image-segmentation", model=folder, trust_remote_code=True)
    assert type(segmenter).__name__ == "AgentImageSegmentationPipeline", (name, type(segmenter))
    label2id = {label: int(i) for i, label in segmenter.model.config.id2label.items()}
    for kind, settings in (("whole", {}), ("slide", {"mode": "slide"}), ("tta", tta)):
        labels = np.full((photo.height, photo.width), -1)
        for segment in segmenter(photo, **settings):
            labels[np.asarray(segment["mask"]) > 0] = label2id[segment["label"]]
        out[f"{name}/{kind}"] = labels
np.savez(out_path, **out)
"""


@torch.no_grad()
def evaluation_path(folder: Path, photo: Image.Image) -> dict[str, np.ndarray]:
    """agent_hf's evaluation of ``photo`` by the folder's model, whole / slide (the run's windows) / TTA."""
    from transformers import AutoModelForSemanticSegmentation

    model = AutoModelForSemanticSegmentation.from_pretrained(folder).eval()
    size = (photo.height, photo.width)
    window = dict(crop_size=(32, 32), stride=(21, 21))
    return {
        "whole": segment(model, multiscale_inputs(photo, scale=EVAL_SCALE), size)[0].numpy(),
        "slide": segment(model, multiscale_inputs(photo, scale=EVAL_SCALE), size, mode="slide", **window)[0].numpy(),
        "tta": segment(model, multiscale_inputs(photo, scale=EVAL_SCALE, ratios=TTA["ratios"]), size, flip=True)[
            0
        ].numpy(),
    }


def test_written_folders_serve_slide_and_tta_where_agent_hf_is_not_installed(runs, tmp_path):
    """Each kind of folder the training script writes (train+eval, checkpoint, evaluated train-only folder) and an
    upgraded one: the pipeline, loaded without agent_hf, is agent_hf's (slide and TTA give the evaluation path's
    labels, which differ from whole-image inference)."""
    from agent_hf.saving import upgrade_model_folder

    root, _ = runs
    upgraded = tmp_path / "upgraded"
    upgraded.mkdir()
    for name in ("config.json", "model.safetensors"):
        (upgraded / name).write_bytes((root / "train_eval" / name).read_bytes())
    # An earlier version's folder: the model code only, no processor or pipeline; the upgrade adds them.
    serving_code = {"image_processing_agent.py", "image_ops.py", "segmentation_inference.py", "pipeline_agent.py"}
    for path in (root / "train_eval").glob("*.py"):
        if path.name not in serving_code | {"handler.py"}:
            (upgraded / path.name).write_bytes(path.read_bytes())
    config = read_json(upgraded / "config.json")
    config.pop("custom_pipelines")
    config["auto_map"].pop("AutoImageProcessor")
    (upgraded / "config.json").write_text(json.dumps(config))
    upgrade_model_folder(upgraded)
    (upgraded / "preprocessor_config.json").write_text(
        (root / "train_eval" / "preprocessor_config.json").read_text()
    )  # the run's test scale and windows, as the reference below

    folders = {
        "train_eval": root / "train_eval",
        "checkpoint": root / "train_eval" / "checkpoint-2",
        "evaluated": root / "train_only",
        "upgraded": upgraded,
    }
    photo = real_photos()["chelsea"]
    photo.save(tmp_path / "chelsea.png")
    arguments = json.dumps([str(tmp_path / "chelsea.png"), {k: str(v) for k, v in folders.items()}, TTA,
                            str(tmp_path / "served.npz")])  # fmt: skip
    run_without_agent_hf(f"sys.argv[1:] = [{arguments!r}]\n" + SERVE, tmp_path)
    served = dict(np.load(tmp_path / "served.npz"))
    for name, folder in folders.items():
        expected = evaluation_path(folder, Image.open(tmp_path / "chelsea.png"))
        for kind in ("whole", "slide", "tta"):
            np.testing.assert_array_equal(served[f"{name}/{kind}"], expected[kind], err_msg=f"{name}/{kind}")
        assert (served[f"{name}/slide"] != served[f"{name}/whole"]).any(), name
        assert (served[f"{name}/tta"] != served[f"{name}/whole"]).any(), name


# ----------------------------------------------------------------------------------------------- data identity
def test_two_prepared_folders_of_the_same_name_never_share_a_cache_entry(train_script, tmp_path):
    """Issue point 2: datasets keys a local folder with README ``configs`` by the README; the script loads each
    folder under a cache named by its files."""
    prepare = load_script("prepare_ade20k")
    sizes = {"a": (6, 4), "b": (3, 2)}
    for name, (train_count, validation_count) in sizes.items():
        scenes = make_synthetic_scene_parsing(
            train_count, validation_count, num_classes=5, min_size=48, max_size=64, seed=train_count
        )
        ade = save_as_image_folders(scenes, tmp_path / name / "ADE")
        assert run_in_process(prepare, ["--ade_dir", ade, "--output_dir", tmp_path / name / "ade20k"])[0] == 0
    loaded = {}
    for name in sizes:
        args = train_script.parse_arguments(
            [*TINY_MODEL, "--dataset_name", str(tmp_path / name / "ade20k"), "--do_eval", "--output_dir", "unused"]
        )
        data = train_script.load_data(args[1], args[0], seed=0)
        loaded[name] = tuple(len(data.splits[split]) for split in ("train", "validation"))
    assert loaded == sizes


# ---------------------------------------------------------------------------------------- no silent wrong numbers
def test_evaluating_a_model_whose_classes_do_not_fit_the_data_stops(runs, train_script, tmp_path):
    """Issue point 3: an 8-class model on 5-class data is refused in one line; --ignore_mismatched_sizes allows a new
    head, with a warning that says what the numbers mean."""
    root, _ = runs
    evaluate = ["--model_name_or_path", root / "train_eval", *COMMON, "--synthetic_num_labels", "5", "--do_eval"]
    code, error, _ = run_in_process(train_script, [*evaluate, "--output_dir", tmp_path / "refused"])
    assert code == 1 and error.count("\n") == 1, error
    assert "8 classes, the dataset 5" in error and "--ignore_mismatched_sizes" in error
    assert not (tmp_path / "refused" / "eval_results.json").exists()
    code, error, output = run_in_process(
        train_script, [*evaluate, "--ignore_mismatched_sizes", "--output_dir", tmp_path / "allowed"]
    )
    assert code == 0, error
    assert "random weights" in output and "measure nothing" in output


def test_a_warm_up_longer_than_the_run_is_scaled_or_refused_and_the_banner_names_overrides():
    """Issue point 4."""
    from transformers import TrainingArguments

    from agent_hf.training import recipe_for

    paper = recipe_for("agent-swin-t-upernet-ade20k")
    assert (paper.warmup_steps, paper.max_steps) == (1500, 160_000)
    args = TrainingArguments("unused", max_steps=1000, learning_rate=1e-4, report_to="none")
    short = paper.with_overrides(args, {"max_steps", "learning_rate"})
    assert short.warmup_steps == 9  # 1500 / 160000 of 1000 steps
    banner = short.describe()
    assert "overridden: " in banner
    for value in ("max_steps=1000", "learning_rate=0.0001", "warmup_steps=9"):
        assert value in banner, banner
    args = TrainingArguments("unused", max_steps=4, warmup_steps=10, report_to="none")
    with pytest.raises(ValueError, match=r"warmup_steps=10 is not shorter than the run \(max_steps=4\)"):
        paper.with_overrides(args, {"max_steps", "warmup_steps"})


def test_the_scripts_warm_up_and_banner(train_script, tmp_path):
    """A 4-step paper-recipe run: the warm-up is scaled (the learning rate reaches the nominal one), the banner lists
    every override; an explicit warm-up longer than the run is a one-line error before training."""
    args = [a for a in COMMON if a not in ("--warmup_steps", "0")]
    assert len(args) == len(COMMON) - 2
    code, error, output = run_in_process(
        train_script, [*TINY_MODEL, *args, "--max_steps", "4", "--do_train", "--output_dir", tmp_path / "run"]
    )
    assert code == 0, error
    assert "warm-up of 1500 of its 160000 iterations is scaled to 0" in output
    assert re.search(r"overridden: .*learning_rate=0\.001.*max_steps=4", output), output
    rates = [
        e["learning_rate"] for e in read_json(tmp_path / "run" / "trainer_state.json")["log_history"] if "loss" in e
    ]
    assert rates[0] == pytest.approx(1e-3)
    code, error, _ = run_in_process(
        train_script,
        [*TINY_MODEL, *args, "--max_steps", "4", "--warmup_steps", "8", "--do_train", "--output_dir", tmp_path / "x"],
    )
    assert code == 1 and "warmup_steps=8 is not shorter than the run (max_steps=4)" in error and error.count("\n") == 1


# ------------------------------------------------------------------------------------------------ smaller points
def test_benchmark_writes_outside_the_committed_results_by_default():
    """Issue point 6."""
    benchmark = load_script("benchmark")
    default = Path(benchmark.parse_args([]).output_dir).resolve()
    committed = (REPO_ROOT / "docs" / "benchmarks").resolve()
    assert default != committed and committed not in default.parents
    assert Path(benchmark.parse_args(["--output_dir", str(committed)]).output_dir).resolve() == committed


def test_the_models_page_first_python_snippet_runs_as_written(tmp_path):
    """Issue point 7: the first snippet of docs/models.md (a full-size preset; it was the README's) runs, with what it
    defines."""
    page = (REPO_ROOT / "docs" / "models.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    namespace: dict = {}
    exec(compile(snippet, "docs/models.md", "exec"), namespace)  # noqa: S102 (the project's own docs)
    assert namespace["out"].logits.shape[1] == 150 and torch.isfinite(namespace["out"].loss)
    assert len(namespace["features"]) == 4


def test_a_mistyped_preset_is_answered_at_once_with_a_suggestion(train_script, tmp_path):
    """Issue point 8: no Hub round-trip (the test's Hub is offline anyway: the message must not be the Hub's)."""
    start = time.perf_counter()
    code, error, _ = run_in_process(
        train_script,
        ["--model_name_or_path", "agent-swin-t-upernet-ade2k", "--do_train", "--output_dir", tmp_path / "x"],
    )
    assert time.perf_counter() - start < 2
    assert code == 1 and error.count("\n") == 1, error
    assert "did you mean 'agent-swin-t-upernet-ade20k'" in error and "agent-pvt-l-fpn-ade20k" in error
    assert not (tmp_path / "x").exists()


def test_hub_check_works_from_any_directory(tmp_path):
    """Issue point 10: ``python -m agent_hf.hub --check`` finds the checkout's cards from another directory."""
    check = subprocess.run(
        [sys.executable, "-m", "agent_hf.hub", "--check"],
        env=script_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr


# ---------------------------------------------------------------------------------------------------------- noise
def test_an_evaluation_says_one_line_per_phase_and_configs_only_with_verbose(runs, tmp_path):
    """Issue point 10: an evaluation printed ~527 lines (config dumps, the Trainer's settings); now a few lines with
    the numbers. Real command lines: transformers' handler writes to the process's stderr."""
    from script_helpers import run_train_script

    root, _ = runs
    evaluate = ["--model_name_or_path", root / "train_eval", *COMMON, "--do_eval"]
    quiet = run_train_script([*evaluate, "--output_dir", tmp_path / "quiet"])
    lines = [line for line in (quiet.stdout + quiet.stderr).splitlines() if line.strip()]
    assert len(lines) <= 25, "\n".join(lines)
    assert sum("Evaluated 5 images" in line and "mIoU" in line for line in lines) == 1
    assert not any("model_type" in line for line in lines)
    verbose = run_train_script([*evaluate, "--verbose", "--output_dir", tmp_path / "verbose"])
    assert '"model_type": "agent_swin"' in verbose.stdout + verbose.stderr  # the config, at transformers' info level


def test_an_evaluation_on_a_prepared_folder_says_nothing_of_datasets_by_default(tmp_path):
    """Issue point 10: datasets' own messages ("Generating train split" bars, for every split) came on top of the
    script's "Data: ..." line; they are left to --verbose."""
    from script_helpers import run_train_script

    scenes = make_synthetic_scene_parsing(4, 3, num_classes=5, min_size=48, max_size=64, seed=1)
    ade = save_as_image_folders(scenes, tmp_path / "ADE")
    assert run_in_process(load_script("prepare_ade20k"), ["--ade_dir", ade, "--output_dir", tmp_path / "pq"])[0] == 0
    evaluate = [*TINY_MODEL, *COMMON, "--dataset_name", tmp_path / "pq", "--do_eval", "--output_dir", tmp_path / "o"]
    quiet = run_train_script(evaluate, env={"HF_DATASETS_CACHE": str(tmp_path / "cache")})
    lines = [line for line in (quiet.stdout + quiet.stderr).splitlines() if line.strip()]
    assert not any("split" in line and "examples" in line for line in lines), "\n".join(lines)
    assert (
        sum(
            line.endswith(f"Data: {tmp_path / 'pq'}, splits ['train', 'validation'], reduce_labels=True")
            for line in lines
        )
        == 1
    ), lines
    assert sum("Evaluated 3 images" in line for line in lines) == 1 and len(lines) <= 6, "\n".join(lines)


@pytest.mark.parametrize("family", ["swin", "pvt"])
def test_every_parameter_reaches_the_loss_with_the_weights_strides(family):
    """DDP runs without find_unused_parameters, and gets no "grad strides do not match bucket view strides" warning:
    every parameter gets a gradient laid out like the parameter (the depth-wise convolutions read a channels-last
    map, whose weight gradient came back channels-last)."""
    from conftest import tiny_pvt_config, tiny_swin_config
    from transformers import AutoModelForSemanticSegmentation

    config = (tiny_swin_config if family == "swin" else tiny_pvt_config)()
    torch.manual_seed(0)
    model = AutoModelForSemanticSegmentation.from_config(config).train()
    model(torch.randn(2, 3, 64, 64), labels=torch.randint(0, 5, (2, 64, 64))).loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} is unused"
        assert parameter.grad.stride() == parameter.stride(), (name, parameter.grad.stride(), parameter.stride())


def test_the_trainer_tells_ddp_that_every_parameter_is_used(tmp_path):
    from conftest import tiny_swin_config
    from transformers import AutoModelForSemanticSegmentation, TrainingArguments

    from agent_hf.training import SegmentationTrainer, recipe_for

    model = AutoModelForSemanticSegmentation.from_config(tiny_swin_config())
    for given, expected in ((None, False), (True, True)):
        args = TrainingArguments(tmp_path, ddp_find_unused_parameters=given, report_to="none", use_cpu=True)
        SegmentationTrainer(model, args, recipe=recipe_for(model.config))
        assert args.ddp_find_unused_parameters is expected


# ------------------------------------------------------------------------------------------ install and commands
def test_console_commands_run_the_scripts():
    """Issue point 9: ``pip install -e .`` gives commands; each entry of pyproject's [project.scripts] is an importable
    function, and an installed command runs its script (errors in one line, --debug for the traceback)."""
    import importlib

    from agent_hf.commands import COMMANDS, script_path

    section = (REPO_ROOT / "pyproject.toml").read_text().split("[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    entries = dict(re.findall(r'^([\w-]+) = "([\w.:]+)"$', section, re.M))
    assert set(entries) == set(COMMANDS) and {"agent-hf-train", "agent-hf-evaluate", "agent-hf-convert"} <= set(
        entries
    )
    for command, target in entries.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target
        assert script_path(command).is_file()

    upgrade = [Path(sys.executable).parent / "agent-hf-upgrade", "no-such-folder"]
    plain = subprocess.run(upgrade, env=script_env(), capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1 and plain.stderr.startswith("error: no-such-folder"), plain.stderr
    debug = subprocess.run([*upgrade, "--debug"], env=script_env(), capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr


def test_argument_errors_are_answered_before_torch_is_imported(tmp_path):
    """Issue point 9: output-folder errors came after 5-8 s of imports. Each script (and a console command) answers a
    bad output folder, a mistyped preset or a missing input in one line without importing torch or transformers
    (``python -X importtime`` lists every module imported)."""
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "eval_results.json").write_text("{}")
    preset = ["--model_name_or_path", "agent-swin-t-upernet-ade20k"]
    checkpoint = ["--checkpoint", taken / "notes.txt"]
    out = ["--output_dir", tmp_path / "o"]
    cases = {
        "run_semantic_segmentation": [
            ([*preset, "--do_train", "--output_dir", taken], f"output folder {taken} is not empty"),
            ([*preset, "--do_eval", "--output_dir", tmp_path / "results"], "already holds evaluation results"),
            ([*preset, "--do_train", "--train_dir", tmp_path / "no-data", *out], "--train_dir: no folder"),
            (["--model_name_or_path", "agent-swin-t-upernet", "--do_eval", *out], "did you mean"),
        ],
        "convert_official_checkpoint": [
            (["--checkpoint", tmp_path / "x.pth", "--preset", "agent-pvt-t-fpn-ade20k", *out], "no checkpoint file"),
            ([*checkpoint, "--preset", "agent-pvt-t-fpn", *out], "did you mean"),
            ([*checkpoint, "--preset", "agent-pvt-t-fpn-ade20k", "--output_dir", taken, "--overwrite"], "holds this"),
        ],
        "prepare_ade20k": [(["--ade_dir", tmp_path / "no-ade", *out], "--ade_dir: no folder")],
        "demo": [(["--output_dir", taken], f"output folder {taken} is not empty")],
        "benchmark": [(["--agreement_model", tmp_path / "no-model"], "--agreement_model: no folder")],
        "push_to_hub": [(["--model_dir", taken, "--repo_id", "a/b", "--preset", "agent-pvt-t"], "did you mean")],
    }  # fmt: skip
    commands = [[sys.executable, "-X", "importtime", SCRIPTS / f"{name}.py"] for name in cases]
    console = [sys.executable, "-X", "importtime", Path(sys.executable).parent / "agent-hf-train"]
    for command, (argv, expected) in [
        *((command, case) for command, name in zip(commands, cases) for case in cases[name]),
        (console, cases["run_semantic_segmentation"][0]),
    ]:
        result = subprocess.run(
            [str(part) for part in (*command, *argv)], env=script_env(), capture_output=True, text=True, timeout=120
        )
        imported = [line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if "|" in line]
        said = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
        assert result.returncode == 1 and len(said) == 1 and said[0].startswith("error: "), (command, said)
        assert expected in said[0], (expected, said)
        assert not {"torch", "transformers", "datasets"} & set(imported), (command, argv)
    assert (taken / "notes.txt").read_text() == "keep me" and not (tmp_path / "o").exists()


def test_console_commands_work_from_a_wheel_without_the_checkout(tmp_path):
    """The commands ran only the checkout's scripts/: a wheel ships them (agent_hf/scripts/), its entry points name
    every command, and a command run from the unpacked wheel (no checkout beside it) runs its script."""
    import shutil
    import zipfile

    from agent_hf.commands import COMMANDS

    source = tmp_path / "checkout"  # a copy: a stale build/ of the checkout would hide what the build misses
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("src", "scripts"):
        shutil.copytree(REPO_ROOT / folder, source / folder, ignore=skip)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", ".", "-w", tmp_path],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("agent_hf-*.whl")
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
        entry_points = next(name for name in archive.namelist() if name.endswith(".dist-info/entry_points.txt"))
        commands = dict(re.findall(r"^([\w-]+) = ([\w.:]+)$", archive.read(entry_points).decode(), re.M))
    assert set(commands) == set(COMMANDS)
    for script in set(COMMANDS.values()):
        assert (unpacked / "agent_hf" / "scripts" / f"{script}.py").is_file(), script
    assert (unpacked / "agent_hf" / "scripts" / "run_semantic_segmentation_help.txt").is_file()

    run = (
        "import sys, agent_hf.commands as c; sys.argv = ['agent-hf-upgrade', 'no-such-folder']; "
        "print(c.script_path('agent-hf-upgrade'), flush=True); c.upgrade()"
    )
    env = {**script_env(), "PYTHONPATH": str(unpacked)}  # before the editable install of this checkout
    result = subprocess.run([sys.executable, "-c", run], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.stdout.strip() == str(unpacked / "agent_hf" / "scripts" / "upgrade_model_folder.py"), result
    assert result.returncode == 1 and result.stderr.startswith("error: no-such-folder"), result.stderr


def test_an_official_checkpoint_load_says_in_one_line_what_it_kept_and_dropped(caplog):
    """Issue point 10: --backbone_checkpoint (load_official_checkpoint) said nothing about what it loaded."""
    import logging

    from test_parity import REFERENCE_DIR, reference_spec

    from agent_hf import config_from_official, load_official_checkpoint

    name = "agent_swin_aaab_imagenet"
    with caplog.at_level(logging.INFO, logger="agent_hf.official"):
        load_official_checkpoint(REFERENCE_DIR / f"{name}.pth", config_from_official(reference_spec(name)["model"]))
    [record] = [r for r in caplog.records if r.name == "agent_hf.official"]
    message = record.getMessage()
    assert "\n" not in message and f"{name}.pth (imagenet checkpoint)" in message
    assert re.search(r"Loaded \d+ of the \d+ tensors", message), message
    assert re.search(r"dropped \d+ \(head, norm, relative_position_index\)", message), message
    assert re.search(
        r"\d+ of the model's start from their initialization \(auxiliary_head, backbone, decode_head\)", message
    )


# ------------------------------------------------------------------------------------------- push, load by repo id
LOAD_BY_REPO_ID = """
import io, json, sys, warnings
import numpy as np
from PIL import Image
from transformers import pipeline

repo_id, photo_path, tta, out_path = json.loads(sys.argv[1])
photo = Image.open(photo_path)
segmenter = pipeline("image-segmentation", model=repo_id, trust_remote_code=True)
assert type(segmenter).__name__ == "AgentImageSegmentationPipeline", type(segmenter)
label2id = {label: int(i) for i, label in segmenter.model.config.id2label.items()}
out = {}
for kind, settings in (("whole", {}), ("slide", {"mode": "slide"}), ("tta", tta)):
    labels = np.full((photo.height, photo.width), -1)
    for segment in segmenter(photo, **settings):
        labels[np.asarray(segment["mask"]) > 0] = label2id[segment["label"]]
    out[kind] = labels
np.savez(out_path, **out)
"""


def test_train_eval_push_and_serve_by_repo_id_where_agent_hf_is_not_installed(runs, tmp_path, monkeypatch):
    """The README's main journey: train+eval -> push (agent_hf.hub, card last) -> pipeline by repo id, without
    agent_hf, with slide and TTA equal to the evaluation path."""
    from helpers import BLOCK_AGENT_HF
    from hub_server import LocalHubServer
    from huggingface_hub import constants

    from agent_hf.hub import card_for_folder, push_folder_to_hub

    root, _ = runs
    folder, repo_id, token = root / "train_eval", "someone/tiny-agent-swin", "hf_journey_token"
    photo = real_photos()["chelsea"]
    photo.save(tmp_path / "chelsea.png")
    with LocalHubServer(tokens={token}) as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.delenv("HF_HUB_OFFLINE")
        push_folder_to_hub(folder, repo_id, token=token, card=card_for_folder(folder, repo_id))
        remote = hub.files(repo_id)
        assert json.loads(remote["config.json"])["custom_pipelines"]
        assert "No results are recorded" not in remote["README.md"].decode()
        arguments = json.dumps([repo_id, str(tmp_path / "chelsea.png"), TTA, str(tmp_path / "served.npz")])
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.endpoint,
            "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(tmp_path / "hf_home"),
            "HF_MODULES_CACHE": str(tmp_path / "modules"),
            "HF_TOKEN": token,
        }
        code = BLOCK_AGENT_HF + f"sys.argv[1:] = [{arguments!r}]\n" + LOAD_BY_REPO_ID
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    # transformers warned once per module file (11 times); the configuration's two files are fetched before any of
    # this model's code runs, the rest is not repeated.
    assert result.stderr.count("A new version of the following files was downloaded") <= 2, result.stderr
    served = dict(np.load(tmp_path / "served.npz"))
    expected = evaluation_path(folder, Image.open(tmp_path / "chelsea.png"))
    for kind in ("whole", "slide", "tta"):
        np.testing.assert_array_equal(served[kind], expected[kind], err_msg=kind)
    assert (served["slide"] != served["whole"]).any() and (served["tta"] != served["whole"]).any()


def test_help_answers_at_once_with_grouped_options(train_script):
    """Issue point 9: --help took 10.7 s and printed 780 lines; it now prints the script's options by group and the
    most used TrainingArguments ones, before any heavy import."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "run_semantic_segmentation.py"), "--do_train", "--help"],
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.perf_counter() - start < 2 and result.returncode == 0
    for group in ("\nmodel:", "\ndata, augmentation and evaluation:", "\noutput folder and logs:", "\ntraining ("):
        assert group in result.stdout
    assert 50 < len(result.stdout.splitlines()) < 250 and "--help_all" in result.stdout
    start = time.perf_counter()
    command = subprocess.run(
        [Path(sys.executable).parent / "agent-hf-train", "--help"], env=script_env(), capture_output=True, text=True
    )
    assert time.perf_counter() - start < 2 and command.stdout == result.stdout  # the console command, as fast
    assert result.stdout == train_script.short_help(), (
        "scripts/run_semantic_segmentation_help.txt is out of date: run "
        "`python scripts/run_semantic_segmentation.py --write_help`"
    )


def test_converted_and_trained_folders_carry_the_same_serving_setup(runs, tmp_path):
    """convert_official_checkpoint.py (and demo.py, through the same save_model_folder) write what the training
    script writes: the same custom_pipelines and auto_map entries, the same serving files."""
    from test_parity import REFERENCE_DIR

    root, _ = runs
    name = "agent_swin_aaab_upernet"
    code, error, _ = run_in_process(
        load_script("convert_official_checkpoint"),
        [
            "--checkpoint", REFERENCE_DIR / f"{name}.weights.safetensors",
            "--official_config", REFERENCE_DIR / f"{name}.json",
            "--output_dir", tmp_path / "converted",
        ],
    )  # fmt: skip
    assert code == 0, error
    assert_serving_setup(tmp_path / "converted")
    converted, trained = (
        read_json(folder / "config.json") for folder in (tmp_path / "converted", root / "train_eval")
    )
    assert converted["custom_pipelines"] == trained["custom_pipelines"]
    assert converted["auto_map"] == trained["auto_map"]
    served = {path.name for path in (tmp_path / "converted").iterdir() if path.suffix in (".py", ".txt")}
    assert served == {path.name for path in (root / "train_eval").iterdir() if path.suffix in (".py", ".txt")}
