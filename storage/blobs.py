"""blobs: image bytes in S3, content-addressed by sha256 so the same bytes are stored once."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from capq.redact import mask_url, redact
from capq.settings import Settings
from storage.errors import NotFound, ObjectStoreUnreachable, StorageError

T = TypeVar("T")
_UNREACHABLE = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, BotoConnectionError)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_key(sha256: str) -> str:
    # Two-level fan-out keeps listings and any filesystem-backed store fast at millions of objects.
    return f"images/sha256/{sha256[:2]}/{sha256}"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class ImageStore:
    """Put, get, test and delete images by sha256 in one bucket."""

    def __init__(self, settings: Settings):
        self.endpoint = settings.s3_endpoint
        self.bucket = settings.s3_bucket
        timeout = settings.connect_timeout_s
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint,
            aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=settings.s3_secret_key,
            region_name=settings.s3_region,
            config=Config(
                connect_timeout=timeout,
                read_timeout=max(timeout, 10.0),
                # One quick retry; callers (tasks) own the longer backoff.
                retries={"max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": "path"},
                max_pool_connections=32,
            ),
        )

    def _call(self, fn: Callable[[], T], what: str | None = None) -> T:
        try:
            return fn()
        except _UNREACHABLE as exc:
            raise ObjectStoreUnreachable(self.endpoint, type(exc).__name__) from exc
        except ClientError as exc:
            code = _code(exc)
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"object {what} is not in bucket {self.bucket}") from exc
            if code in ("NoSuchBucket",):
                raise NotFound(f"bucket {self.bucket} does not exist; run `capq stack up` or create it") from exc
            raise StorageError(f"object store error {code} for {what or self.bucket}: {redact(exc)}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"object store error at {mask_url(self.endpoint)}: {redact(exc)}") from exc

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (idempotent)."""

        def go():
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                    raise
                try:
                    self.client.create_bucket(Bucket=self.bucket)
                except ClientError as again:
                    if _code(again) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

        self._call(go)

    def put(
        self, data: bytes, content_type: str = "application/octet-stream", sha256: str | None = None
    ) -> tuple[str, bool]:
        """Store bytes once; returns (sha256, created). Same bytes twice -> one object, one upload.

        :param sha256: the bytes' hash when the caller has it already (it names the object, so it must be right).
        """
        sha = sha256 or sha256_hex(data)

        def go() -> bool:
            try:
                # If-None-Match: * makes the put conditional: a second writer of the same bytes gets 412.
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=object_key(sha),
                    Body=data,
                    ContentType=content_type,
                    IfNoneMatch="*",
                )
                return True
            except ClientError as exc:
                if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                    return False
                raise

        return sha, self._call(go, sha)

    def get(self, sha256: str) -> bytes:
        return self.get_key(object_key(sha256))

    # By key: objects a submitter staged under its own prefix (which keys a caller may name is the producer's rule).
    def get_key(self, key: str, max_bytes: int | None = None) -> bytes:
        """The object's bytes; with `max_bytes`, at most max_bytes + 1 are read (the caller sees it is over),
        however large the object has grown since anyone looked at its size."""

        def go() -> bytes:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                return body.read() if max_bytes is None else body.read(max_bytes + 1)
            finally:
                body.close()

        return self._call(go, key)

    def size_of_key(self, key: str) -> int:
        """Bytes in the object, from its headers (so an oversized object is refused without fetching it)."""
        return int(self._call(lambda: self.client.head_object(Bucket=self.bucket, Key=key), key)["ContentLength"])

    def put_key(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._call(
            lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type), key
        )

    # Issue 16: listing a prefix and streaming large objects (shards, exports) without holding them in memory.
    def list_keys(self, prefix: str):
        """Every key under `prefix`, page by page (a listing of millions never sits in memory)."""
        args = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            page = self._call(lambda: self.client.list_objects_v2(**args), prefix)
            yield from (obj["Key"] for obj in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return
            args["ContinuationToken"] = page["NextContinuationToken"]

    def open_key(self, key: str):
        """A file-like stream of the object's bytes (read it sequentially)."""
        return self._call(lambda: self.client.get_object(Bucket=self.bucket, Key=key)["Body"], key)

    def upload_file(self, path: str, key: str, content_type: str = "application/octet-stream") -> None:
        """Upload a local file (multipart when large) to `key`."""
        self._call(
            lambda: self.client.upload_file(path, self.bucket, key, ExtraArgs={"ContentType": content_type}), key
        )

    def exists(self, sha256: str) -> bool:
        try:
            self._call(lambda: self.client.head_object(Bucket=self.bucket, Key=object_key(sha256)), sha256)
            return True
        except NotFound:
            return False

    def presigned_url(self, sha256: str, expires_s: int = 3600) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": object_key(sha256)}, ExpiresIn=expires_s
        )

    def drop_bucket(self) -> None:
        """Delete every object and the bucket itself: for scratch buckets of tests and benchmarks."""

        def go():
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
            self.client.delete_bucket(Bucket=self.bucket)

        self._call(go)

    def delete(self, sha256: str) -> None:
        self._call(lambda: self.client.delete_object(Bucket=self.bucket, Key=object_key(sha256)), sha256)


@functools.cache
def image_store(settings: Settings) -> ImageStore:
    """One client per process and settings (boto3 clients are thread-safe)."""
    return ImageStore(settings)
