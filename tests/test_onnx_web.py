"""The in-browser page (`app/web/`): an exported model run by onnxruntime-web in headless Chromium.

A tiny Agent-PVT exported as test_onnx.py exports it; `app/web` and the exported folder served by a real HTTP server on
127.0.0.1; Chromium (driven by selenium as in test_app.py) loads the page, a real photo (scikit-image's astronaut) is
uploaded, and the page's label map equals the Python onnxruntime path (the project's image processor + onnxruntime +
post_process_semantic_segmentation) on >= 99.9% of the pixels; the overlay and the legend of the classes found are
shown. Needs `make web` (npm ci in app/web) and `make chromium`.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from test_app import _chrome, _chromium_paths
from test_onnx import SCALE, onnx_label_map, photos, session, tiny_model
from transformers import AutoImageProcessor

from agent_hf.data.ade20k import ADE20K_PALETTE
from agent_hf.onnx_export import export_model_folder
from agent_hf.processing import make_image_processor, save_model_folder

WEB = REPO_ROOT / "app" / "web"
ORT_WEB = WEB / "node_modules" / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A tiny Agent-PVT model folder with `onnx/model.onnx` (the processor's test resize bound: SCALE)."""
    source = tmp_path_factory.mktemp("tiny_pvt")
    save_model_folder(tiny_model("pvt"), source, image_processor=make_image_processor(scale=SCALE))
    output = tmp_path_factory.mktemp("onnx_pvt") / "exported"
    export_model_folder(str(source), output)
    return output


@contextlib.contextmanager
def serving(root: Path):
    """A real static HTTP server for `root` on a free 127.0.0.1 port; yields its URL."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript"}

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_palette_is_the_apps():
    assert json.loads((WEB / "ade20k_palette.json").read_text()) == [list(color) for color in ADE20K_PALETTE]


def test_page_segments_a_photo_like_the_python_onnxruntime_path(exported, tmp_path):
    if not ORT_WEB.is_file():
        pytest.fail(f"{ORT_WEB} is missing: run `make web` (npm ci --prefix app/web)", pytrace=False)
    browser, driver = _chromium_paths()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = photos()["astronaut.png"]
    upload = tmp_path / "astronaut.png"
    image.save(upload)  # a plain PNG: no color profile for the browser to apply
    processor = AutoImageProcessor.from_pretrained(exported, trust_remote_code=True)
    assert tuple(processor.scale) == SCALE
    expected = onnx_label_map(session(exported / "onnx" / "model.onnx"), processor, image)

    site = tmp_path / "site"  # the page and the model folder side by side, as in a static Space
    site.mkdir()
    os.symlink(WEB, site / "web")
    os.symlink(exported, site / "model")
    with serving(site) as url:
        chrome = _chrome(browser, driver, str(tmp_path / "profile"))
        try:
            chrome.get(f"{url}/web/index.html?model=../model/")
            state = lambda d: d.execute_script("return document.body.dataset.state")  # noqa: E731
            WebDriverWait(chrome, 30).until(lambda d: state(d) in ("ready", "error"))
            assert state(chrome) == "ready", chrome.find_element(By.ID, "status").text
            chrome.find_element(By.ID, "image").send_keys(str(upload))
            WebDriverWait(chrome, 30).until(lambda d: state(d) in ("done", "error"))
            assert state(chrome) == "done", chrome.find_element(By.ID, "status").text
            size = chrome.execute_script(
                "const m = window.agentSegmentation.state.lastLabelMap; return [m.width, m.height]"
            )
            raw = base64.b64decode(chrome.execute_script("return window.agentSegmentation.labelMapBase64()"))
            overlay = chrome.find_element(By.ID, "overlay")
            overlay_size = [int(overlay.get_attribute("width")), int(overlay.get_attribute("height"))]
            overlay_shown = overlay.is_displayed()
            legend = chrome.find_element(By.ID, "legend")
            legend_shown = legend.is_displayed()
            rows = [
                (int(row.get_attribute("data-class-id")), int(row.get_attribute("data-pixels")), row.text)
                for row in legend.find_elements(By.CSS_SELECTOR, "tbody tr")
            ]
        finally:
            chrome.quit()

    assert size == [image.width, image.height]
    labels = np.frombuffer(raw, dtype="<u2").reshape(image.height, image.width)
    agreement = (labels == expected).mean()
    print(f"browser vs Python onnxruntime label maps: {100 * agreement:.4f}% of {labels.size} pixels agree")
    assert agreement >= 0.999
    assert overlay_shown and overlay_size == [image.width, image.height]
    assert legend_shown
    ids, counts = np.unique(labels, return_counts=True)
    by_area = sorted(zip(ids.tolist(), counts.tolist(), strict=True), key=lambda item: (-item[1], item[0]))
    assert [(class_id, pixels) for class_id, pixels, _ in rows] == by_area
    id2label = {int(i): name for i, name in json.loads((exported / "config.json").read_text())["id2label"].items()}
    for class_id, _, text in rows:
        assert id2label[class_id] in text
