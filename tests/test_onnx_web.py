"""The in-browser page (`app/web/`): an exported model run by onnxruntime-web in headless Chromium.

The tiny models test_onnx.py exports (Agent-Swin and Agent-PVT; its `ExportChecks.test_page_in_the_browser` runs
`check_page_segments_photos_like_the_python_onnxruntime_path` on each); `app/web` and the exported folder served by a
real HTTP server on 127.0.0.1; Chromium (driven by selenium as in test_app.py) loads the page and real photos are
uploaded (scikit-image's astronaut, then chelsea): the page's label maps equal the Python onnxruntime path (the
project's image processor + onnxruntime + post_process_semantic_segmentation) on >= 99.9% of the pixels, and the
overlay and the legend of the classes found are shown. Needs `make web` (npm ci in app/web) and `make chromium`.
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
from test_onnx import SCALE, onnx_label_map, photos, session
from transformers import AutoImageProcessor

from agent_hf.data.ade20k import ADE20K_PALETTE

WEB = REPO_ROOT / "app" / "web"
ORT_WEB = WEB / "node_modules" / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs"


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


def page_result(chrome, upload: Path) -> dict:
    """Uploads `upload` in the loaded page, waits for the result; the page's label map, overlay and legend."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    state = lambda d: d.execute_script("return document.body.dataset.state")  # noqa: E731
    chrome.execute_script("document.body.dataset.state = 'ready'")
    chrome.find_element(By.ID, "image").send_keys(str(upload))
    WebDriverWait(chrome, 30).until(lambda d: state(d) in ("done", "error"))
    assert state(chrome) == "done", chrome.find_element(By.ID, "status").text
    width, height = chrome.execute_script(
        "const m = window.agentSegmentation.state.lastLabelMap; return [m.width, m.height]"
    )
    raw = base64.b64decode(chrome.execute_script("return window.agentSegmentation.labelMapBase64()"))
    overlay = chrome.find_element(By.ID, "overlay")
    legend = chrome.find_element(By.ID, "legend")
    return {
        "labels": np.frombuffer(raw, dtype="<u2").reshape(height, width),
        "overlay_shown": overlay.is_displayed(),
        "overlay": np.asarray(
            chrome.execute_script(
                "const c = document.getElementById('overlay');"
                "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"
            ),
            dtype=np.uint8,
        ).reshape(int(overlay.get_attribute("height")), int(overlay.get_attribute("width")), 4),
        "legend_shown": legend.is_displayed(),
        "legend": [
            (int(row.get_attribute("data-class-id")), int(row.get_attribute("data-pixels")), row.text)
            for row in legend.find_elements(By.CSS_SELECTOR, "tbody tr")
        ],
    }


def check_page_segments_photos_like_the_python_onnxruntime_path(exported: Path, tmp_path: Path) -> None:
    """The browser check on an exported model folder (`onnx/model.onnx`, the processor's test resize bound: SCALE).
    test_onnx.py runs it on the folder of each family it exports (one export per family for the whole suite)."""
    if not ORT_WEB.is_file():
        pytest.fail(f"{ORT_WEB} is missing: run `make web` (npm ci --prefix app/web)", pytrace=False)
    browser, driver = _chromium_paths()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    processor = AutoImageProcessor.from_pretrained(exported, trust_remote_code=True)
    assert tuple(processor.scale) == SCALE
    ort_session = session(exported / "onnx" / "model.onnx")
    id2label = {int(i): name for i, name in json.loads((exported / "config.json").read_text())["id2label"].items()}
    images = {name: photos()[name] for name in ("astronaut.png", "chelsea.png")}  # square and 451x300
    for name, image in images.items():
        image.save(tmp_path / name)  # a plain PNG: no color profile for the browser to apply

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
            results = {name: page_result(chrome, tmp_path / name) for name in images}
        finally:
            chrome.quit()

    palette = np.asarray(ADE20K_PALETTE, dtype=np.float64)
    for name, image in images.items():
        result = results[name]
        labels = result["labels"]
        assert labels.shape == (image.height, image.width)
        expected = onnx_label_map(ort_session, processor, image)
        agreement = (labels == expected).mean()
        print(
            f"{name}: browser vs Python onnxruntime label maps agree on {100 * agreement:.4f}% of {labels.size} pixels"
        )
        assert agreement >= 0.999, name
        # the overlay: the photo half-blended with the ADE20K colors of the page's labels
        assert result["overlay_shown"] and result["overlay"].shape == (image.height, image.width, 4)
        blend = np.floor(0.5 * np.asarray(image, dtype=np.float64) + 0.5 * palette[labels % len(palette)] + 0.5)
        assert (result["overlay"][..., :3] == blend).all() and (result["overlay"][..., 3] == 255).all(), name
        # the legend: every class found, largest area first, by name
        assert result["legend_shown"] and len(result["legend"]) >= 2, result["legend"]  # several classes found
        ids, counts = np.unique(labels, return_counts=True)
        by_area = sorted(zip(ids.tolist(), counts.tolist(), strict=True), key=lambda item: (-item[1], item[0]))
        assert [(class_id, pixels) for class_id, pixels, _ in result["legend"]] == by_area
        for class_id, _, text in result["legend"]:
            assert id2label[class_id] in text
