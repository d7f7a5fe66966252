"""s3:// items get the same checks as local files: corrupt, oversized and non-image objects are each rejected."""

from __future__ import annotations

from producer.submit import submit
from storage.blobs import ImageStore
from tests.conftest import SEED_IMAGES
from tests.integration.test_producer_submit import bad_files


def test_staged_s3_objects_that_are_bad_are_each_rejected_with_their_reason(psettings, tmp_path):
    # Given every kind of bad file, and one good image, staged under the owner's prefix in the bucket
    expected = bad_files(tmp_path)
    store, bucket = ImageStore(psettings), psettings.s3_bucket
    for name in expected:
        store.put_key(f"owners/frank/{name}", (tmp_path / name).read_bytes())
    store.put_key("owners/frank/good.jpg", SEED_IMAGES[0].read_bytes(), "image/jpeg")
    uris = {name: f"s3://{bucket}/owners/frank/{name}" for name in [*expected, "good.jpg"]}
    # If frank submits those keys
    result = submit(psettings, list(uris.values()), "blip", owner="frank")
    # I expect each bad object rejected with its own reason, and the good one queued
    reasons = {r["file"]: r["reason"] for r in result.rejected}
    assert sorted(reasons) == sorted(uris[name] for name in expected)
    for name, needle in expected.items():
        assert needle in reasons[uris[name]].replace(",", ""), (name, reasons[uris[name]])
    assert result.accepted == 1 and result.enqueued == 1
