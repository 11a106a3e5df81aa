"""onnxruntime against PyTorch on the CPU: latency (median of 3 calls after 1 warm-up) and peak memory (peak RSS
increase of the first call) of one fp32 image at 512x2048, each runtime in its own fresh process.

    python docs/benchmarks/onnx_vs_pytorch.py export agent-pvt-t-fpn-ade20k /tmp/pvt-t   # model folder + model.onnx
    python docs/benchmarks/onnx_vs_pytorch.py torch /tmp/pvt-t
    python docs/benchmarks/onnx_vs_pytorch.py ort /tmp/pvt-t
"""

import json
import os
import resource
import sys
import time

import numpy as np

THREADS = 2
mode, target = sys.argv[1], sys.argv[-1]
if mode == "export":
    import torch
    from transformers import AutoModelForSemanticSegmentation

    import agent_hf
    from agent_hf.onnx_export import export_onnx

    torch.manual_seed(0)
    model = AutoModelForSemanticSegmentation.from_config(agent_hf.preset_config(sys.argv[2])).eval()
    model.save_pretrained(target)
    start = time.time()
    export_onnx(model, os.path.join(target, "model.onnx"))
    sys.exit(print(f"exported in {time.time() - start:.0f} s"))

pixels = np.random.default_rng(0).standard_normal((1, 3, 512, 2048)).astype(np.float32)
if mode == "torch":
    import torch
    from transformers import AutoModelForSemanticSegmentation

    import agent_hf  # noqa: F401

    torch.set_num_threads(THREADS)
    model = AutoModelForSemanticSegmentation.from_pretrained(target).eval()

    def call():
        with torch.no_grad():
            return model(torch.from_numpy(pixels)).logits.numpy()
else:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    session = onnxruntime.InferenceSession(os.path.join(target, "model.onnx"), options)

    def call():
        return session.run(["logits"], {"pixel_values": pixels})[0]


before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
logits = call()
peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
times = []
for _ in range(3):
    start = time.perf_counter()
    call()
    times.append(1000 * (time.perf_counter() - start))
np.save(os.path.join(target, f"logits_{mode}.npy"), logits)
print(json.dumps({"runtime": mode, "median_ms": sorted(times)[1], "min_ms": min(times), "max_ms": max(times),
                  "peak_mb": round(peak_mb)}))  # fmt: skip
