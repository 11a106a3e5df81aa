"""scripts/benchmark.py end to end on a tiny config (never asserting timings), and the FLOP counter it
shares with the model cards."""

import csv
import json
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_PVT, TINY_SWIN, tiny_pvt_config
from helpers import tiny_benchmark_peer_config
from script_helpers import load_script

import agent_hf
from agent_hf.flops import FlopCounter, count_flops, count_model_flops

TINY_PVT_CONFIG = dict(model_type="agent_pvt", **TINY_PVT, num_labels=5)


def test_flop_counter_counts_the_fused_cpu_attention_kernel():
    """On CPU, SDPA runs a fused kernel that torch's own counter does not know; ours counts it as the
    two matrix products it performs: 2 * (B*h*M*N*d) multiply-adds."""
    batch, heads, rows, keys, dim = 2, 3, 40, 70, 16
    query, key, value = (
        torch.randn(batch, heads, rows, dim),
        torch.randn(batch, heads, keys, dim),
        torch.randn(batch, heads, keys, dim),
    )
    mask = torch.randn(1, heads, rows, keys)
    with torch.no_grad(), FlopCounter() as counter:
        F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    counts = counter.get_flop_counts()["Global"]
    assert torch.ops.aten._scaled_dot_product_flash_attention_for_cpu in counts  # the fused kernel ran
    assert counter.get_total_flops() == 2 * 2 * batch * heads * rows * keys * dim


def test_real_and_meta_counts_agree():
    """The benchmark counts a real model, the model cards a meta-device one: same operations."""
    config = agent_hf.AgentPvtConfig(**TINY_PVT, num_labels=5, use_auxiliary_head=False)
    torch.manual_seed(0)
    model = agent_hf.AgentPvtForSemanticSegmentation(config).eval()
    pixels = torch.randn(1, 3, 64, 128)
    assert count_model_flops(model, pixels) == count_flops(config, 64, 128) > 0


@pytest.fixture(scope="module")
def benchmark():
    return load_script("benchmark")


TINY_SWIN_CONFIG = dict(model_type="agent_swin", **TINY_SWIN, num_labels=5)


def run_benchmark(benchmark, monkeypatch, argv):
    monkeypatch.setattr(sys, "argv", [benchmark.__file__, *argv])  # the command line the report quotes
    threads = torch.get_num_threads()
    try:
        benchmark.main(argv)
    finally:
        torch.set_num_threads(threads)


def test_benchmark_script_writes_tables_csv_and_plot_with_the_peer(benchmark, tmp_path, monkeypatch):
    # In-process: a preset (the smallest) and a tiny JSON config, against the peer at tiny sizes.
    monkeypatch.setattr(benchmark, "peer_config", tiny_benchmark_peer_config(benchmark))
    argv = [
        "--model", "agent-pvt-t-fpn-ade20k",
        "--config", json.dumps(TINY_SWIN_CONFIG),
        "--resolutions", "64x64", "64x128",
        "--batch_sizes", "1",
        "--threads", "1",
        "--warmup", "0",
        "--repeats", "1",
        "--train_resolution", "64x64",
        "--train_batch", "2",
        "--memory", "none",
        "--output_dir", str(tmp_path),
    ]  # fmt: skip
    run_benchmark(benchmark, monkeypatch, argv)

    with open(tmp_path / "benchmark.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    inference = [r for r in rows if r["mode"] == "inference"]
    models = {r["model"] for r in inference}
    assert models == {"agent-pvt-t-fpn-ade20k", "config", "swin-t-upernet (transformers)"}
    # every model, part and resolution measured, with FLOPs and a ratio to the peer
    assert len(inference) == 3 * 2 * 2
    for row in inference:
        assert not row["error"], row
        assert float(row["latency_ms_median"]) > 0 and float(row["macs"]) == float(row["flops"]) / 2 > 0
        assert float(row["ratio_to_peer"]) > 0
    peer_backbone = next(
        r for r in inference if r["role"] == "peer" and r["part"] == "backbone" and r["resolution"] == "64x64"
    )
    assert float(peer_backbone["ratio_to_peer"]) == 1.0
    # the tiny config's count is the project's own counter's (one source of FLOPs)
    tiny = next(
        r for r in inference if r["model"] == "config" and r["part"] == "segmentor" and r["resolution"] == "64x128"
    )
    model = agent_hf.AgentSwinForSemanticSegmentation(agent_hf.AgentSwinConfig(**TINY_SWIN, num_labels=5)).eval()
    pixels = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        model(pixels)  # the benchmark counts after its warm-up: agent biases served from the cache
    assert int(tiny["flops"]) == count_model_flops(model, pixels)
    train = [r for r in rows if r["mode"] == "train"]
    assert {r["model"] for r in train} == models
    assert all(float(r["latency_ms_median"]) > 0 for r in train)

    text = (tmp_path / "benchmark.md").read_text()
    assert "--config" in text and "swin-t-upernet (transformers)" in text and "Training step" in text
    assert (tmp_path / "latency_vs_pixels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_measures_training_memory_in_fresh_processes(benchmark, tmp_path, monkeypatch):
    """`--memory train`: each training step's peak memory, measured by the script run again in a fresh process (on the
    tiny Agent-PVT: the fresh process rebuilds the model from the JSON config it is given)."""
    argv = [
        "--model", "--config", json.dumps(TINY_PVT_CONFIG), "--no_peer", "--no_flops",
        "--resolutions", "64x64", "--parts", "segmentor", "--threads", "1", "--warmup", "0", "--repeats", "1",
        "--train_resolution", "64x64", "--train_batch", "2", "--memory", "train", "--output_dir", str(tmp_path),
    ]  # fmt: skip
    run_benchmark(benchmark, monkeypatch, argv)
    with open(tmp_path / "benchmark.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    train = [r for r in rows if r["mode"] == "train"]
    assert len(train) == 1 and float(train[0]["peak_memory_mb"]) > 0 and not train[0]["error"]
    assert not [r for r in rows if r["mode"] == "inference" and r["peak_memory_mb"]]  # only the training step


def test_bf16_agreement_runs_the_demo_folder_through_its_processor(benchmark, tmp_path):
    """`--agreement_model`: the demo's validation images, regenerated from demo_run.json, predicted in fp32 and under
    bf16 autocast through the folder's processor; every pixel of every image is compared."""
    from agent_hf.data import synthetic_scenes
    from agent_hf.saving import make_image_processor, save_model_folder

    config = tiny_pvt_config(num_labels=8)
    torch.manual_seed(0)
    save_model_folder(
        agent_hf.AgentPvtForSemanticSegmentation(config).eval(),
        tmp_path / "model",
        make_image_processor(do_reduce_labels=True, scale=(128, 64)),
    )
    with pytest.raises(SystemExit, match="demo_run.json"):
        benchmark.prediction_agreement(tmp_path / "model", torch.bfloat16, "cpu")
    (tmp_path / "demo_run.json").write_text(json.dumps({"arguments": {"num_val": 3, "seed": 1}}))
    result = benchmark.prediction_agreement(tmp_path / "model", torch.bfloat16, "cpu")
    sizes = [image.shape[0] * image.shape[1] for image, _ in synthetic_scenes("validation", 3, 8, seed=1)]
    assert result["images"] == 3 and result["pixels"] == sum(sizes)
    assert 0.5 < result["agreement"] <= 1.0
