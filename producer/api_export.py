"""api_export: a job's results as a Parquet file over HTTP, written to a temporary file and streamed from it."""

from __future__ import annotations

import os

from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from capq.settings import Settings
from producer.export import parquet_file
from producer.export_rows import select


def parquet_results(settings: Settings, job_id: str, owner: str) -> FileResponse:
    """GET /v1/jobs/{id}/results?format=parquet: the columns of `capq export --format parquet`."""
    sel = select(settings, owner, job=job_id)  # another owner's job reads as missing, before any body
    path = parquet_file(settings, sel)
    return FileResponse(
        path,
        media_type="application/vnd.apache.parquet",
        filename=f"{sel.job_id}.parquet",
        background=BackgroundTask(os.unlink, path),
    )
