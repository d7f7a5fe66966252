"""api_capacity: GET /v1/capacity (admin keys only), the capacity plan of `capq capacity`."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool

from capq.settings import Settings
from producer.api_owners import admin_only
from producer.apiauth import Caller


def install(app: FastAPI, settings: Settings, auth) -> None:
    admin = admin_only(auth)

    @app.get("/v1/capacity", tags=["admin"])
    async def capacity(caller: Caller = Depends(admin)) -> dict:
        """Per model: measured images/s per worker, arrivals, backlog, the workers needed to take every queued image
        within CAPQ_CAPACITY_TARGET_AGE_S, and the seconds to drain the backlog now (null: never) and with them."""
        from capq.capacity import plan
        from storage.throughput import Throughput

        return await run_in_threadpool(lambda: plan(settings, Throughput(settings).arrivals))
