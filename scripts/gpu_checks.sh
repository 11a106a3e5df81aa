#!/usr/bin/env bash
# The GPU session's commands for issue #22, on one H100/H200:
#
#   bash scripts/gpu_checks.sh [first|rest] [OUTPUT_DIR]   (repository root; on the device, OUTPUT_DIR under $OUT)
#
# "first" (default; about 7 minutes; every step has its own timeout):
# 1. the fused Triton kernels against the reference on CUDA (tests/kernel_checks.py: values and gradients of a
#    random module in fp32/bf16/fp16, every attention module and whole segmentor of the official fixtures, and
#    Agent-Swin-T + UperNet at 512x512 in training), held to their tolerances;
# 2. transformers' common tests on the device (those that require an accelerator run there);
# 3. scripts/benchmark.py beside transformers' Swin-T + UperNet: fp32 and bf16 eager (segmentor and backbone at
#    512x2048, batch 1 and 8; training step 512x512 batch 8 with peak memory), and the fp32 compiled training step.
# "rest" (a second call, about 7 minutes): the compiled bf16 training step, compiled fp32 inference at batch 8, and
# the segmentor with FlexAttention and with the previous (unfused) path, to compare the kernels.
# Each stage ends with OUTPUT_DIR/summary.md, the issue's table of ratios over every run so far (device, torch
# version and command in each run's benchmark.md beside it).
#
# Needs torch with CUDA, transformers, triton and safetensors in $PYTHON (default python3); uses src/ directly.
set -u -o pipefail
STAGE=${1:-first}
OUT=${2:-docs/benchmarks/gpu}
PY=${PYTHON:-python3}
export PYTHONPATH="src:${PYTHONPATH:-}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} PYTHONUNBUFFERED=1
case "$STAGE" in first | rest) ;; *) echo "gpu_checks: stage $STAGE is not first or rest"; exit 2 ;; esac
mkdir -p "$OUT"
status=0
"$PY" -c "import torch, transformers, triton, safetensors; assert torch.cuda.is_available(), 'no CUDA device'
print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__,
      torch.cuda.get_device_name())" | tee "$OUT/versions.txt" || { echo "gpu_checks: environment not ready"; exit 2; }

COMMON=(--device cuda --resolutions 512x2048 --train_resolution 512x512 --train_batch 8 --warmup 3 --repeats 10
    --memory train --no_flops)
bench() {  # bench SECONDS RUN_NAME ARGS...: one benchmark run into $OUT/RUN_NAME
    local seconds=$1 name=$2
    shift 2
    echo "## benchmark $name"
    timeout "$seconds" "$PY" scripts/benchmark.py "${COMMON[@]}" "$@" --output_dir "$OUT/$name" \
        > "$OUT/$name.log" 2>&1 || { status=1; tail -3 "$OUT/$name.log"; }
}

if [ "$STAGE" = first ]; then
    echo "## 1. kernels against the reference (CUDA)"
    timeout 120 "$PY" tests/kernel_checks.py --device cuda --real --segmentation > "$OUT/kernel_checks.json"
    "$PY" - "$OUT/kernel_checks.json" <<'PYEOF' || status=1
import json, sys
errors = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
def limit(name):  # fp32 at 1e-5 (parity); low precision against fp32; a whole training step's gradients at 1e-4
    if ".bf16." in name: return 3e-2
    if ".fp16." in name: return 1e-2
    return 1e-4 if name.startswith("real.") else 1e-5
bad = {k: v for k, v in errors.items() if not v <= limit(k)}
print(f"{len(errors)} checks, worst {max(errors, key=errors.get)} = {max(errors.values()):.2e}; failing: {bad}")
sys.exit(1 if bad else 0)
PYEOF
    echo "## 2. transformers' common tests on the device"
    timeout 90 "$PY" -m pytest -q -p no:xdist -p no:cacheprovider -rs tests/test_transformers_common.py \
        > "$OUT/transformers_common.txt" 2>&1 || status=1
    tail -5 "$OUT/transformers_common.txt"
    echo "## 3. benchmark, eager (both dtypes) and the compiled fp32 training step"
    bench 80 fp32-eager --dtype fp32 --batch_sizes 1 8
    bench 80 bf16-eager --dtype bf16 --batch_sizes 1 8
    bench 150 fp32-compiled --dtype fp32 --compile --no_inference
else
    echo "## the rest of the table: compiled bf16 and inference, and the kernels compared (Triton, Flex, torch)"
    bench 150 bf16-compiled --dtype bf16 --compile --no_inference
    bench 150 fp32-compiled-inference --dtype fp32 --compile --no_train --batch_sizes 8 --parts segmentor
    bench 70 fp32-eager-flex --dtype fp32 --batch_sizes 8 --parts segmentor --fused_kernel flex --no_peer
    bench 70 fp32-eager-torch --dtype fp32 --batch_sizes 8 --parts segmentor --fused_kernel torch --no_peer
fi
"$PY" scripts/benchmark.py --summarize "$OUT" || status=1
echo "gpu_checks: status $status (results in $OUT)"
exit $status
