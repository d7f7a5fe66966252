"""Gradual rollout with real processes: a running API routes an alias by the weights in MongoDB, and a weight
change made with `capq aliases set` takes effect at the next request, with nothing restarted."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from storage.apikeys import ApiKeys
from tests.conftest import REPO, free_port, settings_env
from tests.e2e.conftest import random_images
from tests.e2e.procs import spawn_capq, stop, wait_http


def _capq(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "capq", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def _submit(client: httpx.Client, images: list[tuple[str, bytes]]) -> dict[str, str]:
    """POST the images to the alias; -> {sha256: model} of the job's items."""
    resp = client.post(
        "/v1/jobs",
        data={"models": "caption-default"},
        files=[("files", (name, data, "image/jpeg")) for name, data in images],
    )
    assert resp.status_code == 202, resp.text
    rows = client.get(f"/v1/jobs/{resp.json()['job_id']}/results").json()["results"]
    assert len(rows) == len(images)
    return {r["sha256"]: r["model"] for r in rows}


def test_weight_changes_take_effect_without_restarting_the_api(settings, clean_redis):
    env = {**os.environ, **settings_env(settings), "CAPQ_LOG_JSON": "false"}
    key, _ = ApiKeys(settings).create("rollout", "premium")
    api = spawn_capq(env, "api-aliases", "api", "--port", str(port := free_port()))
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=60)
        wait_http(client, "/healthz")
        # Given caption-default = blip:100, git:0 and a running API
        assert _capq(env, "aliases", "set", "caption-default", "blip:100", "git:0").returncode == 0
        assert set(_submit(client, random_images(12, seed=181)).values()) == {"blip"}
        # If an operator moves all the weight to git
        done = _capq(env, "aliases", "set", "caption-default", "blip:0,git:100")
        assert done.returncode == 0 and "blip:0, git:100" in done.stdout
        # I expect the very next request, to the same API process, to go to git
        assert set(_submit(client, random_images(12, seed=182)).values()) == {"git"}
        # and at 50:50 each image lands on one model, the same one when it is submitted again
        assert _capq(env, "aliases", "set", "caption-default", "blip:50,git:50").returncode == 0
        images = random_images(24, seed=183)
        first, again = _submit(client, images), _submit(client, images)
        assert first == again and set(first.values()) == {"blip", "git"}
        assert client.get("/v1/aliases").json()["aliases"] == [
            {"name": "caption-default", "arms": [{"model": "blip", "weight": 50}, {"model": "git", "weight": 50}]}
        ]
        assert api.poll() is None  # never restarted
        # A malformed weight is refused with what to fix, and changes nothing
        bad = _capq(env, "aliases", "set", "caption-default", "blip:lots")
        assert bad.returncode == 2 and "whole-number weight" in bad.stderr
    finally:
        stop(api)
