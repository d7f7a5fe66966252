"""A reader's recount racing the worker's closing recount, against the real MongoDB wire server."""

from __future__ import annotations

from storage.jobs import JobStore
from tests.integration.test_job_accounting import _done, _job


def test_a_stale_recount_never_lands_on_a_job_just_closed(settings, monkeypatch):
    # Given a job of 3 items, and a reader (a status poll) that counts before the worker's last results
    jobs, job_id, shas = _job(settings, 3)
    worker = JobStore(settings)
    counts, raced = jobs.counts, []

    def counted_then_overtaken(job_id_):
        figures = counts(job_id_)
        if not raced:  # the worker finishes every item and closes the job right after the reader counted
            raced.append(worker.settle(job_id, worker.finish_items(job_id, "alice", "blip", "default", _done(shas))))
        return figures

    monkeypatch.setattr(jobs, "counts", counted_then_overtaken)
    # If the reader's recount goes on to write
    job = jobs.refresh_counts(job_id)
    # I expect the job closed by the worker, with the exact figures, not the reader's stale ones
    assert raced[0]["state"] == "done"
    assert job["state"] == "done" and job["counts"] == {"queued": 0, "done": 3, "failed": 0, "cancelled": 0, "total": 3}
    assert JobStore(settings).get(job_id)["counts"]["done"] == 3
