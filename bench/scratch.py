"""scratch: settings for a benchmark run with its own Redis, database and buckets, removed afterwards."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from capq.settings import Settings, load_settings
from tooling import procs
from tooling.stack import spawn_redis


@contextlib.contextmanager
def scratch(buckets: tuple[str, ...] = ("main",)) -> Iterator[tuple[Path, dict[str, Settings]]]:
    """-> (a work folder, {name: settings}) sharing one private Redis and database, one bucket per name; the
    services are the environment's (CAPQ_MONGO_URL, CAPQ_S3_ENDPOINT)."""
    from storage.blobs import ImageStore
    from storage.db import Mongo

    base = load_settings()
    tag = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="capq-bench-"))
    redis_proc, redis_url = spawn_redis(work / "redis")
    env = {
        f"CAPQ_{k.upper()}": (",".join(f"{a}={b}" for a, b in v.items()) if isinstance(v, dict) else str(v))
        for k, v in base.model_dump().items()
    }
    env |= {"CAPQ_REDIS_URL": redis_url, "CAPQ_MONGO_DB": f"capq_bench_{tag}", "CAPQ_HOME": str(work / "home")}
    made = {name: load_settings(env | {"CAPQ_S3_BUCKET": f"capq-bench-{name}-{tag}"}) for name in buckets}
    try:
        for s in made.values():
            ImageStore(s).ensure_bucket()
        Mongo(made[buckets[0]]).ensure_indexes()
        yield work, made
    finally:
        for s in made.values():
            try:
                ImageStore(s).drop_bucket()
            except Exception as exc:  # cleanup must not hide the result or the real error
                print(f"cleanup of bucket {s.s3_bucket} failed: {exc}")
        try:
            Mongo(made[buckets[0]]).client.drop_database(made[buckets[0]].mongo_db)
        except Exception as exc:
            print(f"cleanup of database {made[buckets[0]].mongo_db} failed: {exc}")
        procs.stop(redis_proc, timeout_s=10)
        shutil.rmtree(work, ignore_errors=True)
