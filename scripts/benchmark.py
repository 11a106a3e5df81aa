#!/usr/bin/env python
"""Benchmark agent_hf segmentation models against transformers' Swin-T + UperNet.

For each model (an agent_hf preset or a config JSON) and for the peer (transformers'
`UperNetForSemanticSegmentation` on a Swin-T `SwinBackbone`, and that `SwinBackbone` alone), measures:

* inference latency of the backbone alone and of the whole segmentor (median of `--repeats` runs after
  `--warmup` runs, under `torch.inference_mode`); the runs of all models at one (resolution, batch)
  are interleaved round by round so that background load hits every model alike;
* training-step time (forward with labels + backward + AdamW step, `model.train()`) at
  `--train_resolution` / `--train_batch`;
* peak memory: on CPU the peak-RSS increase during one measured call, in a fresh subprocess per
  measurement (the kernel's RSS high-water mark is reset through /proc/self/clear_refs just before the
  call; `resource.getrusage` is the fallback); on CUDA `torch.cuda.max_memory_allocated` over the call;
* parameters; FLOPs with `torch.utils.flop_counter.FlopCounterMode` (MACs = FLOPs / 2; the paper's
  "954G"-style numbers are MACs at 512x2048).

Writes `benchmark.md`, `benchmark.csv` and `latency_vs_pixels.png` under `--output_dir` (default
`outputs/benchmark`, never the committed docs/benchmarks unless named) and prints the markdown. Example (the run in
docs/benchmarks.md):

    python scripts/benchmark.py --model agent-swin-t-upernet-ade20k agent-pvt-t-fpn-ade20k \
        --resolutions 512x512 512x2048 1024x1024 --batch_sizes 1 --threads 2 --output_dir docs/benchmarks
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
try:
    import agent_hf
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT / "src"))
    import agent_hf
from agent_hf.argument_checks import ArgumentChecks, check_arguments_early  # noqa: E402

if __name__ == "__main__":  # answered before torch is imported
    check_arguments_early(ArgumentChecks(folders=("--agreement_model",)))

import torch  # noqa: E402
from transformers import SwinBackbone, SwinConfig, UperNetConfig, UperNetForSemanticSegmentation  # noqa: E402

from agent_hf.families import FAMILIES, SWIN_T_UPERNET_PEER, get_family  # noqa: E402
from agent_hf.flops import count_model_flops  # noqa: E402
from agent_hf.model_zoo import get_model_spec  # noqa: E402
from agent_hf.models.agent_attention import AgentAttention  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# The one peer this script builds; every family names it as its `benchmark_peer` (checked before measuring).
PEER = SWIN_T_UPERNET_PEER
NUM_LABELS = 150


# ----------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------


def peer_config(attn_implementation: str | None) -> UperNetConfig:
    """transformers' Swin-T + UperNet, as in the Swin paper's ADE20K setting: Agent-Swin-T's sizes with
    shifted-window attention in every block."""
    agent = get_model_spec("agent-swin-t-upernet-ade20k")
    sizes = {key: agent.architecture[key] for key in ("embed_dim", "depths", "num_heads", "window_size")}
    backbone = SwinConfig(
        **sizes, drop_path_rate=agent.drop_path_rate, out_features=["stage1", "stage2", "stage3", "stage4"]
    )
    if attn_implementation:
        backbone._attn_implementation = attn_implementation
    auxiliary_stage = agent.architecture["auxiliary_in_index"]
    return UperNetConfig(
        backbone_config=backbone,
        hidden_size=agent.architecture["decoder_hidden_size"],
        auxiliary_channels=agent.architecture["auxiliary_channels"],
        auxiliary_in_channels=sizes["embed_dim"] * 2**auxiliary_stage,
        use_auxiliary_head=True,
        num_labels=NUM_LABELS,
    )


def agent_config(spec: str):
    """A preset name or a config JSON (a path, or the JSON text itself) -> agent_hf config."""
    if spec in agent_hf.PRESETS:
        return agent_hf.preset_config(spec)
    text = Path(spec).read_text() if Path(spec).is_file() else spec
    data = json.loads(text)
    model_type = data.pop("model_type", "agent_swin")
    if model_type not in FAMILIES:
        raise ValueError(f"--config: model_type {model_type!r} is not one of {sorted(FAMILIES)}")
    return get_family(model_type).config_class()(**data)


def check_peer(specs) -> None:
    """Stops when a model's family names a benchmark peer other than PEER, the one this script builds (a config
    that does not build is left to its measurement, which reports the error)."""
    for spec in specs:
        try:
            family = get_family(agent_config(spec).model_type)
        except Exception:  # noqa: BLE001 - reported in the table
            continue
        if family.benchmark_peer != PEER:
            sys.exit(
                f"{model_label(spec)}: {family.name}'s benchmark peer {family.benchmark_peer!r} is not the one this "
                f"script builds ({PEER!r})"
            )


def model_label(spec: str) -> str:
    if spec in agent_hf.PRESETS:
        return spec
    if Path(spec).is_file():
        return Path(spec).stem
    return "config"


def build(spec: str, part: str, attn_implementation: str | None):
    """`part` "backbone" or "segmentor" of the model named by `spec` (a preset/config, or PEER)."""
    if spec == PEER:
        config = peer_config(attn_implementation)
        if part == "backbone":
            model = SwinBackbone(config.backbone_config)
        else:
            model = UperNetForSemanticSegmentation(config)
    else:
        config = agent_config(spec)
        if attn_implementation:
            config._attn_implementation = attn_implementation
        model = get_family(config.model_type).model_class("ForSemanticSegmentation")(config)
        if part == "backbone":
            model = model.backbone
    return model


def num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------------


def parse_resolution(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"resolution {text!r} is not HxW (e.g. 512x2048)") from error
    return height, width


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_inputs(batch: int, resolution, device: str, dtype: torch.dtype, num_labels: int | None = None):
    """Random pixels, and with `num_labels` random labels in [0, num_labels)."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, 3, *resolution, generator=generator).to(device=device, dtype=dtype)
    if num_labels is None:
        return pixels, None
    return pixels, torch.randint(0, num_labels, (batch, *resolution), generator=generator).to(device)


def autocast_device_type(device: str) -> str:
    """`torch.autocast`'s device type of `device` ("cuda[:i]" or "cpu")."""
    return "cuda" if device.startswith("cuda") else "cpu"


def forward_call(model, pixels, device: str, dtype: torch.dtype):
    """A forward pass, under autocast to `dtype` unless it is fp32 (the weights stay fp32, as in training)."""
    device_type = autocast_device_type(device)

    def run():
        with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
            return model(pixels)

    return run


def prediction_agreement(model_dir: Path, dtype: torch.dtype, device: str) -> dict:
    """Share of pixels on which the model's prediction under `dtype` autocast equals its fp32 prediction.

    `model_dir` is the model folder written by `make demo` (`outputs/demo/model`): its validation images are
    generated again from the run's settings (`demo_run.json` beside the folder), and go through the folder's own
    image processor and `post_process_semantic_segmentation` (the pipeline's path), once in fp32 and once under
    autocast.
    """
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    from agent_hf.data import synthetic_scenes

    record = model_dir.parent / "demo_run.json"
    if not record.is_file():
        sys.exit(f"--agreement_model {model_dir}: no {record.name} beside it; give the model folder of `make demo`")
    settings = json.loads(record.read_text())["arguments"]
    model = AutoModelForSemanticSegmentation.from_pretrained(model_dir).to(device).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    scenes = synthetic_scenes("validation", settings["num_val"], model.config.num_labels, settings["seed"])
    device_type = autocast_device_type(device)
    equal = total = images = 0
    with torch.inference_mode():
        for image, _ in scenes:
            images += 1
            pixels = processor(image, return_tensors="pt")["pixel_values"].to(device)
            size = [image.shape[:2]]
            reference = processor.post_process_semantic_segmentation(model(pixels), size)[0]
            with torch.autocast(device_type, dtype=dtype):
                low = processor.post_process_semantic_segmentation(model(pixels), size)[0]
            equal += int((low == reference).sum())
            total += reference.numel()
    return {"model": str(model_dir), "images": images, "pixels": total, "agreement": equal / total}


def train_step_call(model, pixels, labels, device: str, dtype: torch.dtype, parameters=None):
    """One optimizer step: forward with labels (under autocast for bf16/fp16), backward, AdamW step.

    `parameters`: the model's (default: `model.parameters()`; a compiled module's call with its model's)."""
    parameters = list(model.parameters() if parameters is None else parameters)
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.01)
    autocast = dtype != torch.float32
    device_type = autocast_device_type(device)

    def run():
        with torch.autocast(device_type, dtype=dtype, enabled=autocast):
            loss = model(pixel_values=pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def init_optimizer_state():
        """Create AdamW's state (a step on zero gradients), so that memory measurements exclude it."""
        for p in parameters:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run, init_optimizer_state


def prepare(spec, part, mode, resolution, batch, args):
    """(model, callable) for one measurement; the model on the device in the right mode/dtype, compiled with
    `torch.compile` under `--compile` (the call is then the compiled module's, the parameters the model's)."""
    dtype = DTYPES[args.dtype]
    AgentAttention.fused_kernel = args.fused_kernel
    model = build(spec, part, args.attn_implementation).to(args.device)
    if args.compile:
        compiled = torch.compile(model, backend=args.compile_backend)
        if mode == "train":
            model.train()
            pixels, labels = make_inputs(batch, resolution, args.device, torch.float32, model.config.num_labels)
            run, init_state = train_step_call(compiled, pixels, labels, args.device, dtype, model.parameters())
            return model, run, init_state
        model.eval()
        pixels, _ = make_inputs(batch, resolution, args.device, torch.float32)
        return model, forward_call(compiled, pixels, args.device, dtype), None
    if mode == "train":
        model.train()
        pixels, labels = make_inputs(batch, resolution, args.device, torch.float32, num_labels=model.config.num_labels)
        run, init_state = train_step_call(model, pixels, labels, args.device, dtype)
        return model, run, init_state
    model.eval()
    pixels, _ = make_inputs(batch, resolution, args.device, torch.float32)
    return model, forward_call(model, pixels, args.device, dtype), None


def time_interleaved(calls: dict, device: str, warmup: int, repeats: int, inference: bool, errors: dict) -> dict:
    """Median/min/max seconds of each call; each round runs every call once (in turn).

    Every call first runs `warmup` times (at least once, alone); one that raises is reported in `errors` and left
    out, so that one broken model does not cost the others their measurements.
    """
    context = torch.inference_mode if inference else torch.enable_grad
    with context():
        for name, call in list(calls.items()):
            try:
                for _ in range(max(warmup, 1)):
                    call()
            except Exception as error:  # noqa: BLE001 - reported in the table
                errors[name] = f"{type(error).__name__}: {error}"
                calls = {k: c for k, c in calls.items() if k != name}
        times = {name: [] for name in calls}
        synchronize(device)
        for _ in range(repeats):
            for name, call in calls.items():
                synchronize(device)
                start = time.perf_counter()
                call()
                synchronize(device)
                times[name].append(time.perf_counter() - start)
    return {name: {"median": statistics.median(t), "min": min(t), "max": max(t)} for name, t in times.items()}


def _read_status(field_name: str) -> int | None:
    """A /proc/self/status field in bytes (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def measure_memory_here(spec, part, mode, resolution, batch, args) -> dict:
    """Peak memory of one call (inference forward or training step), measured in this process."""
    model, run, init_state = prepare(spec, part, mode, resolution, batch, args)
    if init_state is not None:
        init_state()
    context = torch.inference_mode if mode == "inference" else torch.enable_grad
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        with context():
            run()
        torch.cuda.synchronize()
        return {"peak_bytes": torch.cuda.max_memory_allocated() - before, "method": "cuda.max_memory_allocated"}
    before = _read_status("VmRSS")
    if before is not None and _reset_peak_rss():
        with context():
            run()
        return {"peak_bytes": _read_status("VmHWM") - before, "method": "VmHWM-VmRSS"}
    # Fallback: getrusage's high-water mark (includes whatever peak model construction reached).
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with context():
        run()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_bytes": after - before, "method": "getrusage"}


def measure_memory(spec, part, mode, resolution, batch, args) -> dict:
    """On CPU, in a fresh subprocess (so that nothing allocated before pollutes the high-water mark)."""
    if args.device.startswith("cuda"):
        return measure_memory_here(spec, part, mode, resolution, batch, args)
    job = dict(spec=spec, part=part, mode=mode, resolution=list(resolution), batch=batch, args=vars(args))
    command = [sys.executable, str(Path(__file__).resolve()), "--_memory_child", json.dumps(job, default=str)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=args.child_timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("MEMORY_RESULT ")]
    if result.returncode != 0 or not lines:
        return {
            "peak_bytes": None,
            "method": "error",
            "error": (result.stderr or result.stdout).strip().splitlines()[-1:],
        }
    return json.loads(lines[-1][len("MEMORY_RESULT ") :])


def memory_child(job_text: str) -> None:
    job = json.loads(job_text)
    args = argparse.Namespace(**job["args"])
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result = measure_memory_here(job["spec"], job["part"], job["mode"], tuple(job["resolution"]), job["batch"], args)
    print("MEMORY_RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------------
# Machine description and outputs
# ----------------------------------------------------------------------------------------------------


def machine_info(args) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": args.device,
    }
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    try:
        mem_kb = int(
            next(
                line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
            ).split()[1]
        )
        info["ram_gib"] = round(mem_kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    return info


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def fmt(value, digits=1, scale=1.0):
    if value is None or value == "":
        return "–"
    return f"{value / scale:.{digits}f}"


def write_csv(rows: list[dict], path: Path) -> None:
    columns = [
        "model",
        "role",
        "part",
        "mode",
        "resolution",
        "batch",
        "pixels",
        "dtype",
        "device",
        "threads",
        "attn_implementation",
        "compiled",
        "fused_kernel",
        "params",
        "flops",
        "macs",
        "latency_ms_median",
        "latency_ms_min",
        "latency_ms_max",
        "repeats",
        "ratio_to_peer",
        "peak_memory_mb",
        "memory_method",
        "error",
    ]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})


def markdown(
    rows: list[dict], info: dict, args, command: str, started: str, loads: tuple[str, str], elapsed: float
) -> str:
    compile_mode = f"torch.compile ({args.compile_backend})" if args.compile else "eager (not compiled)"
    lines = [
        "# Benchmark: agent_hf vs transformers Swin-T + UperNet",
        "",
        f"- Date: {started} (took {elapsed / 60:.1f} min)",
        f"- Machine: {info['cpu']}, {info['cpu_cores']} cores ({info['cpu_cores_usable']} usable), "
        f"{info.get('ram_gib', '?')} GiB RAM" + (f", GPU {info['gpu']}" if "gpu" in info else ""),
        f"- Software: torch {info['torch']} (CPU capability {info['cpu_capability']}), transformers "
        f"{info['transformers']}, Python {info['python']}",
        f"- Threads: {info['threads']}; device {args.device}; dtype {args.dtype}; attention "
        f"{args.attn_implementation or 'model default'} (fused kernel {args.fused_kernel}); "
        f"{compile_mode}; warm-up {args.warmup}; repeats {args.repeats} "
        f"(backbones {args.backbone_repeats}, training {args.repeats}); median reported",
        f"- Load average (1/5/15 min) at start: {loads[0]}; at end: {loads[1]}",
        "- Command:",
        "",
        "```",
        command,
        "```",
        "",
        "Latency is the median of the repeats; at each (resolution, batch) the backbones are timed round-robin, "
        "then the segmentors, so that background load hits every model alike.",
        "Peak memory: "
        + (
            "peak RSS increase during the call, each in a fresh process (VmHWM reset via "
            "/proc/self/clear_refs; inference after building the model, training after "
            "creating AdamW's state, so weights and optimizer state are excluded)."
            if not args.device.startswith("cuda")
            else "torch.cuda.max_memory_allocated over the call, minus what was allocated before it."
        ),
        "FLOPs: torch.utils.flop_counter (matmuls, convolutions, attention incl. PyTorch's fused CPU kernel);"
        " MACs = FLOPs / 2 (the papers' \"G\" numbers). Ratio: latency / the Swin-T peer's, same part and shape.",
        "",
        "## Inference",
        "",
        "| model | part | resolution | batch | params (M) | GMACs | latency (ms) | min–max (ms) | vs Swin-T "
        "| peak mem (MB) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["mode"] != "inference":
            continue
        spread = (
            f"{fmt(row.get('latency_ms_min'), 0)}–{fmt(row.get('latency_ms_max'), 0)}"
            if row.get("latency_ms_min")
            else "–"
        )
        ratio = f"{row['ratio_to_peer']:.2f}x" if row.get("ratio_to_peer") else "–"
        lines.append(
            f"| {row['model']} | {row['part']} | {row['resolution']} | {row['batch']} | "
            f"{fmt(row['params'], 2, 1e6)} | "
            f"{fmt(row.get('macs'), 1, 1e9)} | {fmt(row.get('latency_ms_median'), 0)} | {spread} | {ratio} | "
            f"{fmt(row.get('peak_memory_mb'), 0)} |"
        )
    train = [row for row in rows if row["mode"] == "train"]
    if train:
        lines += [
            "",
            "## Training step (forward with labels + backward + AdamW step, model.train())",
            "",
            "| model | resolution | batch | params (M) | step (ms) | min–max (ms) | vs Swin-T | peak mem (MB) "
            "| vs Swin-T |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        peer_mem = next((r.get("peak_memory_mb") for r in train if r["role"] == "peer"), None)
        for row in train:
            spread = (
                f"{fmt(row.get('latency_ms_min'), 0)}–{fmt(row.get('latency_ms_max'), 0)}"
                if row.get("latency_ms_min")
                else "–"
            )
            ratio = f"{row['ratio_to_peer']:.2f}x" if row.get("ratio_to_peer") else "–"
            mem_ratio = f"{row['peak_memory_mb'] / peer_mem:.2f}x" if peer_mem and row.get("peak_memory_mb") else "–"
            lines.append(
                f"| {row['model']} | {row['resolution']} | {row['batch']} | {fmt(row['params'], 2, 1e6)} | "
                f"{fmt(row.get('latency_ms_median'), 0)} | {spread} | {ratio} | "
                f"{fmt(row.get('peak_memory_mb'), 0)} | {mem_ratio} |"
            )
    if "agreement" in info:
        agreement = info["agreement"]
        lines += [
            "",
            f"Predictions under {args.dtype} autocast equal the fp32 predictions on "
            f"**{100 * agreement['agreement']:.2f}%** of the {agreement['pixels']:,} pixels of {agreement['images']} "
            f"validation images (model folder `{agreement['model']}`, through its image processor).",
        ]
    errors = [row for row in rows if row.get("error")]
    if errors:
        lines += ["", "## Errors", ""] + [
            f"- {r['model']} {r['part']} {r['mode']} {r['resolution']} b{r['batch']}: {r['error']}" for r in errors
        ]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> str:
    """Latency vs pixels per image, one panel per part (backbone / segmentor), batch 1 if measured (else
    the smallest batch): a line through each model's square resolutions, other aspect ratios as
    triangles. matplotlib when installed, else drawn with PIL. Returns the backend used."""
    rows = [r for r in rows if r["mode"] == "inference" and r.get("latency_ms_median")]
    if not rows:
        return "none"
    batch = min(r["batch"] for r in rows)
    parts = [p for p in ("backbone", "segmentor") if any(r["part"] == p for r in rows)]
    models = list(dict.fromkeys(r["model"] for r in rows))
    panels = {}
    for part in parts:
        for model in models:
            points = sorted(
                (r["pixels"], r["latency_ms_median"], r["resolution"])
                for r in rows
                if r["part"] == part and r["model"] == model and r["batch"] == batch
            )
            if points:
                panels.setdefault(part, {})[model] = points

    def is_square(resolution: str) -> bool:
        height, width = resolution.split("x")
        return height == width

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False)
        for ax, (part, series) in zip(axes[0], panels.items()):
            for i, (model, points) in enumerate(series.items()):
                color = f"C{i}"
                square = [(p, t) for p, t, r in points if is_square(r)]
                ax.plot([p / 1e6 for p, _ in square], [t for _, t in square], marker="o", color=color, label=model)
                other = [(p, t) for p, t, r in points if not is_square(r)]
                ax.scatter([p / 1e6 for p, _ in other], [t for _, t in other], marker="^", s=60, color=color)
            ax.set_title(f"{part} (triangles: non-square inputs)")
            ax.set_xlabel("pixels per image (millions)")
            ax.set_ylabel(f"latency (ms), batch {batch}")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        return "matplotlib"
    except ImportError:
        pass
    from PIL import Image, ImageDraw, ImageFont

    panel_w, panel_h, left, right, top, bottom, legend_h = 560, 420, 80, 30, 70, 60, 24 * len(models) + 20
    width, height = panel_w * len(panels), panel_h + legend_h
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    colors = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
    ]
    color_of = {model: colors[i % len(colors)] for i, model in enumerate(models)}
    draw.text((10, 8), title, fill="black", font=font)
    for k, (part, series) in enumerate(panels.items()):
        x0 = panel_w * k + left
        plot_w, plot_h = panel_w - left - right, panel_h - top - bottom
        x_max = max(p for pts in series.values() for p, _, _ in pts) * 1.1
        y_max = max(t for pts in series.values() for _, t, _ in pts) * 1.1

        def to_xy(pixels, ms, x0=x0, plot_w=plot_w, plot_h=plot_h, x_max=x_max, y_max=y_max):
            return x0 + pixels / x_max * plot_w, top + plot_h - ms / y_max * plot_h

        draw.text((x0, top - 36), f"{part} (triangles: non-square inputs)", fill="black", font=font)
        draw.text((x0 - 70, top - 20), f"latency (ms), batch {batch}", fill="black", font=font)
        draw.rectangle([x0, top, x0 + plot_w, top + plot_h], outline="black")
        for i in range(6):
            ms, px = y_max * i / 5, x_max * i / 5
            _, y = to_xy(0, ms)
            draw.line([x0, y, x0 + plot_w, y], fill=(225, 225, 225))
            draw.text((x0 - 55, y - 6), f"{ms:,.0f}", fill="black", font=font)
            x, _ = to_xy(px, 0)
            draw.line([x, top, x, top + plot_h], fill=(225, 225, 225))
            draw.text((x - 12, top + plot_h + 8), f"{px / 1e6:.2f}", fill="black", font=font)
        draw.text((x0 + plot_w // 2 - 80, top + plot_h + 28), "pixels per image (millions)", fill="black", font=font)
        for model, points in series.items():
            color = color_of[model]
            square = [to_xy(p, t) for p, t, r in points if is_square(r)]
            if len(square) > 1:
                draw.line(square, fill=color, width=3)
            for x, y in square:
                draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=color)
            for p, t, r in points:
                if not is_square(r):
                    x, y = to_xy(p, t)
                    draw.polygon([(x, y - 6), (x - 6, y + 5), (x + 6, y + 5)], fill=color)
    for i, model in enumerate(models):  # legend under the panels
        y = panel_h + 8 + 24 * i
        draw.line([left, y + 6, left + 30, y + 6], fill=color_of[model], width=3)
        draw.text((left + 38, y), model, fill="black", font=font)
    image.save(path)
    return "PIL"


# ----------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------


def summarize(out_dir: Path) -> str:
    """`out_dir`/summary.md: the table of the issue (#22) over every benchmark run in the folders of `out_dir`
    (scripts/gpu_checks.sh): each row what the issue measures, each column one run, each cell the time relative to
    transformers' Swin-T + UperNet of the same run (and the median in ms), the training step's memory too."""
    runs = sorted(p.name for p in out_dir.iterdir() if (p / "benchmark.csv").is_file())
    table, errors = {}, []
    for run in runs:
        with open(out_dir / run / "benchmark.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        peers = {(r["part"], r["mode"], r["resolution"], r["batch"]): r for r in rows if r["role"] == "peer"}
        for row in rows:
            if row["role"] == "peer":
                continue
            if row["error"]:
                errors.append(f"{run} {row['part']} {row['mode']} b{row['batch']}: {row['error'][:200]}")
            what = "training step" if row["mode"] == "train" else row["part"]
            key = f"{what} {row['resolution']}, batch {row['batch']}"
            ms = f"{float(row['latency_ms_median']):.0f} ms" if row["latency_ms_median"] else "–"
            ratio = row["ratio_to_peer"]
            table.setdefault(key, {})[run] = f"{float(ratio):.2f}x ({ms})" if ratio else ms
            peer = peers.get((row["part"], row["mode"], row["resolution"], row["batch"]))
            if row["mode"] == "train" and row["peak_memory_mb"] and peer and peer["peak_memory_mb"]:
                memory = float(row["peak_memory_mb"]) / float(peer["peak_memory_mb"])
                table.setdefault(f"{key}: peak memory", {})[run] = f"{memory:.2f}x"
    versions = out_dir / "versions.txt"
    lines = [
        "# Agent-Swin-T + UperNet beside transformers' Swin-T + UperNet",
        "",
        f"Environment: {versions.read_text().strip() if versions.is_file() else 'see each run'}. Each cell: "
        "time / the peer's in the same run (same dtype and compile mode), and the median; runs without the peer "
        "give the median only. Commands and machines: each run's benchmark.md.",
        "",
        "| what | " + " | ".join(runs) + " |",
        "|---" * (len(runs) + 1) + "|",
    ]
    lines += [f"| {key} | " + " | ".join(cells.get(run, "–") for run in runs) + " |" for key, cells in table.items()]
    lines += [""] + [f"- error: {error}" for error in errors]
    text = "\n".join(lines) + "\n"
    (out_dir / "summary.md").write_text(text)
    return text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        nargs="*",
        default=["agent-swin-t-upernet-ade20k"],
        help=f"agent_hf presets: {', '.join(agent_hf.PRESETS)}",
    )
    parser.add_argument(
        "--config",
        nargs="*",
        default=[],
        help="agent_hf config JSON files (or JSON text) with a model_type, benchmarked in addition to --model",
    )
    parser.add_argument(
        "--resolutions", nargs="+", type=parse_resolution, default=[(512, 512), (512, 2048), (1024, 1024)]
    )
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[1])
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default="fp32", help="fp32, or autocast to bf16/fp16 (weights stay fp32)"
    )
    parser.add_argument(
        "--agreement_model",
        type=Path,
        default=None,
        help="with --dtype bf16/fp16: also report on how many pixels of the demo's validation images this model "
        "folder of `make demo` (e.g. outputs/demo/model) predicts under autocast the class it predicts in fp32",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--backbone_repeats", type=int, default=None, help="repeats for the (cheaper) backbones; default --repeats"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--train_resolution", type=parse_resolution, default=(512, 512))
    parser.add_argument("--train_batch", type=int, default=2)
    parser.add_argument("--no_train", action="store_true", help="skip the training-step measurements")
    parser.add_argument("--no_inference", action="store_true", help="skip the inference measurements")
    parser.add_argument(
        "--memory", choices=["all", "train", "none"], default="all", help="which peak-memory measurements to run"
    )
    parser.add_argument("--no_flops", action="store_true")
    parser.add_argument("--no_peer", action="store_true", help="skip transformers' Swin-T peer")
    parser.add_argument("--parts", nargs="+", choices=["backbone", "segmentor"], default=["backbone", "segmentor"])
    parser.add_argument(
        "--attn_implementation",
        choices=["sdpa", "eager"],
        default=None,
        help="for every model (default: each model's default)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="time every model (the peer too) compiled with torch.compile"
    )
    parser.add_argument("--compile_backend", default="inductor", help="torch.compile backend (with --compile)")
    parser.add_argument(
        "--fused_kernel",
        choices=["auto", "triton", "flex", "torch"],
        default="auto",
        help="AgentAttention.fused_kernel: fused Triton kernels (auto: on CUDA), FlexAttention, or neither (torch)",
    )
    parser.add_argument("--child_timeout", type=int, default=900)
    parser.add_argument(
        "--output_dir",
        type=Path,
        default=Path("outputs") / "benchmark",
        help="where the results go (default: outputs/benchmark under the current directory; the committed results "
        "in docs/benchmarks are replaced only when named here)",
    )
    parser.add_argument(
        "--summarize", type=Path, default=None, help="only write DIR/summary.md from the runs in DIR's folders"
    )
    parser.add_argument("--_memory_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.resolutions = [tuple(r) for r in args.resolutions]
    args.train_resolution = tuple(args.train_resolution)
    if args.backbone_repeats is None:
        args.backbone_repeats = args.repeats
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args._memory_child is not None:
        memory_child(args._memory_child)
        return
    if args.summarize is not None:
        if not args.summarize.is_dir():
            sys.exit(f"--summarize {args.summarize}: not a folder")
        print(summarize(args.summarize))
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    torch.manual_seed(0)
    started_wall, start = datetime.datetime.now().isoformat(timespec="seconds"), time.time()
    load_start = load_average()
    command = "python " + " ".join(
        shlex.quote(a)
        for a in [os.path.relpath(sys.argv[0], REPO_ROOT) if Path(sys.argv[0]).exists() else sys.argv[0]]
        + sys.argv[1:]
    )
    info = machine_info(args)
    print(f"# machine: {json.dumps(info)}", flush=True)
    print(f"# command: {command}", flush=True)

    specs = list(args.model) + list(args.config)
    for spec in args.model:
        if spec not in agent_hf.PRESETS:
            sys.exit(f"--model {spec!r}: not a preset ({', '.join(agent_hf.PRESETS)}); use --config for a JSON config")
    if not args.no_peer:
        check_peer(specs)
        specs.append(PEER)
    labels = {spec: (PEER if spec == PEER else model_label(spec)) for spec in specs}
    dtype = DTYPES[args.dtype]
    rows: list[dict] = []

    def base_row(spec, part, mode, resolution, batch):
        return dict(
            model=labels[spec],
            role="peer" if spec == PEER else "agent_hf",
            part=part,
            mode=mode,
            resolution=f"{resolution[0]}x{resolution[1]}",
            batch=batch,
            pixels=resolution[0] * resolution[1],
            dtype=args.dtype,
            device=args.device,
            threads=args.threads,
            attn_implementation=args.attn_implementation or "default",
            compiled=args.compile_backend if args.compile else "no",
            fused_kernel=args.fused_kernel,
        )

    # Inference: all models at one (resolution, batch) are built together and timed interleaved.
    for resolution in [] if args.no_inference else args.resolutions:
        for batch in args.batch_sizes:
            calls, models, keys, errors = {}, {}, [], {}
            for spec in specs:
                for part in args.parts:
                    key = (spec, part)
                    try:
                        model, call, _ = prepare(spec, part, "inference", resolution, batch, args)
                        models[key], calls[key] = model, call
                    except Exception as error:  # noqa: BLE001 - reported in the table
                        errors[key] = f"{type(error).__name__}: {error}"
                    keys.append(key)
            print(f"# inference {resolution} batch {batch}: timing {len(calls)} models", flush=True)
            timings = {}
            for part in args.parts:  # backbones interleaved with backbones, segmentors with segmentors
                group = {k: c for k, c in calls.items() if k[1] == part}
                repeats = args.backbone_repeats if part == "backbone" else args.repeats
                timed = time_interleaved(group, args.device, args.warmup, repeats, inference=True, errors=errors)
                timings.update({k: dict(v, repeats=repeats) for k, v in timed.items()})
            for spec, part in keys:
                row = base_row(spec, part, "inference", resolution, batch)
                model = models.get((spec, part))
                row["params"] = num_parameters(model) if model is not None else None
                timing = timings.get((spec, part))
                if timing:
                    row.update(
                        latency_ms_median=timing["median"] * 1e3,
                        latency_ms_min=timing["min"] * 1e3,
                        latency_ms_max=timing["max"] * 1e3,
                        repeats=timing["repeats"],
                    )
                if model is not None and not args.no_flops:
                    pixels, _ = make_inputs(batch, resolution, args.device, torch.float32)
                    row["flops"] = count_model_flops(model, pixels)  # after warm-up: bias cache warm
                    row["macs"] = row["flops"] / 2
                row["error"] = errors.get((spec, part))
                rows.append(row)
                print(
                    f"#   {row['model']:<40} {part:<9} {fmt(row.get('latency_ms_median'), 0):>8} ms  "
                    f"{fmt(row.get('macs'), 1, 1e9):>7} GMACs",
                    flush=True,
                )
            del calls, models

    # Training steps, interleaved the same way.
    if not args.no_train:
        calls, models, errors = {}, {}, {}
        for spec in specs:
            try:
                model, call, init_state = prepare(
                    spec, "segmentor", "train", args.train_resolution, args.train_batch, args
                )
                models[spec], calls[spec] = model, call
            except Exception as error:  # noqa: BLE001
                errors[spec] = f"{type(error).__name__}: {error}"
        print(
            f"# training step {args.train_resolution} batch {args.train_batch}: timing {len(calls)} models", flush=True
        )
        timings = time_interleaved(calls, args.device, args.warmup, args.repeats, inference=False, errors=errors)
        for spec in specs:
            row = base_row(spec, "segmentor", "train", args.train_resolution, args.train_batch)
            row["params"] = num_parameters(models[spec]) if spec in models else None
            timing = timings.get(spec)
            if timing:
                row.update(
                    latency_ms_median=timing["median"] * 1e3,
                    latency_ms_min=timing["min"] * 1e3,
                    latency_ms_max=timing["max"] * 1e3,
                    repeats=args.repeats,
                )
            row["error"] = errors.get(spec)
            rows.append(row)
            print(
                f"#   {row['model']:<40} train     {fmt(row.get('latency_ms_median'), 0):>8} ms {row['error'] or ''}",
                flush=True,
            )
        del calls, models

    # Peak memory, each measurement in a fresh process (CPU).
    for row in rows:
        if row.get("error") or args.memory == "none" or (args.memory == "train" and row["mode"] != "train"):
            continue
        spec = next(s for s in specs if labels[s] == row["model"])
        resolution = parse_resolution(row["resolution"])
        result = measure_memory(spec, row["part"], row["mode"], resolution, row["batch"], args)
        if result.get("peak_bytes") is not None:
            row["peak_memory_mb"] = result["peak_bytes"] / 2**20
        row["memory_method"] = result.get("method")
        if result.get("error"):
            row["memory_method"] = f"error: {result['error']}"
        print(
            f"#   memory {row['model']:<40} {row['part']:<9} {row['mode']:<9} {row['resolution']:>9} "
            f"b{row['batch']}: {fmt(row.get('peak_memory_mb'), 0)} MB",
            flush=True,
        )

    # Ratios to the peer (same part, mode, resolution and batch).
    peers = {(r["part"], r["mode"], r["resolution"], r["batch"]): r for r in rows if r["role"] == "peer"}
    for row in rows:
        peer = peers.get((row["part"], row["mode"], row["resolution"], row["batch"]))
        if peer and row.get("latency_ms_median") and peer.get("latency_ms_median"):
            row["ratio_to_peer"] = row["latency_ms_median"] / peer["latency_ms_median"]

    if args.agreement_model is not None and dtype != torch.float32:
        info["agreement"] = prediction_agreement(args.agreement_model, dtype, args.device)
        print(f"# agreement with fp32: {json.dumps(info['agreement'])}", flush=True)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.output_dir / "benchmark.csv")
    title = f"Inference latency, {info['cpu']}, {args.threads} threads, {args.dtype}, {args.device}"
    backend = plot(rows, args.output_dir / "latency_vs_pixels.png", title)
    text = markdown(rows, info, args, command, started_wall, (load_start, load_average()), time.time() - start)
    (args.output_dir / "benchmark.md").write_text(text)
    print(text)
    print(f"# wrote {args.output_dir / 'benchmark.md'}, benchmark.csv, latency_vs_pixels.png ({backend})")


if __name__ == "__main__":
    main()
