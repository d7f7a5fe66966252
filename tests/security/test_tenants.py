"""Finding 6: owners share stored bytes, never names, metadata, counts or cached answers."""

from __future__ import annotations

import json

from tests.security.conftest import files, jpeg


def test_alice_never_sees_bobs_file_name_or_learns_he_holds_the_same_bytes(api, key):
    data, fresh = jpeg(6001), jpeg(6002)
    alice, bob = key("alice-t"), key("bob-t")
    with api.client() as c:
        # Given Bob's upload with a telling name and metadata
        first = c.post("/v1/jobs", headers=bob, data={"models": "blip"}, files=files(("bob-medical-scan.jpg", data)))
        assert first.status_code == 202, first.text
        # If Alice submits the same bytes, and beside them bytes nobody has
        mine = c.post(
            "/v1/jobs", headers=alice, data={"models": "blip"}, files=files(("a.jpg", data), ("b.jpg", fresh))
        )
        body = mine.json()
        rows = c.get(f"/v1/jobs/{body['job_id']}/results", headers=alice).json()["results"]
        # and then names the shared image by its sha256 in a JSON job
        sha = next(r["sha256"] for r in rows if r["file_name"] == "a.jpg")
        again = c.post("/v1/jobs", headers=alice, json={"models": ["git"], "items": [{"sha256": sha}]})
        again_rows = c.get(f"/v1/jobs/{again.json()['job_id']}/results", headers=alice).json()["results"]
    # I expect her own names only, and counts that are the same for both images: nothing tells them apart
    assert {r["file_name"] for r in rows} == {"a.jpg", "b.jpg"}
    assert body["uploaded"] == 2 and body["accepted"] == 2, body
    assert again_rows[0]["file_name"] == "a.jpg"
    assert "bob" not in json.dumps(rows + again_rows) and "bob" not in mine.text


def test_an_owner_cannot_name_anothers_image_by_sha256_or_content_key(api, key, settings):
    data = jpeg(6003)
    carol, dave = key("carol-t"), key("dave-t")
    with api.client() as c:
        job = c.post("/v1/jobs", headers=carol, data={"models": "blip"}, files=files(("c.jpg", data))).json()
        sha = c.get(f"/v1/jobs/{job['job_id']}/results", headers=carol).json()["results"][0]["sha256"]
        by_sha = c.post("/v1/jobs", headers=dave, json={"models": ["blip"], "items": [{"sha256": sha}]})
        by_key = c.post(
            "/v1/jobs",
            headers=dave,
            json={"models": ["blip"], "items": [{"s3": f"s3://{settings.s3_bucket}/images/sha256/{sha[:2]}/{sha}"}]},
        )
        unknown = c.post("/v1/jobs", headers=dave, json={"models": ["blip"], "items": [{"sha256": "f" * 64}]})
        history = c.get("/v1/captions", headers=dave, params={"image": sha})
    # the same answer as for bytes nobody holds: no oracle
    reasons = [r.json()["rejected"][0]["reason"] for r in (by_sha, by_key, unknown)]
    assert reasons[0] == reasons[1] == reasons[2] == "not among your images: submit the file itself first"
    assert history.status_code == 200 and history.json()["items"] == []


class CountingCaptioner:
    """A tiny stand-in for a model: counts the images it is asked to caption."""

    def __init__(self):
        self.seen = 0

    def preprocess(self, image):
        return image

    def generate(self, batch, preset):
        self.seen += len(batch)
        return ["a caption"] * len(batch)


def test_the_worker_reuses_a_cached_caption_only_for_an_owner_who_already_has_it(settings):
    # Given the worker's shard function over the real stores, and one image that Erin had captioned
    from storage.blobs import ImageStore
    from storage.captions import CaptionStore
    from storage.history import CaptionHistory
    from storage.jobs import JobStore
    from workers.pipeline import Worker, caption_shard

    data = jpeg(6004)
    sha = ImageStore(settings).put(data)[0]
    model = CountingCaptioner()
    w = Worker(
        model="blip",
        checkpoint="tiny",
        captioner=model,
        images=ImageStore(settings),
        captions=CaptionStore(settings),
        jobs=JobStore(settings),
        worker_id="w-sec",
        batch_size=4,
        history=CaptionHistory(settings),
    )

    def run(owner: str):
        job, _ = w.jobs.create(owner, "free", ["blip"], "default")
        w.jobs.add_items(job["_id"], owner, [{"sha256": sha, "model": "blip", "preset": "default", "file_name": "x"}])
        return caption_shard(w, job["_id"], "default", [sha])

    erin_first = run("erin-t")
    # If Frank submits the same bytes, he waits for a caption like anyone with new bytes; Erin's repeat is reused
    frank = run("frank-t")
    erin_again = run("erin-t")
    assert (erin_first.done, erin_first.reused) == (1, 0)
    assert (frank.done, frank.reused) == (1, 0) and model.seen == 2
    assert (erin_again.done, erin_again.reused) == (0, 1) and model.seen == 2


def test_the_worker_fails_an_object_whose_bytes_do_not_hash_to_its_name(settings):
    # Someone with write access to the bucket swaps an image's bytes: the worker notices, never captions them
    from storage.blobs import ImageStore, object_key, sha256_hex
    from storage.captions import CaptionStore
    from storage.jobs import JobStore
    from workers.pipeline import Worker, caption_shard

    good, swapped = jpeg(6005), jpeg(6006)
    sha = sha256_hex(good)
    ImageStore(settings).put_key(object_key(sha), swapped, "image/jpeg")
    model = CountingCaptioner()
    w = Worker(
        model="blip",
        checkpoint="tiny",
        captioner=model,
        images=ImageStore(settings),
        captions=CaptionStore(settings),
        jobs=JobStore(settings),
        worker_id="w-sec",
        batch_size=4,
    )
    job, _ = w.jobs.create("gail-t", "free", ["blip"], "default")
    w.jobs.add_items(job["_id"], "gail-t", [{"sha256": sha, "model": "blip", "preset": "default", "file_name": "g"}])
    result = caption_shard(w, job["_id"], "default", [sha])
    [item] = w.jobs.items_of(job["_id"])
    assert result.failed == 1 and model.seen == 0
    assert item["state"] == "failed" and "do not hash" in item["error"]
