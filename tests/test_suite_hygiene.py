"""The test session's own setup (tests/conftest.py): every Hugging Face cache in a temporary folder, offline mode
forced, here and in the processes the tests start."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import datasets
import huggingface_hub.constants
from conftest import HF_CACHE_VARIABLES

CACHE_CONSTANTS = """
import datasets.config
from huggingface_hub import constants
print(constants.HF_HUB_CACHE, constants.HF_HOME, datasets.config.HF_DATASETS_CACHE,
      constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE, constants.is_offline_mode())
"""


def in_temporary_folder(path) -> bool:
    return Path(path).resolve().is_relative_to(
        Path(tempfile.gettempdir()).resolve()
    ) and "agent-hf-test-caches-" in str(path)


def test_every_hf_cache_is_a_temporary_folder_and_offline_mode_is_on():
    for name in HF_CACHE_VARIABLES:
        assert in_temporary_folder(os.environ[name]), name
    assert in_temporary_folder(os.environ["HF_MODULES_CACHE"]) or os.environ.get("AGENT_HF_TEST_MODULES_CACHE") is None
    # What the libraries read when imported (after conftest): the same folders.
    assert in_temporary_folder(huggingface_hub.constants.HF_HUB_CACHE)
    assert in_temporary_folder(huggingface_hub.constants.HF_HOME)
    assert in_temporary_folder(datasets.config.HF_DATASETS_CACHE)
    assert huggingface_hub.constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE
    assert huggingface_hub.constants.is_offline_mode()  # what transformers asks
    assert not {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT"} & set(os.environ), "no user login or Hub"


def test_processes_started_by_tests_inherit_the_caches_and_offline_mode():
    result = subprocess.run([sys.executable, "-c", CACHE_CONSTANTS], capture_output=True, text=True, check=True)
    hub_cache, home, datasets_cache, hub_offline, datasets_offline, offline = result.stdout.split()
    assert all(map(in_temporary_folder, (hub_cache, home, datasets_cache)))
    assert (hub_offline, datasets_offline, offline) == ("True", "True", "True")
