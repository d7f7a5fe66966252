"""pipeline: caption one shard of image ids (fetch, decode, batch, generate, upsert); no Celery here."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from capq.imaging import InvalidImage, PixelBudget, decode_rgb
from capq.presets import config_hash, get_preset
from capq.tracing import current as current_trace_id
from storage.blobs import ImageStore, sha256_hex
from storage.captions import CaptionStore
from storage.errors import NotFound
from storage.jobs import JobStore
from storage.owners import discard_late_writes


@dataclass
class Worker:
    """What one worker process holds for its whole life: its pinned model and its store clients."""

    model: str
    checkpoint: str
    captioner: Any  # workers.adapters.base.Captioner, loaded
    images: ImageStore
    captions: CaptionStore
    jobs: JobStore
    worker_id: str
    batch_size: int
    max_pixels: int = 100_000_000  # CAPQ_MAX_IMAGE_PIXELS: images are re-checked here, not trusted
    fetch_threads: int = 8
    on_batch: Callable[[int, float], None] = lambda size, model_s: None
    on_failure: Callable[[str], None] = lambda reason: None
    usage: Any = None  # storage.usage.UsageStore: per owner/model/day sums (None: not recorded)
    device: str = "cpu"
    _pool: ThreadPoolExecutor = field(init=False, repr=False)
    # Issue 12: the process's decode budget (CAPQ_DECODE_BUDGET_PIXELS) and a JPEG's longest decoded side.
    decode_budget: PixelBudget | None = None
    max_side_px: int = 1024
    # With it, a cached caption is reused only for an owner who has it already (storage.history.CaptionHistory).
    history: Any = None

    def __post_init__(self):
        self._pool = ThreadPoolExecutor(self.fetch_threads, thread_name_prefix="fetch")


@dataclass
class Care:
    """Issue 11: what a shard knows of workers that died on it, and whom to tell as each batch starts."""

    deaths: dict[str, int] = field(default_factory=dict)  # sha256 -> times a worker died captioning it
    poison_deaths: int = 3  # at this many the image is failed, not captioned again
    batch_started: Callable[[list[str]], None] = lambda shas: None


@dataclass
class ShardResult:
    done: int = 0
    reused: int = 0
    failed: int = 0
    skipped: int = 0
    model_s: float = 0.0
    wall_s: float = 0.0

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def _fetch_one(w: Worker, sha: str) -> tuple[str, Any, str | None, float]:
    """-> (sha, preprocessed input or None, failure reason or None, fetch seconds). Passing faults raise."""
    t0 = time.perf_counter()
    try:
        data = w.images.get(sha)
        if sha256_hex(data) != sha:  # a stored object is trusted no more than an upload
            return sha, None, "corrupt: the stored bytes do not hash to the image's sha256", time.perf_counter() - t0
        image = decode_rgb(
            data, w.max_pixels, w.max_side_px, w.decode_budget, min_size=getattr(w.captioner, "draft_size", None)
        )
        return sha, w.captioner.preprocess(image), None, time.perf_counter() - t0
    except NotFound:
        return sha, None, "missing: image object not found in the object store", time.perf_counter() - t0
    except InvalidImage as exc:
        return sha, None, f"undecodable: {exc}", time.perf_counter() - t0


def _prefetched(w: Worker, batches: list[list[str]], ahead: int = 2) -> Iterator[list]:
    """Yield fetched batches in order while the next ones are already being fetched (I/O overlaps the model).

    Fetches go to the pool image by image, `ahead` batches deep, so the threads never wait for a batch's
    slowest image before starting on the next batch.
    """
    todo = iter(batches)
    pending: deque[list[Future]] = deque()

    def submit_next() -> None:
        batch = next(todo, None)
        if batch is not None:
            pending.append([w._pool.submit(_fetch_one, w, sha) for sha in batch])

    try:
        for _ in range(ahead):
            submit_next()
        while pending:
            futures = pending.popleft()
            submit_next()
            yield [f.result() for f in futures]
    finally:
        for futures in pending:  # the shard stopped early (a failure): drop what was not started
            for f in futures:
                f.cancel()


def _run_batch(
    w: Worker, job_id: str, preset_name: str, preset: dict, chash: str, fetched: list, result: ShardResult
) -> tuple[list[dict], list[dict]]:
    """Generate captions for the decodable images of one fetched batch; -> (caption docs, item outcomes)."""
    good = [(sha, x, fetch_s) for sha, x, reason, fetch_s in fetched if reason is None]
    bad = [(sha, reason) for sha, x, reason, _ in fetched if reason is not None]
    outcomes = [{"sha256": sha, "state": "failed", "error": reason, "worker_id": w.worker_id} for sha, reason in bad]
    for _, reason in bad:
        w.on_failure(reason.split(":", 1)[0])
    docs = []
    trace_id = current_trace_id()
    if good:
        t0 = time.perf_counter()
        texts = w.captioner.generate([x for _, x, _ in good], preset)
        model_s = time.perf_counter() - t0
        result.model_s += model_s
        w.on_batch(len(good), model_s)
        docs = [
            {
                "sha256": sha,
                "model": w.model,
                "checkpoint": w.checkpoint,
                "preset": preset_name,
                "config_hash": chash,
                "caption": text,
                "job_id": job_id,
                "worker_id": w.worker_id,
                "timings": {
                    "fetch_s": round(fetch_s, 4),
                    "model_s": round(model_s / len(good), 4),
                    "batch_size": len(good),
                },
                **({"trace_id": trace_id} if trace_id else {}),  # issue 18: the submission's trace
            }
            for (sha, _, fetch_s), text in zip(good, texts)
        ]
        # The batch's generate time, shared evenly among its images: what each caption cost.
        outcomes += [
            {
                "sha256": d["sha256"],
                "state": "done",
                "caption": d["caption"],
                "config_hash": chash,
                "checkpoint": w.checkpoint,
                "reused": False,
                "worker_id": w.worker_id,
                "gpu_s": model_s / len(good),
            }
            for d in docs
        ]
    result.done += len(good)
    result.failed += len(bad)
    return docs, outcomes


def _write(
    w: Worker, job: dict, preset_name: str, items: dict[str, dict], docs: list[dict], outcomes: list[dict]
) -> dict[str, int]:
    """Store captions, then the items' results; -> results newly recorded, per state."""
    if not outcomes:
        return {}
    # Caption first, then the result: a crash in between leaves the item open and its caption reusable.
    w.captions.insert_new(docs)
    new: list[dict] = []
    recorded = w.jobs.finish_items(
        job["_id"],
        job["owner"],
        w.model,
        preset_name,
        [items[out["sha256"]] | out for out in outcomes],
        on_new=new.extend,
    )
    if w.usage is not None:
        w.usage.add(job["owner"], job.get("tier", "free"), w.model, w.device, new)
    # The job may have been erased while this shard ran: then what was just written is undone.
    if discard_late_writes(w.jobs.mongo.db, job["_id"], job["owner"], [out["sha256"] for out in outcomes]):
        return {}
    return recorded


def caption_shard(w: Worker, job_id: str, preset_name: str, shas: list[str], care: Care | None = None) -> ShardResult:
    """Caption the still-open items of one shard. Idempotent: a redelivered shard redoes only what is open.

    With `care` from a shard that killed a worker before: images that did so `poison_deaths` times are failed,
    and the rest go one image a batch, so that a next death names its one image."""
    care = care or Care()
    t_start = time.perf_counter()
    result = ShardResult()
    preset = get_preset(w.model, preset_name)
    chash = config_hash(w.model, preset)
    # The shard's three lookups are independent round trips: they go out together on the (idle) fetch pool.
    job_f = w._pool.submit(w.jobs.get, job_id, ("state", "owner", "tier"))
    open_f = w._pool.submit(w.jobs.open_items, job_id, w.model, preset_name, shas)
    # A caption already made for the same image x model x config is reused, not recomputed.
    cached_f = w._pool.submit(w.captions.existing, shas, w.model, w.checkpoint, chash)
    open_items, cached = open_f.result(), cached_f.result()
    try:
        job = job_f.result()
    except NotFound:  # the job was erased after this shard was queued: nothing to do, nothing to write
        result.skipped = len(shas)
        return result
    result.skipped = len(shas) - len(open_items)
    items = {
        it["sha256"]: {"file_name": it.get("file_name")} | ({"meta": it["meta"]} if it.get("meta") else {})
        for it in open_items
    }
    recorded: Counter[str] = Counter()  # results newly recorded by this shard, per state
    if job.get("state") == "cancelled":
        # cancel() already closed every open item; these are items a racing submission added after it.
        recorded.update(
            _write(w, job, preset_name, items, [], [{"sha256": sha, "state": "cancelled"} for sha in items])
        )
        if recorded:
            w.jobs.settle(job_id, recorded, recount=True)
        result.skipped = len(shas)
        return result

    if w.history is not None and cached:
        # Another owner's caption of the same bytes is not handed over: an instant answer would tell this owner
        # that someone else submitted them. The caption is computed again (the stored one stays: same key).
        mine = w.history.captioned_shas(job["owner"], list(cached), w.model, preset_name)
        cached = {sha: doc for sha, doc in cached.items() if sha in mine}
    reused = [sha for sha in items if sha in cached]
    if reused:
        recorded.update(
            _write(
                w,
                job,
                preset_name,
                items,
                [],
                [
                    {
                        "sha256": sha,
                        "state": "done",
                        "caption": cached[sha]["caption"],
                        "config_hash": chash,
                        "checkpoint": w.checkpoint,
                        "reused": True,
                        "worker_id": w.worker_id,
                        "gpu_s": 0.0,
                    }
                    for sha in reused
                ],
            )
        )
        result.reused = len(reused)
    todo = [sha for sha in items if sha not in cached]
    poison = [sha for sha in todo if care.deaths.get(sha, 0) >= care.poison_deaths]
    if poison:
        for _ in poison:
            w.on_failure("poison")
        recorded.update(
            _write(
                w,
                job,
                preset_name,
                items,
                [],
                [
                    {
                        "sha256": sha,
                        "state": "failed",
                        "worker_id": w.worker_id,
                        "error": f"poison: the worker died while captioning this image {care.deaths[sha]} times",
                    }
                    for sha in poison
                ],
            )
        )
        result.failed += len(poison)
        todo = [sha for sha in todo if sha not in poison]

    size = 1 if care.deaths else w.batch_size
    batches = [todo[i : i + size] for i in range(0, len(todo), size)]
    # Writes run in a background thread, so fetch, model and database overlap. While one write is in
    # flight the next batches' results pile up and go in one bulk: a slow database gets bigger writes
    # instead of a longer queue. A failed write surfaces here and the (idempotent) shard is retried.
    writer = ThreadPoolExecutor(1, thread_name_prefix="write")
    in_flight = None
    docs: list[dict] = []
    outcomes: list[dict] = []
    try:
        for n, fetched in enumerate(_prefetched(w, batches)):
            # A cancel wins within one batch: no batch starts once the job is cancelled (one indexed read per
            # batch); cancel() itself closes the items left open.
            if n and w.jobs.get(job_id, ("state",)).get("state") == "cancelled":
                break
            care.batch_started([f[0] for f in fetched])
            new_docs, new_outcomes = _run_batch(w, job_id, preset_name, preset, chash, fetched, result)
            docs += new_docs
            outcomes += new_outcomes
            if in_flight is None or in_flight.done():
                if in_flight is not None:
                    recorded.update(in_flight.result())
                in_flight = writer.submit(_write, w, job, preset_name, items, docs, outcomes)
                docs, outcomes = [], []
        if in_flight is not None:
            recorded.update(in_flight.result())
        recorded.update(_write(w, job, preset_name, items, docs, outcomes))
    finally:
        writer.shutdown(wait=True)
    # A shard that found finished items is a redelivery: whatever its first run recorded may be missing
    # from the job's tallies, so the job is recounted exactly.
    try:
        w.jobs.settle(job_id, recorded, recount=result.skipped > 0)
    except NotFound:
        pass  # erased while it ran; _write undid this shard's writes
    result.wall_s = time.perf_counter() - t_start
    return result
