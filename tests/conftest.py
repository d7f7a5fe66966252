"""Shared fixtures: real services from the local stack, with a private database and bucket per test session."""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from capq.settings import Settings, load_settings

# Re-exported: tests import REPO, free_port and settings_env from here.
from tooling.paths import REPO, seed_dir, seed_images  # noqa: F401
from tooling.ports import free_port  # noqa: F401
from tooling.procs import settings_env, stop
from tooling.stack import spawn_redis

SEED_DIR = seed_dir()
SEED_IMAGES = seed_images()


def pytest_collection_modifyitems(items):
    # Mark by folder (as LitServe's conftest does) so `-m unit` runs without services.
    for item in items:
        for kind in ("unit", "integration", "e2e", "security"):
            if f"/tests/{kind}/" in str(item.fspath):
                item.add_marker(getattr(pytest.mark, kind))


def _require_services(settings: Settings) -> None:
    """A missing service fails the run: tests never skip because the stack is down."""
    from tooling.stack import mongo_ready, redis_ready, s3_ready

    down = [
        name
        for name, ok in (
            ("Redis", redis_ready(settings.redis_url)),
            ("MongoDB", mongo_ready(settings.mongo_url)),
            ("S3", s3_ready(settings.s3_endpoint)),
        )
        if not ok
    ]
    if down:
        pytest.fail(f"services not answering: {', '.join(down)}; run `capq stack up` (make test does)", pytrace=False)


def flush_redis(settings: Settings) -> None:
    import redis

    from capq.names import REDIS_EPOCH_KEY

    client = redis.Redis.from_url(settings.redis_url)
    # Emptying the queues between tests is not a lost Redis: keeping its epoch stops the workers' healer from
    # sending earlier tests' unfinished jobs again (issue 11; tests of a real loss use a Redis of their own).
    epoch = client.get(REDIS_EPOCH_KEY)
    client.flushdb()
    if epoch:
        client.set(REDIS_EPOCH_KEY, epoch)


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def settings(base_settings, tmp_path_factory) -> Settings:
    """Settings pointing at a database, bucket and home of this session's own."""
    tag = uuid.uuid4().hex[:10]
    # Queues, dead letters and rate counters are global in a Redis database: tests take one of their own.
    redis_url = urlunsplit(
        urlsplit(base_settings.redis_url)._replace(path="/" + os.environ.get("CAPQ_TEST_REDIS_DB", "13"))
    )
    env = {
        **settings_env(base_settings),
        "CAPQ_REDIS_URL": redis_url,
        "CAPQ_MONGO_DB": f"capq_test_{tag}",
        "CAPQ_S3_BUCKET": f"capq-test-{tag}",
        "CAPQ_HOME": str(tmp_path_factory.mktemp("home")),
    }
    s = load_settings(env)
    _require_services(s)
    from storage.blobs import ImageStore
    from storage.db import Mongo

    ImageStore(s).ensure_bucket()
    Mongo(s).ensure_indexes()
    flush_redis(s)
    yield s
    Mongo(s).client.drop_database(s.mongo_db)
    # Each bucket holds volumes of its own in the S3 server: a stack that outlives many runs would run out.
    ImageStore(s).drop_bucket()


@pytest.fixture
def db(settings):
    from storage.db import mongo

    return mongo(settings)


# Producer suites (tests/integration, tests/e2e): a Redis, database and bucket of the test module's own.
@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A private Redis: queue lengths here count only this module's messages, and no stray worker eats them."""
    proc, url = spawn_redis(tmp_path_factory.mktemp("redis"))
    yield url
    stop(proc, timeout_s=10)


def drop_scratch(s) -> None:
    """Remove a database and bucket made for these tests."""
    from storage.blobs import ImageStore
    from storage.db import Mongo

    Mongo(s).client.drop_database(s.mongo_db)
    ImageStore(s).drop_bucket()


@pytest.fixture(scope="module")
def psettings(settings, redis_url):
    """The session's services with this module's own Redis, database and bucket: producer tests upload the seed
    images and caption them, which must not change what other suites find in the session's stores."""
    from storage.blobs import ImageStore
    from storage.db import Mongo

    tag = os.urandom(3).hex()
    s = load_settings(
        {
            **settings_env(settings),
            "CAPQ_REDIS_URL": redis_url,
            "CAPQ_MONGO_DB": f"{settings.mongo_db}_p{tag}",
            "CAPQ_S3_BUCKET": f"{settings.s3_bucket}-p{tag}",
        }
    )
    ImageStore(s).ensure_bucket()
    Mongo(s).ensure_indexes()
    yield s
    drop_scratch(s)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny random CLIP built offline (CLIPScore tests)."""
    from tooling.tiny import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture
def eval_worker(settings):
    """A real `capq eval worker` on the session's services, running once its heartbeat is in Redis: it answers
    GET /v1/evaluations/compare (the API sends it capq.compare)."""
    from tests.e2e.procs import spawn_capq
    from tooling.workers import wait_heartbeat

    env = {**os.environ, **settings_env(settings), "CAPQ_LOG_JSON": "false"}
    proc = spawn_capq(env, "eval-worker", "eval", "worker")
    try:
        wait_heartbeat(proc, "eval", settings.redis_url)
        yield proc
    finally:
        stop(proc)
