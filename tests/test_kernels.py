"""The fused Triton kernels of agent attention (`agent_hf.models.agent_attention_kernels`, issue #22) without a GPU.

Their arithmetic runs on CPU tensors under Triton's interpreter, in a process of its own (tests/kernel_checks.py:
Triton decides at import whether kernels are interpreted), against the reference implementation (values and the
gradients of the input and of every parameter, the six bias tables included) and against the official outputs of
the attention modules (tests/fixtures/reference). scripts/gpu_checks.sh runs the same checks on CUDA.
"""

import csv
import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
from conftest import TINY_SWIN, tiny_swin_config

from agent_hf.models.agent_attention import AgentAttention
from agent_hf.models.agent_attention_fast import selected_fused_kernel

CHECKS = Path(__file__).parent / "kernel_checks.py"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def kernel_errors() -> dict:
    command = [
        sys.executable,
        str(CHECKS),
        "--device",
        "cpu",
        "--official",
        "agent_swin_aaab_upernet",
        "agent_pvt_aaaa_fpn",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_fp32_values_and_gradients_match_the_reference(kernel_errors):
    fp32 = {k: v for k, v in kernel_errors.items() if ".fp32." in k}
    # Both shapes (one split per map row; several rows per split and token blocks per row), the output, the
    # no-grad output and the gradients of the input and of all 12 parameters.
    assert len(fp32) == 2 * 15, sorted(fp32)
    assert {k: v for k, v in fp32.items() if not v <= TOLERANCE} == {}
    for table in ("an_bias", "na_bias", "ah_bias", "aw_bias", "ha_bias", "wa_bias"):
        assert f"map5x20_split_rows_blocks.fp32.grad.{table}" in fp32


def test_fp16_values_and_gradients_close_to_fp32_reference(kernel_errors):
    fp16 = {k: v for k, v in kernel_errors.items() if ".fp16." in k}
    assert len(fp16) == 14
    assert {k: v for k, v in fp16.items() if not v <= 1e-2} == {}


def test_official_attention_modules_through_the_kernels(kernel_errors):
    official = {k: v for k, v in kernel_errors.items() if k.startswith("official.")}
    assert len(official) >= 10
    assert any("agent_pvt" in k for k in official) and any("agent_swin" in k for k in official)
    assert {k: v for k, v in official.items() if not v <= TOLERANCE} == {}


def test_kernel_compiles_for_h100_within_its_shared_memory():
    """The largest kernel (the broadcast step's backward), with the launch options of Agent-Swin-T's largest agent
    grid (196 agents, head_dim 32) in fp32, compiles for sm_90 (Triton's own ptxas, no GPU) and fits the shared
    memory of one block: too many pipeline stages over the bias-table tiles would not launch."""
    from kernel_checks import compile_for_gpu

    from agent_hf.models.agent_attention_kernels import MAX_SHARED_BYTES

    compiled = compile_for_gpu("_query_step_backward", 196, 32, torch.float32)
    assert 0 < compiled.metadata.shared <= MAX_SHARED_BYTES
    assert compiled.metadata.num_stages == 2


def test_fused_kernel_choice(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    attention = AgentAttention(16, 2, 9, (2, 2), (4, 4), config=types.SimpleNamespace())
    query, agents = torch.zeros(1, 2, 16, 8), torch.zeros(1, 2, 4, 8)
    assert selected_fused_kernel(attention, query, agents) is None  # "auto": CUDA only
    attention.fused_kernel = "torch"
    assert selected_fused_kernel(attention, query, agents) is None
    attention.fused_kernel = "flex"
    assert selected_fused_kernel(attention, query, agents) == "flex"
    attention.fused_kernel = "triton"  # CPU tensors need the interpreter: a clear error, not a crash in Triton
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        selected_fused_kernel(attention, query, agents)
    attention.fused_kernel = "flash"
    with pytest.raises(ValueError, match='fused_kernel: .flash. is not one of "auto", "triton", "flex", "torch"'):
        selected_fused_kernel(attention, query, agents)


def test_flex_attention_variant_matches_the_reference():
    """fused_kernel="flex": both steps by FlexAttention with the bias computed in its score_mod from the same
    factored tables (forward only on the CPU: FlexAttention has no CPU backward; CUDA checks the gradients)."""
    torch.manual_seed(0)
    attention = AgentAttention(24, 2, 9, (2, 3), (4, 6), config=types.SimpleNamespace(_attn_implementation="eager"))
    with torch.no_grad():
        for table in attention._bias_tables():
            table.normal_(0, 0.5)
    x = torch.randn(2, 5 * 7, 24)
    with torch.no_grad():
        reference = attention(x, 5, 7)
        attention.config._attn_implementation, attention.fused_kernel = "sdpa", "flex"
        output = attention(x, 5, 7)
    assert ((output - reference).norm() / reference.norm()).item() <= TOLERANCE


def test_model_folder_ships_the_kernels_and_loads_without_triton(tmp_path):
    """The kernels module travels with the model code, and that code loads and runs where neither agent_hf nor
    Triton can be imported."""
    from agent_hf import AgentSwinForSemanticSegmentation
    from agent_hf.saving import save_model_folder

    model = AgentSwinForSemanticSegmentation(tiny_swin_config()).eval()
    save_model_folder(model, tmp_path / "model")
    assert (tmp_path / "model" / "agent_attention_kernels.py").is_file()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.save({"x": x, "logits": model(x).logits}, tmp_path / "io.pt")
    code = textwrap.dedent(
        """
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("agent_hf", "triton"):
                    raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        sys.meta_path.insert(0, Block())
        sys.path = [p for p in sys.path if not p.rstrip("/").endswith("src")]
        import torch
        from transformers import AutoModelForSemanticSegmentation
        io = torch.load("io.pt")
        model = AutoModelForSemanticSegmentation.from_pretrained("model", trust_remote_code=True).eval()
        with torch.no_grad():
            assert torch.equal(model(io["x"]).logits, io["logits"])
        assert "triton" not in sys.modules and "agent_hf" not in sys.modules
        print("loaded", type(model).__module__)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("loaded transformers_modules")


def test_benchmark_compiled_dry_run_and_summary(tmp_path, monkeypatch):
    """The benchmark's --compile, --fused_kernel and --no_inference paths (used on the GPU by
    scripts/gpu_checks.sh) run end to end on a tiny config (and the peer at tiny sizes), and --summarize tabulates
    the runs."""
    from helpers import tiny_benchmark_peer_config
    from script_helpers import load_script

    benchmark = load_script("benchmark")
    monkeypatch.setattr(benchmark, "peer_config", tiny_benchmark_peer_config(benchmark))
    # One block per stage: torch.compile traces every block, and the script's paths are the subject, not the depth.
    config = json.dumps(dict(model_type="agent_swin", **{**TINY_SWIN, "depths": [1, 1, 1, 1]}, num_labels=5))
    common = [
        "--model", "--config", config, "--resolutions", "64x64", "--batch_sizes", "1", "--parts", "segmentor",
        "--warmup", "1", "--repeats", "1", "--train_resolution", "64x64", "--train_batch", "2", "--memory", "none",
        "--no_flops", "--threads", "1",
    ]  # fmt: skip
    threads = torch.get_num_threads()
    try:
        benchmark.main(
            common
            + ["--no_peer", "--compile", "--compile_backend", "eager", "--fused_kernel", "torch"]
            + ["--output_dir", str(tmp_path / "compiled")]
        )
        benchmark.main(common + ["--no_inference", "--output_dir", str(tmp_path / "eager")])
    finally:
        torch.set_num_threads(threads)
    rows = list(csv.DictReader((tmp_path / "compiled" / "benchmark.csv").open()))
    assert {(r["mode"], r["compiled"], r["fused_kernel"]) for r in rows} == {
        ("inference", "eager", "torch"),
        ("train", "eager", "torch"),
    }
    assert all(not r["error"] and float(r["latency_ms_median"]) > 0 for r in rows), rows
    assert "torch.compile (eager)" in (tmp_path / "compiled" / "benchmark.md").read_text()
    eager_rows = list(csv.DictReader((tmp_path / "eager" / "benchmark.csv").open()))
    assert {(r["mode"], r["role"], r["compiled"]) for r in eager_rows} == {
        ("train", "agent_hf", "no"),
        ("train", "peer", "no"),
    }

    summary = benchmark.summarize(tmp_path)
    assert summary == (tmp_path / "summary.md").read_text()
    header, rule, *table = [line for line in summary.splitlines() if line.startswith("|")]
    assert header == "| what | compiled | eager |"
    cells = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in table}
    assert set(cells) == {"segmentor 64x64, batch 1", "training step 64x64, batch 2"}
    compiled_train, eager_train = (c.strip(" |") for c in cells["training step 64x64, batch 2"])
    assert compiled_train.endswith(" ms") and "x (" not in compiled_train  # no peer in that run
    assert eager_train.endswith(" ms)") and float(eager_train.split("x (")[0]) > 0
