"""Finding 1: credentials must not leak, whatever fails (responses, logs), and /healthz names services, not URLs."""

from __future__ import annotations

from tests.conftest import free_port

SECRET = "Tops3cretPassw0rd"


def test_database_down_leaks_no_password_in_healthz_api_or_logs(start_api, sec_env):
    # Given an API whose MongoDB URL carries a password and points at a port where nothing listens
    dead = f"mongodb://capq:{SECRET}@127.0.0.1:{free_port()}/?authSource=admin"
    api = start_api({"CAPQ_MONGO_URL": dead, "CAPQ_CONNECT_TIMEOUT_S": "0.5"})
    with api.client() as c:
        # If anyone, without a key, asks for health, or calls a route with any key
        health = c.get("/healthz")
        jobs = c.get("/v1/jobs", headers={"X-API-Key": "capq_x"})
        bearer = c.get("/v1/captions", headers={"Authorization": "Bearer capq_guess"})
    # I expect 503s that name the service, and no password anywhere: bodies, headers or the process's log
    assert health.status_code == 503 and "database" in health.json()["error"]
    assert jobs.status_code == 503 and bearer.status_code == 503
    for resp in (health, jobs, bearer):
        assert SECRET not in resp.text and "mongodb://" not in resp.text and "127.0.0.1" not in resp.text
        assert SECRET not in str(resp.headers)
    log = api.log()
    assert "database" in log and SECRET not in log, log[-3000:]


def test_redis_down_leaks_no_password_from_the_rate_limiter(start_api):
    dead = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    api = start_api({"CAPQ_REDIS_URL": dead, "CAPQ_CONNECT_TIMEOUT_S": "0.5"})
    with api.client() as c:
        health = c.get("/healthz")
        jobs = c.get("/v1/jobs", headers={"X-API-Key": "capq_x"})
        posted = c.post("/v1/jobs", headers={"X-API-Key": "capq_x"}, json={"models": ["blip"], "items": []})
    assert health.status_code == 503 and "broker (Redis)" in health.json()["error"]
    assert jobs.status_code == posted.status_code == 503
    for resp in (health, jobs, posted):
        assert SECRET not in resp.text, resp.text
    assert SECRET not in api.log()


def test_masking_covers_the_shapes_an_attacker_would_try_next():
    # Passwords with '@', percent-escapes, srv URLs, a password in a query parameter, an IPv6 host
    from capq.redact import mask_url, redact
    from storage.errors import DatabaseUnreachable

    for url in (
        f"mongodb://capq:{SECRET}@h:27017/db",
        f"mongodb+srv://capq:{SECRET}%40x@cluster/db",
        f"redis://:{SECRET}@[::1]:6379/0",
        f"mongodb://h/db?password={SECRET}&w=1",
        f"rediss://u:{SECRET}@x@h:6380/0",
    ):
        assert SECRET not in mask_url(url) and SECRET not in redact(f"failed at {url} now")
        assert SECRET not in str(DatabaseUnreachable(url, "timeout"))
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
