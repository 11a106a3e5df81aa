"""The Gradio demo (`app/app.py`): its pure functions on a tiny untrained model, then the real app in a real browser.

The browser test starts `python app/app.py` on a free 127.0.0.1 port, drives Debian's headless Chromium through
chromedriver + Selenium, clicks an example image and waits for the overlay and the legend. It needs
`apt-get install -y chromium chromium-driver` and `pip install selenium gradio` (the `app` extra); without them it
FAILS with that message, it is never skipped. Its screenshot goes to `tests/artifacts/app_screenshot.png`
(git-ignored); no test writes a tracked file: `docs/demo_screenshot.png` comes from `python app/make_screenshot.py`
(the trained `make demo` model on its kind of scene).
"""

from __future__ import annotations

import contextlib
import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_swin_config
from helpers import free_port
from PIL import Image

import agent_hf
from agent_hf.data.ade20k import ADE20K_CLASSES, ADE20K_PALETTE, ade20k_id2label
from agent_hf.data.transforms import to_rgb_array
from agent_hf.models.segmentation_inference import multiscale_inputs, segment
from agent_hf.saving import make_image_processor, save_model_folder

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_PATH = REPO_ROOT / "app" / "app.py"
ARTIFACTS_DIR = REPO_ROOT / "tests" / "artifacts"
SCREENSHOT = ARTIFACTS_DIR / "app_screenshot.png"
INSTALL_CHROMIUM = "apt-get update && apt-get install -y chromium chromium-driver"
BROWSER_TIMEOUT_S = 45
#: The tiny model's processor: mmseg's keep-ratio resize, to a small bound so that the tests stay fast.
SCALE = (512, 128)


def _load_app_module():
    spec = importlib.util.spec_from_file_location("agent_hf_demo_app", APP_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def app():
    module = _load_app_module()
    module.configure(offline=True)  # presets never touch the (unreachable) Hub here
    yield module
    module.clear_model_cache()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An untrained 0.7M-parameter Agent-Swin with ADE20K's 150 class names, saved as a model folder."""
    id2label = ade20k_id2label()
    config = tiny_swin_config(num_labels=150, id2label=id2label, label2id={name: i for i, name in id2label.items()})
    torch.manual_seed(0)
    model = agent_hf.AgentSwinForSemanticSegmentation(config).eval()
    folder = tmp_path_factory.mktemp("tiny_agent_swin")
    save_model_folder(model, folder, image_processor=make_image_processor(scale=SCALE))
    return folder


def _example(app, name: str) -> Path:
    path = Path(app.EXAMPLES_DIR) / name
    assert path.is_file(), f"missing example image {path}; run `python app/make_examples.py`"
    return path


@torch.no_grad()
def _reference_label_map(model_dir: Path, image: Image.Image) -> np.ndarray:
    """The prediction of the evaluation path (mmseg's whole inference), computed without the app."""
    from transformers import AutoModelForSemanticSegmentation

    model = AutoModelForSemanticSegmentation.from_pretrained(model_dir).eval()
    return segment(model, multiscale_inputs(image, SCALE), (image.height, image.width))[0].numpy()


def _parse_legend(legend: str) -> list[tuple[int, int, str, str, str]]:
    """(class id, pixels, swatch color, name, percent text) of each legend row."""
    pattern = re.compile(
        r'<tr data-class-id="(\d+)" data-pixels="(\d+)">.*?background:rgb(\([^)]*\)).*?'
        r'<td class="class-name"[^>]*>(.*?)</td><td class="percent"[^>]*>(.*?)</td></tr>',
        re.DOTALL,
    )
    return [(int(i), int(n), color, html.unescape(name), pct) for i, n, color, name, pct in pattern.findall(legend)]


# ------------------------------------------------------------------------------------------ pure functions


@pytest.mark.parametrize("size", [(320, 240), (97, 61)])
def test_segment_overlay_size_and_legend(app, tiny_model_dir, size):
    image = Image.open(_example(app, "street.jpg")).convert("RGB").resize(size)
    expected = _reference_label_map(tiny_model_dir, image)

    np.testing.assert_array_equal(app.predict(image, str(tiny_model_dir)), expected)
    overlay, legend = app.segment(image, str(tiny_model_dir))

    assert isinstance(overlay, Image.Image) and overlay.mode == "RGB"
    assert overlay.size == image.size
    rows = _parse_legend(legend)
    ids, counts = np.unique(expected, return_counts=True)
    assert sorted(r[0] for r in rows) == ids.tolist()  # exactly the classes present, each once
    assert f"{len(ids)} {'class' if len(ids) == 1 else 'classes'} found" in legend
    total = expected.size
    for class_id, pixels, color, name, percent in rows:
        assert pixels == counts[ids.tolist().index(class_id)]
        assert name == ADE20K_CLASSES[class_id]
        assert color == str(tuple(ADE20K_PALETTE[class_id]))
        assert percent == f"{100 * pixels / total:.2f}%" or (percent == "<0.01%" and pixels / total < 1e-4)
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)  # largest first
    assert sum(r[1] for r in rows) == total


def test_overlay_is_an_alpha_blend(app):
    image = Image.fromarray(np.full((4, 6, 3), 200, dtype=np.uint8))
    label_map = np.zeros((4, 6), dtype=np.int64)
    label_map[:, 3:] = 2  # wall | sky
    colors = np.asarray(ADE20K_PALETTE, dtype=np.float32)[label_map]

    np.testing.assert_array_equal(np.asarray(app.overlay(image, label_map, alpha=0.0)), np.asarray(image))
    np.testing.assert_array_equal(np.asarray(app.overlay(image, label_map, alpha=1.0)), colors.astype(np.uint8))
    half = np.asarray(app.overlay(image, label_map, alpha=0.5), dtype=np.int64)
    assert np.abs(half - np.rint(0.5 * 200 + 0.5 * colors)).max() <= 0
    with pytest.raises(ValueError, match="does not match"):
        app.overlay(image, label_map[:, :5])


def test_legend_percentages_and_escaping(app):
    label_map = np.array([0] * 50 + [2] * 30 + [4] * 19 + [7] * 1).reshape(10, 10)
    id2label = {0: "wall", 2: "sky", 4: "tree", 7: "<b>bed</b>"}
    rows = app.legend_rows(label_map, id2label)
    assert [(r.class_id, r.pixels) for r in rows] == [(0, 50), (2, 30), (4, 19), (7, 1)]
    legend = app.legend_html(rows)
    parsed = _parse_legend(legend)
    assert [(r[3], r[4]) for r in parsed] == [
        ("wall", "50.00%"), ("sky", "30.00%"), ("tree", "19.00%"), ("<b>bed</b>", "1.00%")
    ]  # fmt: skip
    assert "<b>bed</b>" not in legend and "&lt;b&gt;bed&lt;/b&gt;" in legend
    assert app.format_percent(1 / 1_000_000) == "<0.01%"
    assert "4 classes found" in legend


def test_large_images_are_predicted_small_and_enlarged(app, tiny_model_dir, monkeypatch):
    image = Image.open(_example(app, "landscape.jpg"))  # 320 x 240 -> class map at 64 x 48, enlarged
    full = app.predict(image, str(tiny_model_dir))
    monkeypatch.setattr(app, "MAX_PREDICTION_SIDE", 64)
    label_map = app.predict(image, str(tiny_model_dir))
    assert label_map.shape == (image.height, image.width)
    assert app._prediction_size(320, 240, 64) == (48, 64)
    # The model saw the same input: the small class map, enlarged, agrees with the full one almost everywhere.
    assert (label_map == full).mean() > 0.9
    assert len(np.unique(label_map[::5, ::5])) > 1 and not np.array_equal(label_map, full)


def test_images_are_converted_like_training_data(app, tiny_model_dir):
    """16-bit, grayscale, RGBA, palette and CMYK images give the prediction of their training conversion."""
    rgb = np.asarray(Image.open(_example(app, "street.jpg")).convert("RGB").resize((96, 64)))
    sixteen = Image.fromarray(rgb[..., 1].astype(np.uint16) * 257)  # 16-bit gray: high byte == the 8-bit value
    assert sixteen.mode.startswith("I")
    expected = app.predict(np.repeat(rgb[..., 1:2], 3, axis=2), str(tiny_model_dir))
    np.testing.assert_array_equal(app.predict(sixteen, str(tiny_model_dir)), expected)
    np.testing.assert_array_equal(app.to_rgb(sixteen), np.repeat(rgb[..., 1:2], 3, axis=2))  # not almost white
    for image in (
        Image.fromarray(rgb).convert("RGBA"),
        Image.fromarray(rgb).convert("P"),
        Image.fromarray(rgb).convert("CMYK"),
        Image.fromarray(rgb).convert("L"),
    ):
        np.testing.assert_array_equal(
            app.predict(image, str(tiny_model_dir)), app.predict(to_rgb_array(image), str(tiny_model_dir))
        )
    with pytest.raises(ValueError, match="float32 is not supported"):  # 0-1 floats: a clear error, not black
        app.segment(rgb.astype(np.float32) / 255, str(tiny_model_dir))
    with pytest.raises(ValueError, match="not a decodable image"):
        app.segment(b"these bytes are not an image", str(tiny_model_dir))
    overlay, _ = app.segment(Image.new("RGB", (1, 1), (10, 200, 30)), str(tiny_model_dir))  # a 1x1 image
    assert overlay.size == (1, 1)


def test_overlay_is_blended_in_bands(app, monkeypatch):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 29, 3), dtype=np.uint8)
    label_map = rng.integers(0, 150, (37, 29))
    whole = np.asarray(app.overlay(image, label_map, alpha=0.3))
    monkeypatch.setattr(app, "OVERLAY_CHUNK_PIXELS", 29 * 4)  # four rows at a time
    np.testing.assert_array_equal(np.asarray(app.overlay(image, label_map, alpha=0.3)), whole)
    expected = np.rint(0.7 * image.astype(np.float32) + 0.3 * np.asarray(ADE20K_PALETTE, np.float32)[label_map])
    np.testing.assert_array_equal(whole, expected.astype(np.uint8))


def test_a_24_megapixel_photo_stays_in_bounded_memory(app, tiny_model_dir):
    """6000x4000: the class map is computed at MAX_PREDICTION_SIDE and the overlay blended in uint8 bands."""
    import tracemalloc

    photo = Image.open(_example(app, "landscape.jpg")).convert("RGB").resize((6000, 4000))
    array = np.asarray(photo)
    del photo
    tracemalloc.start()
    try:
        overlay, legend = app.segment(array, str(tiny_model_dir))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert overlay.size == (6000, 4000) and "found" in legend
    # uint8 image 72 MB, int64 class map 192 MB (+ its int32 copy while enlarging); a float32 overlay alone
    # would add 288 MB per temporary (the old app peaked at ~1.3 GB).
    assert peak < 600 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_model_choices_and_status(app, tiny_model_dir, tmp_path):
    assert set(agent_hf.PRESETS) <= set(app.model_choices(str(tiny_model_dir)))
    assert app.model_choices(str(tiny_model_dir))[0] == str(tiny_model_dir)
    assert app.model_status(str(tiny_model_dir)) == f"**Model:** `{tiny_model_dir}` (150 classes)."
    assert app.load_model(str(tiny_model_dir)) is app.load_model(f"  {tiny_model_dir} ")  # cached per choice

    preset = app.load_model(app.FALLBACK_PRESET)  # offline: the preset's architecture, random weights
    assert preset.random_weights and preset.model.config.agent_hf_preset == app.FALLBACK_PRESET
    assert "random weights" in app.model_status(app.FALLBACK_PRESET).lower()

    with pytest.raises(ValueError, match="Unknown model"):
        app.load_model("definitely not a model")
    with pytest.raises(ValueError, match="without config.json"):
        app.load_model(str(tmp_path))
    with pytest.raises(OSError):
        app.load_model("someone/not-in-the-offline-cache")


def test_default_model_prefers_the_demo_folder(app, tmp_path, monkeypatch):
    monkeypatch.delenv("AGENT_HF_APP_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(app, "REPO_ROOT", tmp_path)
    assert app.default_model_choice() == app.FALLBACK_PRESET
    (tmp_path / "outputs" / "demo" / "model").mkdir(parents=True)
    (tmp_path / "outputs" / "demo" / "model" / "config.json").write_text("{}")
    assert app.default_model_choice() == "outputs/demo/model"  # relative to the working directory
    monkeypatch.chdir(tmp_path / "outputs")
    assert app.default_model_choice() == str(tmp_path / "outputs" / "demo" / "model")  # next to app/
    monkeypatch.setenv("AGENT_HF_APP_MODEL", "agent-swin-t-upernet-ade20k")
    assert app.default_model_choice() == "agent-swin-t-upernet-ade20k"


def test_example_images_are_small(app):
    paths = app.example_paths()
    assert 2 <= len(paths) <= 3
    for path in paths:
        assert Path(path).stat().st_size < 100_000
        assert Image.open(path).mode == "RGB"


# ------------------------------------------------------------------------------------------- the browser


def _chromium_paths() -> tuple[str, str]:
    """(chromium, chromedriver); a test failure (not a skip) saying how to install them when they are missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if os.path.isfile(p)), None
    )
    if not browser or not driver:
        pytest.fail(
            f"The browser test needs Debian's Chromium and its chromedriver (found chromium={browser}, "
            f"chromedriver={driver}). Install them with:  {INSTALL_CHROMIUM}",
            pytrace=False,
        )
    if importlib.util.find_spec("selenium") is None:
        pytest.fail(
            "The browser test needs selenium: pip install -e '.[app]' (or: pip install selenium)", pytrace=False
        )
    return browser, driver


def _wait_for_server(url: str, process: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with {process.returncode}:\n{log.read_text()[-3000:]}", pytrace=False)
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"the app did not answer on {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}", pytrace=False)


@contextlib.contextmanager
def _running_app(model_dir: Path, tmp_path: Path):
    """`python app/app.py` on a free 127.0.0.1 port, offline, serving `model_dir`; yields (url, log path)."""
    port = free_port()
    log = tmp_path / "app.log"
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, str(APP_PATH), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--model", str(model_dir), "--offline"]
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for_server(url, process, log)
        yield url, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _chrome(browser: str, driver: str, profile_dir: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault(
        "SE_OFFLINE", "true"
    )  # Selenium Manager must never download (it isn't used: paths are given)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1280,1100", f"--user-data-dir={profile_dir}",
    ):  # fmt: skip
        options.add_argument(argument)
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    chrome.set_page_load_timeout(30)
    return chrome


def test_app_in_a_real_browser(app, tiny_model_dir, tmp_path):
    browser, driver = _chromium_paths()  # before anything slow: fail fast with the install command
    with _running_app(tiny_model_dir, tmp_path) as (url, log):
        _drive_the_app(app, tiny_model_dir, browser, driver, url, log, tmp_path)
    assert SCREENSHOT.stat().st_size > 10_000


def _drive_the_app(app, tiny_model_dir: Path, browser: str, driver: str, url: str, log: Path, tmp_path: Path):
    """Loads the page, clicks the first example, waits for the overlay and legend, checks them, screenshots."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    example = Path(app.example_paths()[0])  # the first example in the gallery
    id2label = app.load_model(str(tiny_model_dir)).id2label
    expected_rows = app.legend_rows(app.predict(example, str(tiny_model_dir)), id2label)
    dominant = expected_rows[0].name

    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS_DIR / ".gitignore").write_text("*\n")
    chrome = _chrome(browser, driver, tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path))
    try:
        wait = WebDriverWait(chrome, BROWSER_TIMEOUT_S, poll_frequency=0.2)
        chrome.get(url)
        wait.until(lambda d: "150 classes" in d.find_element(By.ID, "model-status").text)
        gallery = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#examples button.gallery-item"))
        assert len(gallery) == len(app.example_paths())
        assert example.name in gallery[0].find_element(By.TAG_NAME, "img").get_attribute("src")
        gallery[0].click()

        def outputs_shown(d):
            images = d.find_elements(By.CSS_SELECTOR, "#overlay img")
            legend = d.find_element(By.ID, "legend")
            src = images[0].get_attribute("src") if images else ""
            return (src, legend) if src and dominant in legend.text and "found" in legend.text else False

        try:
            src, legend = wait.until(outputs_shown)
        except TimeoutException:
            chrome.save_screenshot(str(SCREENSHOT))
            pytest.fail(
                f"no overlay/legend with {dominant!r} within {BROWSER_TIMEOUT_S} s (screenshot: {SCREENSHOT});\n"
                f"app log:\n{log.read_text()[-3000:]}",
                pytrace=False,
            )
        overlay_img = chrome.find_element(By.CSS_SELECTOR, "#overlay img")
        wait.until(
            lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay_img)
        )
        assert chrome.execute_script("return arguments[0].naturalWidth", overlay_img) == Image.open(example).width
        assert src.startswith(("http", "data:image"))
        legend_rows = legend.find_elements(By.CSS_SELECTOR, "tr[data-class-id]")
        assert legend_rows and legend_rows[0].get_attribute("data-class-id") == str(expected_rows[0].class_id)
        assert f"{len(expected_rows)} {'class' if len(expected_rows) == 1 else 'classes'} found" in legend.text

        chrome.save_screenshot(str(SCREENSHOT))
    finally:
        chrome.quit()
