"""Flower lists every model x tier queue, capq.eval and capq.translate, with depths, with no worker online and with
one."""

from __future__ import annotations

import os
import time

import httpx

from capq.names import EVAL_QUEUE, MODEL_NAMES, TRANSLATE_QUEUE, caption_queue, caption_queues
from tests.conftest import free_port, settings_env
from tests.e2e.conftest import make_job, random_images
from tests.e2e.procs import spawn_capq, stop, wait_http

AUTH = ("ops", "flower-test-password")
ALL_QUEUES = {*(q for m in MODEL_NAMES for q in caption_queues(m)), EVAL_QUEUE, TRANSLATE_QUEUE}


def test_flower_shows_every_queue_with_and_without_workers(settings, workers):
    port = free_port()
    env = {**os.environ, **settings_env(settings), "FLOWER_BASIC_AUTH": ":".join(AUTH)}
    flower = spawn_capq(env, "flower", "flower", "--port", str(port))
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=AUTH, timeout=30)
        # Given two shards of blip work queued and no worker online at all
        make_job(settings, random_images(3, seed=18), "blip", tier="free", shard_size=2)
        # I expect every queue listed with its depth
        lengths = {q["name"]: q["messages"] for q in wait_http(client, "/api/queues/length").json()["active_queues"]}
        assert set(lengths) == ALL_QUEUES
        assert lengths[caption_queue("blip", "free")] == 2
        assert lengths[caption_queue("git", "premium")] == 0

        # If a git worker comes online and Flower knows it
        workers.start("git")
        deadline = time.monotonic() + 60
        while not any(n.startswith("git@") for n in wait_http(client, "/api/workers?refresh=1").json()):
            assert time.monotonic() < deadline, "Flower never saw the git worker"
            time.sleep(1)
        # I expect the blip queues (no worker) still listed beside git's, with the blip work still counted
        lengths = {q["name"]: q["messages"] for q in wait_http(client, "/api/queues/length").json()["active_queues"]}
        assert set(lengths) == ALL_QUEUES
        assert lengths[caption_queue("blip", "free")] == 2
        # and the broker page shows them too
        page = client.get("/broker")
        assert page.status_code == 200 and caption_queue("vit-gpt2", "premium") in page.text
    finally:
        stop(flower)
