"""Finding 3: bounded work per request: body size (413 while streaming), files, items, and images per hour."""

from __future__ import annotations

import json

from tests.security.conftest import LIMITS, files, jpeg, raw_request

MAX_REQUEST = int(LIMITS["CAPQ_MAX_REQUEST_BYTES"])
MAX_BODY = int(LIMITS["CAPQ_MAX_BODY_BYTES"])


def test_a_declared_oversized_body_is_413_before_it_is_read(api, key):
    answer = raw_request(
        api, "/v1/jobs", {**key("olga"), "Content-Type": "application/json"}, b"{", length=MAX_BODY + 1
    )
    assert answer.startswith(b"HTTP/1.1 413") and b"CAPQ_MAX_BODY_BYTES" in answer, answer


def test_a_chunked_body_without_length_is_cut_at_the_cap_while_it_streams(api, key):
    # The attacker hides the size (chunked transfer): the count happens as the bytes arrive
    def body():
        yield b'{"models": ["blip"], "items": ['
        piece = (b'{"sha256": "' + b"a" * 64 + b'"},') * 10
        for _ in range(MAX_BODY // len(piece) + 10):
            yield piece

    before = api.rss_bytes()
    with api.client() as c:
        resp = c.post("/v1/jobs", headers={**key("olga"), "Content-Type": "application/json"}, content=body())
    assert resp.status_code == 413, resp.text
    assert api.rss_bytes() - before < 30 * 1024 * 1024


def test_multipart_over_the_request_cap_is_413_and_leaves_no_temporary_files(api, key):
    blob = jpeg(1) + b"\0" * (900 * 1024)  # under the per-image cap; many of them pass the request cap

    def stream():
        yield b'--b\r\nContent-Disposition: form-data; name="models"\r\n\r\nblip\r\n'
        for i in range(MAX_REQUEST // len(blob) + 2):
            yield (
                (
                    f'--b\r\nContent-Disposition: form-data; name="files"; filename="f{i}.jpg"\r\n'
                    "Content-Type: image/jpeg\r\n\r\n"
                ).encode()
                + blob
                + b"\r\n"
            )
        yield b"--b--\r\n"

    with api.client() as c:
        resp = c.post(
            "/v1/jobs", headers={**key("olga"), "Content-Type": "multipart/form-data; boundary=b"}, content=stream()
        )
    assert resp.status_code == 413 and "CAPQ_MAX_REQUEST_BYTES" in resp.json()["error"]
    assert list(api.tmpdir.iterdir()) == []


def test_too_many_files_or_items_are_refused_whole(api, key, settings):
    olga = key("olga")
    cap_files, cap_items = int(LIMITS["CAPQ_MAX_FILES_PER_REQUEST"]), int(LIMITS["CAPQ_MAX_ITEMS_PER_REQUEST"])
    with api.client() as c:
        many = c.post(
            "/v1/jobs",
            headers=olga,
            data={"models": "blip"},
            files=files(*[(f"{i}.jpg", b"x") for i in range(cap_files + 1)]),
        )
        items = [{"sha256": f"{i:064x}"} for i in range(cap_items + 1)]
        listed = c.post("/v1/jobs", headers=olga, json={"models": ["blip"], "items": items})
    assert many.status_code == 400 and "files" in many.json()["error"].lower()
    assert listed.status_code == 400 and "CAPQ_MAX_ITEMS_PER_REQUEST" in listed.json()["error"]


def test_images_count_against_the_hourly_budget_and_a_refused_job_costs_nothing(api, key):
    # A free key may send 6 images an hour (LIMITS): 4, then 4 more (refused whole), then 2 (fits)
    free = key("fred", "free")
    with api.client() as c:
        first = c.post(
            "/v1/jobs",
            headers=free,
            data={"models": "blip"},
            files=files(*[(f"a{i}.jpg", jpeg(100 + i)) for i in range(4)]),
        )
        over = c.post(
            "/v1/jobs",
            headers=free,
            data={"models": "blip"},
            files=files(*[(f"b{i}.jpg", jpeg(200 + i)) for i in range(4)]),
        )
        fits = c.post(
            "/v1/jobs",
            headers=free,
            data={"models": "blip"},
            files=files(*[(f"c{i}.jpg", jpeg(300 + i)) for i in range(2)]),
        )
        single = c.post("/v1/caption", headers=free, files={"file": ("d.jpg", jpeg(400), "image/jpeg")})
        other = c.post(
            "/v1/jobs", headers=key("gina", "free"), data={"models": "blip"}, files=files(("e.jpg", jpeg(500)))
        )
    assert first.status_code == 202, first.text
    assert over.status_code == 429 and "images per hour" in over.json()["error"], over.text
    assert over.headers["X-RateLimit-Limit"] == "6" and int(over.headers["Retry-After"]) > 0
    assert fits.status_code == 202, fits.text
    assert single.status_code == 429, "the one-image endpoint counts too"
    assert other.status_code == 202, "another key's budget is its own"
    assert json.loads(first.text)["accepted"] == 4
