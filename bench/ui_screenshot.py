"""ui_screenshot: the real-browser check: headless Chromium captions a seed image in the running web UI.

Starts `capq demo --models blip --keep-running` (stack, tiny BLIP worker, API, web UI; translation by a tiny
offline Marian model), drives Chromium over the DevTools protocol (upload a seed image, press "Generate
captions", wait for the caption and its translation) and saves docs/ui-caption.png. Needs Debian's chromium:
    python -m bench.ui_screenshot [--out docs/ui-caption.png]
Exits 1 with the reason when a step fails. It is a script, not a CI test: CI machines have no chromium
(the pages are tested in CI through streamlit.testing, tests/e2e/test_ui.py).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tooling.paths import REPO, seed_dir
from tooling.ports import free_port

SEED = seed_dir() / "test_images" / "images" / "000000006818.jpg"


class DevTools:
    """The few Chrome DevTools protocol calls this check needs, over one page's websocket."""

    def __init__(self, port: int):
        from websockets.sync.client import connect

        deadline = time.monotonic() + 30
        while True:
            try:
                pages = httpx.get(f"http://127.0.0.1:{port}/json", timeout=1).json()
                page = next(p for p in pages if p["type"] == "page")
                break
            except (httpx.HTTPError, StopIteration, ValueError):
                if time.monotonic() > deadline:
                    raise SystemExit("chromium's DevTools endpoint did not answer") from None
                time.sleep(0.3)
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None).__enter__()
        self.n = 0

    def call(self, method: str, **params) -> dict:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise SystemExit(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.js(expression):
            if time.monotonic() > deadline:
                text = self.js("document.body.innerText") or ""
                raise SystemExit(f"timed out waiting for {what}; the page shows:\n{text[-1500:]}")
            time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "ui-caption.png"))
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("chromium not found: apt-get install -y chromium", file=sys.stderr)
        return 1
    from capq.settings import get_settings
    from tooling.tiny_marian import make_tiny_marian

    marian = make_tiny_marian(get_settings().models_dir / "tiny-marian")
    ui_port, cdp_port = free_port(), free_port()
    env = {
        **os.environ,
        "CAPQ_TRANSLATE_PROVIDERS": "offline",
        "CAPQ_TRANSLATE_OFFLINE_MODEL": str(marian),
        "PYTHONUNBUFFERED": "1",
    }
    demo = subprocess.Popen(
        [sys.executable, "-m", "capq", "demo", "--models", "blip", "--keep-running", "--ui-port", str(ui_port)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    profile = tempfile.mkdtemp(prefix="capq-chromium-")
    browser = None
    try:
        url = None
        for line in demo.stdout:
            if line.startswith("http://"):
                url = line.strip()
                break
        if not url:
            print(f"the demo ended (code {demo.wait()}) before printing the UI's URL", file=sys.stderr)
            return 1
        browser = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                f"--remote-debugging-port={cdp_port}",
                f"--user-data-dir={profile}",
                "--window-size=1280,1250",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        page = DevTools(cdp_port)
        page.call("Page.enable")
        page.call("DOM.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=1280, height=1250, deviceScaleFactor=1, mobile=False)
        page.call("Page.navigate", url=url)
        page.wait_for("!!document.querySelector('input[type=file]')", "the Caption page's uploader")
        time.sleep(2)  # the model list and translation default arrive with the page's first run
        root = page.call("DOM.getDocument", depth=-1, pierce=True)["root"]["nodeId"]
        node = page.call("DOM.querySelector", nodeId=root, selector="input[type=file]")["nodeId"]
        page.call("DOM.setFileInputFiles", files=[str(SEED)], nodeId=node)
        page.wait_for(
            "[...document.querySelectorAll('button')].some(b => b.innerText.includes('Generate captions')"
            " && !b.disabled)",
            "the Generate captions button",
        )
        page.js("[...document.querySelectorAll('button')].find(b => b.innerText.includes('Generate captions')).click()")
        page.wait_for("document.body.innerText.includes('caption(s) ready')", "the caption")
        time.sleep(2)  # images and fonts settle
        shot = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        Path(args.out).write_bytes(base64.b64decode(shot["data"]))
        print(f"saved {args.out}")
        return 0
    finally:
        if browser is not None:
            browser.terminate()
            browser.wait(10)
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)  # the demo stops its workers, API and UI on Ctrl-C
            try:
                demo.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
