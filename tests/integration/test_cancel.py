"""A cancel wins (issue 11): over a submission still running, and over nothing for a finished job; DELETE /v1/jobs."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from producer.api import create_app
from producer.submit import submit
from storage.errors import AlreadyFinished
from storage.jobs import JobStore
from tests.integration.test_producer_api import key_for, upload
from tests.integration.test_producer_submit import random_jpeg


def test_a_cancel_during_a_running_submission_wins(psettings, tmp_path):  # noqa: F811
    # Given a submission of 6 images that is cancelled while it runs (after its items are recorded)
    for i in range(6):
        (tmp_path / f"{i}.jpg").write_bytes(random_jpeg(i + 700))
    jobs = JobStore(psettings)

    def cancel_when_recorded(stage, done, total):
        if stage == "recorded":
            jobs.cancel("cancel-race-1")

    result = submit(psettings, [tmp_path], "blip", owner="alice", job_id="cancel-race-1", progress=cancel_when_recorded)
    # I expect the job to stay cancelled, nothing sent to workers, every item closed as cancelled
    assert result.state == "cancelled" and result.enqueued == 0
    assert jobs.get("cancel-race-1")["state"] == "cancelled"
    assert jobs.counts("cancel-race-1") == {"queued": 0, "done": 0, "failed": 0, "cancelled": 6, "total": 6}


def test_cancelling_a_finished_job_is_refused_and_delete_is_for_the_owner_only(psettings):  # noqa: F811
    client = TestClient(create_app(psettings))
    alice, bob = key_for(psettings, "alice"), key_for(psettings, "bob")
    jobs = JobStore(psettings)
    # Given two jobs of alice's, one of them finished
    open_id = upload(client, alice, [("a.jpg", random_jpeg(801))]).json()["job_id"]
    done_id = upload(client, alice, [("b.jpg", random_jpeg(802))]).json()["job_id"]
    item = jobs.items_of(done_id)[0]
    jobs.finish_items(
        done_id, "alice", "blip", "default", [{"sha256": item["sha256"], "state": "done", "caption": "x"}]
    )
    assert jobs.refresh_counts(done_id)["state"] == "done"
    # I expect bob to get 404 for alice's job, and nothing to change
    resp = client.delete(f"/v1/jobs/{open_id}", headers=bob)
    assert resp.status_code == 404 and "among yours" in resp.json()["error"]
    assert jobs.get(open_id)["state"] == "queued"
    # alice's cancel of the open job to succeed
    resp = client.delete(f"/v1/jobs/{open_id}", headers=alice)
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "cancelled" and resp.json()["cancelled_now"] == 1
    # and her cancel of the finished one to be refused with the reason, its result kept
    resp = client.delete(f"/v1/jobs/{done_id}", headers=alice)
    assert resp.status_code == 409 and "already done" in resp.json()["error"]
    assert jobs.counts(done_id)["done"] == 1 and jobs.get(done_id)["state"] == "done"
    with pytest.raises(AlreadyFinished):
        jobs.cancel(done_id)
