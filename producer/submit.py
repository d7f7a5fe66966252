"""submit: stream the inputs, validate each file, store each distinct image once, record and enqueue its items."""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field

from capq import tracing
from capq.celery_app import create_app
from capq.enqueue import enqueue_pending, forget_sent
from capq.imaging import ImageInfo, InvalidImage, decode_budget, inspect_image
from capq.settings import Settings
from producer import choices, quota
from producer.aliases import Route, expand
from producer.errors import BadInput
from producer.inputs import check_named, iter_inputs
from producer.sources import Candidate, Expanded
from producer.urls import FetchError
from storage.blobs import image_store, sha256_hex
from storage.errors import NotFound
from storage.history import CaptionHistory
from storage.images import ImageRecords
from storage.jobs import JobStore
from translation.results import check_lang

# (stage, done, total): stage is "validating" (once per input; total is the inputs read so far, final once the
# input is exhausted), then "recorded" and "enqueued" (once each).
log = logging.getLogger("capq.producer")
Progress = Callable[[str, int, int], None]


@dataclass
class SubmitResult:
    """What one submit() call did. A resumed submission reports only what this call added or sent."""

    job_id: str
    created: bool
    state: str
    models: list[str]
    tier: str
    preset: str
    accepted: int = 0  # distinct images that passed validation
    duplicates: int = 0  # files whose bytes repeat an earlier file of this submission
    uploaded: int = 0  # images new to this owner (never whether another owner stored the same bytes)
    new_items: int = 0  # image x model items added to the job by this call
    enqueued: int = 0  # image x model items sent to queues by this call (a resume sends what was left)
    rejected: list[dict] = field(default_factory=list)  # the first 1000, in input order
    counts: dict = field(default_factory=dict)
    rejected_total: int = 0  # every rejection of this call (all are recorded on the job)
    trace_id: str | None = None  # issue 18: follow it in every service's logs

    def as_dict(self) -> dict:
        return asdict(self)


@functools.cache
def celery_app(settings: Settings):
    """The workers' Celery app configured for these settings (same broker options, so queues match)."""
    return create_app(settings)


def _check_resume(job: dict, owner: str, tier: str, models: list[str], preset: str) -> None:
    if job["owner"] != owner:
        raise BadInput(f"job id {job['_id']!r} is already taken; choose another --job-id")
    if job["state"] == "cancelled":
        raise BadInput(f"job {job['_id']!r} was cancelled; submit again with a new job id")
    if (job["tier"], list(job["models"]), job["preset"]) != (tier, models, preset):
        raise BadInput(
            f"job {job['_id']!r} was submitted with models={','.join(job['models'])} tier={job['tier']} "
            f"preset={job['preset']}; resubmit with the same options to resume it, or use a new job id"
        )


RECORD_QUEUE_CHUNKS = 4  # chunks waiting for the MongoDB writer before reading stops (backpressure)
RECENT_SHAS = 65_536  # distinct images remembered to skip repeated uploads; beyond, the job's unique keys dedupe
KEPT_REJECTIONS = 1000  # rejections returned in SubmitResult; all of them are recorded on the job
READY_PER_WINDOW = 16  # finished outcomes that may wait for a slower earlier one, per window slot


class _Recorder:
    """Records accepted images and their job items in chunks on one writer thread, so MongoDB writes overlap the
    uploads. The queue to it is bounded: when MongoDB falls behind, reading the input waits. After each chunk
    the items recorded so far are sent to the queues, so a long submission feeds workers as it goes; the last
    chunk is sent by the caller once everything is recorded."""

    def __init__(
        self,
        settings: Settings,
        jobs: JobStore,
        job_id: str,
        owner: str,
        models: list[str],
        preset: str,
        send: Callable[[], int],
        route: Route | None = None,
    ):
        self.images, self.jobs, self.send, self.history = ImageRecords(settings), jobs, send, CaptionHistory(settings)
        self.job_id, self.owner, self.models, self.preset = job_id, owner, models, preset
        self.route = route or (lambda sha: models)  # issue 18: an alias picks each image's model by its sha256
        self.chunk_size = settings.submit_record_chunk
        self.queue: queue.Queue = queue.Queue(RECORD_QUEUE_CHUNKS)
        self.pending: list[tuple[dict, dict | None]] = []
        self.accepted = self.new = self.named = self.sent = self.new_to_owner = 0
        self.error: BaseException | None = None
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="record", daemon=True)
        self.thread.start()

    def add(self, record: dict, meta: dict | None) -> None:
        self.accepted += 1
        self.pending.append((record, meta))
        if len(self.pending) >= self.chunk_size:
            self._put((self.pending, True))
            self.pending = []

    def _put(self, entry) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(entry, timeout=0.2)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        while (entry := self.queue.get()) is not None:
            if self.stopping or self.error is not None:
                continue
            chunk, send = entry
            try:
                self._write(chunk)
                if send:
                    self.sent += self.send()
            except BaseException as exc:  # handed to the reading thread, which raises it
                self.error = exc

    def _write(self, chunk: list[tuple[dict, dict | None]]) -> None:
        fresh = [r for r, _ in chunk if "format" in r]  # known images have their record already
        self.images.record_many(fresh)
        # Asked before this chunk's items exist: "new" means new to this owner, whoever stored the bytes.
        owned = self.history.owned_shas(self.owner, [r["sha256"] for r in fresh])
        self.new_to_owner += sum(r["sha256"] not in owned for r in fresh)
        items = [
            {"sha256": r["sha256"], "model": m, "preset": self.preset, "file_name": r["file_name"], "meta": meta}
            for r, meta in chunk
            for m in self.route(r["sha256"])
        ]
        self.new += len(self.jobs.add_items(self.job_id, self.owner, items))
        self.named += len(items)

    def finish(self) -> tuple[int, int]:
        """Write what is left (not sent: the caller sends it) and wait; -> (items new to the job, items named)."""
        self._put((self.pending, False))
        self.pending = []
        self._put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.new, self.named

    def close(self) -> None:
        """After a failure: drop what is not written yet (a resume records it) and stop the writer."""
        if self.thread.is_alive():
            self.stopping = True
            self.queue.put(None)
            self.thread.join()


class _Recent:
    """The last RECENT_SHAS distinct images of this submission: memory stays flat however long the input."""

    def __init__(self, cap: int = RECENT_SHAS):
        self.cap, self.order, self.seen, self.lock = cap, collections.deque(), set(), threading.Lock()

    def first(self, sha: str) -> bool:
        with self.lock:
            if sha in self.seen:
                return False
            self.seen.add(sha)
            self.order.append(sha)
            if len(self.order) > self.cap:
                self.seen.discard(self.order.popleft())
            return True


class _Rejections:
    """Rejections recorded on the job in chunks as they come; the first KEPT_REJECTIONS are kept for the result."""

    def __init__(self, jobs: JobStore, job_id: str):
        self.jobs, self.job_id = jobs, job_id
        self.buffer: list[tuple[int, dict]] = []
        self.kept: list[tuple[int, dict]] = []
        self.total = 0

    def add(self, index: int, rejection: dict) -> None:
        self.total += 1
        self.buffer.append((index, rejection))
        if len(self.kept) < KEPT_REJECTIONS:
            self.kept.append((index, rejection))
        if len(self.buffer) >= KEPT_REJECTIONS:
            self.flush()

    def flush(self) -> None:
        # In the order the inputs were named, whatever order the threads finished in.
        self.jobs.record_rejections(self.job_id, [r for _, r in sorted(self.buffer, key=lambda x: x[0])])
        self.buffer = []

    def listed(self) -> list[dict]:
        return [r for _, r in sorted(self.kept, key=lambda x: x[0])]


def _check_one(settings: Settings, c: Candidate, recent: _Recent):
    """Read, hash and (first time this sha is seen) inspect and store one file. -> (sha, info, first)."""
    size = c.size() if c.size else None
    if size is not None and size > settings.max_image_bytes:
        raise InvalidImage(
            f"file is {size:,} bytes, over the {settings.max_image_bytes:,}-byte cap (CAPQ_MAX_IMAGE_BYTES)"
        )
    data = c.read()
    sha = sha256_hex(data)
    # Hashed before it is inspected: a copy of a file already in this submission costs no second decode.
    if not recent.first(sha):
        return sha, None, False
    info = inspect_image(
        data, settings.max_image_bytes, settings.max_image_pixels, decode_budget(settings.decode_budget_pixels)
    )
    image_store(settings).put(data, info.content_type, sha)
    return sha, info, True


def _failure(exc: BaseException) -> str | None:
    """The rejection reason for a per-item failure; None for a fault of a service (which stops the submission)."""
    if isinstance(exc, InvalidImage):
        return str(exc)
    if isinstance(exc, FetchError):
        return f"cannot fetch: {exc}"
    if isinstance(exc, NotFound):
        return "no such object in the bucket"
    if isinstance(exc, OSError):  # unreadable local file; service faults are not OSError and propagate
        return f"cannot read file: {exc.strerror or exc}"
    return None


def _record(sha: str, info: ImageInfo, name: str) -> dict:
    return {
        "sha256": sha,
        "size": info.size,
        "format": info.format,
        "width": info.width,
        "height": info.height,
        "file_name": name,
    }


class _Stream:
    """One submission's pipeline: a window of candidates in flight on the upload threads, images named by sha256
    checked in batches, and every outcome released in input order (so a job's items keep the order of its
    input: shards stay contiguous in exports) to the recorder or the job's rejections."""

    def __init__(
        self, settings: Settings, owner: str, recorder: _Recorder, rejections: _Rejections, progress: Progress
    ):
        self.settings, self.owner, self.recorder, self.rejections = settings, owner, recorder, rejections
        self.progress, self.history = progress, CaptionHistory(settings)
        self.recent = _Recent()
        self.inflight: dict = {}
        self.known: list[tuple[int, Candidate]] = []
        # Finished outcomes waiting for an earlier, slower one; small records (the bytes are gone), bounded.
        self.ready: dict[int, tuple] = {}
        self.ready_max = READY_PER_WINDOW * settings.submit_window
        self.read = self.next = self.duplicates = 0

    def run(self, items: Iterable) -> None:
        pool = ThreadPoolExecutor(self.settings.upload_concurrency, thread_name_prefix="submit")
        try:
            for index, got in enumerate(items):
                self.read += 1
                if isinstance(got, dict):
                    self.ready[index] = ("rejected", got)
                elif got.sha256 is not None:
                    self.known.append((index, got))
                    if len(self.known) >= self.settings.submit_record_chunk:
                        self._known()
                else:
                    while len(self.inflight) >= self.settings.submit_window or len(self.ready) >= self.ready_max:
                        self._unblock()
                    self.inflight[pool.submit(_check_one, self.settings, got, self.recent)] = (index, got)
                self._release()
            while self.inflight or self.known:
                self._unblock()
        finally:
            # A failure (or an interrupting callback) must not wait for the whole window.
            pool.shutdown(wait=True, cancel_futures=True)

    def _unblock(self) -> None:
        """Make progress on what holds the release back: the pending sha256 batch, or the next upload to finish."""
        if self.known and (not self.inflight or self.known[0][0] == self.next):
            self._known()
        else:
            self._collect()
        self._release()

    def _collect(self) -> None:
        finished, _ = wait(list(self.inflight), return_when=FIRST_COMPLETED)
        for future in finished:
            index, c = self.inflight.pop(future)
            try:
                self.ready[index] = ("checked", c, future.result())
            except Exception as exc:
                reason = _failure(exc)
                if reason is None:
                    raise
                self.ready[index] = ("rejected", {"file": c.name, "reason": reason})

    def _known(self) -> None:
        """Images named by sha256: accepted only if this owner submitted them before (no bytes are read)."""
        batch, self.known = self.known, []
        shas = [c.sha256 for _, c in batch]
        # The name this owner gave the image, never another owner's name for the same bytes.
        owned = self.history.owned_names(self.owner, shas)
        for index, c in batch:
            if c.sha256 in owned:
                self.ready[index] = ("known", c, owned[c.sha256] or c.name)
            else:
                self.ready[index] = (
                    "rejected",
                    {"file": c.name, "reason": "not among your images: submit the file itself first"},
                )

    def _release(self) -> None:
        while self.next in self.ready:
            outcome = self.ready.pop(self.next)
            if outcome[0] == "rejected":
                self.rejections.add(self.next, outcome[1])
            elif outcome[0] == "known":
                _, c, name = outcome
                if self.recent.first(c.sha256):
                    self.recorder.add({"sha256": c.sha256, "file_name": name}, c.meta)
                else:
                    self.duplicates += 1
            else:
                _, c, (sha, info, first) = outcome
                if first:
                    self.recorder.add(_record(sha, info, c.name), c.meta)
                else:
                    self.duplicates += 1
            self.next += 1
            self.progress("validating", self.next, self.read)


def _items(settings: Settings, paths_or_uploads, owner: str, allow_local: bool) -> Iterable:
    if isinstance(paths_or_uploads, Expanded):
        return itertools.chain(paths_or_uploads.rejected, paths_or_uploads.candidates)
    if not allow_local:
        paths_or_uploads = list(paths_or_uploads)
        if any(not isinstance(p, Candidate) for p in paths_or_uploads):
            raise BadInput("this entry point reads only uploads and s3:// keys, never server paths")
    elif isinstance(paths_or_uploads, (list, tuple)):
        check_named(paths_or_uploads, settings, owner)
    return iter_inputs(paths_or_uploads, settings, owner)


@dataclass(frozen=True)
class SubmitRequest:
    """What a caller asks of submit(): the models and the job's options (None: the settings' default).

    :param allow_local: False for callers that must never read server-local paths (the API).
    :param translate: a language code: each caption is also translated into it, by the translation worker.
    """

    models: str | Iterable[str]
    tier: str | None = None
    preset: str | None = None
    owner: str = "local"
    job_id: str | None = None
    idempotency_key: str | None = None
    allow_local: bool = True
    translate: str | None = None


def submit(
    settings: Settings,
    paths_or_uploads: Iterable[str | os.PathLike | Candidate] | Expanded,
    request: SubmitRequest | str | Iterable[str] | None = None,
    progress: Progress | None = None,
    on_job: Callable[[str, bool], None] | None = None,
    **options,
) -> SubmitResult:
    """Submit images for captioning by the request's models; safe to repeat: the same job id or idempotency key
    resumes. `request` is a SubmitRequest, or its models with its other fields as keywords
    (`submit(settings, paths, "blip", owner="alice")`).

    :param paths_or_uploads: local paths/folders/manifests/shards/s3:// URIs and prefixes (CLI), or Candidates
        (API uploads/items), or any iterable of them: read lazily, so its length is not bounded by memory.
    :param on_job: called with (job id, created) once the job exists, before any input is read, so a caller
        can show the id that resumes an interrupted submission.
    Inputs stream through a window of CAPQ_SUBMIT_WINDOW candidates in flight; accepted images are recorded in
    chunks of CAPQ_SUBMIT_RECORD_CHUNK and sent to the queues as they are recorded. Bad files are listed in
    `rejected` (the first 1000; all are recorded on the job) and the job goes on with the rest. An image is
    queued at most once per model x preset within a job, however often the submission is repeated. A job with
    no accepted image finishes at once (state done). The job stays 'submitting' until the input is exhausted.
    Raises BadInput for unknown models/tier/preset and bad names; storage errors when a service is down
    (the job stays resumable).
    """
    if isinstance(request, SubmitRequest):
        if options:
            raise TypeError(f"submit() takes a SubmitRequest or keywords, not both: {sorted(options)}")
    else:
        request = SubmitRequest(**({"models": request} if request is not None else {}), **options)
    models, tier, preset, owner = request.models, request.tier, request.preset, request.owner
    job_id, idempotency_key, translate = request.job_id, request.idempotency_key, request.translate
    progress = progress or (lambda stage, done, total: None)
    models, route, aliases = expand(settings, list(models) if not isinstance(models, str) else models)
    tier = choices.check_tier(tier or settings.default_tier)
    preset = choices.check_preset(models, preset or settings.default_preset)
    owner = choices.check_owner(owner)
    if job_id is not None:
        choices.check_job_id(job_id)
    if idempotency_key is not None:
        choices.check_key(idempotency_key)
    quota.check(settings, owner, tier)  # issue 15: 429 / exit 2 with the reset time
    if translate is not None:
        translate = check_lang(translate)
    items = _items(settings, paths_or_uploads, owner, request.allow_local)

    jobs = JobStore(settings)
    trace_id = tracing.current() or tracing.new_trace_id()  # issue 18: the API request's, or this submission's own
    job, created = jobs.create(
        owner,
        tier,
        models,
        preset,
        job_id=job_id,
        idempotency_key=idempotency_key,
        meta={"trace_id": trace_id}
        | ({"aliases": aliases} if aliases else {})
        | ({"translate": translate} if translate else {}),
    )
    if not created:
        _check_resume(job, owner, tier, models, preset)
    job_id = job["_id"]
    if created:
        forget_sent(celery_app(settings), job_id)
    if on_job is not None:
        on_job(job_id, created)

    shard = settings.batch_size * settings.shard_batches

    def send() -> int:
        with tracing.bound(trace_id):  # the shards carry it to the workers (the recorder thread sends too)
            return enqueue_pending(celery_app(settings), jobs, job_id, tier, shard)

    rejections = _Rejections(jobs, job_id)
    recorder = _Recorder(settings, jobs, job_id, owner, models, preset, send, route)
    stream = _Stream(settings, owner, recorder, rejections, progress)
    try:
        stream.run(items)
        new_items, named = recorder.finish()
    finally:
        recorder.close()
    quota.charge(settings, owner, new_items)
    rejections.flush()
    progress("recorded", new_items, named)

    sent = recorder.sent + send()
    log.info("job %s: %d item(s) recorded, %d enqueued", job_id, new_items, sent, extra={"job_id": job_id})
    progress("enqueued", sent, sent)
    if sent or job["state"] == "submitting":
        jobs.set_state(job_id, "queued")
    job = jobs.refresh_counts(job_id)
    return SubmitResult(
        job_id=job_id,
        created=created,
        state=job["state"],
        models=models,
        tier=tier,
        preset=preset,
        accepted=recorder.accepted,
        duplicates=stream.duplicates,
        uploaded=recorder.new_to_owner,
        new_items=new_items,
        enqueued=sent,
        rejected=rejections.listed(),
        rejected_total=rejections.total,
        counts=job["counts"],
        trace_id=trace_id,
    )
