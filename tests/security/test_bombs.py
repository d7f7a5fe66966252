"""Finding 4: decompression bombs are refused from their headers, and what passes decodes within a bounded budget."""

from __future__ import annotations

import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from tests.conftest import REPO
from tests.security.conftest import LIMITS, files, jpeg_claiming, png_bomb

CAP = int(LIMITS["CAPQ_MAX_IMAGE_PIXELS"])  # 25 MP: 5000 x 5000


def test_a_png_bomb_over_the_pixel_cap_is_refused_from_its_header(api, key):
    bomb = png_bomb(5001, 5000)
    before = api.rss_bytes()
    with api.client() as c:
        resp = c.post("/v1/jobs", headers=key("bea"), data={"models": "blip"}, files=files(("bomb.png", bomb)))
    assert resp.status_code == 202, resp.text
    [rejected] = resp.json()["rejected"]
    assert "pixel cap" in rejected["reason"] and "CAPQ_MAX_IMAGE_PIXELS" in rejected["reason"]
    assert api.rss_bytes() - before < 30 * 1024 * 1024


def test_eight_png_bombs_at_the_cap_at_once_are_decoded_one_budget_at_a_time(api, key):
    # Each decodes to 100 MB (RGBA 5000 x 5000); eight in two parallel requests would be 800 MB undivided,
    # and copies of one file would each cost it again. The decode budget (25 MP here) lets one through at a time.
    bombs = [png_bomb(5000, 5000 - i) for i in range(4)]
    peak = [api.rss_bytes()]
    baseline = peak[0]

    def send(owner: str):
        with api.client() as c:
            return c.post(
                "/v1/jobs",
                headers=key(owner),
                data={"models": "blip"},
                files=files(*[(f"b{i}.png", b) for i, b in enumerate(bombs)], ("copy.png", bombs[0])),
            )

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(send, o) for o in ("bea", "ben")]
        while not all(f.done() for f in futures):
            peak.append(api.rss_bytes())
        answers = [f.result() for f in futures]
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    assert all(a.json()["accepted"] == 4 and a.json()["duplicates"] == 1 for a in answers)
    grown = max(peak) - baseline
    assert grown < 350 * 1024 * 1024, f"RSS grew {grown / 2**20:.0f} MiB decoding bombs"


def test_formats_capq_does_not_support_are_never_parsed(api, key):
    # PCX, ICO and PSD-like files: Pillow reads them, capq refuses them before any parser of theirs runs
    named = []
    for fmt, name in (("PCX", "x.pcx"), ("ICO", "x.ico"), ("TGA", "x.tga")):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, fmt)
        named.append((name, buf.getvalue()))
    with api.client() as c:
        resp = c.post("/v1/jobs", headers=key("bea"), data={"models": "blip"}, files=files(*named))
    reasons = [r["reason"] for r in resp.json()["rejected"]]
    assert len(reasons) == 3 and all("matches no supported format" in r for r in reasons), reasons


def test_a_tiny_jpeg_claiming_10000x10000_is_never_decoded_in_full_by_the_worker(tmp_path):
    # Given the 633-byte JPEG whose header claims 10000 x 10000 (exactly the default 100 MP cap, so it passes
    # submission), decoded by the worker's own function eight times at once, in a fresh process
    path = tmp_path / "bomb.jpg"
    path.write_bytes(jpeg_claiming(10000, 10000))
    script = f"""
import resource, sys
from concurrent.futures import ThreadPoolExecutor
from capq.imaging import decode_rgb, decode_budget
from capq.settings import Settings
s = Settings()
data = open({str(path)!r}, "rb").read()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with ThreadPoolExecutor(8) as pool:
    sizes = list(pool.map(lambda _: decode_rgb(data, s.max_image_pixels, s.worker_decode_max_side_px,
                                               decode_budget(s.decode_budget_pixels)).size, range(8)))
print(sizes[0], (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    size, grown_mb = out.stdout.split(")")[0] + ")", int(out.stdout.split()[-1])
    # I expect a DCT-scaled decode (1/8: 1250 px a side) and, for all eight, well under one full decode (300 MB)
    assert "(1250, 1250)" == size
    assert grown_mb < 100, f"peak RSS grew {grown_mb} MB"
