import os
import sys
import tempfile
from pathlib import Path

import pytest

REFERENCE_DIR = Path(__file__).parent / "fixtures" / "reference"
REPO_ROOT = Path(__file__).resolve().parent.parent

# No test reaches the network: the Hub is unreachable here, and a hang would be worse than an error.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Remote code loaded by the tests (and their subprocesses) is copied into a cache of this process only, never one
# shared with other runs, the user's or the other pytest-xdist worker (which inherits the variable from the process
# that started it): a stale or concurrently rewritten module there would make loading tests flaky. A cache the user
# set is kept.
if os.environ.get("HF_MODULES_CACHE") in (None, os.environ.get("AGENT_HF_TEST_MODULES_CACHE")):
    os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="agent-hf-test-modules-")
    os.environ["AGENT_HF_TEST_MODULES_CACHE"] = os.environ["HF_MODULES_CACHE"]
# One thread per process, here and in every process a test starts (they inherit the variable): the models are tiny,
# so more threads gain little, while two pytest-xdist workers, launched processes or other jobs on the same cores
# oversubscribe them, and torch's thread pools then run several times slower. (torch reads it when imported.)
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:  # imported before this file (by a plugin): too late for the variable
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# The tiny models every test file builds (~0.7M / ~0.2M parameters): all four stages, a few channels each.
TINY_SWIN = dict(
    embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], decoder_hidden_size=16, auxiliary_channels=8
)
TINY_PVT = dict(embed_dims=[16, 32, 40, 64], depths=[1, 1, 1, 1], fpn_hidden_size=16, decoder_hidden_size=8)


def tiny_swin_config(**kwargs):
    """A tiny `AgentSwinConfig` (5 classes unless `num_labels`/`id2label` say otherwise); kwargs override."""
    from agent_hf import AgentSwinConfig

    return AgentSwinConfig(**{**TINY_SWIN, "num_labels": 5, **kwargs})


def tiny_pvt_config(**kwargs):
    """A tiny `AgentPvtConfig` (5 classes unless `num_labels`/`id2label` say otherwise); kwargs override."""
    from agent_hf import AgentPvtConfig

    return AgentPvtConfig(**{**TINY_PVT, "num_labels": 5, **kwargs})


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return REFERENCE_DIR
