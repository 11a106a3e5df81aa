"""The registry of the seven presets and what is generated from it: model cards (metadata, paper numbers, body) and
the README's models table, checked against the committed files and against the models themselves.

Regenerate the committed cards and the README table after changing `agent_hf.model_zoo` or `agent_hf.hub` with:

    PYTHONPATH=src python -m agent_hf.hub --write
"""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from agent_hf.hub import (
    BIBTEX,
    COUNTED_FLOPS,
    DEMO_SPACE_URL,
    PAPER_RESULTS,
    models_table,
    render_model_card,
    write_model_cards,
)
from agent_hf.hub.__main__ import main as cards_main
from agent_hf.hub.cards import MODELS_TABLE_END, MODELS_TABLE_START
from agent_hf.hub.generated_files import outdated_files
from agent_hf.model_zoo import architecture_differences

ROOT = Path(__file__).resolve().parents[1]

# The official README's tables, typed in independently of agent_hf.hub:
# preset -> (mIoU, mAcc, exact #params, reported GFLOPs, iterations)
OFFICIAL = {
    "agent-swin-t-upernet-ade20k": (46.68, 58.53, 60_556_472, 954, 160_000),
    "agent-swin-s-upernet-ade20k": (48.08, 59.78, 81_320_192, 1043, 160_000),
    "agent-swin-b-upernet-ade20k": (48.73, 60.01, 121_606_588, 1196, 160_000),
    "agent-pvt-t-fpn-ade20k": (40.18, 51.76, 15_323_998, 147, 40_000),
    "agent-pvt-s-fpn-ade20k": (44.18, 56.17, 24_388_712, 211, 40_000),
    "agent-pvt-m-fpn-ade20k": (44.30, 56.42, 39_675_392, 321, 40_000),
    "agent-pvt-l-fpn-ade20k": (46.52, 58.50, 52_491_826, 434, 40_000),
}


def _parse(card: ModelCard) -> ModelCard:
    """Round-trip through text, as the Hub sees it."""
    return ModelCard(str(card))


def _by_source(card: ModelCard, suffix: str) -> dict[str, float]:
    return {r.metric_type: r.metric_value for r in card.data.eval_results if r.source_name.endswith(suffix)}


def test_paper_results_table() -> None:
    assert {
        name: (r.mean_iou, r.mean_accuracy, r.num_parameters, r.reported_gflops, r.train_iterations)
        for name, r in PAPER_RESULTS.items()
    } == OFFICIAL
    for name, result in PAPER_RESULTS.items():
        swin = name.startswith("agent-swin")
        assert (result.head_tag, result.backbone_tag, result.auxiliary_head) == (
            ("upernet", "agent-swin", True) if swin else ("semantic-fpn", "agent-pvt", False)
        )


def test_official_checkpoint_links() -> None:
    # The official README links checkpoints for these four only (the other links are empty).
    linked = {name for name, r in PAPER_RESULTS.items() if r.official_checkpoint_url}
    assert linked == {
        "agent-swin-t-upernet-ade20k",
        "agent-pvt-t-fpn-ade20k",
        "agent-pvt-s-fpn-ade20k",
        "agent-pvt-l-fpn-ade20k",
    }
    for name in linked:
        assert PAPER_RESULTS[name].official_checkpoint_url in render_model_card(name).text


def test_presets_match_the_model_registry() -> None:
    from agent_hf.presets import PRESETS

    assert set(PAPER_RESULTS) == set(PRESETS)


@pytest.mark.parametrize("preset", list(OFFICIAL))
def test_card_metadata(preset: str) -> None:
    card = _parse(render_model_card(preset, repo_id=f"someone/{preset}"))
    data = card.data
    result = PAPER_RESULTS[preset]

    assert data.pipeline_tag == "image-segmentation"
    assert data.library_name == "transformers"
    assert {"agent-attention", "semantic-segmentation", "custom_code", result.head_tag, result.backbone_tag} <= set(
        data.tags
    )
    assert data.datasets == ["scene_parse_150"]
    assert data.license == "other" and data.license_name and data.license_link
    assert "no top-level LICENSE" in data.license_details and "Apache-2.0" in data.license_details
    assert getattr(data, "widget", None) is None  # the hosted widget does not run custom code

    assert data.model_name == preset
    assert _by_source(card, "(reported)") == {"mean_iou": OFFICIAL[preset][0], "mean_accuracy": OFFICIAL[preset][1]}
    assert len(data.eval_results) == 2
    for r in data.eval_results:
        assert (r.task_type, r.dataset_type, r.dataset_split) == (
            "semantic-segmentation",
            "scene_parse_150",
            "validation",
        )
        assert r.source_name == "Agent Attention paper (reported)" and "2312.08874" in r.source_url


@pytest.mark.parametrize("preset", list(OFFICIAL))
def test_card_body(preset: str) -> None:
    text = _parse(render_model_card(preset, repo_id=f"someone/{preset}")).text
    result = PAPER_RESULTS[preset]
    assert f"{result.num_parameters:,}" in text
    assert f"reported: {result.reported_gflops:g}G" in text  # the authors' number, labelled as reported
    assert f"| {result.mean_iou:.2f} | {result.mean_accuracy:.2f} |" in text
    assert "AutoModelForSemanticSegmentation.from_pretrained(repo_id, trust_remote_code=True)" in text
    assert "AutoImageProcessor.from_pretrained(repo_id, trust_remote_code=True)" in text
    assert "processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])" in text
    assert f'pipeline("image-segmentation", model="someone/{preset}", trust_remote_code=True)' in text
    assert f"scripts/convert_official_checkpoint.py --checkpoint PATH/TO/official.pth --preset {preset}" in text
    assert (
        f"scripts/run_semantic_segmentation.py --model_name_or_path someone/{preset} --dataset_name scene_parse_150"
        in text
    )
    assert BIBTEX in text
    assert f"[demo Space]({DEMO_SPACE_URL})" in text  # the cards link to the live demo app
    assert f"{result.recipe.iterations:,} iterations of 16 images" in text  # the recipe, from its numbers
    for concept in (
        "agent tokens",
        "pooling",
        "two softmax attentions",
        "Agent biases",
        "depth-wise convolution (DWC)",
    ):
        assert concept in text


def test_card_says_how_to_serve_it() -> None:
    text = render_model_card("agent-pvt-s-fpn-ade20k", repo_id="someone/model").text
    assert "The Hub's hosted inference widget does not run custom code" in text
    assert "`handler.py` (an `EndpointHandler`) and `requirements.txt`" in text and "*Custom* task" in text
    assert '{"inputs": base64.b64encode(file.read()).decode(), "parameters": {"mode": "whole"}}' in text
    assert '[{"label": "wall", "score": None, "mask": "<base64 PNG>"}, ...]' in text
    assert 'segmenter("scene.jpg", ratios=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75], flip=True)' in text
    assert "AGENT_HF_APP_MODEL=someone/model" in text


def test_measured_results_flops_and_demo() -> None:
    measured = {"mean_iou": 46.6, "mean_accuracy": 58.4, "note": "fp32, single-scale"}
    card = _parse(
        render_model_card(
            "agent-swin-t-upernet-ade20k",
            repo_id="me/m",
            measured=measured,
            flops=1.9e12,
            demo_url="https://huggingface.co/spaces/me/demo",
        )
    )
    # Paper and measured numbers stay separate entries with their own source.
    assert _by_source(card, "(reported)") == {"mean_iou": 46.68, "mean_accuracy": 58.53}
    assert _by_source(card, "agent-hf (measured)") == {"mean_iou": 46.6, "mean_accuracy": 58.4}
    model_index = card.data.to_dict()["model-index"][0]["results"]
    assert [entry["source"]["name"] for entry in model_index] == [
        "Agent Attention paper (reported)",
        "agent-hf (measured)",
    ]
    assert "| agent-hf (measured): `scene_parse_150` (validation) | 46.60 | 58.40 |" in card.text
    assert "fp32, single-scale" in card.text
    assert "950.0G MACs = 1,900.0G FLOPs (counted by agent-hf)" in card.text
    assert "torch.utils.flop_counter" in card.text and "MACs = FLOPs / 2" in card.text
    assert "[demo Space](https://huggingface.co/spaces/me/demo)" in card.text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"preset_name": "agent-vit-fpn"}, "Unknown preset"),
        ({"measured": {"miou": 46.0}}, "Unknown key"),
        ({"measured": {"mean_accuracy": 58.0}}, "mean_iou"),
        ({"measured": {"mean_iou": 0.4668, "mean_accuracy": 0.58}}, "fractions"),
        ({"measured": {"mean_iou": 146.0}}, r"\[0, 100\]"),
        ({"flops": -1.0}, "flops"),
        ({"repo_id": "not a repo"}, "Invalid repo_id"),
    ],
)
def test_render_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    kwargs = {"preset_name": "agent-pvt-t-fpn-ade20k", **kwargs}
    with pytest.raises(ValueError, match=match):
        render_model_card(kwargs.pop("preset_name"), **kwargs)


def test_write_model_cards_matches_committed_files(tmp_path: Path) -> None:
    written = write_model_cards(tmp_path)
    # the seven segmentation cards, then the ten ImageNet classifiers' (tests/test_image_classification_cards.py)
    from agent_hf.model_zoo import IMAGENET_MODELS

    assert [p.name for p in written] == [f"{preset}.md" for preset in (*PAPER_RESULTS, *IMAGENET_MODELS)]
    committed = ROOT / "model_cards"
    assert sorted(p.name for p in committed.glob("*.md")) == sorted(p.name for p in written), (
        "model_cards/ is out of date: regenerate it with `python -m agent_hf.hub --write`"
    )
    for path in written:
        assert (committed / path.name).read_bytes() == path.read_bytes(), (
            f"model_cards/{path.name} is out of date: regenerate it with `python -m agent_hf.hub --write`"
        )
        _parse(ModelCard(path.read_text(encoding="utf-8")))  # committed cards parse


def test_readme_models_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split(MODELS_TABLE_START, 1)[1].split(MODELS_TABLE_END, 1)[0].strip()
    assert table == models_table(), "README.md's models table is out of date: run `python -m agent_hf.hub --write`"
    rows = {line.split("|")[1].strip(" `"): line for line in table.splitlines()[2:]}
    assert list(rows) == list(OFFICIAL)
    for preset, (miou, macc, params, gflops, iterations) in OFFICIAL.items():
        assert (
            f"| {params:,} | {gflops}G / " in rows[preset]
            and f"| {miou:.2f} / {macc:.2f} ({iterations // 1000}k) |" in (rows[preset])
        )


def test_generation_cli_checks_and_writes(tmp_path: Path) -> None:
    # The committed files are up to date (the CLI's `main`: `python -m agent_hf.hub --check`, its command line, runs
    # in test_journeys.py from another directory)...
    assert cards_main(["--check"]) == 0
    # ... a stale copy is reported, then repaired by --write.
    cards, readme = tmp_path / "cards", tmp_path / "README.md"
    write_model_cards(cards)
    (cards / "agent-pvt-t-fpn-ade20k.md").write_text("stale")
    readme.write_text(f"# x\n\n{MODELS_TABLE_START}\n| old |\n{MODELS_TABLE_END}\n\nrest\n")
    assert outdated_files(cards, readme) == [str(cards / "agent-pvt-t-fpn-ade20k.md"), f"{readme} (models table)"]
    assert cards_main(["--check", "--cards_dir", str(cards), "--readme", str(readme)]) == 1
    assert cards_main(["--write", "--cards_dir", str(cards), "--readme", str(readme)]) == 0
    assert outdated_files(cards, readme) == []
    assert readme.read_text().endswith(f"{MODELS_TABLE_END}\n\nrest\n")
    readme.write_text("no markers")
    assert cards_main(["--check", "--cards_dir", str(cards), "--readme", str(readme)]) == 1


@pytest.mark.parametrize("preset", list(PAPER_RESULTS))
def test_registry_builds_the_models(preset: str) -> None:
    """The registry's architecture is the preset's config, and its parameter count the model's."""
    import torch
    from transformers import AutoModelForSemanticSegmentation

    import agent_hf

    config = agent_hf.preset_config(preset)
    assert architecture_differences(config.to_dict(), preset) == []
    assert config.drop_path_rate == PAPER_RESULTS[preset].drop_path_rate
    with torch.device("meta"):
        model = AutoModelForSemanticSegmentation.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == PAPER_RESULTS[preset].num_parameters == OFFICIAL[preset][2]


@pytest.mark.parametrize("preset", ["agent-swin-t-upernet-ade20k", "agent-pvt-t-fpn-ade20k"])
def test_training_recipe_numbers_match_the_registry(preset: str) -> None:
    """`recipe_for(preset, "paper")` trains with the registry's numbers (which the cards print)."""
    from agent_hf.training import recipe_for

    recipe, paper = recipe_for(preset, "paper"), PAPER_RESULTS[preset].recipe
    assert (recipe.learning_rate, recipe.weight_decay, recipe.max_steps, recipe.total_batch_size) == (
        paper.learning_rate,
        paper.weight_decay,
        paper.iterations,
        paper.batch_size,
    )
    assert (recipe.adam_beta1, recipe.adam_beta2) == paper.betas and recipe.warmup_steps == paper.warmup_iters
    assert tuple(recipe.no_decay_keys) == paper.no_decay_keys
    assert recipe.lr_scheduler_kwargs["power"] == paper.poly_power
    assert recipe.lr_scheduler_kwargs["min_lr"] == paper.min_lr


@pytest.mark.parametrize("preset", list(PAPER_RESULTS))
def test_counted_flops_are_recounted_from_the_models(preset: str) -> None:
    """The cards' FLOPs are the project's own count: recount them from the model (meta device, no compute)."""
    import agent_hf
    from agent_hf.flops import count_flops

    flops = count_flops(agent_hf.preset_config(preset))
    assert flops == COUNTED_FLOPS[preset]
    # Same order as the authors' MACs: within 2.5% of the paper's column.
    assert abs(flops / 2e9 - PAPER_RESULTS[preset].reported_gflops) / PAPER_RESULTS[preset].reported_gflops < 0.025
    card = render_model_card(preset).text
    assert f"{flops / 2e9:,.1f}G MACs" in card and "counted by agent-hf" in card
