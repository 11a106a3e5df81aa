"""The card a model folder gets, decided by its provenance (`agent_hf.provenance`).

* Converted official weights with a preset's exact architecture, unchanged since conversion: the paper's card.
* Anything else (trained, initialized, converted from a non-preset architecture, changed after its record was
  written, or of unknown origin): a card of its own, with its architecture, its parameter count (read from the
  weights) and only the results measured on it.

A folder without provenance (written by agent-hf 0.1.0) gets the paper's card only when the caller names the preset
AND the folder has that preset's architecture.
"""

from __future__ import annotations

import logging
import os
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from huggingface_hub import ModelCard, ModelCardData

from ..families import FAMILIES
from ..model_zoo import (
    IMAGENET_MODELS,
    MODELS,
    PAPER_URL,
    UPSTREAM_REPO_URL,
    ArchitectureDifference,
    architecture_differences,
    get_model_spec,
)
from ..provenance import read_provenance
from .cards import (
    BIBTEX,
    DEMO_SPACE_URL,
    LICENSE_DETAILS,
    LICENSE_NAME,
    measured_eval_results,
    normalize_measured,
    render_card_template,
    render_model_card,
)
from .folder_checks import (
    CONFIG_NAME,
    check_repo_id,
    count_parameters,
    read_config,
    validate_model_folder,
    weights_digest_of_folder,
)
from .imagenet_cards import render_imagenet_model_card

__all__ = ["FolderOrigin", "card_for_folder", "folder_origin", "render_folder_model_card"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

_STATUS_OF_ORIGIN = {"official-checkpoint": "official", "trained": "trained", "initialized": "initialized"}


@dataclass(frozen=True)
class FolderOrigin:
    """What is known about the weights of a model folder.

    Attributes:
        status: ``"official"`` (converted official segmentation weights), ``"trained"``, ``"initialized"``,
            ``"modified"`` (the weights differ from those the provenance record describes) or ``"unknown"`` (no
            record).
        provenance: the record of ``config.json`` (``None`` for ``"unknown"``).
        preset: the preset the record names (or, without a record, ``config.json``'s ``agent_hf_preset``).
        differences: how the folder's architecture differs from that preset (empty: identical, or no preset).
    """

    status: str
    provenance: dict[str, Any] | None
    preset: str | None
    differences: list[ArchitectureDifference] = field(default_factory=list)

    @property
    def has_paper_weights(self) -> bool:
        """The folder holds the authors' weights of `preset`, converted and unchanged."""
        return self.status == "official" and self.preset in (*MODELS, *IMAGENET_MODELS) and not self.differences

    def summary(self) -> str:
        """A few words for messages, e.g. "a model trained by agent-hf"."""
        checkpoint = (self.provenance or {}).get("checkpoint")
        return {
            "official": f"weights converted from the official checkpoint {checkpoint!r}"
            + (f" that differ in architecture from {self.preset}" if self.differences else ""),
            "trained": "a model trained by agent-hf",
            "initialized": "a model that was never trained for segmentation",
            "modified": "weights changed after their provenance record was written",
            "unknown": "weights of unknown origin (no provenance record)",
        }[self.status]


def folder_origin(folder: PathLike) -> FolderOrigin:
    """Reads the provenance of a folder and checks that its weights are the ones the record describes."""
    folder = Path(folder)
    config = read_config(folder)
    provenance = read_provenance(config, source=str(folder / CONFIG_NAME))
    if provenance is None:
        status, preset = "unknown", config.get("agent_hf_preset")
    else:
        recorded = provenance.get("weights_sha256")
        unchanged = bool(recorded) and weights_digest_of_folder(folder) == recorded
        status, preset = (
            (_STATUS_OF_ORIGIN[provenance["origin"]] if unchanged else "modified"),
            provenance.get("preset"),
        )
    known = preset in MODELS or preset in IMAGENET_MODELS
    differences = architecture_differences(config, preset) if known else []
    return FolderOrigin(
        status=status, provenance=provenance, preset=preset if known else None, differences=differences
    )


def card_for_folder(
    folder: PathLike,
    repo_id: str,
    *,
    preset: str | None = None,
    measured: Mapping[str, Any] | None = None,
    flops: float | None = None,
    demo_url: str | None = DEMO_SPACE_URL,
) -> ModelCard:
    """The card a model folder gets, from its provenance: the paper's (`render_model_card`) or its own
    (`render_folder_model_card`).

    Args:
        folder: the model folder.
        repo_id: the Hub repository the card is for.
        preset: ask for the paper's card of this preset. Accepted for converted official weights of that preset,
            and for a folder without provenance whose architecture is the preset's; refused otherwise.
        measured: results measured on this model, added to the card (see `normalize_measured`).
        flops: FLOPs of one 512x2048 forward pass, shown on the card.
        demo_url: URL of a demo Space.

    Raises:
        ValueError: `preset` is given for a folder that does not hold that preset's official weights.
    """
    check_repo_id(repo_id)
    folder = Path(folder)
    validate_model_folder(folder)  # the complete diagnosis of an incomplete folder, before reading it
    origin = folder_origin(folder)
    options = dict(repo_id=repo_id, measured=measured, flops=flops, demo_url=demo_url)
    if any(name.endswith("ForImageClassification") for name in read_config(folder).get("architectures") or ()):
        # An image classifier: the paper's ImageNet card for the authors' converted weights; no card of its own yet.
        if origin.has_paper_weights and origin.preset in IMAGENET_MODELS:
            if preset not in (None, origin.preset):
                raise ValueError(
                    f"preset {preset!r} was asked for, but {folder} holds the official weights of {origin.preset}."
                )
            return render_imagenet_model_card(origin.preset, repo_id=repo_id)
        raise ValueError(
            f"{folder} is an image classifier that does not hold the official weights of an ImageNet preset "
            f"({origin.summary()}): agent-hf generates no card for it; pass a card file"
        )
    if origin.has_paper_weights:
        if preset is not None and preset != origin.preset:
            raise ValueError(
                f"preset {preset!r} was asked for, but {folder} holds the official weights of {origin.preset}."
            )
        return render_model_card(origin.preset, **options)
    if preset is not None:
        get_model_spec(preset)  # a clear error for an unknown name
        if origin.status != "unknown":
            raise ValueError(
                f"The paper's card of {preset} describes the authors' weights, but {folder} holds {origin.summary()}: "
                "render its own card (no preset) or pass a card file."
            )
        differences = architecture_differences(read_config(folder), preset)
        if differences:
            shown = "; ".join(str(d) for d in differences[:6]) + (" ..." if len(differences) > 6 else "")
            raise ValueError(
                f"{folder} does not have the architecture of {preset}, so its card cannot be the paper's: {shown}."
            )
        return render_model_card(preset, **options)
    if origin.status == "unknown":
        logger.warning(
            "%s has no provenance record (a folder of agent-hf 0.1.0?): its card claims no results. If it holds the "
            "converted official weights of a preset, name the preset to get the paper's card.",
            folder,
        )
    return render_folder_model_card(folder, origin=origin, **options)


# ------------------------------------------------------------------------------------------------ own cards
def _dashed(values: Any) -> str:
    """``[2, 2, 6, 2]`` -> ``2-2-6-2``; ``[[9, 9], [12, 12]]`` -> ``9×9, 12×12``."""
    if not isinstance(values, (list, tuple)):
        return "?" if values is None else str(values)
    if values and isinstance(values[0], (list, tuple)):
        return ", ".join("×".join(str(v) for v in value) for value in values)
    return "-".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


class _ConfigFormatter(string.Formatter):
    """Formats a family's card rows (`ModelFamily.card_backbone`, `card_head`) with the values of a ``config.json``:
    a missing key is ``None``, ``!d`` writes a list with :func:`_dashed`."""

    def get_value(self, key, args, kwargs):
        return kwargs.get(key)

    def convert_field(self, value, conversion):
        return _dashed(value) if conversion == "d" else super().convert_field(value, conversion)


def _architecture_rows(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    get = config.get
    family = FAMILIES.get(get("model_type"))
    if family is None:
        return [("Model type", f"`{get('model_type')}`")]
    formatter = _ConfigFormatter()
    backbone = formatter.vformat(family.card_backbone, (), config)
    head = formatter.vformat(family.card_head, (), config)
    if get("use_auxiliary_head"):
        head += f" + auxiliary FCN head ({get('auxiliary_channels')} channels, training only)"
    agents = f"{_dashed(get('agent_num'))} per stage, pooled to {_dashed(get('downstream_agent_shapes'))}"
    return [("Backbone", backbone), ("Agent tokens", agents), ("Decode head", head)]


def _class_names(config: Mapping[str, Any]) -> str:
    id2label = config.get("id2label") or {}
    names = [id2label[key] for key in sorted(id2label, key=lambda k: int(k))]
    shown = ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
    return f"{len(names)} ({shown})" if names else "not recorded"


def _preset_row(origin: FolderOrigin) -> tuple[str, str] | None:
    if origin.preset is None:
        return None
    if not origin.differences:
        return "Preset architecture", f"same as `{origin.preset}`"
    shown = "; ".join(str(d) for d in origin.differences[:8])
    more = f"; and {len(origin.differences) - 8} more" if len(origin.differences) > 8 else ""
    return "Preset architecture", f"differs from `{origin.preset}`: {shown}{more}"


def _start_phrase(training: Mapping[str, Any]) -> str:
    init = training.get("init") or {}
    checkpoint = init.get("checkpoint")
    if init.get("origin") == "official-checkpoint":
        return f"the official segmentation checkpoint `{checkpoint}`"
    if init.get("origin") == "initialized" and checkpoint:
        return f"the official ImageNet checkpoint `{checkpoint}` (backbone; heads randomly initialized)"
    if init.get("origin") == "trained":
        return f"`{training.get('base')}`, itself trained by agent-hf"
    if training.get("base") in MODELS:
        return f"random weights with the architecture of `{training.get('base')}`"
    return f"`{training.get('base')}`"


def _origin_paragraph(origin: FolderOrigin) -> str:
    record = origin.provenance or {}
    no_paper = "They are not the weights published with the Agent Attention paper, whose results do not apply here."
    if origin.status == "trained":
        training = record.get("training") or {}
        return (
            f"These weights were trained with agent-hf's training script for {training.get('steps', 0):,} steps on "
            f"`{training.get('dataset')}`, starting from {_start_phrase(training)}. {no_paper}"
        )
    if origin.status == "initialized":
        if record.get("checkpoint"):
            return (
                f"The backbone holds the official ImageNet checkpoint `{record['checkpoint']}`; the decode head is "
                "randomly initialized and the model was not trained for segmentation, so its predictions are not "
                "meaningful yet."
            )
        return "These weights are randomly initialized: the model was not trained, its predictions are meaningless."
    if origin.status == "official":
        return (
            f"The weights are converted from the official checkpoint `{record.get('checkpoint')}`, whose architecture "
            "is not one of the seven published presets; no results are claimed for it."
        )
    if origin.status == "modified":
        return (
            f"`config.json` records {record.get('origin')} weights, but the weights in this repository differ from "
            "the recorded ones (changed after the record was written, e.g. trained further by other code): their "
            f"origin is unknown and no results are claimed. {no_paper}"
        )
    return (
        "`config.json` carries no provenance record (a folder written by agent-hf 0.1.0 or by other code): the origin "
        "of these weights is unknown and no results are claimed."
    )


def _format_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_format_value(v)}" for k, v in value.items()) or "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(v) for v in value) or "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _training_rows(origin: FolderOrigin) -> list[tuple[str, str]]:
    if origin.status != "trained":
        return []
    training = (origin.provenance or {}).get("training") or {}
    rows = [
        ("Started from", _start_phrase(training)),
        ("Dataset", f"`{training.get('dataset')}`"),
        ("Optimizer steps", f"{training.get('steps', 0):,}"),
    ]
    recipe = training.get("recipe") or {}
    rows.extend((f"`{key}`", _format_value(value)) for key, value in recipe.items() if value not in (None, "", [], {}))
    return rows


def _from_official_weights(record: Mapping[str, Any]) -> bool:
    init = (record.get("training") or {}).get("init") or {}
    return bool(record.get("checkpoint") or init.get("checkpoint"))


def render_folder_model_card(
    folder: PathLike,
    repo_id: str,
    *,
    origin: FolderOrigin | None = None,
    measured: Mapping[str, Any] | None = None,
    flops: float | None = None,
    demo_url: str | None = DEMO_SPACE_URL,
) -> ModelCard:
    """The card of a model that is not the paper's: its own architecture, parameter count and measured results.

    Args:
        folder: the model folder (``config.json`` and safetensors weights are read; no torch needed).
        repo_id: the Hub repository the card is for.
        origin: :func:`folder_origin` of the folder, if already known.
        measured: results measured on this model; defaults to the evaluation recorded by training (only while the
            weights are still the recorded ones).
        flops: FLOPs of one 512x2048 forward pass (`agent_hf.flops.count_flops`), shown when given.
        demo_url: URL of a demo Space.
    """
    check_repo_id(repo_id)
    folder = Path(folder)
    config = read_config(folder)
    origin = origin or folder_origin(folder)
    record = origin.provenance or {}
    if measured:
        results = normalize_measured(measured)
    elif origin.status == "trained" and record.get("eval_results"):
        results = normalize_measured(record["eval_results"], percentages_check=False)
    else:
        results = None

    model_type = config.get("model_type")
    title = repo_id.split("/")[-1]
    family = FAMILIES.get(model_type)
    name, head = (family.name, family.head) if family else (f"agent-hf `{model_type}`", "segmentation head")
    description = (
        f"An **{name}** + **{head}** semantic segmentation model made with `agent-hf`, the Hugging Face port of "
        f"[*Agent Attention*]({PAPER_URL}) (Han et al., ECCV 2024). Custom code: load it with "
        "`trust_remote_code=True`."
    )
    details = [("Task", "Semantic segmentation"), ("Classes", _class_names(config)), *_architecture_rows(config)]
    details.append(("Parameters", f"{count_parameters(folder):,} (counted from the weights)"))
    if flops is not None:
        details.append(("FLOPs @ 512×2048", f"{flops / 2e9:,.1f}G MACs = {flops / 1e9:,.1f}G FLOPs"))
    preset_row = _preset_row(origin)
    if preset_row:
        details.append(preset_row)

    official = _from_official_weights(record)
    license_text = (
        f"`license: other`. These weights derive from the Agent Attention authors' checkpoint. {LICENSE_DETAILS}"
        if official
        else "Not stated by agent-hf: the terms of these weights are set by whoever trained them. The agent-hf "
        "modeling code is Apache-2.0."
    )
    tags = ["agent-attention", "semantic-segmentation", "vision", "custom_code"]
    if family:
        tags[2:2] = [family.backbone_tag, family.head_tag]
    card_data = ModelCardData(
        pipeline_tag="image-segmentation",
        library_name="transformers",
        tags=tags,
        model_name=title,
        datasets=["scene_parse_150"] if results and results["dataset"] == "scene_parse_150" else None,
        metrics=["mean_iou"] if results else None,
        eval_results=measured_eval_results(results, repo_id) if results else None,
        **(dict(license="other", license_name=LICENSE_NAME, license_link=UPSTREAM_REPO_URL) if official else {}),
    )
    rows = []
    if results:
        rows = [
            {
                "dataset": f"`{results['dataset']}`",
                "split": results["split"],
                **{
                    key: "—" if results[key] is None else f"{results[key]:.2f}"
                    for key in ("mean_iou", "mean_accuracy", "overall_accuracy")
                },
            }
        ]
    return render_card_template(
        "model_card.md.j2",
        card_data,
        title=title,
        description=description,
        origin=_origin_paragraph(origin),
        details=details,
        family=family,
        results=rows,
        note=(results or {}).get("note"),
        training=_training_rows(origin),
        repo_id=repo_id,
        demo_url=demo_url,
        license_text=license_text,
        bibtex=BIBTEX,
    )
