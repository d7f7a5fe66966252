"""api_catalog: what the web UI reads besides jobs: models and queues, evaluations, and an owner's image bytes."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
import uuid

from fastapi import Depends, FastAPI, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from capq.names import COMPARE_TASK
from capq.presets import PRESETS
from capq.settings import Settings
from capq.tracing import celery_headers
from producer import choices, fleet
from producer.apiauth import ApiError, Caller
from producer.errors import BadInput
from producer.queries import _int, plain
from producer.submit import celery_app
from storage.blobs import ImageStore
from storage.comparisons import ComparisonStore
from storage.errors import NotFound
from storage.evaluations import EvaluationStore
from storage.history import CaptionHistory

THUMB_PX = 256
MAX_THUMBS = 50
SHA_PATTERN = "^[0-9a-fA-F]{64}$"


def _presets() -> dict[str, dict]:
    return {
        model: {name: {"prompt": p.get("prompt"), "generate": p.get("generate")} for name, p in presets.items()}
        for model, presets in PRESETS.items()
    }


def thumbnail(data: bytes, px: int = THUMB_PX) -> bytes:
    """A JPEG at most px on its longer side (decoded under PIL's own pixel cap)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.thumbnail((px, px))
        out = io.BytesIO()
        img.convert("RGB").save(out, "JPEG", quality=80)
        return out.getvalue()


async def _ask_eval_worker(settings: Settings, a: str, b: str, preset: str | None) -> dict | None:
    """Send capq.compare to the evaluation queue and await the worker's answer in MongoDB (ComparisonStore's
    outcome), polling without blocking the event loop; None when none came within compare_wait_s."""
    request_id, store = uuid.uuid4().hex, ComparisonStore(settings)
    await run_in_threadpool(store.open, request_id, a, b, preset)
    await run_in_threadpool(
        celery_app(settings).send_task, COMPARE_TASK, args=[request_id, a, b, preset], headers=celery_headers()
    )
    deadline, pause = time.monotonic() + settings.compare_wait_s, 0.05
    while True:
        answer = await run_in_threadpool(store.take, request_id)
        if answer is not None:
            return answer
        left = deadline - time.monotonic()
        if left <= 0:
            return await run_in_threadpool(store.withdraw, request_id)
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, 0.5)


def install(app: FastAPI, settings: Settings, auth) -> None:
    """GET /v1/models, /v1/queues, /v1/evaluations, /v1/evaluations/compare, /v1/thumbnails, /v1/images/{sha256}."""

    @app.get("/v1/models", tags=["catalogue"])
    def models(caller: Caller = Depends(auth)) -> dict:
        """Each model with its presets (generation settings), workers online, queue depth per tier and recent
        throughput (captions per minute over the last 5 minutes)."""
        snap = fleet.snapshot(settings)
        presets = _presets()
        return {
            "models": [m | {"presets": presets.get(m["model"], {})} for m in snap["models"]],
            "tiers": list(snap["models"][0]["queues"]),
            "your_tier": caller.tier,
        }

    @app.get("/v1/queues", tags=["catalogue"])
    def queues(caller: Caller = Depends(auth)) -> dict:
        """Queue depth per model and tier, the evaluation and translation queues, every live worker, and
        Flower's address (operators log in there with its basic auth)."""
        return fleet.snapshot(settings) | {"flower_url": settings.flower_url}

    @app.get("/v1/evaluations", tags=["evaluations"])
    def evaluations(model: str | None = None, limit: str = "50", caller: Caller = Depends(auth)) -> dict:
        """Evaluation runs, newest first: scores (BLEU-1..4, ROUGE-L, CIDEr, METEOR) with 95% intervals.
        Scores are per model over every owner's captions; no caption or image is returned."""
        model = choices.check_model(plain("model", model)) if model is not None else None
        docs = EvaluationStore(settings).history(model, _int("limit", limit, 1, 500))
        return {"evaluations": [{k: v for k, v in d.items() if k != "last_caption_at"} for d in docs]}

    @app.get("/v1/evaluations/compare", tags=["evaluations"])
    async def compare(
        a: str = Query(..., description="model A"),
        b: str = Query(..., description="model B"),
        preset: str | None = None,
        caller: Caller = Depends(auth),
    ) -> dict:
        """Paired bootstrap of model A against B on the images both captioned that have references:
        per score the difference, its 95% interval and a p-value."""
        a, b = choices.check_model(plain("a", a)), choices.check_model(plain("b", b))
        if a == b:
            raise BadInput("a and b must be two different models")
        # The metric code lives in the evaluation worker's image: the API asks it over the evaluation queue.
        answer = await _ask_eval_worker(settings, a, b, plain("preset", preset))
        if answer is None:
            raise ApiError(
                503,
                f"no evaluation worker answered within {settings.compare_wait_s:g} s: is `capq eval worker` "
                "running? (the comparison runs there; it may also be busy with a scheduled evaluation)",
            )
        if "error" in answer:
            raise ApiError(409, answer["error"])
        if "failure" in answer:
            raise ApiError(500, f"the comparison failed: {answer['failure']}")
        return answer["result"]

    @app.get("/v1/thumbnails", tags=["images"])
    def thumbnails(
        sha256: list[str] = Query(..., description=f"up to {MAX_THUMBS} of your images' sha256s"),
        caller: Caller = Depends(auth),
    ) -> dict:
        """JPEG thumbnails of several of your images in one request (a results page costs one request, not one
        per row): {"thumbnails": {sha256: "data:image/jpeg;base64,..."}}; shas not among yours are left out."""
        shas = list(dict.fromkeys(s.lower() for s in sha256))
        if len(shas) > MAX_THUMBS or any(not re.fullmatch(SHA_PATTERN, s) for s in shas):
            raise BadInput(f"give 1 to {MAX_THUMBS} sha256 values (64 hex characters each)")
        out = {}
        store = ImageStore(settings)
        for sha in sorted(CaptionHistory(settings).owned_shas(caller.owner, shas)):
            try:
                out[sha] = "data:image/jpeg;base64," + base64.b64encode(thumbnail(store.get(sha))).decode()
            except NotFound:
                continue
        return {"thumbnails": out}

    @app.get(
        "/v1/images/{sha256}",
        tags=["images"],
        responses={200: {"content": {"image/jpeg": {}, "application/octet-stream": {}}}},
    )
    def image(
        sha256: str = Path(..., pattern=SHA_PATTERN),
        size: str = Query("full", pattern="^(full|thumb)$"),
        caller: Caller = Depends(auth),
    ) -> Response:
        """One of your images by sha256: its bytes, or a JPEG thumbnail (size=thumb). Anyone else's is 404."""
        sha = sha256.lower()
        missing = NotFound(f"no image {sha[:12]}... among yours; images are named by the sha256 your results show")
        if not CaptionHistory(settings).owned_shas(caller.owner, [sha]):
            raise missing
        try:
            data = ImageStore(settings).get(sha)
        except NotFound:
            raise missing from None
        if size == "thumb":
            return Response(
                thumbnail(data), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
            )
        return Response(
            data, media_type="application/octet-stream", headers={"Cache-Control": "private, max-age=86400"}
        )
