"""staged: objects a submitter placed in the image bucket under its own prefix, read by key for a submission."""
from __future__ import annotations

from capq.settings import Settings
from storage.blobs import image_store


class StagedObjects:
    """Read-only access by key to the configured bucket; which keys a caller may name is the producer's rule."""

    def __init__(self, settings: Settings):
        self.store = image_store(settings)
        self.bucket = settings.s3_bucket

    def size(self, key: str) -> int:
        """Bytes in the object; NotFound if there is none (checked before reading, so a huge object is never fetched)."""
        head = self.store._call(lambda: self.store.client.head_object(Bucket=self.bucket, Key=key), key)
        return int(head["ContentLength"])

    def get(self, key: str) -> bytes:
        return self.store._call(
            lambda: self.store.client.get_object(Bucket=self.bucket, Key=key)["Body"].read(), key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Stage bytes under a key (tools and tests; the producer itself only reads)."""
        self.store._call(lambda: self.store.client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ContentType=content_type), key)
