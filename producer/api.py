"""api: the HTTP API over the producer's plain functions; an owner sees only its own jobs, images and captions."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import time

from fastapi import Depends, FastAPI, File, Form, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.datastructures import UploadFile as StarletteUpload

from capq.names import MODEL_NAMES, TIERS
from capq.settings import Settings
from producer import (
    api_aliases,
    api_catalog,
    api_guard,
    api_heal,
    api_owners,
    api_tracing,
    api_translate,
    key_stats,
    queries,
)
from producer.api_export import parquet_results
from producer.apiauth import ApiError, Caller, authenticator, install_error_handlers, take_images
from producer.errors import BadInput, CaptionTimeout, TooLarge
from producer.sources import Candidate, Expanded, from_api_items, upload_name
from producer.submit import SubmitRequest, submit
from storage.db import mongo
from translation.results import check_lang, with_translations

REQUESTS = Counter("capq_api_requests_total", "API requests", ["method", "route", "status"])
LATENCY = Histogram("capq_api_request_seconds", "API request latency", ["method", "route"])
# The methods the API answers; any other token a client sends is counted as "other", not as a new series.
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
log = logging.getLogger("capq.api")
JSON_FIELDS = {"models", "tier", "preset", "items", "idempotency_key", "translate"}
_TEXT = {"type": "string"}
JOB_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files", "models"],
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "models": {"type": "string", "example": "blip,git"},
                        "tier": {"type": "string", "enum": list(TIERS)},
                        "preset": _TEXT,
                        "idempotency_key": _TEXT,
                        "translate": {"type": "string", "example": "vi"},
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["models", "items"],
                    "properties": {
                        "models": {"type": "array", "items": {"type": "string", "enum": list(MODEL_NAMES)}},
                        "tier": {"type": "string", "enum": list(TIERS)},
                        "preset": _TEXT,
                        "idempotency_key": _TEXT,
                        "translate": _TEXT,
                        "items": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "s3": {"type": "string", "example": "s3://capq-images/owners/alice/cat.jpg"},
                                    "sha256": _TEXT,
                                    "url": {"type": "string", "example": "https://example.com/cat.jpg"},
                                    "meta": {"type": "object"},
                                },
                            },
                        },
                    },
                }
            },
        },
    }
}


def _tier(caller: Caller, asked) -> str:
    """A request may ask for its key's tier or a lower one, never a higher one."""
    if asked in (None, ""):
        return caller.tier
    if asked not in TIERS:
        raise BadInput(f"unknown tier {asked!r}; tiers are {', '.join(TIERS)}")
    if TIERS.index(asked) < TIERS.index(caller.tier):
        allowed = ", ".join(TIERS[TIERS.index(caller.tier) :])
        raise BadInput(f"your key's tier is {caller.tier}; ask for one of {allowed}")
    return asked


async def _read_upload(upload: StarletteUpload, index: int, cap: int, out: Expanded) -> None:
    """An oversized file is rejected unread; the others stay in their spooled temporary files and are read
    one at a time by the submit threads, so a job never holds all its files in memory at once."""
    name = upload_name(upload.filename, index)
    size = upload.size if upload.size is not None else len(await upload.read(cap + 1))
    if size > cap:
        out.reject(name, f"file is over the {cap:,}-byte cap (CAPQ_MAX_IMAGE_BYTES): {size:,} bytes")
    else:
        out.candidates.append(Candidate(name, read=functools.partial(_spooled, upload.file, cap), size=lambda: size))


def _spooled(file, cap: int) -> bytes:
    file.seek(0)
    return file.read(cap + 1)


async def _job_request(request: Request, settings: Settings, caller: Caller) -> tuple[dict, Expanded]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    out = Expanded()
    if kind == "multipart/form-data":
        form = await request.form(max_files=settings.max_files_per_request, max_fields=50)
        uploads = [f for f in form.getlist("files") if isinstance(f, StarletteUpload)]
        if not uploads:
            raise BadInput("no images: attach them as multipart file field 'files' (e.g. curl -F files=@a.jpg)")
        for i, upload in enumerate(uploads):
            await _read_upload(upload, i, settings.max_image_bytes, out)
        fields = {}
        for name in ("models", "tier", "preset", "idempotency_key", "translate"):
            values = form.getlist(name)
            if any(not isinstance(v, str) for v in values):
                raise BadInput(f"form field {name!r} must be text, not a file")
            fields[name] = ",".join(values) if name == "models" else (values[0] if values else None)
        return fields, out
    if kind == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise BadInput("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadInput('JSON body must be an object: {"models": [...], "items": [...]}')
        unknown = sorted(set(body) - JSON_FIELDS)
        if unknown:
            raise BadInput(f"unknown field(s) {unknown}; allowed: {sorted(JSON_FIELDS)}")
        items = body.get("items")
        if isinstance(items, list) and len(items) > settings.max_items_per_request:
            raise BadInput(
                f"{len(items):,} items is over the {settings.max_items_per_request:,}-item cap per request "
                "(CAPQ_MAX_ITEMS_PER_REQUEST); split the manifest over several jobs"
            )
        out.candidates = from_api_items(items, settings, caller.owner)
        return body, out
    raise BadInput(
        "send multipart/form-data (file field 'files' + fields models, tier, preset) or "
        'application/json {"models": [...], "items": [{"s3": ...} | {"sha256": ...} | '
        '{"url": ...}]}'
    )


def create_app(settings: Settings) -> FastAPI:
    """The API for these settings; `capq api` serves it with uvicorn."""
    app = FastAPI(
        title="capq",
        version="0.1.0",
        description="Batch image captioning. Authenticate with an API key "
        '(X-API-Key or Authorization: Bearer). Errors are {"error": message}.',
    )
    auth = authenticator(settings)
    install_error_handlers(app)
    api_guard.install(app, settings, auth)
    api_owners.install(app, settings, auth)  # issue 15
    api_heal.install(app, settings, auth)

    @app.middleware("http")
    async def _metrics(request: Request, call_next):
        t0 = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            # The route template, not the raw path: job ids must not become label values.
            route = getattr(request.scope.get("route"), "path", "unmatched")
            method = request.method if request.method in METHODS else "other"  # a client's token is no label
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(time.perf_counter() - t0)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict:
        """200 when Redis and MongoDB answer; a 503 names the service down, never its address."""
        import redis

        down = []
        try:
            mongo(settings).ping()
        except Exception as exc:
            log.warning("healthz: database check failed: %s", exc)
            down.append("database (MongoDB)")
        try:
            redis.Redis.from_url(settings.redis_url, socket_connect_timeout=settings.connect_timeout_s).ping()
        except Exception as exc:
            log.warning("healthz: broker check failed: %s", exc)
            down.append("broker (Redis)")
        if down:
            raise ApiError(503, f"unhealthy: {' and '.join(down)} unreachable")
        return {"status": "ok"}

    @app.get("/metrics", tags=["ops"])
    def metrics() -> Response:
        if settings.api_metrics_port:  # served on that private port instead (capq api starts it)
            raise ApiError(404, "no route GET /metrics; see /docs for the API")
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/jobs", status_code=202, tags=["jobs"], openapi_extra=JOB_BODY)
    async def create_job(request: Request, caller: Caller = Depends(auth)) -> dict:
        """Submit images (multipart uploads) or a manifest of your own s3:// keys / sha256s / http(s) URLs (JSON)."""
        try:
            fields, expanded = await _job_request(request, settings, caller)
            take_images(settings, caller, len(expanded.candidates))
            result = await run_in_threadpool(
                submit,
                settings,
                expanded,
                SubmitRequest(
                    fields.get("models") or [],
                    tier=_tier(caller, fields.get("tier")),
                    preset=fields.get("preset"),
                    owner=caller.owner,
                    idempotency_key=fields.get("idempotency_key"),
                    allow_local=False,
                    translate=fields.get("translate") or None,
                ),
            )
        finally:
            await request.close()  # the spooled uploads' temporary files go now, not at garbage collection
        key_stats.add_images(settings, caller.key_prefix, result.new_items)
        return result.as_dict() | {
            "status_url": f"/v1/jobs/{result.job_id}",
            "results_url": f"/v1/jobs/{result.job_id}/results",
        }

    @app.get("/v1/jobs", tags=["jobs"])
    def list_jobs(limit: str = Query("50"), caller: Caller = Depends(auth)) -> dict:
        return {"jobs": queries.list_jobs(settings, caller.owner, limit)}

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: str, caller: Caller = Depends(auth)) -> dict:
        return queries.job_status(settings, job_id, caller.owner)

    @app.get("/v1/jobs/{job_id}/results", tags=["jobs"])
    def get_results(
        job_id: str,
        format: str = Query("json", pattern="^(json|jsonl|parquet)$"),
        lang: str | None = Query(None, description="add translations into this language (e.g. vi)"),
        caller: Caller = Depends(auth),
    ):
        if format == "parquet":  # Issue 16: one row per image, a caption column per model (producer.export)
            return parquet_results(settings, job_id, caller.owner)
        rows = queries.results(settings, job_id, caller.owner)
        first = next(rows, None)  # raises NotFound here, before a streamed body has started
        head = [first] if first else []
        if lang is not None:  # Issue 14: translated from the memory, or on demand
            translated, summary = with_translations(settings, head + list(rows), check_lang(lang))
            head, rows = translated, iter(())
            if format == "json":
                return {"job_id": job_id, "results": head, "translation": summary}
        if format == "json":
            return {"job_id": job_id, "results": head + list(rows)}
        return StreamingResponse(
            (json.dumps(r) + "\n" for r in itertools.chain(head, rows)), media_type="application/x-ndjson"
        )

    @app.get("/v1/captions", tags=["captions"])
    def captions(
        image: str | None = None,
        model: str | None = None,
        job: str | None = None,
        since: str | None = None,
        limit: str = "50",
        page: str | None = None,
        cursor: str | None = None,
        lang: str | None = None,
        caller: Caller = Depends(auth),
    ) -> dict:
        """Your caption history, newest first; page with `page` or with `cursor` (next_cursor); `lang` adds
        translations."""
        found = queries.history(
            settings,
            caller.owner,
            image=image,
            model=model,
            job=job,
            since=since,
            limit=limit,
            page=page,
            cursor=cursor,
            allow_files=False,
        )
        if lang is not None:  # Issue 14
            found["items"], found["translation"] = with_translations(settings, found["items"], check_lang(lang))
        return found

    @app.post("/v1/caption", tags=["captions"])
    async def caption_one(
        file: UploadFile = File(..., description="one image"),
        model: str = Form("blip"),
        preset: str | None = Form(None),
        caller: Caller = Depends(auth),
    ) -> dict:
        """Caption one image at your key's tier and wait for it (up to CAPQ_CAPTION_WAIT_S seconds)."""
        expanded = Expanded()
        await _read_upload(file, 0, settings.max_image_bytes, expanded)
        if expanded.rejected:
            raise TooLarge(expanded.rejected[0]["reason"])
        take_images(settings, caller, 1)
        result = await run_in_threadpool(
            submit,
            settings,
            expanded,
            SubmitRequest([model], tier=caller.tier, preset=preset, owner=caller.owner, allow_local=False),
        )
        key_stats.add_images(settings, caller.key_prefix, result.new_items)
        if result.rejected:
            raise BadInput(f"{result.rejected[0]['file']}: {result.rejected[0]['reason']}")
        api_heal.refuse_offline(settings, model, result.job_id)  # 503 at once, not after the wait (issue 11)
        deadline = time.monotonic() + settings.caption_wait_s
        while True:
            rows = await run_in_threadpool(lambda: list(queries.results(settings, result.job_id, caller.owner)))
            row = rows[0]
            if row["status"] == "done":
                return {"job_id": result.job_id} | {
                    k: row[k] for k in ("sha256", "file_name", "model", "preset", "caption")
                }
            if row["status"] in ("failed", "cancelled"):
                raise ApiError(422, f"the image could not be captioned: {row.get('error') or row['status']}")
            if time.monotonic() > deadline:
                raise CaptionTimeout(
                    f"no caption within {settings.caption_wait_s:g}s (CAPQ_CAPTION_WAIT_S); the "
                    f"work stays queued as job {result.job_id}: GET /v1/jobs/{result.job_id}/results "
                    "later"
                )
            await asyncio.sleep(0.2)

    api_aliases.install(app, settings, auth)
    api_tracing.install(app, settings, auth)
    # Issue 14: what the web UI reads (models, queues, evaluations, images) and translation.
    api_catalog.install(app, settings, auth)
    api_translate.install(app, settings, auth)
    from producer import api_capacity  # issue 18: capacity planning (admin)

    api_capacity.install(app, settings, auth)
    return app
