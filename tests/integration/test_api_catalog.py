"""The web UI's API routes over real services: models and queues, evaluations, owners' images, translation."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image

from capq.names import EVAL_QUEUE, caption_queue, heartbeat_key
from capq.settings import load_settings
from evaluation.references import import_file
from evaluation.run import run_evaluation
from producer.api import create_app
from storage.db import mongo
from tests.conftest import SEED_IMAGES, flush_redis, settings_env
from tests.integration.test_evaluation import GROUND_TRUTH, add_images, add_seed_captions
from tests.integration.test_producer_api import key_for, upload


@pytest.fixture(scope="module")
def csettings(settings):
    return load_settings(
        {
            **settings_env(settings),
            "CAPQ_RATE_LIMITS_PER_HOUR": "free=1000,plus=1000,premium=1000",
            "CAPQ_TRANSLATE_PROVIDERS": "",
            "CAPQ_FLOWER_URL": "http://flower.example:5555",
        }
    )


@pytest.fixture(scope="module")
def client(csettings):
    return TestClient(create_app(csettings))


def test_models_show_presets_queue_depth_per_tier_and_live_workers(client, csettings):
    # Given two premium shards of blip queued and a live blip worker heartbeat
    flush_redis(csettings)
    r = redis.Redis.from_url(csettings.redis_url)
    r.rpush(caption_queue("blip", "premium"), "m1", "m2")
    r.rpush(caption_queue("git", "free"), "m3")
    r.set(heartbeat_key("blip@host-a:42"), str(time.time()), ex=30)
    body = client.get("/v1/models", headers=key_for(csettings, "una")).json()
    by_model = {m["model"]: m for m in body["models"]}
    assert set(by_model) == {"blip", "blip2", "git", "vit-gpt2"}
    assert by_model["blip"]["queues"] == {"premium": 2, "plus": 0, "free": 0}
    assert by_model["git"]["queues"]["free"] == 1
    assert by_model["blip"]["workers_online"] == 1 and by_model["blip"]["workers"][0]["host"] == "host-a"
    assert by_model["git"]["workers_online"] == 0
    assert {"default", "seed"} <= set(by_model["blip"]["presets"])
    assert by_model["blip"]["presets"]["default"]["generate"]["num_beams"] == 3
    queues = client.get("/v1/queues", headers=key_for(csettings, "una")).json()
    assert queues["flower_url"] == "http://flower.example:5555" and queues["translate_queue"] == 0
    flush_redis(csettings)


def test_images_by_sha256_are_the_owners_only(client, csettings):
    alice, bob = key_for(csettings, "alice-img"), key_for(csettings, "bob-img")
    data = SEED_IMAGES[1].read_bytes()
    job = upload(client, alice, [("seed.jpg", data)]).json()
    sha = client.get(f"/v1/jobs/{job['job_id']}/results", headers=alice).json()["results"][0]["sha256"]
    full = client.get(f"/v1/images/{sha}", headers=alice)
    assert full.status_code == 200 and full.content == data
    thumb = client.get(f"/v1/images/{sha}", params={"size": "thumb"}, headers=alice)
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256
    # Bob's answer for alice's image is exactly the answer for an image that does not exist
    theirs = client.get(f"/v1/images/{sha}", headers=bob)
    nobody = client.get(f"/v1/images/{'0' * 64}", headers=bob)
    assert theirs.status_code == nobody.status_code == 404
    assert theirs.json()["error"].replace(sha[:12], "X") == nobody.json()["error"].replace("0" * 12, "X")
    # Several thumbnails in one request: only the caller's come back
    many = client.get("/v1/thumbnails", params={"sha256": [sha, "0" * 64]}, headers=alice).json()["thumbnails"]
    assert list(many) == [sha] and many[sha].startswith("data:image/jpeg;base64,")
    assert client.get("/v1/thumbnails", params={"sha256": [sha]}, headers=bob).json() == {"thumbnails": {}}
    assert client.get("/v1/thumbnails", params={"sha256": ["nope"]}, headers=alice).status_code == 400
    assert client.get("/v1/images/not-a-sha", headers=alice).status_code == 422
    assert client.get(f"/v1/images/{sha}").status_code == 401


def seed_evaluations(settings) -> None:
    """The seed's images, references and captions of git and blip, evaluated (git first, then blip)."""
    db = mongo(settings)
    for name in ("images", "captions", "references", "evaluations"):
        db[name].delete_many({})
    shas = add_images(db)
    import_file(settings, GROUND_TRUTH)
    add_seed_captions(db, shas)
    run_evaluation(settings, model="git")
    run_evaluation(settings, model="blip")


def test_evaluations_history_and_paired_compare(client, csettings, eval_worker):
    seed_evaluations(csettings)
    key = key_for(csettings, "vera")
    runs = client.get("/v1/evaluations", headers=key).json()["evaluations"]
    assert [r["model"] for r in runs] == ["blip", "git"]  # newest first
    git = runs[1]
    assert git["scores"]["cider"] == pytest.approx(0.5401, abs=2e-4) and len(git["ci95"]["cider"]) == 2
    assert [
        r["model"] for r in client.get("/v1/evaluations", params={"model": "git"}, headers=key).json()["evaluations"]
    ] == ["git"]
    cmp = client.get("/v1/evaluations/compare", params={"a": "git", "b": "blip"}, headers=key).json()
    assert cmp["images"] == 10 and cmp["diff"]["cider"]["diff"] == pytest.approx(0.5401 - 0.1519, abs=2e-4)
    missing = client.get("/v1/evaluations/compare", params={"a": "git", "b": "blip2", "preset": "default"}, headers=key)
    assert missing.status_code == 409 and "no finished captions" in missing.json()["error"]
    same = client.get("/v1/evaluations/compare", params={"a": "git", "b": "git"}, headers=key)
    assert same.status_code == 400 and "two different models" in same.json()["error"]
    assert client.get("/v1/evaluations", params={"model": "dalle"}, headers=key).status_code == 400
    # Every answer was taken: nothing waits in MongoDB for its hour to pass
    assert mongo(csettings)["compare_requests"].count_documents({}) == 0


def test_compare_says_why_when_no_evaluation_worker_answers(csettings, request):
    # Given no eval worker running, and an API that waits 1 s for one (this test is about that wait)
    flush_redis(csettings)
    impatient = TestClient(create_app(load_settings({**settings_env(csettings), "CAPQ_COMPARE_WAIT_S": "1"})))
    yuri = key_for(csettings, "yuri")
    resp = impatient.get("/v1/evaluations/compare", params={"a": "git", "b": "blip"}, headers=yuri)
    # I expect a 503 that names the missing worker; the request went to the evaluation queue, then was withdrawn
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"].startswith("no evaluation worker answered within 1 s: is `capq eval worker` running?")
    assert redis.Redis.from_url(csettings.redis_url).llen(EVAL_QUEUE) == 1
    assert mongo(csettings)["compare_requests"].count_documents({}) == 0
    # If an eval worker comes up later, it drops the stale request instead of running the bootstrap for nobody
    worker = request.getfixturevalue("eval_worker")
    deadline = time.monotonic() + 120  # only stops a hung test
    while "skipped: nobody awaits it" not in Path(worker.log_path).read_text():
        assert time.monotonic() < deadline, "the eval worker never took the stale comparison"
        time.sleep(0.2)
    assert mongo(csettings)["compare_requests"].count_documents({}) == 0


def test_translation_unavailable_is_reported_never_a_job_error(client, csettings):
    key = key_for(csettings, "walt")
    assert client.get("/v1/translate", headers=key).json()["available"] is False
    resp = client.post("/v1/translate", json={"texts": ["a cat on a couch"], "lang": "vi"}, headers=key)
    assert resp.status_code == 503 and "CAPQ_TRANSLATE_PROVIDERS" in resp.json()["error"]
    job = upload(client, key, [("a.jpg", SEED_IMAGES[2].read_bytes())]).json()
    rows = client.get(f"/v1/jobs/{job['job_id']}/results", params={"lang": "vi"}, headers=key).json()
    assert rows["translation"]["available"] is True  # nothing captioned yet: nothing needed translating
    assert rows["results"][0]["status"] == "queued" and rows["results"][0]["translation"] is None
    bad = client.get(f"/v1/jobs/{job['job_id']}/results", params={"lang": "../x"}, headers=key)
    assert bad.status_code == 400 and "language code" in bad.json()["error"]
    assert client.post("/v1/translate", json={"texts": []}, headers=key).status_code == 400


def test_openapi_documents_the_ui_routes(client):
    paths = set(client.get("/openapi.json").json()["paths"])
    assert {
        "/v1/models",
        "/v1/queues",
        "/v1/evaluations",
        "/v1/evaluations/compare",
        "/v1/images/{sha256}",
        "/v1/thumbnails",
        "/v1/translate",
    } <= paths


def test_a_job_submitted_over_http_can_ask_for_translation(client, csettings):
    from storage.jobs import JobStore

    key = key_for(csettings, "xena")
    job = upload(client, key, [("a.jpg", SEED_IMAGES[3].read_bytes())], translate="vi").json()
    assert JobStore(csettings).get(job["job_id"], ("translate",))["translate"] == "vi"
    bad = upload(client, key, [("a.jpg", SEED_IMAGES[3].read_bytes())], translate="{$ne: 1}")
    assert bad.status_code == 400 and "language code" in bad.json()["error"]
