"""The fused agent-attention kernels (`agent_hf.models.agent_attention_kernels`) against the reference, values and
gradients.

Run in a process of its own (Triton decides at import whether its kernels are interpreted): on the CPU it sets
`TRITON_INTERPRET=1` first, so the kernels' arithmetic runs on CPU tensors (tests/test_kernels.py, small shapes);
on CUDA (scripts/gpu_checks.sh) the same checks run compiled, plus a whole segmentor at its real training size.
Prints one JSON object of relative errors; the callers hold them to their tolerances.

    python tests/kernel_checks.py --device cpu
    python tests/kernel_checks.py --device cuda --real
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
from copy import deepcopy
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DIR = Path(__file__).resolve().parent / "fixtures" / "reference"
SEGMENTATION_MODELS = ["agent_swin_aaab_upernet", "agent_swin_aamb2_upernet", "agent_pvt_aaaa_fpn"]


def relative_error(output, reference) -> float:
    assert output.shape == reference.shape, f"shape {tuple(output.shape)} != reference {tuple(reference.shape)}"
    return ((output.double() - reference.double()).norm() / reference.double().norm()).item()


def module_run(attention, hidden_states, height, width, kernel: str, dtype):
    """Output and gradients (of the input and every parameter) of `attention` with `kernel` ("eager": the
    reference; "triton": the fused kernels), for the loss sum(output * weights)."""
    import torch

    attention.config._attn_implementation = "eager" if kernel == "eager" else "sdpa"
    attention.fused_kernel = "torch" if kernel == "eager" else kernel
    module = attention.to(dtype)
    x = hidden_states.to(dtype).detach().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    output = module(x, height, width)
    weights = torch.linspace(-1, 1, output.numel(), device=output.device).view(output.shape)
    (output.float() * weights).sum().backward()
    grads = {"input": x.grad.float()} | {name: p.grad.float() for name, p in module.named_parameters()}
    return output.float().detach(), grads


def random_module_errors(device: str) -> dict:
    """The fused kernels against the reference on a random module: non-square map and agent grid, head_dim not a
    power of two, several map rows per split and several token blocks per row; fp32, then bf16 and fp16 (against
    fp32)."""
    import torch

    from agent_hf.models import agent_attention_kernels as kernels
    from agent_hf.models.agent_attention import AgentAttention

    errors = {}
    tiles = kernels.TARGET_PROGRAMS, kernels.TILE_ELEMENTS
    cases = {
        "map5x7": dict(height=5, width=7, target_programs=512, tile_elements=4096),
        "map5x20_split_rows_blocks": dict(height=5, width=20, target_programs=2, tile_elements=256),
    }
    for case, shape in cases.items():
        torch.manual_seed(0)
        attention = AgentAttention(
            dim=24, num_heads=2, agent_num=9, agent_grid=(2, 3), table_size=(4, 6), config=types.SimpleNamespace()
        ).to(device)
        with torch.no_grad():
            for table in attention._bias_tables():
                table.normal_(0, 0.5)
        x = torch.randn(2, shape["height"] * shape["width"], 24, device=device)
        kernels.TARGET_PROGRAMS, kernels.TILE_ELEMENTS = shape["target_programs"], shape["tile_elements"]
        reference, reference_grads = module_run(attention, x, shape["height"], shape["width"], "eager", torch.float32)
        for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
            if case != "map5x7" and dtype != torch.float32:
                continue
            if device == "cpu" and dtype == torch.bfloat16:
                continue  # Triton 3.9's interpreter computes tl.dot of bf16 tiles wrongly (1e10 off); fp16 is checked
            # FlexAttention has no backward on the CPU: it is checked on CUDA only.
            for kernel in ("triton", "flex") if device != "cpu" else ("triton",):
                copy = deepcopy(attention)  # casting to bf16/fp16 would round the weights of the next runs
                label = f"{case}.{dtype_name}" if kernel == "triton" else f"flex.{case}.{dtype_name}"
                try:
                    output, grads = module_run(copy, x, shape["height"], shape["width"], kernel, dtype)
                except Exception as error:  # noqa: BLE001 - reported as a failed check, the other checks still run
                    print(f"{label}: {type(error).__name__}: {error}", file=sys.stderr)
                    errors[f"{label}.output"] = float("inf")
                    continue
                errors[f"{label}.output"] = relative_error(output, reference)
                for name, grad in grads.items():
                    errors[f"{label}.grad.{name}"] = relative_error(grad, reference_grads[name])
        # Inference (no gradients, cached factors) takes the kernels too.
        attention.fused_kernel = "triton"
        attention.config._attn_implementation = "sdpa"
        with torch.no_grad():
            errors[f"{case}.fp32.no_grad_output"] = relative_error(
                attention(x, shape["height"], shape["width"]), reference
            )
    kernels.TARGET_PROGRAMS, kernels.TILE_ELEMENTS = tiles
    return errors


def official_module_errors(device: str, models) -> dict:
    """Every AgentAttention module of the official fixtures through the fused kernels, against the official
    outputs (tests/fixtures/reference)."""
    import torch
    from safetensors import safe_open

    from agent_hf import config_from_official, load_official_checkpoint

    errors = {}
    for name in models:
        spec = json.loads((REFERENCE_DIR / f"{name}.json").read_text())
        model = load_official_checkpoint(
            REFERENCE_DIR / f"{name}.weights.safetensors", config_from_official(spec["model"])
        )
        model = model.to(device).eval()
        for module in model.modules():
            if hasattr(module, "fused_kernel"):
                module.fused_kernel = "triton"
        prefix = "case1.module.backbone."
        with safe_open(REFERENCE_DIR / f"{name}.io.safetensors", "pt") as io:
            paths = sorted(k[len(prefix) : -len(".input")] for k in io.keys() if k.startswith(prefix))  # noqa: SIM118
            for path in (p for p in paths if p.endswith(".attn")):
                if model.config.model_type == "agent_swin":
                    stage = int(path.split(".")[1])
                    module = model.backbone.agent_swin.get_submodule(path)
                else:
                    stage = int(path.split(".")[0][len("block") :]) - 1
                    module = model.backbone.agent_pvt.get_submodule(
                        path.replace(f"block{stage + 1}.", f"stages.{stage}.blocks.", 1)
                    )
                height, width = io.get_tensor(f"case1.backbone.{stage}").shape[-2:]
                with torch.no_grad():
                    output = module(io.get_tensor(f"{prefix}{path}.input").to(device), height, width)
                errors[f"{name}:{path}"] = relative_error(output.cpu(), io.get_tensor(f"{prefix}{path}.output"))
    return errors


def compiled_errors(device: str) -> dict:
    """The fused kernels inside a compiled module (torch.compile traces the Triton launches): output and gradients
    against the eager reference, per kernel."""
    import torch

    from agent_hf.models.agent_attention import AgentAttention

    torch.manual_seed(0)
    attention = AgentAttention(
        dim=64, num_heads=2, agent_num=49, agent_grid=(7, 7), table_size=(16, 16), config=types.SimpleNamespace()
    ).to(device)
    with torch.no_grad():
        for table in attention._bias_tables():
            table.normal_(0, 0.5)
    x = torch.randn(2, 24 * 40, 64, device=device)
    reference, reference_grads = module_run(attention, x, 24, 40, "eager", torch.float32)
    errors = {}
    for kernel in ("triton", "flex"):
        module = deepcopy(attention)
        module.forward = torch.compile(module.forward)
        try:
            output, grads = module_run(module, x, 24, 40, kernel, torch.float32)
        except Exception as error:  # noqa: BLE001 - reported as a failed check, the other checks still printed
            print(f"compiled {kernel}: {type(error).__name__}: {error}", file=sys.stderr)
            errors[f"compiled.{kernel}.output"] = float("inf")
            continue
        errors[f"compiled.{kernel}.output"] = relative_error(output, reference)
        errors[f"compiled.{kernel}.max_grad"] = max(relative_error(g, reference_grads[n]) for n, g in grads.items())
    return errors


def official_segmentation_errors(device: str) -> dict:
    """The official fixtures' whole segmentors (default attention: the fused kernels on CUDA) against the official
    decode logits, every case."""
    import torch
    from safetensors.torch import load_file

    from agent_hf import config_from_official, load_official_checkpoint

    errors = {}
    for name in SEGMENTATION_MODELS:
        spec = json.loads((REFERENCE_DIR / f"{name}.json").read_text())
        model = load_official_checkpoint(
            REFERENCE_DIR / f"{name}.weights.safetensors", config_from_official(spec["model"])
        )
        model = model.to(device).eval()
        io = load_file(REFERENCE_DIR / f"{name}.io.safetensors")
        for case in range(len(spec["input_shapes"])):
            with torch.no_grad():
                logits = model(io[f"case{case}.pixel_values"].to(device)).logits
            errors[f"segmentation.{name}.case{case}"] = relative_error(logits.cpu(), io[f"case{case}.decode_logits"])
    return errors


def real_size_errors(device: str) -> dict:
    """Agent-Swin-T + UperNet (random weights) at 512x512, batch 2, in training mode: logits and every
    parameter's gradient with the fused kernels against the reference."""
    import torch

    import agent_hf

    torch.manual_seed(0)
    config = agent_hf.preset_config("agent-swin-t-upernet-ade20k")
    config.drop_path_rate = 0.0
    model = agent_hf.AgentSwinForSemanticSegmentation(config).to(device).train()
    pixels = torch.randn(2, 3, 512, 512, device=device)
    results = {}
    for kernel in ("eager", "triton"):
        model.config._attn_implementation = "eager" if kernel == "eager" else "sdpa"
        for module in model.modules():
            if hasattr(module, "fused_kernel"):
                module.fused_kernel = "torch" if kernel == "eager" else kernel
        model.zero_grad(set_to_none=True)
        logits = model(pixels).logits
        logits.float().square().mean().backward()
        results[kernel] = (
            logits.detach(),
            {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
        )
    (ref_logits, ref_grads), (logits, grads) = results["eager"], results["triton"]
    errors = {"real.logits": relative_error(logits, ref_logits)}
    errors["real.max_grad"] = max(relative_error(grads[n], g) for n, g in ref_grads.items() if g.norm() > 0)
    return errors


def compile_for_gpu(kernel: str, agents: int, head_dim: int, dtype, arch: int = 90):
    """One fused kernel compiled ahead of time for an NVIDIA GPU of compute capability `arch` (no GPU needed: Triton
    ships ptxas), with the launch options `agent_attention_kernels` uses for `agents` x `head_dim` in `dtype`.
    Returns Triton's compiled kernel (its `metadata.shared`: the shared memory one block takes)."""
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from agent_hf.models import agent_attention_kernels as kernels

    function = getattr(kernels, kernel)
    options = kernels.launch_options(agents, head_dim, dtype)
    launch = {key: options.pop(key) for key in ("num_warps", "num_stages")}
    if "backward" in kernel:
        options["TABLE_GRAD"] = True
    element = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[str(dtype).removeprefix("torch.")]
    # fp32 buffers: the bias factors, log-sum-exps and the partial sums / gradients the kernels accumulate
    fp32 = {"lse_ptr", "delta_ptr", "grad_a_ptr", "grad_va_ptr", "grad_table_ptr", "grad_rows_ptr", "resize_ptr"}
    fp32 |= {"table_ptr", "rows_ptr"} | ({"out_ptr"} if kernel == "_agent_step_forward" else set())
    signature = {}
    for name in inspect.signature(function.fn).parameters:
        if name in options:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*fp32" if name in fp32 else f"*{element}"
        else:
            signature[name] = "fp32" if name == "scale" else "i32"
    source = ASTSource(fn=function, signature=signature, constexprs=options)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=launch)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--real", action="store_true", help="also a whole segmentor at 512x512 (GPU)")
    parser.add_argument("--segmentation", action="store_true", help="also the official whole segmentors")
    parser.add_argument(
        "--official", nargs="*", default=SEGMENTATION_MODELS, help="fixture models whose attention modules to check"
    )
    args = parser.parse_args(argv)
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before Triton is imported: kernels run on CPU tensors
    sys.path.insert(0, str(REPO_ROOT / "src"))
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    errors = random_module_errors(args.device)
    errors |= {f"official.{k}": v for k, v in official_module_errors(args.device, args.official).items()}
    if args.segmentation:
        errors |= official_segmentation_errors(args.device)
    if args.real:
        errors |= real_size_errors(args.device) | compiled_errors(args.device)
    print(json.dumps(errors))


if __name__ == "__main__":
    main()
