"""Provenance decides the model card: converted official weights of a preset get the paper's card; a trained,
initialized or modified model gets a card of its own (its architecture, its parameter count, its measured results);
a folder without provenance (agent-hf 0.1.0) gets no paper numbers unless the preset is named and matches.

Also: `import agent_hf` registers the Auto classes and loads neither datasets nor gradio; with
`AGENT_HF_LAZY_IMPORT=1` (the hub CLI) it loads no torch until a model name is used.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file
from script_helpers import load_script, run_in_process
from transformers import AutoModelForSemanticSegmentation

import agent_hf
from agent_hf.hub import card_for_folder, count_parameters, folder_origin, weights_digest_of_folder
from agent_hf.provenance import read_provenance, record_provenance, trained_provenance, weights_digest
from agent_hf.saving import save_model_folder

try:  # tests/ as a package or as a plain folder on sys.path
    from .conftest import TINY_SWIN, tiny_pvt_config, tiny_swin_config
    from .hub_server import LocalHubServer
except ImportError:
    from conftest import TINY_SWIN, tiny_pvt_config, tiny_swin_config
    from hub_server import LocalHubServer

ROOT = Path(__file__).resolve().parents[1]
PRESET = "agent-pvt-t-fpn-ade20k"  # the smallest preset (15M parameters)
# The official README's numbers for it, typed in independently of agent_hf.model_zoo.
PAPER_MIOU, PAPER_MACC, PAPER_PARAMETERS = 40.18, 51.76, 15_323_998
SWIN_T_PAPER = ("46.68", "60,556,472")


def official_checkpoint(model, path: Path, imagenet: bool = False) -> Path:
    """An official-format checkpoint of `model`'s weights: mmseg keys (``backbone.`` + the official backbone names)
    under ``state_dict``, or for ``imagenet`` the bare backbone names under ``model``."""
    prefix = f"backbone.{model.config.model_type}."
    state_dict = {
        key.replace(prefix, "" if imagenet else "backbone."): value for key, value in model.state_dict().items()
    }
    if imagenet:
        state_dict = {key: value for key, value in state_dict.items() if not key.startswith(("decode_head.", "neck."))}
    torch.save({"model" if imagenet else "state_dict": state_dict}, path)
    return path


def read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def without_provenance(folder: Path, destination: Path) -> Path:
    """A copy of `folder` as agent-hf 0.1.0 wrote it: no provenance record."""
    shutil.copytree(folder, destination)
    config = read_config(destination)
    del config["agent_hf_provenance"]
    (destination / "config.json").write_text(json.dumps(config, indent=2))
    return destination


def paper_numbers(card: ModelCard) -> dict[str, float]:
    return {
        r.metric_type: r.metric_value for r in card.data.eval_results or [] if r.source_name.endswith("(reported)")
    }


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The preset's weights in the official format, converted as scripts/convert_official_checkpoint.py does."""
    tmp = tmp_path_factory.mktemp("converted")
    torch.manual_seed(0)
    reference = AutoModelForSemanticSegmentation.from_config(agent_hf.preset_config(PRESET))
    checkpoint = official_checkpoint(reference, tmp / "fpn_agent_pvt_t_12-16-28-28.pth")
    model = agent_hf.load_official_checkpoint(checkpoint, PRESET)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    return Path(save_model_folder(model, tmp / "folder"))


# --------------------------------------------------------------------------------------------- official weights
def test_converted_official_checkpoint_gets_the_paper_card(converted: Path) -> None:
    record = read_config(converted)["agent_hf_provenance"]
    assert record["origin"] == "official-checkpoint" and record["checkpoint_kind"] == "segmentation"
    assert record["checkpoint"] == "fpn_agent_pvt_t_12-16-28-28.pth"  # the file name, not the local path
    assert record["preset"] == PRESET and record["architecture_matches_preset"] is True
    assert record["num_parameters"] == PAPER_PARAMETERS == count_parameters(converted)

    card = ModelCard(str(card_for_folder(converted, "someone/model")))
    assert paper_numbers(card) == {"mean_iou": PAPER_MIOU, "mean_accuracy": PAPER_MACC}
    assert (
        f"{PAPER_PARAMETERS:,}" in card.text and "converted from the official mmsegmentation checkpoint" in card.text
    )
    assert str(card_for_folder(converted, "someone/model", preset=PRESET)) == str(card)  # naming it changes nothing
    with pytest.raises(ValueError, match="holds the official weights of agent-pvt-t-fpn-ade20k"):
        card_for_folder(converted, "someone/model", preset="agent-pvt-s-fpn-ade20k")


def test_weights_changed_after_conversion_lose_the_paper_card(converted: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(converted, tmp_path / "fine-tuned")
    weights = load_file(folder / "model.safetensors")
    name = next(key for key in weights if key.endswith("classifier.weight") or key.endswith("conv_seg.weight"))
    weights[name] = weights[name] + 0.01  # e.g. fine-tuned by other code, config.json untouched
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})

    assert folder_origin(folder).status == "modified"
    card = card_for_folder(folder, "someone/model")
    assert card.data.eval_results is None and str(PAPER_MIOU) not in card.text
    assert (
        "differ from the recorded ones" in card.text
        and f"{PAPER_PARAMETERS:,} (counted from the weights)" in card.text
    )
    with pytest.raises(ValueError, match="weights changed after their provenance record"):
        card_for_folder(folder, "someone/model", preset=PRESET)


def test_folder_of_version_0_1_0_needs_the_preset_named(converted: Path, tmp_path: Path) -> None:
    old = without_provenance(converted, tmp_path / "old")
    card = card_for_folder(old, "someone/model")
    assert card.data.eval_results is None and str(PAPER_MIOU) not in card.text
    assert "no provenance record" in card.text and "same as `agent-pvt-t-fpn-ade20k`" in card.text

    named = card_for_folder(old, "someone/model", preset=PRESET)  # the publisher vouches, the architecture matches
    assert paper_numbers(named) == {"mean_iou": PAPER_MIOU, "mean_accuracy": PAPER_MACC}
    with pytest.raises(ValueError, match=r"does not have the architecture of agent-pvt-s-fpn-ade20k.*depths"):
        card_for_folder(old, "someone/model", preset="agent-pvt-s-fpn-ade20k")


def test_official_checkpoints_of_other_architectures_get_their_own_card(tmp_path: Path) -> None:
    # A segmentation checkpoint of a non-preset architecture: official weights, but no paper numbers apply.
    source = AutoModelForSemanticSegmentation.from_config(tiny_pvt_config())
    model = agent_hf.load_official_checkpoint(official_checkpoint(source, tmp_path / "small.pth"), tiny_pvt_config())
    folder = Path(save_model_folder(model, tmp_path / "small"))
    assert folder_origin(folder).status == "official" and folder_origin(folder).preset is None
    card = card_for_folder(folder, "someone/small")
    assert card.data.eval_results is None and "`small.pth`" in card.text and "not one of the seven" in card.text
    assert card.data.license == "other"  # derived from the authors' weights

    # An ImageNet checkpoint: the backbone is official, the heads are fresh: "initialized", not trained.
    imagenet = official_checkpoint(source, tmp_path / "agent_pvt_tiny_imagenet.pth", imagenet=True)
    model = agent_hf.load_official_checkpoint(imagenet, tiny_pvt_config())
    record = model.config.agent_hf_provenance
    assert (record["origin"], record["checkpoint_kind"]) == ("initialized", "imagenet")
    folder = Path(save_model_folder(model, tmp_path / "imagenet"))
    card = card_for_folder(folder, "someone/imagenet")
    assert card.data.eval_results is None and "official ImageNet checkpoint `agent_pvt_tiny_imagenet.pth`" in card.text
    assert "not trained for segmentation" in card.text


# ----------------------------------------------------------------------------------------------- trained models
def test_model_trained_from_a_preset_is_published_with_its_own_card(tmp_path: Path) -> None:
    """Issue #11, item 5: a tiny model trained 2 steps from a preset name (with --config_overrides) and pushed
    without --card was published with the paper's card (mIoU 46.68, 60,556,472 parameters)."""
    out = tmp_path / "run"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }
    # The training in-process (the script's command line runs in test_training_runs.py and test_launch.py).
    code, stderr, _ = run_in_process(
        load_script("run_semantic_segmentation"),
        ["--model_name_or_path", "agent-swin-t-upernet-ade20k", "--config_overrides", json.dumps(TINY_SWIN),
         "--synthetic_train_samples", "4", "--synthetic_validation_samples", "3",
         "--crop_size", "64", "--scale", "256", "64", "--eval_scale", "256", "64",
         "--per_device_train_batch_size", "2", "--max_steps", "2", "--save_strategy", "no",
         "--dataloader_pin_memory", "False", "--disable_tqdm", "True",
         "--do_train", "--do_eval", "--output_dir", str(out)],
    )  # fmt: skip
    assert code == 0, stderr
    results = json.loads((out / "all_results.json").read_text())
    num_parameters = sum(p.numel() for p in AutoModelForSemanticSegmentation.from_pretrained(out).parameters())

    record = read_config(out)["agent_hf_provenance"]
    assert record["origin"] == "trained" and record["preset"] == "agent-swin-t-upernet-ade20k"
    assert record["architecture_matches_preset"] is False and record["training"]["steps"] == 2
    assert record["eval_results"]["mean_iou"] == round(100 * results["eval_mIoU"], 2)

    with LocalHubServer(tokens={"hf_test"}) as hub:
        push_env = {**env, "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "home")}
        push = [
            sys.executable,
            str(ROOT / "scripts" / "push_to_hub.py"),
            "--model_dir",
            str(out),
            "--token",
            "hf_test",
        ]
        refused = subprocess.run([*push, "--repo_id", "me/tiny", "--preset", "agent-swin-t-upernet-ade20k"],
                                 env=push_env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert refused.returncode == 1 and "holds a model trained by agent-hf" in refused.stderr
        assert hub.requests == []
        pushed = subprocess.run(
            [*push, "--repo_id", "me/tiny"], env=push_env, capture_output=True, text=True, timeout=120
        )
        assert pushed.returncode == 0, pushed.stderr
        card = ModelCard(hub.files("me/tiny")["README.md"].decode())

    assert SWIN_T_PAPER[0] not in card.text and SWIN_T_PAPER[1] not in card.text and not paper_numbers(card)
    assert f"| Parameters | {num_parameters:,} (counted from the weights) |" in card.text
    measured = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert measured["mean_iou"] == round(100 * results["eval_mIoU"], 2)
    assert measured["mean_accuracy"] == round(100 * results["eval_mAcc"], 2)
    assert {r.source_name for r in card.data.eval_results} == {"agent-hf (measured)"}
    assert "width 16, depths 2-2-2-2" in card.text and "embed_dim 16 (preset: 96)" in card.text
    assert "for 2 steps on `synthetic`" in card.text and "| Optimizer steps | 2 |" in card.text


def test_training_record_keeps_where_it_started(tmp_path: Path) -> None:
    source = AutoModelForSemanticSegmentation.from_config(tiny_swin_config())
    model = agent_hf.load_official_checkpoint(
        official_checkpoint(source, tmp_path / "official.pth"), tiny_swin_config()
    )
    metrics = {"eval_mIoU": 0.1234, "eval_mAcc": float("nan"), "eval_loss": 1.0}
    record = trained_provenance(model, base="folder", dataset="my/data", steps=7, recipe={"betas": (0.9, 0.999)})
    assert record["training"]["init"] == {
        "origin": "official-checkpoint",
        "preset": None,
        "checkpoint": "official.pth",
        "checkpoint_kind": "segmentation",
    }
    assert record["training"]["recipe"] == {"betas": [0.9, 0.999]} and record["eval_results"] is None
    from agent_hf.provenance import eval_results_from_metrics

    assert eval_results_from_metrics(metrics, "my/data") == {
        "dataset": "my/data",
        "split": "validation",
        "mean_iou": 12.34,
    }
    record_provenance(model, record)
    model.save_pretrained(tmp_path / "saved")
    assert read_provenance(read_config(tmp_path / "saved")) == record  # survives save_pretrained
    with pytest.raises(ValueError, match="config.json: `agent_hf_provenance` has origin 'bought'"):
        read_provenance({"agent_hf_provenance": {"origin": "bought"}})


# ---------------------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("factory", [tiny_swin_config, tiny_pvt_config], ids=["swin", "pvt"])
def test_parameter_count_and_digest_read_from_the_files(factory, tmp_path: Path) -> None:
    model = AutoModelForSemanticSegmentation.from_config(factory())
    model.save_pretrained(tmp_path, max_shard_size="200KB")  # sharded: the index and every shard are read
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert count_parameters(tmp_path) == sum(p.numel() for p in model.parameters())
    assert weights_digest_of_folder(tmp_path) == weights_digest(model)
    with torch.no_grad():
        next(model.parameters()).add_(1)
    assert weights_digest_of_folder(tmp_path) != weights_digest(model)


# ---------------------------------------------------------------------------------------------------- imports
_EAGER_PROBE = """
import sys
import agent_hf
from transformers import AutoConfig
# Registered by the import alone, before any name of the package is used.
print(type(AutoConfig.for_model("agent_swin")).__name__, sorted(m for m in ("datasets", "gradio") if m in sys.modules))
"""

_LAZY_PROBE = """
import sys
import agent_hf, agent_hf.hub, agent_hf.model_zoo
light = sorted(m for m in ("torch", "transformers", "datasets", "gradio") if m in sys.modules)
config = agent_hf.preset_config("agent-pvt-t-fpn-ade20k")  # first use of a package name registers
from transformers import AutoConfig
print(light, type(AutoConfig.for_model("agent_swin")).__name__)
"""


def _run_probe(probe: str, **env_overrides: str) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
    }
    env.pop("AGENT_HF_LAZY_IMPORT", None)
    env.update(env_overrides)
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_import_agent_hf_registers_the_auto_classes_and_loads_no_datasets_or_gradio() -> None:
    assert _run_probe(_EAGER_PROBE) == "AgentSwinConfig []"


def test_lazy_import_mode_loads_nothing_heavy_and_registers_on_first_use() -> None:
    assert _run_probe(_LAZY_PROBE, AGENT_HF_LAZY_IMPORT="1") == "[] AgentSwinConfig"
