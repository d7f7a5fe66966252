"""A `capq submit` killed with -9 and resumed with its printed job id: every item recorded once and queued once."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import redis

from capq.names import SENT_SEQ_KEY, caption_queue
from producer.submit import submit
from storage.db import mongo
from storage.jobs import JobStore
from tests.conftest import REPO, settings_env
from tests.integration.test_producer_submit import queued_shas, random_jpeg
from tooling import procs

N = 3000


def sha(i: int) -> str:
    return hashlib.sha256(f"kill9-image-{i}".encode()).hexdigest()


def refs_manifest(settings, owner: str, path) -> None:
    """N sha256 references to images the owner submitted before (an earlier job holds them), as a JSONL manifest."""
    mongo(settings)["job_items"].insert_many(
        [
            {
                "job_id": f"earlier-{owner}",
                "sha256": sha(i),
                "model": "blip",
                "preset": "default",
                "owner": owner,
                "file_name": f"img-{i}.jpg",
                "seq": i,
            }
            for i in range(N)
        ],
        ordered=False,
    )
    path.write_text("".join(json.dumps({"sha256": sha(i), "meta": {"i": i}}) + "\n" for i in range(N)))


def run_killed_then_resumed(
    settings,
    redis_url,
    tmp_path,
    owner: str,
    prefix: list[str],  # noqa: F811
    kill_at_shards: int,
):
    manifest = tmp_path / "refs.jsonl"
    refs_manifest(settings, owner, manifest)
    env = {
        **os.environ,
        **settings_env(settings),
        "CAPQ_SUBMIT_RECORD_CHUNK": "100",
        "CAPQ_BATCH_SIZE": "10",
        "CAPQ_SHARD_BATCHES": "1",
        "PYTHONPATH": str(REPO),
    }
    queue = caption_queue("blip", "free")
    client = redis.Redis.from_url(redis_url)
    client.delete(queue)
    cmd = ["submit", str(manifest), "-m", "blip", "--owner", owner]
    proc = procs.spawn_capq(cmd, tmp_path / "submit.log", env, launch=["-m", *prefix])
    while proc.poll() is None and (kill_at_shards == 0 or client.llen(queue) < kill_at_shards):
        time.sleep(0.005)
    procs.kill9(proc)
    output = Path(proc.log_path).read_text()
    assert proc.returncode == -9, f"the submission finished before it was killed: {output}"
    job_id = output.split("--job-id ")[1].split()[0]
    before = queued_shas(redis_url, queue)
    assert 0 < len(before) < N
    done = subprocess.run(
        [sys.executable, "-m", "capq", *cmd, "--job-id", job_id, "--json"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    final = json.loads(done.stdout.strip().splitlines()[-1])
    assert final["job_id"] == job_id and final["created"] is False
    return job_id, before, queued_shas(redis_url, queue), final


def assert_exactly_once(settings, job_id: str, before: list[str], after: list[str], final: dict) -> None:
    # Every image queued exactly once over both runs, and the resumed run sent exactly what the first did not
    queued = Counter(after)
    assert len(queued) == N and set(queued.values()) == {1}, [s for s, n in queued.items() if n > 1][:5]
    assert final["enqueued"] == N - len(before)
    # Every item recorded exactly once, each with its own sequence number, and the cursor past the last one
    items = list(mongo(settings)["job_items"].find({"job_id": job_id}, {"sha256": 1, "seq": 1}))
    assert len(items) == N and len({it["sha256"] for it in items}) == N and len({it["seq"] for it in items}) == N
    assert JobStore(settings).counts(job_id)["total"] == N
    job = JobStore(settings).get(job_id)
    assert job["enqueued_seq"] == max(it["seq"] for it in items) and job["state"] == "queued"


def test_a_submission_killed_mid_way_resumes_queueing_each_item_exactly_once(
    psettings,
    redis_url,  # noqa: F811
    tmp_path,
):
    # Given a real `capq submit` of 3,000 sha256 references, killed (-9) once 60 of its 300 shards are queued
    job_id, before, after, final = run_killed_then_resumed(psettings, redis_url, tmp_path, "kim", ["capq"], 60)
    # I expect the same command with the printed --job-id to finish it: each item recorded once, queued once
    assert_exactly_once(psettings, job_id, before, after, final)


def test_a_kill_between_the_redis_push_and_the_mongodb_cursor_sends_nothing_twice(
    psettings,
    redis_url,  # noqa: F811
    tmp_path,
):
    # Given a submission killed right after its first group of shards was pushed (and marked sent in the same
    # Redis transaction), before MongoDB's cursor moved: the window where a plain publish would be repeated
    marker = tmp_path / "killed"
    job_id, before, after, final = run_killed_then_resumed(
        psettings, redis_url, tmp_path, "kit", ["tests.integration.submit_crash_hook", str(marker)], 0
    )
    # (the hook wrote the marker and killed the process in place of the cursor update)
    assert len(before) == int(marker.read_text()) + 1, "the first group was pushed before the kill"
    # I expect the resume to move the cursor to the mark and push only what follows
    assert_exactly_once(psettings, job_id, before, after, final)


def test_a_new_job_is_not_hidden_by_a_sent_mark_left_under_its_id(psettings, redis_url, tmp_path):  # noqa: F811
    # Given a sent mark left in Redis by an earlier (since erased) job of the same id
    redis.Redis.from_url(redis_url).set(f"{SENT_SEQ_KEY}reused-1", 999)
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(random_jpeg(4000 + i))
    # If a new job is submitted under that id, I expect all its images queued
    result = submit(psettings, [tmp_path], "blip", owner="kim", job_id="reused-1")
    assert (result.created, result.enqueued) == (True, 3)
