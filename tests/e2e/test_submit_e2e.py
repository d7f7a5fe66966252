"""Submission end to end: the capq CLI and the API in front of a real worker process with a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from producer.queries import history, results
from storage.apikeys import ApiKeys
from tests.conftest import REPO, SEED_IMAGES, free_port, settings_env
from tests.e2e.procs import spawn_capq, stop
from tests.integration.test_producer_submit import random_jpeg
from tooling.workers import wait_heartbeat


@pytest.fixture(scope="module")
def env(psettings):  # noqa: F811
    return {**os.environ, **settings_env(psettings), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def blip_worker(psettings, env):  # noqa: F811
    """One real worker process pinned to a tiny BLIP, ready when its heartbeat is in Redis."""
    from tooling.tiny import make_tiny

    checkpoint = make_tiny(psettings.models_dir, ["blip"])["blip"]
    proc = spawn_capq(env, "worker-blip", "worker", "--model", "blip", "--checkpoint", str(checkpoint))
    try:
        wait_heartbeat(proc, "blip", psettings.redis_url)
        yield proc
    finally:
        stop(proc, timeout_s=20)


def capq(env, *args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "capq", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_twenty_images_with_one_corrupt_give_nineteen_captions_and_one_rejection(
    psettings,
    env,
    blip_worker,  # noqa: F811
    tmp_path,
):
    # Given the 10 seed images, 9 generated ones and one corrupt file
    for p in SEED_IMAGES:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    for i in range(9):
        (tmp_path / f"gen-{i}.jpg").write_bytes(random_jpeg(500 + i))
    seed = SEED_IMAGES[0].read_bytes()
    (tmp_path / "corrupt.jpg").write_bytes(seed[:2000])
    # If I submit the folder with the CLI and wait
    proc = capq(env, "submit", str(tmp_path), "--model", "blip", "--owner", "e2e", "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    # I expect 19 captions and one recorded rejection that names the corrupt file
    assert last["state"] == "done" and last["counts"]["done"] == 19 and last["counts"]["total"] == 19
    assert [r["file"] for r in last["rejected"]] == [str(tmp_path / "corrupt.jpg")]
    assert "truncated" in last["rejected"][0]["reason"]
    rows = list(results(psettings, last["job_id"]))
    assert len(rows) == 19 and all(r["status"] == "done" and isinstance(r["caption"], str) for r in rows)
    # and the CLI's results and history agree
    csv_out = capq(env, "results", last["job_id"], "--format", "csv").stdout.splitlines()
    assert csv_out[0] == "sha256,file_name,model,preset,caption,status,error" and len(csv_out) == 20
    found = json.loads(capq(env, "history", "--owner", "e2e", "--image", str(SEED_IMAGES[0]), "--json").stdout)
    assert [i["file_name"] for i in found["items"]] == [str(tmp_path / SEED_IMAGES[0].name)]
    assert history(psettings, "someone-else")["items"] == []


def test_history_pages_by_cursor_without_repeats(psettings, blip_worker):  # noqa: F811
    seen, cursor = [], None
    while True:
        page = history(psettings, "e2e", model="blip", limit=7, cursor=cursor)
        seen += [(i["job_id"], i["sha256"]) for i in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert len(seen) == len(set(seen)) == 19
    assert history(psettings, "e2e", limit=7, page=3)["items"] == history(psettings, "e2e", limit=21)["items"][14:]


def test_caption_endpoint_waits_for_the_worker(psettings, blip_worker):  # noqa: F811
    key, _ = ApiKeys(psettings).create("snap", "plus")
    client = TestClient(__import__("producer.api", fromlist=["create_app"]).create_app(psettings))
    resp = client.post(
        "/v1/caption",
        headers={"Authorization": f"Bearer {key}"},
        files={"file": ("one.jpg", random_jpeg(900))},
        data={"model": "blip"},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == "blip" and isinstance(body["caption"], str) and body["file_name"] == "one.jpg"
    assert client.get(f"/v1/jobs/{body['job_id']}", headers={"X-API-Key": key}).json()["tier"] == "plus"


def test_cli_exit_codes_say_whose_problem_it_is(env, tmp_path):
    bad = capq(env, "submit", str(tmp_path / "nothing-here"), "--model", "blip")
    assert bad.returncode == 2 and "no such file or folder" in bad.stderr
    model = capq(env, "submit", str(SEED_IMAGES[0]), "--model", "blip3")
    assert model.returncode == 2 and "models are blip, blip2, git, vit-gpt2" in model.stderr
    assert capq(env, "status", "no-such-job").returncode == 2
    down = capq({**env, "CAPQ_MONGO_URL": f"mongodb://127.0.0.1:{free_port()}", "CAPQ_CONNECT_TIMEOUT_S": "1"}, "jobs")
    assert down.returncode == 1 and "database unreachable" in down.stderr
