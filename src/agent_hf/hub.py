"""Model cards and Hub publishing for the Agent Attention segmentation models.

This module only depends on ``huggingface_hub`` (no torch / transformers import), so that rendering a card or
pushing a folder is fast and works in a minimal environment.

Public API:

* :data:`PAPER_RESULTS` — the seven ADE20K presets with the numbers reported by the authors.
* :func:`render_model_card` / :func:`write_model_cards` — Hub model cards (front matter + markdown body).
* :func:`validate_model_folder` — checks that a ``save_pretrained`` folder is complete before anything is sent.
* :func:`push_folder_to_hub` — publishes a model folder in one commit, then its card in a second, last commit.
* :func:`push_card_to_hub` — (re)publishes only the card, e.g. to recover from a failed card commit.

Why two commits, with the card last: transformers' ``Trainer.push_to_hub`` (and ``save_pretrained(push_to_hub=True)``)
regenerate ``README.md`` and drop the card metadata (``model-index``, widget, license details). Uploading the model
files first and the card strictly afterwards guarantees that nothing published by this module overwrites the card.
"""

from __future__ import annotations

import ast
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Union

from huggingface_hub import (
    CommitInfo,
    CommitOperationAdd,
    EvalResult,
    HfApi,
    ModelCard,
    ModelCardData,
    constants,
    get_token,
)
from huggingface_hub.errors import OfflineModeIsEnabled
from huggingface_hub.utils import HFValidationError, validate_repo_id

__all__ = [
    "BIBTEX",
    "DEFAULT_NAMESPACE",
    "PAPER_RESULTS",
    "WIDGET_EXAMPLE_IMAGES",
    "CardPushError",
    "HubTokenMissingError",
    "PaperResult",
    "PushResult",
    "push_card_to_hub",
    "push_folder_to_hub",
    "render_model_card",
    "validate_model_folder",
    "write_model_cards",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

# ---------------------------------------------------------------------------------------------------------------------
# Paper results
# ---------------------------------------------------------------------------------------------------------------------

UPSTREAM_REPO_URL = "https://github.com/LeapLabTHU/Agent-Attention"
UPSTREAM_SEGMENTATION_URL = f"{UPSTREAM_REPO_URL}/tree/HEAD/downstream/segmentation"
PAPER_URL = "https://arxiv.org/abs/2312.08874"

#: Namespace assumed by :func:`write_model_cards` (and by :func:`render_model_card` when no ``repo_id`` is given).
DEFAULT_NAMESPACE = "agent-hf"

#: ADE20K validation images referenced by the widget. They must be uploaded to the model repo under ``examples/``
#: (``examples/ADE_val_00000001.jpg``, ...): the widget URLs point at the repo's own files so the card never depends
#: on a third-party host.
WIDGET_EXAMPLE_IMAGES: tuple[str, ...] = ("ADE_val_00000001.jpg", "ADE_val_00000002.jpg")

BIBTEX = """@inproceedings{han2024agent,
  title={Agent attention: On the integration of softmax and linear attention},
  author={Han, Dongchen and Ye, Tianzhu and Han, Yizeng and Xia, Zhuofan and Pan, Siyuan and Wan, Pengfei and Song, Shiji and Huang, Gao},
  booktitle={European Conference on Computer Vision},
  year={2024}
}"""  # noqa: E501


@dataclass(frozen=True)
class PaperResult:
    """ADE20K result of one preset, as reported in the official Agent-Attention segmentation README.

    Attributes:
        preset: preset name, also the default Hub repository name (e.g. ``"agent-swin-t-upernet-ade20k"``).
        backbone: display name of the backbone (e.g. ``"Agent-Swin-T"``).
        backbone_tag: Hub tag of the backbone family, ``"agent-swin"`` or ``"agent-pvt"``.
        head: display name of the decode head, ``"UperNet"`` or ``"Semantic FPN"``.
        head_tag: Hub tag of the head, ``"upernet"`` or ``"semantic-fpn"``.
        auxiliary_head: whether the model has an auxiliary FCN head (UperNet models; used for the training loss only).
        mean_iou: single-scale mIoU (%) on the ADE20K validation set (2,000 images, 150 classes).
        mean_accuracy: single-scale mAcc (%) on the same split.
        num_parameters: exact parameter count of the model (the paper rounds it, see ``reported_parameters``).
        reported_parameters: parameter count as printed in the paper / README (e.g. ``"61M"``).
        reported_gflops: "FLOPs" at 512x2048 as printed by the authors, in G (computed with mmcv's
            ``get_model_complexity_info`` plus analytic attention terms, i.e. multiply-accumulates).
        train_iterations: length of the training schedule (iterations of 16 images).
        upstream_config: mmsegmentation config of the run, relative to ``downstream/segmentation``.
        official_checkpoint_url: download link of the official checkpoint in the README, ``None`` where the README
            has an empty link (Agent-Swin-S, Agent-Swin-B and Agent-PVT-M at the time of writing).
    """

    preset: str
    backbone: str
    backbone_tag: str
    head: str
    head_tag: str
    auxiliary_head: bool
    mean_iou: float
    mean_accuracy: float
    num_parameters: int
    reported_parameters: str
    reported_gflops: float
    train_iterations: int
    upstream_config: str
    official_checkpoint_url: str | None


def _swin(
    size: str, miou: float, macc: float, params: int, reported: str, gflops: float, checkpoint: str | None
) -> PaperResult:
    return PaperResult(
        preset=f"agent-swin-{size}-upernet-ade20k",
        backbone=f"Agent-Swin-{size.upper()}",
        backbone_tag="agent-swin",
        head="UperNet",
        head_tag="upernet",
        auxiliary_head=True,
        mean_iou=miou,
        mean_accuracy=macc,
        num_parameters=params,
        reported_parameters=reported,
        reported_gflops=gflops,
        train_iterations=160_000,
        upstream_config=f"configs/agent_swin/upernet_agent_swin_{size}_9-12-14-7.py",
        official_checkpoint_url=checkpoint and f"https://cloud.tsinghua.edu.cn/f/{checkpoint}/?dl=1",
    )


def _pvt(
    size: str, miou: float, macc: float, params: int, reported: str, gflops: float, checkpoint: str | None
) -> PaperResult:
    return PaperResult(
        preset=f"agent-pvt-{size}-fpn-ade20k",
        backbone=f"Agent-PVT-{size.upper()}",
        backbone_tag="agent-pvt",
        head="Semantic FPN",
        head_tag="semantic-fpn",
        auxiliary_head=False,
        mean_iou=miou,
        mean_accuracy=macc,
        num_parameters=params,
        reported_parameters=reported,
        reported_gflops=gflops,
        train_iterations=40_000,
        upstream_config=f"configs/agent_pvt/fpn_agent_pvt_{size}_12-16-28-28.py",
        official_checkpoint_url=checkpoint and f"https://cloud.tsinghua.edu.cn/f/{checkpoint}/?dl=1",
    )


#: The seven ADE20K presets, keyed by preset name. Numbers: official README of
#: ``LeapLabTHU/Agent-Attention/downstream/segmentation`` (single-scale evaluation, ImageNet-1K pretraining).
PAPER_RESULTS: Mapping[str, PaperResult] = MappingProxyType(
    {
        result.preset: result
        for result in (
            _swin("t", 46.68, 58.53, 60_556_472, "61M", 954, "280481ee38024bce8364"),
            _swin("s", 48.08, 59.78, 81_320_192, "81M", 1043, None),
            _swin("b", 48.73, 60.01, 121_606_588, "121M", 1196, None),
            _pvt("t", 40.18, 51.76, 15_323_998, "15M", 147, "5e7bf988b4b74efe8654"),
            _pvt("s", 44.18, 56.17, 24_388_712, "24M", 211, "11332fa565e443678e4c"),
            _pvt("m", 44.30, 56.42, 39_675_392, "40M", 321, None),
            _pvt("l", 46.52, 58.50, 52_491_826, "52M", 434, "0da8b58581214f85974f"),
        )
    }
)

# Training recipes of the official configs (mmsegmentation, 8 GPUs x 2 images, 512x512 crops of ADE20K train).
_TRAINING_RECIPES = {
    "agent-swin": (
        "AdamW (lr 6e-5, betas (0.9, 0.999), weight decay 0.01, no decay on norms and agent/position biases), "
        "1,500 linear warm-up iterations then poly decay (power 1.0), 16 images per iteration"
    ),
    "agent-pvt": "AdamW (lr 2e-4, weight decay 1e-4), poly decay (power 0.9), 16 images per iteration",
}

# ---------------------------------------------------------------------------------------------------------------------
# Model cards
# ---------------------------------------------------------------------------------------------------------------------

_PAPER_SOURCE_NAME = "Agent Attention paper (reported)"
_MEASURED_SOURCE_NAME = "agent-hf (measured)"
_MEASURED_KEYS = frozenset({"mean_iou", "mean_accuracy", "dataset", "dataset_config", "split", "note", "source_url"})

_LICENSE_NAME = "agent-attention-upstream"
_LICENSE_DETAILS = (
    "No license is stated for these checkpoints: the official LeapLabTHU/Agent-Attention repository has no "
    "top-level LICENSE file. Its downstream/segmentation folder is based on mmsegmentation and carries "
    "mmsegmentation's Apache-2.0 LICENSE; the Swin Transformer (MIT) and PVT (Apache-2.0) code it builds on "
    "keep their own licenses. The terms of use of the weights are those set by the Agent Attention authors; contact "
    "them before any commercial use. The agent-hf conversion and modeling code is Apache-2.0."
)

_CARD_TEMPLATE = """\
---
{{ card_data }}
---

# {{ r.backbone }} + {{ r.head }} for ADE20K semantic segmentation

**{{ r.backbone }}** backbone with a **{{ r.head }}** decode head
{%- if r.auxiliary_head %} (plus an auxiliary FCN head, used for the training loss only){% endif %}, trained by
the authors of [*Agent Attention: On the Integration of Softmax and Linear Attention*]({{ paper_url }})
(Han et al., ECCV 2024) for 150-class semantic segmentation on ADE20K, and packaged for 🤗 Transformers by
`agent-hf` (custom code: load it with `trust_remote_code=True`).

The weights are converted from the official mmsegmentation checkpoint; they are not retrained.
Numbers marked *reported* are copied from the [official README]({{ upstream_segmentation_url }}), not re-measured.

## Model details

| | |
|---|---|
| Task | Semantic segmentation, 150 ADE20K classes |
| Backbone | {{ r.backbone }} (ImageNet-1K pretrained) |
| Decode head | {{ r.head }}{% if r.auxiliary_head %} + auxiliary FCN head (training only){% endif %} |
| Parameters | {{ "{:,}".format(r.num_parameters) }} (reported: {{ r.reported_parameters }}) |
| FLOPs @ 512×2048 | {{ flops_cell }} |
| Training | {{ "{:,}".format(r.train_iterations) }} iterations on ADE20K train, 512×512 crops |
| Official config | [`{{ r.upstream_config }}`]({{ upstream_config_url }}) |

**FLOPs.** {{ flops_note }}

### Agent attention

Softmax attention between all N tokens costs O(N²); linear attention is cheap but less expressive. Agent attention
(Q, A, K, V) adds a small set of n ≪ N **agent tokens** A, obtained by **pooling** the queries to a fixed grid
(adaptive average pooling). It then runs **two softmax attentions**:

1. *agent aggregation*: the agents attend to the keys and values, `V_A = softmax(A·Kᵀ/√d + B₁)·V`;
2. *agent broadcast*: every query attends to the agents, `O = softmax(Q·Aᵀ/√d + B₂)·V_A`.

The cost is O(N·n·d), linear in N, while keeping global context; the paper shows it is a generalized linear
attention. **Agent biases** B₁/B₂ (learned position biases between agents and tokens, factorized over height and
width) restore positional information, and a **depth-wise convolution (DWC)** on V is added to the output to keep
the features diverse. {% if r.backbone_tag == "agent-swin" %}In Agent-Swin, agent-attention blocks replace the
shifted-window attention in the high-resolution stages; the remaining blocks keep window attention (see the official
config for the per-stage layout).{% else %}In Agent-PVT, agent attention takes the place of PVT's
spatial-reduction attention in the blocks (see the official config for the per-stage settings).{% endif %}
For dense prediction at 512×2048 the agents are pooled to a per-stage grid suited to that resolution
(`downstream_agent_shapes`) and the bias tables learned at 224×224 are interpolated to it.

## Results on ADE20K (validation, single-scale)

| Source | mIoU (%) | mAcc (%) |
|---|---|---|
{%- for source, miou, macc in results_rows %}
| {{ source }} | {{ miou }} | {{ macc }} |
{%- endfor %}
{% if measured and measured.note %}
*Measurement note:* {{ measured.note }}
{% endif %}
The paper's numbers come from mmsegmentation (ADEChallengeData2016, images resized to a 2048×512 scale with
the aspect ratio kept, no flip, no multi-scale). `scene_parse_150` on the Hub contains the same 2,000 validation
images and 150 classes.

## How to use

The modeling code lives in this repository (`auto_map` in `config.json`), so loading requires
`trust_remote_code=True`: review the `.py` files first and pin `revision=` to a commit you have checked.

```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

repo_id = "{{ repo_id }}"
processor = AutoImageProcessor.from_pretrained(repo_id, trust_remote_code=True)
model = AutoModelForSemanticSegmentation.from_pretrained(repo_id, trust_remote_code=True).eval()

image = Image.open("{{ widget_files[0] }}").convert("RGB")
inputs = processor(images=image, return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)
# (height, width) map of ADE20K class ids in [0, 150); names in model.config.id2label
segmentation = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
```

With the pipeline (one binary mask per class present in the image):

```python
from transformers import pipeline

segmenter = pipeline("image-segmentation", model="{{ repo_id }}", trust_remote_code=True)
segments = segmenter("{{ widget_urls[0] }}")
print([segment["label"] for segment in segments])
```

The widget examples are the ADE20K validation images {{ widget_files_md }}, stored in this repository under
`examples/` (ADE20K images are provided by MIT CSAIL for research and education; see the ADE20K terms of use).

## Convert the official checkpoint

{% if r.official_checkpoint_url -%}
Download the [official mmsegmentation checkpoint]({{ r.official_checkpoint_url }}) (linked from the
[official README]({{ upstream_segmentation_url }})), then:
{%- else -%}
The [official README]({{ upstream_segmentation_url }}) does not link a checkpoint for {{ r.backbone }} at the time
of writing; with the authors' mmsegmentation checkpoint:
{%- endif %}

```bash
python scripts/convert_official_checkpoint.py --checkpoint PATH/TO/official.pth --preset {{ r.preset }} \\
    --output_dir converted/{{ r.preset }}
python scripts/push_to_hub.py --model_dir converted/{{ r.preset }} --repo_id {{ repo_id }} --preset {{ r.preset }}
```

(scripts from the `agent-hf` project).

## Train or evaluate

```bash
# evaluate this checkpoint on the ADE20K validation split
python scripts/run_semantic_segmentation.py --model_name_or_path {{ repo_id }} --dataset_name scene_parse_150 \\
    --do_eval --output_dir outputs/{{ r.preset }}-eval

# fine-tune from this checkpoint (the official recipe trains {{ "{:,}".format(r.train_iterations) }} iterations)
python scripts/run_semantic_segmentation.py --model_name_or_path {{ repo_id }} --dataset_name scene_parse_150 \\
    --do_train --do_eval --output_dir outputs/{{ r.preset }}
```

Official training recipe: {{ training_recipe }}.
{% if demo_url %}
## Demo

Try the model in the [demo Space]({{ demo_url }}) (upload or pick an image, choose a model, see the color overlay and
the classes found). The Hub's hosted widget does not run custom-code models, so the Space is the live demo; the same
Gradio app runs locally from the agent-hf repository with `make app` (`app/app.py`).
{% endif %}
## Limitations

The model predicts the 150 ADE20K categories only (indoor and outdoor scenes); it was trained on ADE20K alone and
inherits that dataset's biases. The reported numbers were obtained with the authors' mmsegmentation pipeline;
evaluating this port with a different data pipeline (resizing, padding, label reduction) can give slightly different
numbers.

## License

`license: other`. {{ license_details }}

## Citation

```bibtex
{{ bibtex }}
```
"""


def _get_paper_result(preset_name: str) -> PaperResult:
    try:
        return PAPER_RESULTS[preset_name]
    except KeyError:
        raise ValueError(f"Unknown preset {preset_name!r}. Expected one of: {', '.join(PAPER_RESULTS)}.") from None


def _eval_results(result: PaperResult, measured: Mapping[str, Any] | None, repo_id: str) -> list[EvalResult]:
    common = dict(task_type="semantic-segmentation", task_name="Semantic Segmentation")
    eval_results = [
        EvalResult(
            **common,
            dataset_type="scene_parse_150",
            dataset_name="ADE20K",
            dataset_split="validation",
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=value,
            source_name=_PAPER_SOURCE_NAME,
            source_url=PAPER_URL,
        )
        for metric_type, metric_name, value in (
            ("mean_iou", "mIoU", result.mean_iou),
            ("mean_accuracy", "mAcc", result.mean_accuracy),
        )
    ]
    if measured:
        # `huggingface_hub` groups results by (task, dataset, config, split, revision) and keeps the source of the
        # first one: measured results on scene_parse_150 always carry a config ("scene_parsing", its default) so that
        # they never share the paper's identifier (no config) and are never labeled as the paper's.
        for metric_type, metric_name in (("mean_iou", "mIoU"), ("mean_accuracy", "mAcc")):
            if measured.get(metric_type) is None:
                continue
            eval_results.append(
                EvalResult(
                    **common,
                    dataset_type=measured["dataset"],
                    dataset_name="ADE20K" if measured["dataset"] == "scene_parse_150" else measured["dataset"],
                    dataset_config=measured["dataset_config"],
                    dataset_split=measured["split"],
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=measured[metric_type],
                    source_name=_MEASURED_SOURCE_NAME,
                    source_url=measured.get("source_url") or f"https://huggingface.co/{repo_id}",
                )
            )
    return eval_results


def _normalize_measured(measured: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Validates the ``measured`` argument of :func:`render_model_card` and fills in defaults."""
    if not measured:
        return None
    unknown = set(measured) - _MEASURED_KEYS
    if unknown:
        raise ValueError(f"Unknown key(s) in `measured`: {sorted(unknown)}. Allowed keys: {sorted(_MEASURED_KEYS)}.")
    if measured.get("mean_iou") is None:
        raise ValueError("`measured` must contain 'mean_iou' (in %, like the paper's table).")
    out: dict[str, Any] = {
        "dataset": "scene_parse_150",
        "dataset_config": None,
        "split": "validation",
        "note": None,
        "source_url": None,
        "mean_accuracy": None,
    }
    out.update({key: value for key, value in measured.items() if value is not None})
    if out["dataset"] == "scene_parse_150" and out["dataset_config"] is None:
        out["dataset_config"] = "scene_parsing"  # the default config; also keeps our results apart (_eval_results)
    for key in ("mean_iou", "mean_accuracy"):
        value = out[key]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            raise ValueError(f"`measured[{key!r}]` must be a percentage in [0, 100], got {value!r}.")
    if all(out[key] is None or out[key] <= 1 for key in ("mean_iou", "mean_accuracy")):
        raise ValueError(
            f"`measured` values look like fractions (mean_iou={out['mean_iou']!r}): pass percentages, as in the "
            "paper's table (e.g. 46.68, not 0.4668)."
        )
    for key in ("mean_iou", "mean_accuracy"):
        if out[key] is not None:
            out[key] = round(float(out[key]), 2)
    return out


def _results_rows(result: PaperResult, measured: Mapping[str, Any] | None) -> list[tuple[str, str, str]]:
    """Rows (source, mIoU, mAcc) of the results table: the paper's, then ours if any."""
    rows = [(_PAPER_SOURCE_NAME, f"{result.mean_iou:.2f}", f"{result.mean_accuracy:.2f}")]
    if measured:
        macc = measured["mean_accuracy"]
        rows.append(
            (
                f"{_MEASURED_SOURCE_NAME}: `{measured['dataset']}` ({measured['split']})",
                f"{measured['mean_iou']:.2f}",
                "—" if macc is None else f"{macc:.2f}",
            )
        )
    return rows


def _flops_text(result: PaperResult, flops: float | None) -> tuple[str, str]:
    upstream = (
        f"The authors report {result.reported_gflops:g}G, computed by their `tools/get_flops.py` (mmcv's "
        "`get_model_complexity_info` plus analytic attention terms); mmcv counts multiply-accumulates, so that "
        "figure is comparable to MACs."
    )
    if flops is None:
        return (
            f"{result.reported_gflops:g}G (reported by the authors, not re-measured)",
            upstream,
        )
    if isinstance(flops, bool) or not isinstance(flops, (int, float)) or flops <= 0:
        raise ValueError(f"`flops` must be a positive number of floating-point operations, got {flops!r}.")
    return (
        f"{flops / 2e9:,.1f}G MACs = {flops / 1e9:,.1f}G FLOPs (counted by agent-hf); "
        f"reported: {result.reported_gflops:g}G",
        "Counted by agent-hf with `torch.utils.flop_counter.FlopCounterMode` (`agent_hf.flops.count_flops`: one "
        "inference pass on a 1×3×512×2048 input, auxiliary head excluded as in the paper); it counts 2 FLOPs per "
        "multiply-accumulate, so MACs = FLOPs / 2. " + upstream,
    )


# FLOPs of one 512x2048 inference pass (auxiliary head excluded, as in the paper's count), counted by
# `agent_hf.flops.count_flops`; tests/test_model_cards.py recounts them from the models.
COUNTED_FLOPS: Mapping[str, int] = MappingProxyType(
    {
        "agent-swin-t-upernet-ade20k": 1_910_615_020_704,
        "agent-swin-s-upernet-ade20k": 2_086_380_258_912,
        "agent-swin-b-upernet-ade20k": 2_393_411_066_240,
        "agent-pvt-t-fpn-ade20k": 295_152_394_304,
        "agent-pvt-s-fpn-ade20k": 426_203_607_536,
        "agent-pvt-m-fpn-ade20k": 650_539_194_416,
        "agent-pvt-l-fpn-ade20k": 879_804_482_784,
    }
)

# The Gradio app of `app/`, deployed as a Space; the cards link to it.
DEMO_SPACE_URL = "https://huggingface.co/spaces/agent-hf/agent-attention-segmentation"


def render_model_card(
    preset_name: str,
    *,
    repo_id: str | None = None,
    measured: Mapping[str, Any] | None = None,
    flops: float | None = None,
    demo_url: str | None = DEMO_SPACE_URL,
) -> ModelCard:
    """Renders the Hub model card of one preset.

    Args:
        preset_name: one of :data:`PAPER_RESULTS` (e.g. ``"agent-swin-t-upernet-ade20k"``).
        repo_id: Hub repository the card is for (``"namespace/name"``). Used in the usage snippets and in the widget
            URLs. Defaults to ``f"{DEFAULT_NAMESPACE}/{preset_name}"``.
        measured: optional results measured with agent-hf, added to ``model-index`` and to the results table next to
            the paper's numbers (never mixed with them). Keys: ``mean_iou`` (required, %), ``mean_accuracy`` (%),
            ``dataset`` (Hub dataset id, default ``"scene_parse_150"``), ``dataset_config`` (default
            ``"scene_parsing"``), ``split`` (default ``"validation"``), ``note`` (free text shown under the table),
            ``source_url`` (default: the model repo URL).
        flops: total floating-point operations of one forward pass at 512x2048, as counted by
            ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-accumulate). Defaults to the
            project's own count in :data:`COUNTED_FLOPS`; the authors' number is always shown beside it.
        demo_url: URL of a demo Space; adds a "Demo" section.

    Returns:
        A :class:`huggingface_hub.ModelCard` whose front matter carries ``pipeline_tag``, ``library_name``, ``tags``,
        ``datasets``, ``license`` (``other`` + ``license_name``/``license_link``/``license_details``), ``widget`` and
        ``model-index``.

    Widget images: ``widget[*].src`` point at ``https://huggingface.co/{repo_id}/resolve/main/examples/<name>`` for
    the names in :data:`WIDGET_EXAMPLE_IMAGES` (standard ADE20K validation file names). Upload those images to the
    repo's ``examples/`` folder (put them in the model folder before :func:`push_folder_to_hub`).
    """
    result = _get_paper_result(preset_name)
    repo_id = repo_id or f"{DEFAULT_NAMESPACE}/{preset_name}"
    _check_repo_id(repo_id)
    measured_norm = _normalize_measured(measured)
    flops_cell, flops_note = _flops_text(result, COUNTED_FLOPS.get(preset_name) if flops is None else flops)

    widget_urls = [f"https://huggingface.co/{repo_id}/resolve/main/examples/{name}" for name in WIDGET_EXAMPLE_IMAGES]
    card_data = ModelCardData(
        pipeline_tag="image-segmentation",
        library_name="transformers",
        license="other",
        license_name=_LICENSE_NAME,
        license_link=UPSTREAM_REPO_URL,
        license_details=_LICENSE_DETAILS,
        tags=[
            "agent-attention",
            "semantic-segmentation",
            result.head_tag,
            result.backbone_tag,
            "vision",
            "ade20k",
            "custom_code",
            "arxiv:2312.08874",
        ],
        datasets=["scene_parse_150"],
        metrics=["mean_iou"],
        widget=[
            {"src": url, "example_title": f"ADE20K val: {Path(name).stem}"}
            for url, name in zip(widget_urls, WIDGET_EXAMPLE_IMAGES, strict=True)
        ],
        model_name=preset_name,
        eval_results=_eval_results(result, measured_norm, repo_id),
    )
    return ModelCard.from_template(
        card_data,
        template_str=_CARD_TEMPLATE,
        r=result,
        repo_id=repo_id,
        paper_url=PAPER_URL,
        upstream_segmentation_url=UPSTREAM_SEGMENTATION_URL,
        upstream_config_url=f"{UPSTREAM_SEGMENTATION_URL.replace('/tree/', '/blob/')}/{result.upstream_config}",
        flops_cell=flops_cell,
        flops_note=flops_note,
        measured=measured_norm,
        results_rows=_results_rows(result, measured_norm),
        widget_files=list(WIDGET_EXAMPLE_IMAGES),
        widget_files_md=", ".join(f"`{name}`" for name in WIDGET_EXAMPLE_IMAGES),
        widget_urls=widget_urls,
        training_recipe=_TRAINING_RECIPES[result.backbone_tag],
        demo_url=demo_url,
        license_details=_LICENSE_DETAILS,
        bibtex=BIBTEX,
    )


def write_model_cards(output_dir: PathLike = "model_cards") -> list[Path]:
    """Writes ``<output_dir>/<preset>.md`` for the seven presets (default repo ids, paper numbers only).

    Returns:
        The written paths, in :data:`PAPER_RESULTS` order.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for preset_name in PAPER_RESULTS:
        path = output_dir / f"{preset_name}.md"
        render_model_card(preset_name).save(path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------------------------------
# Model folder validation
# ---------------------------------------------------------------------------------------------------------------------

CONFIG_NAME = "config.json"
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"

# Not uploaded: the card is pushed separately (last), Trainer checkpoints / optimizer state / logs are not model files.
_IGNORED_DIRS = (
    ".git",
    ".cache",
    ".huggingface",
    "__pycache__",
    ".ipynb_checkpoints",
    "runs",
    "checkpoint-*",
    "global_step*",
)
_IGNORED_FILES = (
    "optimizer.pt",
    "optimizer.bin",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*.pth",
    "trainer_state.json",
    "training_args.bin",
    "*.pyc",
    ".DS_Store",
)


def _is_ignored(relative: PurePosixPath) -> bool:
    if relative.as_posix() == constants.REPOCARD_NAME:
        return True
    if any(PurePosixPath(part).match(pattern) for part in relative.parts[:-1] for pattern in _IGNORED_DIRS):
        return True
    return any(relative.match(pattern) for pattern in _IGNORED_FILES)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def _auto_map_modules(auto_map: Any, source: Path) -> set[str]:
    """Module files (``"modeling_x.py"``) referenced by an ``auto_map``; entries in other repos (``repo--mod.Cls``)
    are skipped."""
    if not isinstance(auto_map, dict):
        raise ValueError(f"{source}: `auto_map` must be a mapping of Auto class -> 'module.ClassName'.")
    references: list[str] = []
    for value in auto_map.values():
        references.extend(v for v in (value if isinstance(value, (list, tuple)) else [value]) if v)
    modules = set()
    for reference in references:
        if not isinstance(reference, str) or "." not in reference:
            raise ValueError(f"{source}: invalid `auto_map` entry {reference!r}, expected 'module.ClassName'.")
        if "--" in reference:  # code hosted in another repository
            continue
        module = reference.rsplit(".", 1)[0]
        modules.add(module.replace(".", "/") + ".py")
    return modules


def _relative_imports(py_file: Path) -> set[str]:
    """Sibling modules imported with ``from .x import y`` (transformers downloads them along with the module)."""
    try:
        tree = ast.parse(py_file.read_text(encoding="utf-8"), filename=str(py_file))
    except SyntaxError as err:
        raise ValueError(f"{py_file} is not valid Python: {err}") from err
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                modules.add(node.module.replace(".", "/") + ".py")
            else:  # from . import x
                modules.update(alias.name + ".py" for alias in node.names)
    return modules


def validate_model_folder(folder: PathLike) -> list[str]:
    """Checks that ``folder`` is a complete remote-code model folder, without touching the network.

    Required: ``config.json`` with an ``auto_map``, ``preprocessor_config.json``, weights as ``model.safetensors``
    or a sharded ``model.safetensors.index.json`` (with all its shards), and every ``.py`` module named in the
    ``auto_map`` of either config (plus the sibling modules they import with ``from .x import ...``).

    Returns:
        The files to upload (POSIX paths relative to ``folder``, sorted). ``README.md``, Trainer checkpoints
        (``checkpoint-*/``), optimizer/scheduler/RNG state, ``training_args.bin``, TensorBoard ``runs/`` and caches
        are left out.

    Raises:
        FileNotFoundError: the folder or a required file is missing (the message names the folder and every missing
            file).
        ValueError: a file is present but invalid (bad JSON, no ``auto_map``, incomplete shard index, ...).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Model folder '{folder}' does not exist or is not a directory.")

    missing = [name for name in (CONFIG_NAME, PREPROCESSOR_CONFIG_NAME) if not (folder / name).is_file()]
    has_single = (folder / SAFE_WEIGHTS_NAME).is_file()
    has_index = (folder / SAFE_WEIGHTS_INDEX_NAME).is_file()
    if not (has_single or has_index):
        hint = ""
        if any(folder.glob("pytorch_model*.bin")):
            hint = " (found pytorch_model*.bin: re-save with `model.save_pretrained(dir)`, safetensors is the default)"
        missing.append(f"{SAFE_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME}{hint}")
    if missing:
        raise FileNotFoundError(
            f"Model folder '{folder}' is incomplete, nothing was uploaded. Missing: {'; '.join(missing)}. "
            "Save the model with `model.save_pretrained(folder)` and the image processor with "
            "`processor.save_pretrained(folder)`."
        )

    config = _load_json(folder / CONFIG_NAME)
    if not isinstance(config, dict):
        raise ValueError(f"{folder / CONFIG_NAME} must contain a JSON object.")
    if not config.get("auto_map"):
        raise ValueError(
            f"{folder / CONFIG_NAME} has no `auto_map`: AutoModelForSemanticSegmentation.from_pretrained(..., "
            "trust_remote_code=True) would not find the model code. Register the classes with "
            "`register_for_auto_class()` before `save_pretrained`."
        )
    modules = _auto_map_modules(config["auto_map"], folder / CONFIG_NAME)
    preprocessor_config = _load_json(folder / PREPROCESSOR_CONFIG_NAME)
    if isinstance(preprocessor_config, dict) and preprocessor_config.get("auto_map"):
        modules |= _auto_map_modules(preprocessor_config["auto_map"], folder / PREPROCESSOR_CONFIG_NAME)

    # Follow relative imports so that e.g. modeling_x.py -> .attention is caught too.
    missing_modules: list[str] = []
    to_visit, seen = sorted(modules), set()
    while to_visit:
        module = to_visit.pop()
        if module in seen:
            continue
        seen.add(module)
        if not (folder / module).is_file():
            missing_modules.append(module)
            continue
        to_visit.extend(sorted(_relative_imports(folder / module) - seen))
    if missing_modules:
        raise FileNotFoundError(
            f"Model folder '{folder}' is missing the custom code file(s) {sorted(missing_modules)} referenced by "
            "`auto_map` (or imported by it); nothing was uploaded. `save_pretrained` copies them when the classes "
            "were registered with `register_for_auto_class()`."
        )

    if has_index:
        index = _load_json(folder / SAFE_WEIGHTS_INDEX_NAME)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{folder / SAFE_WEIGHTS_INDEX_NAME} has no `weight_map`.")
        missing_shards = sorted({shard for shard in weight_map.values() if not (folder / shard).is_file()})
        if missing_shards:
            raise FileNotFoundError(
                f"Model folder '{folder}' is missing weight shard(s) {missing_shards} listed in "
                f"{SAFE_WEIGHTS_INDEX_NAME}; nothing was uploaded."
            )

    files = []
    for path in folder.rglob("*"):
        if path.is_file():
            relative = PurePosixPath(path.relative_to(folder).as_posix())
            if not _is_ignored(relative):
                files.append(relative.as_posix())
    missing_examples = [name for name in WIDGET_EXAMPLE_IMAGES if f"examples/{name}" not in files]
    if missing_examples:
        logger.warning(
            "Model folder '%s' has no examples/%s: the model card widget points at these files and will show broken "
            "images until they are uploaded.",
            folder,
            ", examples/".join(missing_examples),
        )
    return sorted(files)


# ---------------------------------------------------------------------------------------------------------------------
# Publishing
# ---------------------------------------------------------------------------------------------------------------------


class HubTokenMissingError(RuntimeError):
    """No Hugging Face token was given and none is configured (``HF_TOKEN`` or ``hf auth login``)."""


class CardPushError(RuntimeError):
    """The model files were published but the model card commit failed.

    Attributes:
        repo_id: the repository.
        model_commit: the commit that published the model files (without the card).
        revision: where to push the card when retrying (a branch, or ``refs/pr/N`` when a PR was opened).
    """

    def __init__(self, message: str, *, repo_id: str, model_commit: CommitInfo, revision: str | None) -> None:
        super().__init__(message)
        self.repo_id = repo_id
        self.model_commit = model_commit
        self.revision = revision


@dataclass(frozen=True)
class PushResult:
    """Outcome of :func:`push_folder_to_hub`.

    Attributes:
        repo_url: URL of the repository.
        uploaded_files: files of the model commit (POSIX paths in the repo); ``README.md`` is pushed separately.
        model_commit: commit with the model files.
        card_commit: commit with ``README.md`` (the last one).
    """

    repo_url: str
    uploaded_files: tuple[str, ...]
    model_commit: CommitInfo
    card_commit: CommitInfo

    @property
    def commit_urls(self) -> tuple[str, str]:
        """URLs of the two commits, model files first."""
        return (self.model_commit.commit_url, self.card_commit.commit_url)

    @property
    def pr_url(self) -> str | None:
        """URL of the pull request when ``create_pr=True``, else ``None``."""
        return self.model_commit.pr_url


def _check_repo_id(repo_id: str) -> None:
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(
            f"Invalid repo_id {repo_id!r}: expected 'namespace/name' (your username or an organization, then the "
            "model name), e.g. 'your-username/agent-swin-t-upernet-ade20k'."
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"Invalid repo_id {repo_id!r}: {err}") from err


def _resolve_token(token: str | None) -> str:
    token = token or get_token()
    if not token:
        raise HubTokenMissingError(
            "No Hugging Face token found, nothing was uploaded. Log in with `hf auth login` (or "
            "`huggingface_hub.login()`), set the HF_TOKEN environment variable, or pass a token with write access "
            "(`--token` / `token=`); create one at https://huggingface.co/settings/tokens."
        )
    return token


def _endpoint() -> str:
    """Hub endpoint, read at call time: ``HF_ENDPOINT`` if set, else huggingface_hub's configured endpoint."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _api(token: str) -> HfApi:
    endpoint = _endpoint()
    if constants.is_offline_mode():
        raise OfflineModeIsEnabled(
            f"Cannot publish to {endpoint}: offline mode is enabled (HF_HUB_OFFLINE=1); nothing was uploaded. "
            "Unset HF_HUB_OFFLINE to push."
        )
    return HfApi(endpoint=endpoint, token=token, library_name="agent-hf")


def _load_card(card: ModelCard | PathLike) -> ModelCard:
    if isinstance(card, ModelCard):
        return card
    path = Path(card)
    if not path.is_file():
        raise FileNotFoundError(f"Model card file '{path}' does not exist.")
    try:
        return ModelCard(path.read_text(encoding="utf-8"))
    except Exception as err:  # yaml errors, invalid model-index, ...
        raise ValueError(f"Model card '{path}' has invalid metadata (YAML front matter): {err}") from err


def _card_from_folder(folder: Path, repo_id: str) -> ModelCard:
    config = _load_json(folder / CONFIG_NAME)
    preset = config.get("agent_hf_preset") if isinstance(config, dict) else None
    if not preset:
        raise ValueError(
            f"No model card given and {folder / CONFIG_NAME} has no `agent_hf_preset` to render one from: pass "
            "`card=` (a ModelCard or a .md file) or a preset."
        )
    return render_model_card(preset, repo_id=repo_id)


def _push_card(
    api: HfApi, card: ModelCard, repo_id: str, *, revision: str | None, create_pr: bool, commit_message: str | None
) -> CommitInfo:
    return api.upload_file(
        path_or_fileobj=str(card).encode("utf-8"),
        path_in_repo=constants.REPOCARD_NAME,
        repo_id=repo_id,
        repo_type="model",
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message or "Add model card",
    )


def _needs_branch(revision: str | None) -> bool:
    return bool(revision) and revision != constants.DEFAULT_REVISION and not revision.startswith("refs/")


def push_card_to_hub(
    repo_id: str,
    card: ModelCard | PathLike,
    *,
    token: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
) -> CommitInfo:
    """Pushes only ``README.md`` to an existing repository (e.g. after a :class:`CardPushError`).

    Args:
        repo_id: ``"namespace/name"``.
        card: a :class:`huggingface_hub.ModelCard` or the path of a ``.md`` file.
        token: Hub token; defaults to ``HF_TOKEN`` / the stored login.
        revision: branch (or ``refs/pr/N``) to commit to; defaults to ``main``.
        create_pr: open a pull request instead of committing directly.
        commit_message: defaults to ``"Add model card"``.
    """
    _check_repo_id(repo_id)
    card = _load_card(card)
    api = _api(_resolve_token(token))
    return _push_card(api, card, repo_id, revision=revision, create_pr=create_pr, commit_message=commit_message)


def push_folder_to_hub(
    folder: PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    card: ModelCard | PathLike | None = None,
    commit_message: str | None = None,
) -> PushResult:
    """Publishes a ``save_pretrained`` folder to the Hub: model files in one commit, then the model card, last.

    Everything that can be checked locally is checked before the first request (repo id, folder contents, card
    metadata, token), so a mistake never leaves a half-published repository.

    Args:
        folder: the model folder (``config.json`` with ``auto_map``, its ``.py`` modules, ``model.safetensors`` or a
            sharded index, ``preprocessor_config.json``); see :func:`validate_model_folder`.
        repo_id: ``"namespace/name"``; the repository is created if needed.
        token: Hub token with write access; defaults to ``HF_TOKEN`` / the stored login (``hf auth login``).
        private: create the repository as private (ignored if it already exists; otherwise the Hub's default
            visibility applies).
        revision: branch to push to; created from ``main`` if missing. Defaults to ``main``.
        create_pr: open a pull request (against ``revision`` or ``main``) instead of committing directly; the card is
            then added to the same pull request.
        card: a :class:`huggingface_hub.ModelCard` or a ``.md`` path; defaults to the card rendered from the
            ``agent_hf_preset`` of ``config.json``. A ``README.md`` inside ``folder`` is never uploaded.
        commit_message: message of the model-files commit.

    Returns:
        A :class:`PushResult` (``commit_urls``, ``pr_url``, ``uploaded_files``).

    Raises:
        ValueError / FileNotFoundError: invalid repo id, incomplete folder or invalid card (nothing sent).
        HubTokenMissingError: no token available (nothing sent).
        huggingface_hub.errors.OfflineModeIsEnabled: ``HF_HUB_OFFLINE`` is set (nothing sent).
        CardPushError: the model files were published but the card commit failed; retry with
            :func:`push_card_to_hub` (``--card_only`` in ``scripts/push_to_hub.py``).
        huggingface_hub.errors.HfHubHTTPError: the Hub rejected the repository creation or the model commit.
    """
    _check_repo_id(repo_id)
    folder = Path(folder)
    files = validate_model_folder(folder)
    card = _load_card(card) if card is not None else _card_from_folder(folder, repo_id)
    api = _api(_resolve_token(token))

    repo_url = api.create_repo(repo_id, repo_type="model", private=True if private else None, exist_ok=True)
    if _needs_branch(revision):
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)

    # One explicit `create_commit` rather than `upload_folder`: with hf_xet installed, `upload_folder` streams large
    # folders in several commits, while a model must appear atomically.
    model_commit = api.create_commit(
        repo_id,
        operations=[CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in files],
        commit_message=commit_message or f"Upload {folder.resolve().name} with agent-hf",
        commit_description="Files: " + ", ".join(files),
        repo_type="model",
        revision=revision,
        create_pr=create_pr,
    )
    logger.info("Uploaded %d file(s) to %s: %s", len(files), repo_id, model_commit.commit_url)

    # When a PR was opened, the card goes into the same PR (refs/pr/N), not into a second one. If the model files
    # were all unchanged (no commit, hence no PR), the card gets its own PR, never a direct commit.
    if create_pr and model_commit.pr_revision:
        card_revision, card_create_pr = model_commit.pr_revision, False
    else:
        card_revision, card_create_pr = revision, create_pr
    try:
        card_commit = _push_card(
            api, card, repo_id, revision=card_revision, create_pr=card_create_pr, commit_message=None
        )
    except Exception as err:
        retry = f"--model_dir {folder} --repo_id {repo_id} --card_only"
        if card_revision:
            retry += f" --revision {card_revision}"
        if card_create_pr:
            retry += " --create_pr"
        raise CardPushError(
            f"The model files were published to {repo_id} ({model_commit.commit_url}) but the model card (README.md) "
            f"could not be uploaded: {err}\nThe repository now has the weights WITHOUT the model card. Retry only the "
            f"card with:\n  python scripts/push_to_hub.py {retry}\nor `agent_hf.hub.push_card_to_hub(...)`.",
            repo_id=repo_id,
            model_commit=model_commit,
            revision=card_revision,
        ) from err

    return PushResult(
        repo_url=str(repo_url),
        uploaded_files=tuple(files),
        model_commit=model_commit,
        card_commit=card_commit,
    )
