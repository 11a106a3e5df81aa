"""Hostile input, round 2: the demo app (a public Space) has the handler's limits, and a NaN opacity is refused
rather than painting the overlay black."""

from __future__ import annotations

import importlib.util
import io
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_hostile_input import grey_png

APP_PATH = Path(__file__).resolve().parent.parent / "app" / "app.py"


@pytest.fixture(scope="module")
def app():
    spec = importlib.util.spec_from_file_location("agent_hf_demo_app_hostile", APP_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    module.configure(offline=True)
    return module


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), "half", None])
def test_an_opacity_that_is_not_a_number_is_refused(app, alpha):
    image = Image.fromarray(np.full((4, 6, 3), 200, dtype=np.uint8))
    with pytest.raises(ValueError, match="opacity"):
        app.overlay(image, np.zeros((4, 6), dtype=np.int64), alpha=alpha)
    with pytest.raises(ValueError, match="opacity"):
        app.segment(image, "no/such-model", alpha=alpha)  # refused before loading any model


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the test opens it itself
def test_a_13000x13000_png_is_refused_from_its_header(app):
    data = grey_png(13000, 13000)
    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
    for image in (data, Image.open(io.BytesIO(data))):
        with pytest.raises(ValueError, match=r"13000x13000 image .*\(max_pixels\)"):
            app.to_rgb(image)
    assert time.monotonic() - start < 2
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 100


def test_the_app_fetches_no_url(app):
    with pytest.raises(ValueError, match="URLs are not accepted"):
        app.to_rgb("http://127.0.0.1:9/photo.png")
