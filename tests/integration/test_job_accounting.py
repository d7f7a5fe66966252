"""Job items, results and counters against the real MongoDB wire server: exactly once, exact, self-healing."""

from __future__ import annotations

import uuid

from storage.jobs import JobStore


def _job(settings, n: int, models=("blip",)) -> tuple[JobStore, str, list[str]]:
    jobs = JobStore(settings)
    job, _ = jobs.create("alice", "free", list(models), "default")
    shas = [uuid.uuid4().hex * 2 for _ in range(n)]
    jobs.add_items(
        job["_id"],
        "alice",
        [{"sha256": s, "model": m, "preset": "default", "file_name": f"{s[:8]}.jpg"} for s in shas for m in models],
    )
    jobs.set_state(job["_id"], "queued")
    return jobs, job["_id"], shas


def _done(shas: list[str]) -> list[dict]:
    return [{"sha256": s, "state": "done", "caption": f"cap {s[:6]}"} for s in shas]


def test_an_item_gets_one_result_and_is_counted_once(settings):
    jobs, job_id, shas = _job(settings, 4)
    assert jobs.finish_items(job_id, "alice", "blip", "default", _done(shas[:2])) == {"done": 2}
    # A redelivered shard and a cancel racing it: the first result stands and nothing is counted twice.
    again = _done(shas[:3])
    again[0] |= {"caption": "second try"}
    assert jobs.finish_items(job_id, "alice", "blip", "default", again) == {"done": 1}
    assert jobs.finish_items(job_id, "alice", "blip", "default", [{"sha256": shas[0], "state": "cancelled"}]) == {}
    assert [it["sha256"] for it in jobs.open_items(job_id, "blip", "default", shas)] == shas[3:]
    items = {it["sha256"]: it for it in jobs.items_of(job_id)}
    assert items[shas[0]]["caption"] == f"cap {shas[0][:6]}" and items[shas[3]]["state"] == "queued"
    assert jobs.counts(job_id) == {"queued": 1, "done": 3, "failed": 0, "cancelled": 0, "total": 4}


def test_settle_closes_the_job_when_its_tallies_reach_the_total(settings):
    jobs, job_id, shas = _job(settings, 6)
    first = jobs.finish_items(job_id, "alice", "blip", "default", _done(shas[:3]))
    job = jobs.settle(job_id, first)
    assert job["state"] == "running" and job["counts"]["done"] == 3 and job["counts"]["queued"] == 3
    rest = jobs.finish_items(
        job_id,
        "alice",
        "blip",
        "default",
        _done(shas[3:5]) + [{"sha256": shas[5], "state": "failed", "error": "undecodable: x"}],
    )
    job = jobs.settle(job_id, rest)
    assert job["state"] == "done" and job["finished_at"] is not None
    assert job["counts"] == {"queued": 0, "done": 5, "failed": 1, "cancelled": 0, "total": 6}


def test_a_tally_lost_in_a_crash_is_healed_by_the_redelivered_shard(settings):
    jobs, job_id, shas = _job(settings, 4)
    jobs.settle(job_id, jobs.finish_items(job_id, "alice", "blip", "default", _done(shas[:2])))
    # The worker dies after recording the last results and before settling: the tally runs short...
    jobs.finish_items(job_id, "alice", "blip", "default", _done(shas[2:]))
    assert jobs.get(job_id)["state"] == "running"
    # ...so a short tally alone never closes the job (closing takes exact figures)...
    assert jobs.settle(job_id, {})["state"] == "running"
    # ...and the redelivered shard, finding its items finished, recounts exactly and closes it.
    job = jobs.settle(job_id, {}, recount=True)
    assert job["state"] == "done" and job["counts"]["done"] == 4 and job["finished"] == 4


def test_cancel_finishes_only_what_is_queued(settings):
    jobs, job_id, shas = _job(settings, 5, models=("blip", "git"))
    jobs.finish_items(job_id, "alice", "git", "default", _done(shas[:2]))
    assert jobs.cancel(job_id) == 8
    counts = jobs.counts(job_id)
    assert counts == {"queued": 0, "done": 2, "failed": 0, "cancelled": 8, "total": 10}
    assert all(it["state"] != "queued" for it in jobs.unenqueued(job_id)), "cancelled items are never sent"
    assert jobs.cancel(job_id) == 0
