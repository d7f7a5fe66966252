"""api_cancel: DELETE /v1/jobs/{id}, the owner's cancel (issue 11)."""
from __future__ import annotations

from fastapi import Depends, FastAPI

from capq.settings import Settings
from producer import queries
from producer.apiauth import ApiError, Caller
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
