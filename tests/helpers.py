"""Helpers shared by several test files (one copy of each): processes that cannot import agent_hf, mmcv's test
resize written out independently, free local ports, the environment of the processes the tests start, the benchmark's
peer at tiny sizes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import REPO_ROOT

#: Prepended to a script: importing agent_hf (or any agent_hf.*) fails, and this checkout's src/ is off sys.path.
BLOCK_AGENT_HF = textwrap.dedent(
    """
    import sys, importlib.abc
    class BlockAgentHF(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "agent_hf" or name.startswith("agent_hf."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
    sys.meta_path.insert(0, BlockAgentHF())
    sys.path = [p for p in sys.path if not p.rstrip("/").endswith("src")]
    """
)


def subprocess_env(**overrides: str) -> dict[str, str]:
    """The environment of a process a test starts: this session's (tests/conftest.py: temporary caches, offline, one
    thread) with this checkout's ``src`` first on PYTHONPATH, plus ``overrides``."""
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1", **overrides}


def run_without_agent_hf(code: str, cwd: Path, prelude: str = "", timeout: int = 600) -> str:
    """Runs ``prelude + code`` in a new interpreter that cannot import agent_hf (and checks that it did not); returns
    its stdout, failing with its stderr on an error. Remote code is copied into a module cache under ``cwd``."""
    script = BLOCK_AGENT_HF + prelude + textwrap.dedent(code) + "\nassert 'agent_hf' not in sys.modules\n"
    env = {**os.environ, "HF_MODULES_CACHE": str(Path(cwd) / ".hf_modules")}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def mmcv_rescale_size(width: int, height: int, scale=(2048, 512)) -> tuple[int, int]:
    """mmcv ``rescale_size`` written out independently: ``(height, width)`` of the keep-ratio test resize that fits
    ``scale = (long edge, short edge)``."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_benchmark_peer_config(benchmark):
    """scripts/benchmark.py's peer (`peer_config`: transformers' Swin + UperNet) at the tiny models' sizes, to
    monkeypatch over it: the 60M-parameter Swin-T would only slow the tests down; the tables need a peer, not its
    size."""
    from transformers import SwinConfig

    full_size = benchmark.peer_config

    def peer_config(attn_implementation):
        config = full_size(attn_implementation)
        stages = config.backbone_config.out_features
        config.backbone_config = SwinConfig(
            embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=7, out_features=stages
        )
        if attn_implementation:
            config.backbone_config._attn_implementation = attn_implementation
        config.hidden_size, config.auxiliary_channels, config.auxiliary_in_channels = 16, 8, 64
        return config

    return peer_config
