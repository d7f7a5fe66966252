"""The worker's shard pipeline (workers/pipeline.py), Celery-free, over in-memory stores and a fake captioner."""

from __future__ import annotations

import io
from collections import Counter
from types import SimpleNamespace

import pytest
from PIL import Image

from capq.presets import config_hash, get_preset
from storage.blobs import sha256_hex
from storage.errors import NotFound, ServiceUnreachable
from workers.pipeline import Worker, caption_shard

MODEL, CHECKPOINT, PRESET = "git", "tiny-git", "default"
CHASH = config_hash(MODEL, get_preset(MODEL, PRESET))


def png(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (shade, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


SHAS = [sha256_hex(png(10 * i)) for i in range(8)]  # the worker checks stored bytes against their address


class Images:
    def __init__(self, blobs: dict[str, bytes]):
        self.blobs = blobs

    def get(self, sha: str) -> bytes:
        if sha not in self.blobs:
            raise NotFound(sha)
        return self.blobs[sha]


class Captions:
    def __init__(self, cached: dict[str, str] | None = None):
        self.docs = {sha: {"sha256": sha, "caption": text} for sha, text in (cached or {}).items()}
        self.inserts: list[list[dict]] = []

    def existing(self, shas, model, checkpoint, chash):
        assert (model, checkpoint, chash) == (MODEL, CHECKPOINT, CHASH)
        return {sha: self.docs[sha] for sha in shas if sha in self.docs}

    def insert_new(self, docs):
        self.inserts.append(docs)
        new = [d for d in docs if d["sha256"] not in self.docs]
        self.docs |= {d["sha256"]: d for d in new}
        return len(new)


class Jobs:
    """One job's items and their results, with write-once results like storage.jobs.JobStore."""

    def __init__(self, shas: list[str], state: str = "running", finished: dict[str, dict] | None = None):
        self.state, self.shas = state, shas
        self.results: dict[str, dict] = dict(finished or {})
        self.settled: list[tuple[dict, bool]] = []
        # The worker checks that the job still exists after writing (storage.owners.discard_late_writes).
        self.mongo = SimpleNamespace(db={"jobs": SimpleNamespace(find_one=lambda query, fields=None: query)})

    def get(self, job_id, fields=None):
        return {"_id": job_id, "state": self.state, "owner": "alice"}

    def open_items(self, job_id, model, preset, shas):
        return [{"sha256": sha, "file_name": f"{sha}.png"} for sha in shas if sha not in self.results]

    def finish_items(self, job_id, owner, model, preset, outcomes, on_new=None):
        new = [out for out in outcomes if out["sha256"] not in self.results]
        self.results |= {out["sha256"]: out for out in new}
        if on_new is not None:
            on_new(new)
        return dict(Counter(out["state"] for out in new))

    def settle(self, job_id, new, recount=False):
        self.settled.append((dict(new), recount))


class ShadeCaptioner:
    """Captions an image by its colour, so a caption given to the wrong image shows."""

    def __init__(self):
        self.batches: list[int] = []

    def preprocess(self, image):
        return image.getpixel((0, 0))[0]

    def generate(self, batch, preset):
        assert preset == get_preset(MODEL, PRESET)
        self.batches.append(len(batch))
        return [f"shade {x}" for x in batch]


def worker(images: dict[str, bytes], jobs: Jobs, captions: Captions | None = None, batch_size: int = 3):
    failures: list[str] = []
    w = Worker(
        MODEL,
        CHECKPOINT,
        ShadeCaptioner(),
        Images(images),
        captions or Captions(),
        jobs,
        "w1",
        batch_size,
        fetch_threads=2,
        on_failure=failures.append,
    )
    w.failures = failures
    return w


def shades(n: int) -> dict[str, bytes]:
    return {SHAS[i]: png(10 * i) for i in range(n)}


def test_every_image_gets_its_own_caption_in_batches():
    # Given a shard of 8 decodable images and a batch size of 3
    images = shades(8)
    jobs = Jobs(list(images))
    w = worker(images, jobs)
    # If the shard is captioned
    result = caption_shard(w, "j1", PRESET, list(images))
    # I expect each image captioned once, by its own content, in batches of 3, 3, 2
    assert (result.done, result.failed, result.reused, result.skipped) == (8, 0, 0, 0)
    assert w.captioner.batches == [3, 3, 2]
    assert {sha: r["caption"] for sha, r in jobs.results.items()} == {SHAS[i]: f"shade {10 * i}" for i in range(8)}
    assert all(
        r["state"] == "done" and not r["reused"] and r["file_name"] == f"{sha}.png" for sha, r in jobs.results.items()
    )
    stored = {d["sha256"]: d for batch in w.captions.inserts for d in batch}
    assert {sha: d["caption"] for sha, d in stored.items()} == {sha: r["caption"] for sha, r in jobs.results.items()}
    assert all(d["config_hash"] == CHASH and d["job_id"] == "j1" for d in stored.values())
    # and the job's tallies told once, without a recount (a first delivery)
    assert jobs.settled == [({"done": 8}, False)]


def test_a_cached_caption_is_reused_not_recomputed():
    images = shades(4)
    jobs = Jobs(list(images))
    w = worker(images, jobs, Captions({SHAS[1]: "made before"}))
    result = caption_shard(w, "j1", PRESET, list(images))
    assert (result.done, result.reused) == (3, 1) and sum(w.captioner.batches) == 3
    assert jobs.results[SHAS[1]]["caption"] == "made before" and jobs.results[SHAS[1]]["reused"]
    assert jobs.settled == [({"done": 4}, False)]


def test_bad_and_missing_images_are_failed_with_reasons_and_the_rest_goes_on():
    bad, gone = sha256_hex(b"not an image at all"), "0" * 64
    images = shades(3) | {bad: b"not an image at all"}
    shas = [*images, gone]
    jobs = Jobs(shas)
    w = worker(images, jobs)
    result = caption_shard(w, "j1", PRESET, shas)
    assert (result.done, result.failed) == (3, 2)
    assert jobs.results[bad]["state"] == "failed" and jobs.results[bad]["error"].startswith("undecodable:")
    assert jobs.results[gone]["state"] == "failed" and jobs.results[gone]["error"].startswith("missing:")
    assert sorted(w.failures) == ["missing", "undecodable"]
    assert jobs.settled == [({"done": 3, "failed": 2}, False)]


def test_a_redelivered_shard_redoes_only_open_items_and_asks_for_a_recount():
    images = shades(5)
    jobs = Jobs(list(images), finished={SHAS[0]: {"sha256": SHAS[0], "state": "done", "caption": "first run"}})
    w = worker(images, jobs)
    result = caption_shard(w, "j1", PRESET, list(images))
    assert (result.done, result.skipped) == (4, 1) and sum(w.captioner.batches) == 4
    assert jobs.results[SHAS[0]]["caption"] == "first run"
    assert jobs.settled == [({"done": 4}, True)]


def test_a_cancelled_job_records_its_open_items_as_cancelled_and_captions_nothing():
    images = shades(3)
    jobs = Jobs(list(images), state="cancelled")
    w = worker(images, jobs)
    result = caption_shard(w, "j1", PRESET, list(images))
    assert result.skipped == 3 and w.captioner.batches == []
    assert {r["state"] for r in jobs.results.values()} == {"cancelled"} and len(jobs.results) == 3
    assert jobs.settled == [({"cancelled": 3}, True)]


def test_a_store_that_cannot_be_reached_raises_for_a_retry():
    class Down(Captions):
        def insert_new(self, docs):
            raise ServiceUnreachable("database unreachable")

    images = shades(2)
    jobs = Jobs(list(images))
    with pytest.raises(ServiceUnreachable):
        caption_shard(worker(images, jobs, Down()), "j1", PRESET, list(images))
    # the caption write failed, so no result was recorded: the retry finds every item still open
    assert jobs.results == {} and jobs.settled == []


def test_an_unknown_preset_is_refused_before_any_work():
    images = shades(1)
    jobs = Jobs(list(images))
    with pytest.raises(ValueError, match="unknown preset"):
        caption_shard(worker(images, jobs), "j1", "poetic", list(images))
    assert jobs.results == {}


# The Celery task over the pipeline: which errors are permanent (dead-lettered quietly) and which are bugs


@pytest.fixture
def task(monkeypatch):
    """workers.tasks.caption_shard called as a plain function, on an app holding a fake worker; dead letters
    recorded."""
    from celery import Celery

    from capq.names import CAPTION_TASK
    from workers import runtime, tasks

    images = shades(2)
    letters: list[str] = []
    app = Celery("capq-test", set_as_current=False)  # the shared task binds to it; no broker is reached
    runtime.attach(app, worker(images, Jobs(list(images))))
    monkeypatch.setattr(tasks, "_dead_letter", lambda task, args, error: letters.append(error))
    return app.tasks[CAPTION_TASK], list(images), letters


def test_an_unknown_preset_is_dead_lettered_as_permanent(task):
    caption, shas, letters = task
    assert caption("j1", MODEL, "poetic", shas) == {"dead": True}
    assert len(letters) == 1 and letters[0].startswith("UnknownPreset: unknown preset 'poetic'")


def test_a_value_error_from_a_bug_is_raised_not_taken_for_bad_input(task, monkeypatch):
    caption, shas, letters = task

    def broken(self, batch, preset):
        raise ValueError("a bug in an adapter")

    monkeypatch.setattr(ShadeCaptioner, "generate", broken)
    with pytest.raises(ValueError, match="a bug in an adapter"):
        caption("j1", MODEL, PRESET, shas)
    assert letters == ["ValueError: a bug in an adapter"]
