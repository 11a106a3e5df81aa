"""ImageNet classification (issue #24): the ten ImageNet models' cards and README table, generated from the
registry like the segmentation ones."""

from pathlib import Path

import pytest
import yaml

from agent_hf.hub.generated_files import outdated_files, write_model_cards
from agent_hf.hub.imagenet_cards import IMAGENET_TABLE_END, IMAGENET_TABLE_START, render_imagenet_model_card
from agent_hf.model_zoo import IMAGENET_MODELS

ROOT = Path(__file__).resolve().parent.parent


def front_matter(text: str) -> dict:
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.mark.parametrize("preset", list(IMAGENET_MODELS))
def test_imagenet_card(preset):
    spec = IMAGENET_MODELS[preset]
    text = str(render_imagenet_model_card(preset, repo_id=f"someone/{preset}"))
    data = front_matter(text)
    assert data["pipeline_tag"] == "image-classification"
    assert data["datasets"] == ["imagenet-1k"] and "custom_code" in data["tags"]
    [result] = data["model-index"][0]["results"]
    assert result["metrics"] == [{"type": "accuracy", "value": spec.top1_accuracy, "name": "acc@1"}]
    assert result["source"]["name"] == "Agent Attention paper (reported)"
    assert f"{spec.num_parameters:,}" in text and spec.official_checkpoint_url in text
    assert f'pipeline("image-classification", model="someone/{preset}", trust_remote_code=True)' in text
    assert f"--preset {preset}" in text
    crop = "center crop" in text.split("Evaluation transform", 1)[1].split("\n", 1)[0]
    assert crop == spec.center_crop


def test_committed_cards_and_readme_table_are_the_generated_ones(tmp_path):
    written = {path.name for path in write_model_cards(tmp_path)}
    assert {f"{preset}.md" for preset in IMAGENET_MODELS} <= written
    assert outdated_files(ROOT / "model_cards", ROOT / "README.md") == []
    readme = (ROOT / "README.md").read_text()
    table = readme.split(IMAGENET_TABLE_START, 1)[1].split(IMAGENET_TABLE_END, 1)[0]
    assert table.count("-in1k-") == 10 and "| 28,902,964 |" in table and "| 84.9 |" in table


def test_a_stale_imagenet_card_is_reported(tmp_path):
    cards = tmp_path / "cards"
    write_model_cards(cards)
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    assert outdated_files(cards, readme) == []
    (cards / "agent-swin-t-in1k-224.md").write_text("old\n")
    readme.write_text(readme.read_text().replace("| 82.6 |", "| 80.0 |"))
    assert outdated_files(cards, readme) == [str(cards / "agent-swin-t-in1k-224.md"), f"{readme} (models table)"]
