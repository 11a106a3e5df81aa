import atexit
import gc
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REFERENCE_DIR = Path(__file__).parent / "fixtures" / "reference"
REPO_ROOT = Path(__file__).resolve().parent.parent

# Every Hugging Face cache of the test session lives in a temporary folder of its own, and nothing reaches the
# network: set here, when pytest imports this file and before any test module imports transformers, datasets or
# huggingface_hub (which read these variables once, at import), and inherited by every process a test starts (and
# by pytest-xdist's workers). Forced, not defaulted: a user's cache or token must neither serve a test nor be written
# by one (a stale cache once failed a fresh clone's run). The folder is removed when the session's process exits.
# Tests that talk to the local Hub server set HF_HUB_OFFLINE=0 (and their own HF_HOME) in their processes'
# environments; a process started by a test that imports this file keeps the environment it was given.
HF_CACHE_VARIABLES = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_XET_CACHE")
HF_CACHE_VARIABLES += ("HF_ASSETS_CACHE", "HF_DATASETS_CACHE", "XDG_CACHE_HOME")
if "AGENT_HF_TEST_CACHES" not in os.environ:
    _cache_root = Path(tempfile.mkdtemp(prefix="agent-hf-test-caches-"))
    atexit.register(shutil.rmtree, _cache_root, ignore_errors=True)
    for _name in HF_CACHE_VARIABLES:
        os.environ[_name] = str(_cache_root / _name.lower())
    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", GRADIO_ANALYTICS_ENABLED="False")
    for _name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_TOKEN_PATH", "HF_DATASETS_OFFLINE"):
        os.environ.pop(_name, None)  # the user's login and Hub; HF_HUB_OFFLINE alone says offline (datasets too)
    os.environ["AGENT_HF_TEST_CACHES"] = str(_cache_root)
    _already_imported = sorted({"transformers", "datasets", "huggingface_hub"} & set(sys.modules))
    if _already_imported:  # by a plugin, before this file: they would read the user's caches
        raise RuntimeError(f"tests/conftest.py: {_already_imported} imported before the test caches were set")
# Remote code loaded by the tests (and their subprocesses) is copied into a cache of this process only, never one
# shared with other runs, the user's or the other pytest-xdist worker (which inherits the variable from the process
# that started it): a stale or concurrently rewritten module there would make loading tests flaky. A cache the user
# set is kept.
if os.environ.get("HF_MODULES_CACHE") in (None, os.environ.get("AGENT_HF_TEST_MODULES_CACHE")):
    os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="modules-", dir=os.environ["AGENT_HF_TEST_CACHES"])
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


# What a worker holds once it has collected (torch, transformers, datasets, transformers' test modules: ~0.5M
# objects) lives until the session ends, yet every full garbage collection walked all of it again: 0.25-0.4 s each,
# and the training script's Trainer and accelerate call `gc.collect()` on each run (with Python's own full
# collections, seconds per file). Frozen after collection, those objects are left out of every collection; they
# are unfrozen at the end, so that the interpreter's exit frees them (and nanobind reports no leaks).
def pytest_collection_finish(session):
    gc.freeze()


# transformers 5 reads a checkpoint's tensors on a pool of threads it starts for each `from_pretrained`; for the
# tests' tiny models the pool costs more than the reading (20-35 ms of a 40-90 ms load, and the tests load ~250
# models in-process). In a pytest session (and the processes its tests start) they are read one after another: the
# same tensors, through the same function. Set here, not when this file is imported: `tests/compat_check.py` imports
# it, and its own processes, like `make demo`, load with transformers' default, the thread pool.
def pytest_configure(config):
    os.environ.setdefault("HF_DEACTIVATE_ASYNC_LOAD", "1")


def pytest_unconfigure(config):
    gc.unfreeze()
