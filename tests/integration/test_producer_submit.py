"""Submission against real Redis, MongoDB and S3: bad files are rejected one by one, good ones queued exactly once."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import time
import zlib
from collections import Counter

import pytest
import redis
from PIL import Image

from capq.names import caption_queue
from capq.settings import load_settings
from producer.errors import BadInput
from producer.queries import history, job_status, list_jobs, results
from producer.submit import submit
from storage.jobs import JobStore
from tests.conftest import SEED_IMAGES, settings_env


def random_jpeg(seed: int, size=(96, 64)) -> bytes:
    img = Image.frombytes("RGB", size, bytes((seed * 7919 + i * 31) % 251 for i in range(size[0] * size[1] * 3)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG that declares width x height: a decompression bomb in 60 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def bad_files(folder) -> dict[str, str]:
    """Each bad input and the words its rejection must contain."""
    seed = SEED_IMAGES[0].read_bytes()
    (folder / "corrupt.jpg").write_bytes(seed[: len(seed) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is text, not a JPEG\n")
    with open(folder / "huge.jpg", "wb") as f:
        f.truncate(12 * 1024 * 1024)  # sparse: 12 MB on paper, nothing on disk
    (folder / "bomb.png").write_bytes(png_header_only(30000, 30000))
    (folder / "big.png").write_bytes(png_header_only(12000, 12000))
    # Refused from the header alone, by capq's cap or PIL's own bomb guard, which runs first at open (see report).
    return {
        "corrupt.jpg": "truncated",
        "empty.jpg": "empty (0 bytes)",
        "notes.jpg": "not an image",
        "huge.jpg": "over the 10485760-byte cap",
        "bomb.png": "900",
        "big.png": "144",
    }


def queued_shas(url: str, queue: str) -> list[str]:
    """Image ids in the shard messages waiting in a queue (kombu keeps base64 JSON bodies in a Redis list)."""
    shas = []
    for raw in redis.Redis.from_url(url).lrange(queue, 0, -1):
        args = json.loads(base64.b64decode(json.loads(raw)["body"]))[0]
        shas += args[3]
    return shas


def test_each_bad_file_gets_its_own_reason_and_the_job_goes_on(psettings, tmp_path):
    # Given two good images among every kind of bad one
    expected = bad_files(tmp_path)
    for p in SEED_IMAGES[:2]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    # If I submit the folder
    t0 = time.monotonic()
    result = submit(psettings, [tmp_path], "blip", owner="alice")
    # I expect each bad file rejected with its own reason, fast (the bomb is never decoded), and the rest queued
    assert time.monotonic() - t0 < 30
    reasons = {os.path.basename(r["file"]): r["reason"] for r in result.rejected}
    assert sorted(reasons) == sorted(expected)
    for name, needle in expected.items():
        assert needle in reasons[name].replace(",", ""), (name, reasons[name])
    assert all("pixels" in reasons[n] for n in ("bomb.png", "big.png"))
    assert result.accepted == 2 and result.enqueued == 2 and result.state == "queued"
    status = job_status(psettings, result.job_id, "alice")
    assert status["counts"]["queued"] == 2 and len(status["rejected"]) == len(expected)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"models": "blip,dalle"}, "unknown model(s) 'dalle'; models are blip, blip2, git, vit-gpt2"),
        ({"models": "blip", "tier": "gold"}, "unknown tier 'gold'; tiers are premium, plus, free"),
        (
            {"models": "blip", "preset": "poetic"},
            "unknown preset 'poetic' for blip; available presets are blip: default",
        ),
    ],
)
def test_unknown_model_tier_or_preset_is_refused_before_anything_happens(psettings, kwargs, needle):
    before = len(list_jobs(psettings, limit=1000))
    with pytest.raises(BadInput) as err:
        submit(psettings, [SEED_IMAGES[0]], owner="alice", **kwargs)
    assert needle in str(err.value)
    assert len(list_jobs(psettings, limit=1000)) == before


def test_manifest_with_a_missing_path_rejects_that_line_only(psettings, tmp_path):
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"path": str(SEED_IMAGES[0]), "meta": {"split": "val"}})
        + "\n"
        + json.dumps({"path": "missing/cat.jpg"})
        + "\n"
    )
    result = submit(psettings, [tmp_path / "m.jsonl"], "blip", owner="alice")
    assert result.accepted == 1
    [rej] = result.rejected
    assert rej["file"] == "missing/cat.jpg" and "line 2" in rej["reason"] and "no such file" in rej["reason"]
    [row] = list(results(psettings, result.job_id, "alice"))
    assert row["meta"] == {"split": "val"} and row["status"] == "queued"


def test_same_bytes_are_uploaded_and_queued_once(psettings, tmp_path):
    data = random_jpeg(1)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / name).write_bytes(data)
    result = submit(psettings, [tmp_path], ["blip", "git"], owner="alice")
    assert (result.accepted, result.duplicates, result.new_items, result.enqueued) == (1, 2, 2, 2)
    again = submit(psettings, [tmp_path / "a.jpg"], ["blip"], owner="alice")
    assert again.uploaded == 0, "bytes already stored are not written again"


def test_job_with_no_acceptable_image_finishes_at_once_with_its_rejections(psettings, tmp_path):
    (tmp_path / "notes.jpg").write_text("text")
    result = submit(psettings, [tmp_path], "blip", owner="alice")
    assert result.state == "done" and result.accepted == 0
    assert job_status(psettings, result.job_id)["rejected"][0]["file"].endswith("notes.jpg")


class Interrupted(Exception):
    pass


def test_resubmitting_an_interrupted_job_queues_only_what_is_missing(psettings, redis_url, tmp_path, monkeypatch):
    # Given 12 distinct images and small shards (2 images each)
    s = load_settings(
        {**settings_env(psettings), "CAPQ_BATCH_SIZE": "2", "CAPQ_SHARD_BATCHES": "1", "CAPQ_DEFAULT_TIER": "plus"}
    )
    for i in range(12):
        (tmp_path / f"{i:02}.jpg").write_bytes(random_jpeg(100 + i))
    queue = caption_queue("blip", "plus")
    redis.Redis.from_url(redis_url).delete(queue)

    # If validation is interrupted after 5 files: nothing is recorded or queued
    def stop_after_5(stage, done, total):
        if stage == "validating" and done == 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        submit(s, [tmp_path], "blip", owner="alice", job_id="resume-1", progress=stop_after_5)
    assert queued_shas(redis_url, queue) == [] and JobStore(s).counts("resume-1")["total"] == 0

    # If it dies after recording the items but before sending them: recorded, not queued
    def stop_when_recorded(stage, done, total):
        if stage == "recorded":
            raise Interrupted

    with pytest.raises(Interrupted):
        submit(s, [tmp_path], "blip", owner="alice", job_id="resume-1", progress=stop_when_recorded)
    assert queued_shas(redis_url, queue) == [] and JobStore(s).counts("resume-1")["queued"] == 12

    # If it dies while sending, after 2 of the 6 shards (pushed 2 shards to a Redis transaction)
    import capq.enqueue
    import producer.submit as submit_module

    real_app = submit_module.celery_app(s)

    class FailingApp:
        sent = 0
        conf = real_app.conf  # the broker it sends to

        def __getattr__(self, name):
            return getattr(real_app, name)

        def send_task(self, *args, **kwargs):
            if FailingApp.sent == 2:
                raise Interrupted
            FailingApp.sent += 1
            return real_app.send_task(*args, **kwargs)

    monkeypatch.setattr(submit_module, "celery_app", lambda settings: FailingApp())
    monkeypatch.setattr(capq.enqueue, "PUBLISH_ITEMS", 4)
    with pytest.raises(Interrupted):
        submit(s, [tmp_path], "blip", owner="alice", job_id="resume-1")
    assert len(queued_shas(redis_url, queue)) == 4
    monkeypatch.undo()

    # Then resubmitting the same input with the same job id sends exactly the rest, and a repeat sends nothing
    done = submit(s, [tmp_path], "blip", owner="alice", job_id="resume-1")
    assert (done.created, done.new_items, done.enqueued, done.state) == (False, 0, 8, "queued")
    repeat = submit(s, [tmp_path], "blip", owner="alice", job_id="resume-1")
    assert (repeat.new_items, repeat.enqueued) == (0, 0)
    shas = queued_shas(redis_url, queue)
    assert len(shas) == 12 and set(Counter(shas).values()) == {1}, "every image queued exactly once"


def test_resume_refuses_different_options_or_another_owner(psettings):
    submit(psettings, [SEED_IMAGES[0]], "blip", owner="alice", job_id="fixed-1")
    with pytest.raises(BadInput, match="resubmit with the same options"):
        submit(psettings, [SEED_IMAGES[0]], "git", owner="alice", job_id="fixed-1")
    with pytest.raises(BadInput, match="already taken"):
        submit(psettings, [SEED_IMAGES[0]], "blip", owner="bob", job_id="fixed-1")


def test_idempotency_key_returns_the_same_job(psettings):
    a = submit(psettings, [SEED_IMAGES[1]], "blip", owner="carol", idempotency_key="k-1")
    b = submit(psettings, [SEED_IMAGES[1]], "blip", owner="carol", idempotency_key="k-1")
    assert a.job_id == b.job_id and (b.created, b.enqueued) == (False, 0)


def test_s3_keys_only_from_own_prefix_and_own_images(psettings):
    from storage.blobs import ImageStore

    ImageStore(psettings).put_key("owners/dave/cat.jpg", random_jpeg(7), "image/jpeg")
    bucket = psettings.s3_bucket
    # dave's staged key and dave's own earlier image are accepted
    first = submit(psettings, [f"s3://{bucket}/owners/dave/cat.jpg"], "blip", owner="dave")
    assert first.accepted == 1 and first.rejected == []
    [row] = list(results(psettings, first.job_id, "dave"))
    key = f"s3://{bucket}/images/sha256/{row['sha256'][:2]}/{row['sha256']}"
    assert submit(psettings, [key], "git", owner="dave").accepted == 1
    # erin may name neither dave's prefix nor dave's image, nor a missing key of her own
    erin = submit(
        psettings,
        [f"s3://{bucket}/owners/dave/cat.jpg", key, f"s3://{bucket}/owners/erin/none.jpg"],
        "blip",
        owner="erin",
    )
    reasons = {r["file"]: r["reason"] for r in erin.rejected}
    assert erin.accepted == 0 and len(reasons) == 3
    assert "outside your prefix" in reasons[f"s3://{bucket}/owners/dave/cat.jpg"]
    assert "not among your images" in reasons[key]
    assert "no such object" in reasons[f"s3://{bucket}/owners/erin/none.jpg"]


def test_history_filters_refuse_operators_through_the_python_api(psettings):
    for bad in ({"$ne": None}, ["blip"], '{"$ne": null}'):
        with pytest.raises(BadInput, match="plain"):
            history(psettings, "alice", model=bad)
    with pytest.raises(BadInput, match="plain"):
        history(psettings, "alice", job={"$gt": ""})
    with pytest.raises(BadInput, match="plain"):
        history(psettings, "alice", image={"$exists": True})
    with pytest.raises(BadInput, match="plain"):
        job_status(psettings, {"$ne": None}, "alice")


def test_another_owners_job_reads_as_missing(psettings):
    from storage.errors import NotFound

    job = submit(psettings, [SEED_IMAGES[2]], "blip", owner="frank").job_id
    with pytest.raises(NotFound) as theirs:
        job_status(psettings, job, "grace")
    with pytest.raises(NotFound) as missing:
        job_status(psettings, "no-such-job", "grace")
    assert str(theirs.value).replace(job, "X") == str(missing.value).replace("no-such-job", "X")
