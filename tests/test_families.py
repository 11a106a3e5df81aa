"""The table of model families (`agent_hf.families`): every place that reads it knows every family.

Each test walks the table, so that a new row fails here wherever it is not yet known (Auto classes, the pipeline,
presets, the official conversion, recipes and optimizer groups, model cards, the benchmark) instead of falling back
to another family's answer. The official inputs come from the reference fixtures of the official code.
"""

import json

import pytest
from conftest import REFERENCE_DIR
from safetensors.torch import load_file
from script_helpers import load_script
from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
)
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING

import agent_hf
from agent_hf.families import FAMILIES, MODEL_CLASS_SUFFIXES, get_family
from agent_hf.hub import render_model_card
from agent_hf.hub.folder_cards import _architecture_rows
from agent_hf.hub.imagenet_cards import render_imagenet_model_card
from agent_hf.model_zoo import IMAGENET_MODELS, MODELS
from agent_hf.models.image_processing_agent import AgentImageProcessor
from agent_hf.models.pipeline_agent import AGENT_MODEL_TYPES
from agent_hf.official import (
    config_from_official,
    load_official_checkpoint,
    load_official_classifier,
    official_classification_config,
    official_to_hf_state_dict,
)
from agent_hf.training import recipe_for
from agent_hf.training.optimization import official_parameter_name

each_family = pytest.mark.parametrize("family", list(FAMILIES.values()), ids=list(FAMILIES))

AUTO_CLASSES = {
    "Model": AutoModel,
    "Backbone": AutoBackbone,
    "ForSemanticSegmentation": AutoModelForSemanticSegmentation,
    "ForImageClassification": AutoModelForImageClassification,
}


def reference_fixtures():
    return {path.stem: json.loads(path.read_text()) for path in sorted(REFERENCE_DIR.glob("*.json"))}


def segmentation_fixture(family):
    """The name and official mmseg `model` dict of the family's reference segmentation model (with its weights)."""
    found = [
        (name, spec["model"])
        for name, spec in reference_fixtures().items()
        if isinstance(spec.get("model"), dict)
        and spec["model"]["backbone"]["type"] == family.official_backbone
        and (REFERENCE_DIR / f"{name}.weights.safetensors").is_file()
    ]
    assert found, f"no reference segmentation model with backbone type {family.official_backbone!r}"
    return found[0]


def classification_fixture(family):
    """The name and official JSON form of the family's reference classifier (with its `.pth`)."""
    found = [
        (name, spec)
        for name, spec in reference_fixtures().items()
        if spec.get("official_class") == family.official_classifier
    ]
    assert found, f"no reference classifier of official class {family.official_classifier!r}"
    return found[0]


def family_config(family):
    return config_from_official(segmentation_fixture(family)[1])


@each_family
def test_the_table_is_keyed_by_each_familys_config_model_type(family):
    assert family.config_class().model_type == family.model_type
    assert get_family(family.model_type) is family


def test_a_model_type_without_a_row_is_refused():
    with pytest.raises(ValueError, match="agent_deit"):
        get_family("agent_deit")


@each_family
def test_every_auto_class_resolves_the_familys_config(family):
    config_class = family.config_class()
    assert type(AutoConfig.for_model(family.model_type)) is config_class
    for suffix, auto_class in AUTO_CLASSES.items():
        assert auto_class._model_mapping[config_class] is family.model_class(suffix)
    assert set(AUTO_CLASSES) == set(MODEL_CLASS_SUFFIXES)
    registered = IMAGE_PROCESSOR_MAPPING[config_class]  # AutoImageProcessor's table: {backend: class}
    assert AgentImageProcessor in (registered.values() if isinstance(registered, dict) else registered)


@each_family
def test_the_familys_classes_are_public_names(family):
    names = [f"{family.class_prefix}Config"] + [f"{family.class_prefix}{s}" for s in MODEL_CLASS_SUFFIXES]
    for name in names:
        assert name in agent_hf.__all__
        assert getattr(agent_hf, name).__name__ == name


@each_family
def test_the_shipped_pipeline_knows_the_family(family):
    assert family.model_type in AGENT_MODEL_TYPES
    assert set(AGENT_MODEL_TYPES) == set(FAMILIES)  # and no type without a row


@each_family
def test_the_family_has_segmentation_and_imagenet_presets(family):
    segmentation = [name for name, spec in MODELS.items() if spec.model_type == family.model_type]
    imagenet = [name for name, spec in IMAGENET_MODELS.items() if spec.model_type == family.model_type]
    assert segmentation and imagenet
    for name in segmentation + imagenet:
        config = agent_hf.preset_config(name)
        assert type(config) is family.config_class()
        assert name.startswith(family.backbone_tag + "-")
    for name in segmentation:
        assert MODELS[name].head == family.head
        assert MODELS[name].recipe is family.recipe


@each_family
def test_official_segmentation_configs_and_checkpoints_convert(family):
    name, official = segmentation_fixture(family)
    config = config_from_official(official)
    assert type(config) is family.config_class()
    model = load_official_checkpoint(REFERENCE_DIR / f"{name}.weights.safetensors", config)
    assert type(model) is family.model_class("ForSemanticSegmentation")


@each_family
def test_official_classification_configs_and_checkpoints_convert(family):
    name, official = classification_fixture(family)
    config, _ = official_classification_config(official)
    assert type(config) is family.config_class()
    model = load_official_classifier(REFERENCE_DIR / f"{name}.pth", config)
    assert type(model) is family.model_class("ForImageClassification")
    for model_type in family.official_classification_types:  # the official yaml's MODEL.TYPE names
        config, _ = official_classification_config({"MODEL": {"TYPE": model_type}})
        assert type(config) is family.config_class()


@each_family
def test_the_checkpoint_signature_tells_the_familys_checkpoints_apart(family):
    """`checkpoint_signature` names the family of a checkpoint that does not fit the config, in its error."""
    for other in FAMILIES.values():
        name, official = segmentation_fixture(other)
        state_dict = load_file(REFERENCE_DIR / f"{name}.weights.safetensors")
        renamed, _ = official_to_hf_state_dict(state_dict, config_from_official(official))
        assert any(family.checkpoint_signature in key for key in renamed) == (other is family)


@each_family
def test_the_paper_recipe_and_the_optimizer_groups_know_the_family(family):
    config = family_config(family)
    recipe = recipe_for(config)
    assert recipe.source == f"official {family.recipe.schedule} config of {family.name}"
    assert (recipe.learning_rate, recipe.max_steps) == (family.recipe.learning_rate, family.recipe.iterations)
    model = family.model_class("ForSemanticSegmentation")(config)
    backbone = [name for name, _ in model.named_parameters() if name.startswith("backbone.")]
    assert backbone
    for name in backbone:  # the official mmseg names: `backbone.` + the official module names
        official = official_parameter_name(name)
        assert official.startswith("backbone.") and f".{family.model_type}." not in f".{official}"


@each_family
def test_the_model_cards_word_the_family(family):
    preset = next(name for name, spec in MODELS.items() if spec.model_type == family.model_type)
    card = str(render_model_card(preset))
    assert f"# {family.name}-" in card and f"+ {family.head} for ADE20K" in card
    assert family.attention_wording in card
    assert f"- {family.backbone_tag}\n" in card and f"- {family.head_tag}\n" in card
    imagenet = next(name for name, spec in IMAGENET_MODELS.items() if spec.model_type == family.model_type)
    card = str(render_imagenet_model_card(imagenet))
    assert f"the official head ({family.classifier_head_wording})" in card
    assert family.attention_wording in card


@each_family
def test_the_cards_of_other_models_describe_the_familys_architecture(family):
    rows = dict(_architecture_rows(family_config(family).to_dict()))
    assert rows["Backbone"].startswith(f"{family.name}, block layout `")
    assert rows["Decode head"].startswith(f"{family.head} (")
    assert "None" not in rows["Backbone"] + rows["Decode head"]  # every value the wording names is in the config


@pytest.fixture(scope="module")
def benchmark():
    return load_script("benchmark")


@each_family
def test_the_benchmark_builds_the_family_and_its_peer(family, benchmark, tmp_path):
    spec = tmp_path / "config.json"  # a --config file with the family's model_type
    family_config(family).to_json_file(spec)
    spec = str(spec)
    assert type(benchmark.agent_config(spec)) is family.config_class()
    model = benchmark.build(spec, "segmentor", None)
    assert type(model) is family.model_class("ForSemanticSegmentation")
    assert family.benchmark_peer == benchmark.PEER  # the one peer the script builds
