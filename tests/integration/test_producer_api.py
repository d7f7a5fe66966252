"""The HTTP API in-process (FastAPI TestClient over real services): keys, owners, limits and clear errors."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from capq.settings import load_settings
from producer.api import create_app
from storage.apikeys import ApiKeys
from storage.blobs import ImageStore
from tests.conftest import SEED_IMAGES, settings_env
from tests.integration.test_producer_submit import random_jpeg


@pytest.fixture(scope="module")
def api_settings(psettings):  # noqa: F811
    return load_settings(
        {
            **settings_env(psettings),
            "CAPQ_CAPTION_WAIT_S": "1.5",
            "CAPQ_RATE_LIMITS_PER_HOUR": "free=1000,plus=1000,premium=1000",
        }
    )


@pytest.fixture(scope="module")
def client(api_settings):
    return TestClient(create_app(api_settings))


def key_for(settings, owner: str, tier: str = "premium") -> dict:
    key, _ = ApiKeys(settings).create(owner, tier)
    return {"X-API-Key": key}


def upload(client, headers, files, models="blip", **fields):
    return client.post(
        "/v1/jobs",
        headers=headers,
        data={"models": models, **fields},
        files=[("files", (name, data, "image/jpeg")) for name, data in files],
    )


def test_missing_or_wrong_key_is_401_with_what_to_send(client):
    for headers in ({}, {"X-API-Key": "capq_wrong"}, {"Authorization": "Bearer nope"}):
        resp = client.get("/v1/jobs", headers=headers)
        assert resp.status_code == 401
        assert "X-API-Key" in resp.json()["error"] and resp.headers["WWW-Authenticate"] == "Bearer"


def test_bearer_and_header_keys_both_work_and_revoked_keys_stop(client, api_settings):
    key, record = ApiKeys(api_settings).create("hank", "free")
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    ApiKeys(api_settings).revoke(record["prefix"])
    resp = client.get("/v1/jobs", headers={"X-API-Key": key})
    assert resp.status_code == 401 and "revoked" in resp.json()["error"]


def test_upload_job_lists_rejections_and_another_owner_gets_404(client, api_settings):
    alice, bob = key_for(api_settings, "alice"), key_for(api_settings, "bob")
    resp = upload(
        client, alice, [("a.jpg", SEED_IMAGES[0].read_bytes()), ("../../etc/notes.jpg", b"text")], models="blip,git"
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["accepted"] == 1 and body["enqueued"] == 2 and body["tier"] == "premium"
    assert body["rejected"] == [{"file": "notes.jpg", "reason": body["rejected"][0]["reason"]}]
    job_id = body["job_id"]
    assert client.get(f"/v1/jobs/{job_id}", headers=alice).json()["counts"]["queued"] == 2
    rows = client.get(f"/v1/jobs/{job_id}/results", headers=alice).json()["results"]
    assert {(r["model"], r["status"], r["file_name"]) for r in rows} == {
        ("blip", "queued", "a.jpg"),
        ("git", "queued", "a.jpg"),
    }
    # Bob learns nothing: his answer is exactly the one for a job that does not exist
    theirs = client.get(f"/v1/jobs/{job_id}", headers=bob)
    missing = client.get("/v1/jobs/no-such-job", headers=bob)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"].replace(job_id, "X") == missing.json()["error"].replace("no-such-job", "X")
    assert client.get(f"/v1/jobs/{job_id}/results", headers=bob).status_code == 404
    assert job_id not in json.dumps(client.get("/v1/jobs", headers=bob).json())


@pytest.mark.parametrize(
    "fields,status,needle",
    [
        ({"models": "dalle"}, 400, "unknown model(s) 'dalle'"),
        ({"models": "blip", "tier": "gold"}, 400, "unknown tier 'gold'"),
        ({"models": "blip", "preset": "poetic"}, 400, "unknown preset 'poetic'"),
    ],
)
def test_unknown_model_tier_preset_are_400(client, api_settings, fields, status, needle):
    resp = upload(client, key_for(api_settings, "ivan"), [("a.jpg", SEED_IMAGES[0].read_bytes())], **fields)
    assert resp.status_code == status and needle in resp.json()["error"]


def test_a_key_cannot_ask_for_a_higher_tier(client, api_settings):
    resp = upload(
        client, key_for(api_settings, "ivan", "free"), [("a.jpg", SEED_IMAGES[0].read_bytes())], tier="premium"
    )
    assert resp.status_code == 400 and "your key's tier is free" in resp.json()["error"]


@pytest.mark.parametrize(
    "item,needle",
    [
        ({"path": "../../etc/passwd"}, "never reads files on the server"),
        ({"path": "/etc/passwd"}, "never reads files on the server"),
        ({"s3": "/etc/passwd"}, "not an s3:// URI"),
        ({"s3": "file:///etc/passwd"}, "not an s3:// URI"),
        ({"s3": "s3://some-other-bucket/owners/judy/a.jpg"}, "not readable through capq"),
        ({"s3": "s3://BUCKET/owners/judy/../kim/a.jpg"}, "'..' segments"),
        ({"s3": "s3://BUCKET/owners/kim/a.jpg"}, "outside your prefix"),
    ],
)
def test_api_manifest_never_reaches_server_paths_or_others_keys(client, api_settings, item, needle):
    item = {k: v.replace("BUCKET", api_settings.s3_bucket) for k, v in item.items()}
    resp = client.post("/v1/jobs", headers=key_for(api_settings, "judy"), json={"models": ["blip"], "items": [item]})
    assert resp.status_code == 400, resp.text
    assert needle in resp.json()["error"] and "multipart field 'files'" in resp.json()["error"]


def test_api_manifest_reads_own_keys_and_own_images(client, api_settings):
    judy = key_for(api_settings, "judy")
    ImageStore(api_settings).put_key("owners/judy/dog.jpg", random_jpeg(42), "image/jpeg")
    first = client.post(
        "/v1/jobs",
        headers=judy,
        json={
            "models": ["blip"],
            "items": [{"s3": f"s3://{api_settings.s3_bucket}/owners/judy/dog.jpg", "meta": {"album": "pets"}}],
        },
    )
    assert first.status_code == 202 and first.json()["accepted"] == 1, first.text
    sha = client.get(f"/v1/jobs/{first.json()['job_id']}/results", headers=judy).json()["results"][0]["sha256"]
    again = client.post(
        "/v1/jobs", headers=judy, json={"models": ["git"], "items": [{"sha256": sha}], "idempotency_key": "judy-1"}
    )
    assert again.json()["accepted"] == 1
    replay = client.post(
        "/v1/jobs", headers=judy, json={"models": ["git"], "items": [{"sha256": sha}], "idempotency_key": "judy-1"}
    )
    assert replay.json()["job_id"] == again.json()["job_id"] and replay.json()["enqueued"] == 0
    # Someone else naming judy's image by its sha gets a rejection, not the image
    other = client.post(
        "/v1/jobs", headers=key_for(api_settings, "kim"), json={"models": ["blip"], "items": [{"sha256": sha}]}
    )
    assert other.json()["accepted"] == 0 and "not among your images" in other.json()["rejected"][0]["reason"]


@pytest.mark.parametrize(
    "params",
    [
        {"model": '{"$ne": null}'},
        {"job": '{"$ne": null}'},
        {"image": '{"$ne": null}'},
        {"since": '{"$gt": ""}'},
        {"model": "$where"},
        {"cursor": '{"$ne": null}'},
    ],
)
def test_history_query_params_refuse_operators(client, api_settings, params):
    resp = client.get("/v1/captions", headers=key_for(api_settings, "leo"), params=params)
    assert resp.status_code == 400 and "plain" in resp.json()["error"]


@pytest.mark.parametrize(
    "params,needle",
    [
        ({"model": "dalle"}, "unknown model"),
        ({"image": "/etc/passwd"}, "sha256"),
        ({"limit": "lots"}, "whole number"),
        ({"since": "yesterday"}, "ISO time"),
        ({"page": "1", "cursor": "x"}, "not both"),
    ],
)
def test_history_bad_values_say_what_to_fix(client, api_settings, params, needle):
    resp = client.get("/v1/captions", headers=key_for(api_settings, "leo"), params=params)
    assert resp.status_code == 400 and needle in resp.json()["error"]


def test_validation_errors_are_clear_json_not_fastapis_default(client, api_settings):
    resp = client.post("/v1/caption", headers=key_for(api_settings, "mia"), data={"model": "blip"})
    assert resp.status_code == 422
    assert resp.json() == {"error": "invalid request: file is required (see /docs for the expected fields)"}
    resp = client.post("/v1/jobs", headers={**key_for(api_settings, "mia"), "Content-Type": "text/plain"}, content=b"x")
    assert resp.status_code == 400 and "multipart/form-data" in resp.json()["error"]
    assert client.get("/v2/nothing").json()["error"].startswith("no route GET /v2/nothing")


def test_caption_endpoint_gives_413_for_big_images_and_503_when_no_worker_is_online(client, api_settings):
    mia = key_for(api_settings, "mia")
    big = client.post(
        "/v1/caption", headers=mia, files={"file": ("big.jpg", b"\xff" * (api_settings.max_image_bytes + 1))}
    )
    assert big.status_code == 413 and "byte cap" in big.json()["error"]
    bad = client.post("/v1/caption", headers=mia, files={"file": ("x.jpg", b"text")})
    assert bad.status_code == 400 and "not an image" in bad.json()["error"]
    slow = client.post("/v1/caption", headers=mia, files={"file": ("a.jpg", random_jpeg(5))}, data={"model": "blip"})
    # No blip worker is online: 503 at once with Retry-After (issue 11), not a 504 after the wait
    assert slow.status_code == 503 and slow.headers["Retry-After"] == str(api_settings.worker_lost_after_s)
    assert "no worker online for model blip" in slow.json()["error"] and "stays queued as job" in slow.json()["error"]


def test_health_metrics_and_openapi(client, api_settings):
    assert client.get("/healthz").json() == {"status": "ok"}
    client.get("/v1/jobs/abc", headers=key_for(api_settings, "ned"))
    text = client.get("/metrics").text
    assert 'capq_api_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"}' in text
    assert "capq_api_request_seconds_bucket" in text
    spec = client.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/results", "/v1/captions", "/v1/caption"} <= set(
        spec["paths"]
    )
    assert client.get("/docs").status_code == 200


def test_rate_limit_gives_429_with_retry_after_and_spares_other_keys(psettings):  # noqa: F811
    s = load_settings({**settings_env(psettings), "CAPQ_RATE_LIMITS_PER_HOUR": "free=3,plus=5,premium=10"})
    limited = TestClient(create_app(s))
    first, second = key_for(s, "olga", "free"), key_for(s, "olga", "free")
    assert [limited.get("/v1/jobs", headers=first).status_code for _ in range(3)] == [200, 200, 200]
    over = limited.get("/v1/jobs", headers=first)
    assert over.status_code == 429
    assert 0 < int(over.headers["Retry-After"]) <= 3600 and "3 requests per hour" in over.json()["error"]
    assert limited.get("/v1/jobs", headers=second).status_code == 200, "another key keeps its own budget"
    plus = key_for(s, "pat", "plus")
    assert [limited.get("/v1/jobs", headers=plus).status_code for _ in range(6)] == [200] * 5 + [429]


def test_redis_down_is_503_json_not_an_open_door(psettings):  # noqa: F811
    from tests.conftest import free_port

    s = load_settings(
        {
            **settings_env(psettings),
            "CAPQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "CAPQ_CONNECT_TIMEOUT_S": "0.5",
        }
    )
    down = TestClient(create_app(s))
    resp = down.get("/v1/jobs", headers=key_for(s, "quinn"))
    assert resp.status_code == 503 and "rate limiter unavailable" in resp.json()["error"]
    assert down.get("/healthz").status_code == 503
