"""api_owners: self-service data erasure and usage, and the admin routes (owners, jobs, usage, keys, erasure)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool

from capq.settings import Settings
from producer import keys_admin, queries, usage_report
from producer.apiauth import ApiError, Caller
from producer.choices import check_owner
from producer.quota import QuotaExceeded
from storage.errors import NotFound
from storage.owners import Owners


def erase_owner(settings: Settings, owner: str, by: str, keep_key_prefix: str | None = None) -> dict:
    """Erase `owner` (storage.owners.Owners.erase) after checking the name; -> {owner, removed}."""
    owner = check_owner(queries.plain("owner", owner))
    owners = Owners(settings)
    if not owners.exists(owner):
        raise NotFound(
            f"no owner {owner!r}: nothing of it is stored (owners are listed by `capq owners list` or "
            "GET /v1/admin/owners)"
        )
    return {"owner": owner, "removed": owners.erase(owner, by, keep_key_prefix)}


def admin_only(auth: Callable[..., Caller]) -> Callable[..., Caller]:
    """A dependency that lets only a key whose role is admin through (403 otherwise)."""

    def admin(caller: Caller = Depends(auth)) -> Caller:
        if caller.role != "admin":
            raise ApiError(
                403,
                "this route needs an admin key; your key's role is "
                f"{caller.role} (an operator creates one with `capq keys create --role admin`)",
            )
        return caller

    return admin


def install(app: FastAPI, settings: Settings, auth: Callable[..., Caller]) -> None:
    """Add /v1/me/*, /v1/usage and /v1/admin/*; every admin route refuses a key whose role is not admin (403)."""
    admin = admin_only(auth)

    @app.exception_handler(QuotaExceeded)
    async def _quota(request: Request, exc: QuotaExceeded):
        from fastapi.responses import JSONResponse

        return JSONResponse(
            {"error": str(exc), "reset_at": exc.reset_at.isoformat()},
            status_code=429,
            headers={"Retry-After": str(exc.retry_after_s), "X-Quota-Reset": exc.reset_at.isoformat()},
        )

    @app.delete("/v1/me/data", tags=["owners"])
    async def delete_my_data(caller: Caller = Depends(auth)) -> dict:
        """Erase everything of your own: jobs, results, file names, usage, and every API key but this one.
        Images another owner also submitted stay (without your file names)."""
        return await run_in_threadpool(erase_owner, settings, caller.owner, caller.owner, caller.key_prefix)

    @app.get("/v1/usage", tags=["owners"])
    def my_usage(since: str = "30d", by: str = "model", caller: Caller = Depends(auth)) -> dict:
        """Your images captioned, reused captions, GPU-seconds and estimated cost since `since` (e.g. 30d)."""
        return usage_report.report(settings, caller.owner, since, by)

    @app.post("/v1/me/key/rotate", tags=["owners"])
    def rotate_my_key(grace_s: str | None = Query(None), caller: Caller = Depends(auth)) -> dict:
        """A new key for you; the one you called with keeps working for grace_s (default CAPQ_KEY_ROTATION_GRACE_S)."""
        key, new, old = keys_admin.rotate_key(settings, caller.key_prefix, grace_s, owner=caller.owner)
        return {"key": key, "new": new, "old": old}

    @app.get("/v1/admin/owners", tags=["admin"])
    def list_owners(caller: Caller = Depends(admin)) -> dict:
        return {"owners": [o | {"last_job_at": queries._iso(o["last_job_at"])} for o in Owners(settings).list()]}

    @app.get("/v1/admin/owners/{owner}/jobs", tags=["admin"])
    def owner_jobs(owner: str, limit: str = "50", caller: Caller = Depends(admin)) -> dict:
        return {"jobs": queries.list_jobs(settings, owner, limit)}

    @app.get("/v1/admin/jobs/{job_id}", tags=["admin"])
    def any_job(job_id: str, caller: Caller = Depends(admin)) -> dict:
        return queries.job_status(settings, job_id, None)

    @app.get("/v1/admin/usage", tags=["admin"])
    def any_usage(
        owner: str | None = None, since: str = "30d", by: str = "owner", caller: Caller = Depends(admin)
    ) -> dict:
        return usage_report.report(settings, owner, since, by)

    @app.delete("/v1/admin/owners/{owner}", tags=["admin"])
    async def delete_owner(owner: str, caller: Caller = Depends(admin)) -> dict:
        """Erase an owner entirely, every key included (an admin erasing itself keeps the calling key)."""
        keep = caller.key_prefix if owner == caller.owner else None
        return await run_in_threadpool(erase_owner, settings, owner, f"admin:{caller.owner}", keep)

    @app.get("/v1/admin/keys", tags=["admin"])
    def list_keys(owner: str | None = None, caller: Caller = Depends(admin)) -> dict:
        return {"keys": keys_admin.list_keys(settings, owner)}

    @app.post("/v1/admin/keys", status_code=201, tags=["admin"])
    def create_key(
        body: dict = Body(..., examples=[{"owner": "alice", "tier": "free", "role": "user"}]),
        caller: Caller = Depends(admin),
    ) -> dict:
        """Create a key; the answer is the only time the key is shown."""
        unknown = sorted(set(body) - {"owner", "tier", "role", "note"})
        if unknown:
            raise ApiError(400, f"unknown field(s) {unknown}; send owner, tier, role (user|admin) and note")
        key, record = keys_admin.create_key(
            settings, body.get("owner"), body.get("tier"), body.get("role", "user"), body.get("note")
        )
        return {"key": key, "record": record}

    @app.delete("/v1/admin/keys/{prefix}", tags=["admin"])
    def revoke_key(prefix: str, caller: Caller = Depends(admin)) -> dict:
        return {"revoked": keys_admin.revoke_key(settings, prefix)}

    @app.post("/v1/admin/keys/{prefix}/rotate", tags=["admin"])
    def rotate_key(prefix: str, grace_s: str | None = Query(None), caller: Caller = Depends(admin)) -> dict:
        key, new, old = keys_admin.rotate_key(settings, prefix, grace_s)
        return {"key": key, "new": new, "old": old}
