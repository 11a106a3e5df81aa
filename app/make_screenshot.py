"""Screenshots the running app for the README: `docs/demo_screenshot.png`.

Starts `app/app.py` offline on a free 127.0.0.1 port with the default model (`outputs/demo/model` after
`make demo`; `--model` to choose), opens it in Debian's headless Chromium (chromedriver + Selenium; needs
`apt-get install -y chromium chromium-driver`), clicks an example and saves the page once the legend is shown.

    python app/make_screenshot.py [--model outputs/demo/model] [--example synthetic_scene.jpg] [--output PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
REPO_ROOT = APP_DIR.parent
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
)  # fmt: skip


def chrome(window_size: str = "1280,1100"):
    """Debian's headless Chromium through its chromedriver (Selenium Manager is never used: paths are given)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not browser or not os.path.isfile(driver):
        raise SystemExit("needs Chromium and chromedriver: apt-get install -y chromium chromium-driver")
    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--window-size={window_size}", f"--user-data-dir={tempfile.mkdtemp()}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="the app's --model (default: the app's default)")
    parser.add_argument("--example", default="synthetic_scene.jpg", help="file name of the example to click")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "demo_screenshot.png")
    args = parser.parse_args(argv)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, str(APP_DIR / "app.py"), "--host", "127.0.0.1", "--port", str(port), "--offline"]
    command += ["--model", args.model] if args.model else []
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(command, cwd=REPO_ROOT, env=env)
    browser = None
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"the app exited with {server.returncode}") from None
                time.sleep(0.5)
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        browser = chrome()
        browser.get(url)
        wait = WebDriverWait(browser, 120)
        wait.until(lambda d: d.find_element(By.ID, "model-status").text.strip())
        buttons = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#examples button.gallery-item"))
        matching = [b for b in buttons if args.example in b.find_element(By.TAG_NAME, "img").get_attribute("src")]
        if not matching:
            raise SystemExit(f"no example named {args.example!r} in the gallery")
        matching[0].click()
        wait.until(lambda d: "found" in d.find_element(By.ID, "legend").text)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#overlay img"))
        time.sleep(1.0)  # let the overlay image finish decoding
        args.output.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(args.output))
        print(f"wrote {args.output}")
    finally:
        if browser is not None:
            browser.quit()
        server.terminate()
        server.wait(timeout=15)


if __name__ == "__main__":
    main()
