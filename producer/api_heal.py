"""api_heal: the HTTP side of self-healing jobs (issue 11): DELETE /v1/jobs/{id}, and 503 when no worker serves a
model."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from capq.settings import Settings
from producer import queries
from producer.apiauth import ApiError, Caller
from producer.waiting import models_offline, offline_message
from storage.errors import AlreadyFinished


def install(app: FastAPI, settings: Settings, auth) -> None:
    @app.delete("/v1/jobs/{job_id}", tags=["jobs"])
    def cancel_job(job_id: str, caller: Caller = Depends(auth)) -> dict:
        """Cancel your job: its queued images are not captioned (shards in flight stop within one batch);
        captions already made stay. 404 for a job that is not yours, 409 for a job already done."""
        try:
            return queries.cancel_job(settings, job_id, caller.owner)
        except AlreadyFinished as exc:
            raise ApiError(409, str(exc)) from None


def refuse_offline(settings: Settings, model: str, job_id: str) -> None:
    """503 with Retry-After when no worker is online for `model`; the job stays queued."""
    import redis

    later = f"the work stays queued as job {job_id}: GET /v1/jobs/{job_id}/results later"
    try:
        offline = models_offline(settings, [model])
    except redis.RedisError as exc:
        raise ApiError(
            503,
            f"the queue (Redis) does not answer ({type(exc).__name__}); {later}",
            {"Retry-After": str(settings.heal_interval_s)},
        ) from None
    if offline:
        raise ApiError(
            503,
            f"{offline_message(model, offline[model])}; {later}",
            {"Retry-After": str(settings.worker_lost_after_s)},
        )
