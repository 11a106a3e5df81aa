import os
from pathlib import Path

import pytest

REFERENCE_DIR = Path(__file__).parent / "fixtures" / "reference"
REPO_ROOT = Path(__file__).resolve().parent.parent

# No test reaches the network: the Hub is unreachable here, and a hang would be worse than an error.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return REFERENCE_DIR
