"""Agent Attention semantic segmentation demo: a Gradio app, ready to be a Hugging Face Space.

Upload an image (or pick an example), choose a model and get the ADE20K-palette color overlay and a legend of
the classes found. Models are one of

* the seven ADE20K presets of `agent_hf.PRESETS`: the published weights ``<namespace>/<preset>`` when the Hub
  has them (namespace ``agent-hf`` by default, ``--preset_namespace``), otherwise the preset's architecture with
  *random* weights (the UI says so);
* a local model folder written by ``save_model_folder`` / ``save_pretrained`` (e.g. ``outputs/demo/model``, the
  default when ``scripts/demo.py`` has produced it);
* a Hub repo id (``namespace/name``) of any transformers semantic segmentation model.

Everything that computes something is a plain function (``segment``, ``predict``, ``overlay``, ``legend_rows``,
``legend_html``, ``load_model``), unit-testable without Gradio; ``build_demo`` only wires them to components.

Run locally:  python app/app.py --host 127.0.0.1 --port 7860 [--model PATH_OR_PRESET_OR_REPO] [--offline]
On a Space:   `python app.py` (Spaces set GRADIO_SERVER_NAME / GRADIO_SERVER_PORT).
"""

from __future__ import annotations

import os

# No phoning home: Gradio's analytics/version check off, no Hub telemetry. Set before gradio/transformers load.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import html  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections import OrderedDict  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

APP_DIR = Path(__file__).resolve().parent
REPO_ROOT = APP_DIR.parent

try:
    import agent_hf
except ImportError:  # a source checkout without `pip install -e .`, or a Space with `agent_hf/` copied next to app.py
    for _candidate in (APP_DIR, REPO_ROOT / "src"):
        if (_candidate / "agent_hf" / "__init__.py").is_file():
            sys.path.insert(0, str(_candidate))
            break
    import agent_hf

from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation  # noqa: E402

from agent_hf.data.ade20k import ADE20K_PALETTE  # noqa: E402
from agent_hf.families import FAMILIES  # noqa: E402
from agent_hf.models.image_ops import open_image, to_rgb_array  # noqa: E402
from agent_hf.models.image_processing_agent import AgentImageProcessor  # noqa: E402
from agent_hf.models.segmentation_inference import ServingLimits  # noqa: E402
from agent_hf.saving import make_image_processor  # noqa: E402

EXAMPLES_DIR = APP_DIR / "examples"
DEMO_MODEL_DIR = Path("outputs") / "demo" / "model"  # written by scripts/demo.py
#: The preset used when there is no trained demo model: the smallest of the seven (15M parameters).
FALLBACK_PRESET = "agent-pvt-t-fpn-ade20k"
DEFAULT_PRESET_NAMESPACE = "agent-hf"
#: The long-side cap of the class map: the model sees the processor's input (at most 2048x512 for ADE20K models)
#: whatever the photo's size, but the class map is computed at most this many pixels on its longer side and then
#: enlarged (nearest neighbor) to the full image, so that a huge photo never needs a (num_labels, H, W) float tensor.
#: Up to this size the class map is exactly the pipeline's (mmseg's evaluation).
MAX_PREDICTION_SIDE = 1024
#: The overlay is blended this many pixels at a time (float32), into a uint8 image.
OVERLAY_CHUNK_PIXELS = 1 << 20
DEFAULT_ALPHA = 0.5
MODEL_CACHE_SIZE = 3
#: What one image may cost (the Space is open to anyone): pixels read from the header before decoding, encoded bytes.
#: Raised like the handler's, with AGENT_HF_MAX_PIXELS / AGENT_HF_MAX_BYTES.
LIMITS = ServingLimits.from_env()
_PALETTE = np.asarray(ADE20K_PALETTE, dtype=np.uint8)


@dataclass(frozen=True)
class Settings:
    """Where presets' weights come from. ``offline``: never contact the Hub (local folders and HF cache only)."""

    preset_namespace: str | None = DEFAULT_PRESET_NAMESPACE
    offline: bool = False


SETTINGS = Settings(offline=os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"})


def configure(preset_namespace: str | None = DEFAULT_PRESET_NAMESPACE, offline: bool | None = None) -> Settings:
    """Changes where models come from (and empties the model cache)."""
    global SETTINGS
    SETTINGS = Settings(preset_namespace or None, SETTINGS.offline if offline is None else offline)
    clear_model_cache()
    return SETTINGS


# --------------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module
    image_processor: object
    choice: str
    source: str  # what was loaded, for people
    random_weights: bool

    @property
    def id2label(self) -> dict[int, str]:
        return {int(k): str(v) for k, v in self.model.config.id2label.items()}


def default_model_choice() -> str:
    """``$AGENT_HF_APP_MODEL``, else ``outputs/demo/model`` (cwd or repo root) if present, else the fallback preset."""
    if os.environ.get("AGENT_HF_APP_MODEL"):
        return os.environ["AGENT_HF_APP_MODEL"]
    if (DEMO_MODEL_DIR / "config.json").is_file():  # relative to the working directory, shown as such
        return str(DEMO_MODEL_DIR)
    if (REPO_ROOT / DEMO_MODEL_DIR / "config.json").is_file():
        return str(REPO_ROOT / DEMO_MODEL_DIR)
    return FALLBACK_PRESET


def model_choices(default: str | None = None) -> list[str]:
    """The dropdown's entries: the default (if not a preset), then the seven presets."""
    default = default or default_model_choice()
    return ([] if default in agent_hf.PRESETS else [default]) + list(agent_hf.PRESETS)


def _normalize_choice(choice: str | None) -> str:
    choice = (choice or "").strip()
    return choice or default_model_choice()


def _processor_for(source: str, model, **kwargs):
    """The model's image processor; agent_hf models always get an AgentImageProcessor (mmseg's test pipeline), also
    from folders written by earlier versions (whose SegformerImageProcessor squashed images to 512x512)."""
    try:
        processor = AutoImageProcessor.from_pretrained(source, **kwargs)
    except (OSError, ValueError):  # no preprocessor_config.json
        processor = None
    if model.config.model_type in FAMILIES and not isinstance(processor, AgentImageProcessor):
        return make_image_processor(source=processor, model_config=model.config)
    return processor or make_image_processor(model_config=model.config)


def _load_pretrained(source: str, choice: str, **kwargs) -> LoadedModel:
    model = AutoModelForSemanticSegmentation.from_pretrained(source, **kwargs).eval()
    return LoadedModel(model, _processor_for(source, model, **kwargs), choice, source, random_weights=False)


def _load_uncached(choice: str) -> LoadedModel:
    hub_kwargs = {"local_files_only": True} if SETTINGS.offline else {}
    if choice in agent_hf.PRESETS:
        reason = "no Hub namespace is configured for presets"
        if SETTINGS.preset_namespace:
            repo_id = f"{SETTINGS.preset_namespace}/{choice}"
            try:
                return _load_pretrained(repo_id, choice, **hub_kwargs)
            except (OSError, ValueError) as error:  # not published / offline / unreachable
                why = type(error).__name__ + (", offline" if SETTINGS.offline else "")
                reason = f"`{repo_id}` could not be loaded ({why})"
        with torch.random.fork_rng(devices=[]):  # the same "random" model on every start; global RNG untouched
            torch.manual_seed(0)
            model = AutoModelForSemanticSegmentation.from_config(agent_hf.preset_config(choice)).eval()
        source = f"{choice} architecture; {reason}"
        return LoadedModel(model, make_image_processor(model_config=model.config), choice, source, random_weights=True)
    folder = Path(choice).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ValueError(f"{choice!r} is a folder without config.json, not a saved model folder")
        return _load_pretrained(str(folder), choice)
    if choice.count("/") == 1 and not choice.startswith((".", "/", "~")):
        return _load_pretrained(choice, choice, **hub_kwargs)
    raise ValueError(
        f"Unknown model {choice!r}: expected one of the presets ({', '.join(agent_hf.PRESETS)}), "
        "an existing model folder, or a Hub repo id 'namespace/name'"
    )


_MODEL_CACHE: OrderedDict[tuple[str, Settings], LoadedModel] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def load_model(choice: str | None) -> LoadedModel:
    """The model for a dropdown value (preset, folder or repo id; empty: the default), cached per choice."""
    choice = _normalize_choice(choice)
    key = (choice, SETTINGS)
    with _CACHE_LOCK:
        if key in _MODEL_CACHE:
            _MODEL_CACHE.move_to_end(key)
            return _MODEL_CACHE[key]
        loaded = _load_uncached(choice)
        _MODEL_CACHE[key] = loaded
        while len(_MODEL_CACHE) > MODEL_CACHE_SIZE:
            _MODEL_CACHE.popitem(last=False)
        return loaded


def clear_model_cache() -> None:
    with _CACHE_LOCK:
        _MODEL_CACHE.clear()


def model_status(choice: str | None) -> str:
    """Markdown describing the model a choice resolves to; says loudly when its weights are random."""
    loaded = load_model(choice)
    num_labels = len(loaded.id2label)
    if loaded.random_weights:
        return (
            f"**Warning: random weights.** `{loaded.choice}` runs with randomly initialized weights "
            f"({loaded.source}). The architecture runs, but the predicted classes are meaningless."
        )
    origin = "" if loaded.source == loaded.choice else f", weights from `{loaded.source}`"
    return f"**Model:** `{loaded.choice}` ({num_labels} classes{origin})."


# ------------------------------------------------------------------------------------------------ inference


def to_rgb(image) -> np.ndarray:
    """An ``(H, W, 3)`` ``uint8`` RGB array of a PIL image (any mode), an array, a file path or encoded bytes.

    Converted exactly as training data (``agent_hf.models.image_ops.to_rgb_array``): grayscale replicated, alpha
    dropped, 16-bit reduced to its high byte; float arrays are refused with a clear error rather than guessed. Images
    beyond :data:`LIMITS` are refused before decoding; URLs are not fetched.
    """
    return to_rgb_array(open_image(image, allow_urls=False, max_bytes=LIMITS.max_bytes, max_pixels=LIMITS.max_pixels))


def _prediction_size(width: int, height: int, max_side: int | None = None) -> tuple[int, int]:
    """``(height, width)`` of the class map: the image's size, scaled down to ``MAX_PREDICTION_SIDE`` if larger."""
    scale = min(1.0, (max_side or MAX_PREDICTION_SIDE) / max(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


@torch.no_grad()
def predict(image, model_choice: str | None = None) -> np.ndarray:
    """The predicted class id of every pixel, ``(H, W)`` ``int64`` at the image's size.

    The image processor resizes and normalizes; ``post_process_semantic_segmentation`` resizes the logits
    (bilinear) to the resized input, then to the image (at most ``MAX_PREDICTION_SIDE`` on the long side), and takes
    the argmax; a larger image gets that class map enlarged (nearest neighbor).
    """
    array = to_rgb(image)
    height, width = array.shape[:2]
    loaded = load_model(model_choice)
    processor = loaded.image_processor
    inputs = processor(images=array, return_tensors="pt")
    outputs = loaded.model(pixel_values=inputs["pixel_values"].to(loaded.model.dtype))
    target = _prediction_size(width, height)
    if isinstance(processor, AgentImageProcessor):  # resized from the full image, class map at the capped size
        resized = processor.resized_size(height, width)
        label_map = processor.post_process_semantic_segmentation(outputs, [target], resized_sizes=[resized])[0]
    else:
        label_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[target])[0]
    label_map = label_map.cpu().numpy().astype(np.int64)
    if label_map.shape != (height, width):  # a huge image: enlarge the label map, not the logits
        label_map = np.asarray(
            Image.fromarray(label_map.astype(np.int32)).resize((width, height), Image.Resampling.NEAREST),
            dtype=np.int64,
        )
    return label_map


def colorize(label_map: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` ``uint8`` colors of a label map (ADE20K palette; ids beyond 150 wrap around)."""
    return _PALETTE[np.asarray(label_map) % len(_PALETTE)]


def class_color(class_id: int) -> tuple[int, int, int]:
    return tuple(int(c) for c in _PALETTE[int(class_id) % len(_PALETTE)])


def opacity(alpha) -> float:
    """``alpha`` as a blend weight in ``[0, 1]`` (clipped); a value that is not a finite number is refused (NaN would
    blend every pixel to black)."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value):
        raise ValueError(f"the overlay opacity (alpha) must be a number from 0 to 1, got {alpha!r}")
    return float(np.clip(value, 0.0, 1.0))


def overlay(image, label_map: np.ndarray, alpha: float = DEFAULT_ALPHA) -> Image.Image:
    """The image alpha-blended with the color map: ``(1 - alpha) * image + alpha * colors``, rounded, in uint8.

    Blended a band of rows at a time, so a 24-megapixel photo needs a few tens of MB beyond its uint8 arrays.
    """
    array = to_rgb(image)
    height, width = array.shape[:2]
    if label_map.shape != (height, width):
        raise ValueError(f"label map {label_map.shape} does not match the image {(height, width)}")
    alpha = opacity(alpha)
    blended = np.empty_like(array)
    step = max(1, OVERLAY_CHUNK_PIXELS // width)
    for top in range(0, height, step):
        rows = slice(top, top + step)
        band = (1.0 - alpha) * array[rows].astype(np.float32) + alpha * colorize(label_map[rows]).astype(np.float32)
        blended[rows] = np.clip(np.rint(band), 0, 255).astype(np.uint8)
    return Image.fromarray(blended)


@dataclass(frozen=True)
class LegendRow:
    class_id: int
    name: str
    color: tuple[int, int, int]
    pixels: int
    fraction: float  # of all pixels, 0-1


def legend_rows(label_map: np.ndarray, id2label: Mapping[int, str]) -> list[LegendRow]:
    """One row per class present in the label map, largest area first (ties: smaller id first)."""
    counts = np.bincount(np.asarray(label_map).ravel())  # linear time, unlike np.unique's sort of every pixel
    ids = np.flatnonzero(counts)
    total = int(counts.sum())
    rows = [
        LegendRow(int(i), str(id2label.get(int(i), f"class {int(i)}")), class_color(int(i)), int(n), int(n) / total)
        for i, n in zip(ids, counts[ids], strict=True)
    ]
    return sorted(rows, key=lambda row: (-row.pixels, row.class_id))


def format_percent(fraction: float) -> str:
    if 0 < fraction < 0.0001:
        return "<0.01%"
    return f"{100 * fraction:.2f}%"


_CELL = "padding:2px 8px"
_SWATCH = "display:inline-block;width:1.4em;height:1em;border-radius:3px;border:1px solid rgba(0,0,0,.25)"


def legend_html(rows: list[LegendRow]) -> str:
    """An HTML table: color swatch, class name, share of pixels. Rows carry ``data-class-id``/``data-pixels``."""
    body = "\n".join(
        f'<tr data-class-id="{row.class_id}" data-pixels="{row.pixels}">'
        f'<td style="{_CELL}"><span class="swatch" style="{_SWATCH};background:rgb{row.color}" '
        f'title="rgb{row.color}"></span></td>'
        f'<td class="class-name" style="{_CELL}">{html.escape(row.name)}</td>'
        f'<td class="percent" style="{_CELL};text-align:right">{format_percent(row.fraction)}</td></tr>'
        for row in rows
    )
    plural = "class" if len(rows) == 1 else "classes"
    return (
        '<table class="agent-hf-legend" style="width:100%;border-collapse:collapse">'
        f'<caption style="text-align:left;font-weight:600">{len(rows)} {plural} found</caption>'
        '<thead><tr><th>Color</th><th style="text-align:left">Class</th>'
        '<th style="text-align:right">Pixels</th></tr></thead>'
        f"<tbody>\n{body}\n</tbody></table>"
    )


def segment(image, model_choice: str | None = None, alpha: float = DEFAULT_ALPHA) -> tuple[Image.Image, str]:
    """The app's computation: ``(overlay image at the input's size, legend HTML)``."""
    opacity(alpha)  # before the work
    array = to_rgb(image)
    label_map = predict(array, model_choice)
    rows = legend_rows(label_map, load_model(model_choice).id2label)
    return overlay(array, label_map, alpha), legend_html(rows)


def example_paths() -> list[str]:
    return sorted(str(p) for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})


# ---------------------------------------------------------------------------------------------------- UI

_DESCRIPTION = """\
# Agent Attention — semantic segmentation

[Agent Attention](https://arxiv.org/abs/2312.08874) (Han et al., ECCV 2024) backbones (Agent-Swin + UperNet,
Agent-PVT + Semantic FPN) as Hugging Face `transformers` models, via `agent_hf`.
Upload an image or pick an example, choose a model — a preset, a local model folder or a Hub repo id — and get
the ADE20K-palette overlay and the classes found.
"""


def build_demo(default_choice: str | None = None):
    """The Gradio Blocks app (imports gradio lazily, so the functions above work without it)."""
    import gradio as gr

    default_choice = _normalize_choice(default_choice)

    def run(image, choice, alpha):
        if image is None:
            raise gr.Error("Upload an image or pick an example first.")
        try:
            result_overlay, legend = segment(image, choice, alpha)
            return result_overlay, legend, model_status(choice)
        except (OSError, ValueError, TypeError, RuntimeError) as error:
            raise gr.Error(f"Could not segment with {choice!r}: {error}") from error

    def run_if_image(image, choice, alpha):  # an example picked or a file uploaded: segment; cleared: clear
        if image is None:
            return None, "", describe(choice)
        return run(image, choice, alpha)

    def describe(choice):
        try:
            return model_status(choice)
        except (OSError, ValueError) as error:
            return f"**Error: could not load `{(choice or '').strip()}`**: {html.escape(str(error), quote=False)}"

    with gr.Blocks(title="Agent Attention segmentation") as demo:
        gr.Markdown(_DESCRIPTION)
        with gr.Row():
            with gr.Column():
                image_in = gr.Image(  # image_mode=None: the file's own mode (16-bit, CMYK...), converted by `to_rgb`
                    type="pil",
                    image_mode=None,
                    label="Input image",
                    sources=["upload", "clipboard"],
                    elem_id="input-image",
                )
                model_in = gr.Dropdown(
                    choices=model_choices(default_choice),
                    value=default_choice,
                    allow_custom_value=True,
                    label="Model",
                    info="A preset, a local model folder (config.json + weights) or a Hub repo id: "
                    "type to enter your own.",
                    elem_id="model-choice",
                )
                alpha_in = gr.Slider(
                    0.0, 1.0, value=DEFAULT_ALPHA, step=0.05, label="Overlay opacity", elem_id="alpha"
                )
                button = gr.Button("Segment", variant="primary", elem_id="segment-button")
                examples = example_paths()
                if examples:
                    gr.Examples(
                        examples=[[path] for path in examples],
                        inputs=[image_in],  # filling the input triggers image_in.change below
                        cache_examples=False,
                        label="Examples: two drawings, and a scene like those make demo trains on",
                        elem_id="examples",
                    )
            with gr.Column():
                image_out = gr.Image(
                    type="pil", format="png", label="Segmentation overlay", interactive=False, elem_id="overlay"
                )
                status_out = gr.Markdown(elem_id="model-status")
                legend_out = gr.HTML(label="Classes found", elem_id="legend", max_height=480)
        outputs = [image_out, legend_out, status_out]
        button.click(run, inputs=[image_in, model_in, alpha_in], outputs=outputs, api_name="segment")
        image_in.change(run_if_image, inputs=[image_in, model_in, alpha_in], outputs=outputs, api_name=False)
        model_in.change(describe, inputs=[model_in], outputs=[status_out], api_name=False)
        demo.load(describe, inputs=[model_in], outputs=[status_out], api_name=False)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Agent Attention semantic segmentation demo (Gradio).")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument(
        "--model",
        default=None,
        help="the default model: preset, folder or repo id (default: $AGENT_HF_APP_MODEL, else outputs/demo/model "
        f"if present, else {FALLBACK_PRESET})",
    )
    parser.add_argument(
        "--preset_namespace",
        "--preset-namespace",
        default=DEFAULT_PRESET_NAMESPACE,
        help="Hub namespace holding the presets' weights ('' for random-weight presets only)",
    )
    parser.add_argument(
        "--offline", action="store_true", help="never contact the Hub (also implied by HF_HUB_OFFLINE=1)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure(args.preset_namespace, offline=args.offline or SETTINGS.offline)
    demo = build_demo(args.model)
    demo.queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, share=False, ssr_mode=False, allowed_paths=[str(EXAMPLES_DIR)]
    )


if __name__ == "__main__":
    main()
