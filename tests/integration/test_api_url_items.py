"""http(s) URL items over the HTTP API: authenticated, capped, behind the CLI's SSRF guard, rejected item by item."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from producer import urls
from producer.api import create_app
from tests.integration.test_dataset_inputs import fetch_settings, http_server  # noqa: F401 (fixture)
from tests.integration.test_producer_api import key_for


@pytest.fixture
def url_client(psettings):
    # The guard on, as in production, and the default fetch timeout (this test is not about timeouts)
    s = fetch_settings(
        psettings,
        CAPQ_RATE_LIMITS_PER_HOUR="free=1000,plus=1000,premium=1000",
        CAPQ_MAX_URL_ITEMS_PER_REQUEST="20",
        CAPQ_FETCH_TIMEOUT_S="10",
    )
    return s, TestClient(create_app(s))


def test_url_items_are_fetched_behind_the_guard_and_each_failure_is_that_items_rejection(
    url_client,
    http_server,  # noqa: F811 (the fixture imported above)
    monkeypatch,
):
    s, client = url_client
    # Given a loopback server, and one public-looking name that the test's DNS points at it (every other name
    # goes through the real guard)
    base = http_server.base
    real = urls.resolve
    monkeypatch.setattr(
        urls, "resolve", lambda host, port, allow: "127.0.0.1" if host == "public.test" else real(host, port, allow)
    )
    public = base.replace("127.0.0.1", "public.test")
    items = [{"url": f"{public}/img/{i}.jpg", "meta": {"n": i}} for i in range(3)] + [
        {"url": f"{base}/img/9.jpg"},  # loopback: refused before any request
        {"url": f"{public}/to-metadata"},  # a redirect to the cloud metadata address: refused at that hop
        {"url": f"{public}/missing.jpg"},
        {"url": f"{public}/big.jpg"},
        {"url": "ftp://example.com/a.jpg"},
    ]
    # If an authenticated owner posts them as a JSON manifest
    headers = key_for(s, "uma")
    resp = client.post("/v1/jobs", headers=headers, json={"models": ["blip"], "items": items})
    # I expect the three public images queued with their metadata and every other URL rejected with its reason
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert (body["accepted"], body["enqueued"], body["rejected_total"]) == (3, 3, 5)
    reasons = {r["file"]: r["reason"] for r in body["rejected"]}
    assert "refused: 127.0.0.1" in reasons[f"{base}/img/9.jpg"] and "loopback" in reasons[f"{base}/img/9.jpg"]
    assert "169.254.169.254" in reasons[f"{public}/to-metadata"]
    assert "link-local" in reasons[f"{public}/to-metadata"]
    assert "HTTP 404" in reasons[f"{public}/missing.jpg"]
    assert "over the 100,000-byte cap" in reasons[f"{public}/big.jpg"]
    assert "only http:// and https://" in reasons["ftp://example.com/a.jpg"]
    assert http_server.hits["/img/9.jpg"] == 0 and "/latest/meta-data/" not in http_server.hits
    rows = client.get(f"/v1/jobs/{body['job_id']}/results", headers=headers).json()["results"]
    assert sorted((r["file_name"], r["meta"]["n"]) for r in rows) == [(f"{public}/img/{i}.jpg", i) for i in range(3)]


def test_url_items_need_a_key_and_stay_under_the_cap(url_client, http_server):  # noqa: F811
    s, client = url_client
    items = [{"url": f"{http_server.base}/img/{i}.jpg"} for i in range(21)]
    # Without a key nothing is fetched
    assert client.post("/v1/jobs", json={"models": ["blip"], "items": items[:1]}).status_code == 401
    # Over CAPQ_MAX_URL_ITEMS_PER_REQUEST the request is refused whole, before any fetch
    resp = client.post("/v1/jobs", headers=key_for(s, "uma"), json={"models": ["blip"], "items": items})
    assert resp.status_code == 400 and "CAPQ_MAX_URL_ITEMS_PER_REQUEST" in resp.json()["error"]
    # A URL that is not a string is a bad request, named by its index
    resp = client.post("/v1/jobs", headers=key_for(s, "uma"), json={"models": ["blip"], "items": [{"url": 5}]})
    assert resp.status_code == 400 and "items[0]: url must be a string" in resp.json()["error"]
    assert sum(http_server.hits.values()) == 0
