"""submit: validate every file, store each distinct image once, record the job's items, then enqueue them."""
from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

from capq.imaging import ImageInfo, InvalidImage, decode_budget, inspect_image
from capq.settings import Settings
from producer import choices, quota
from producer.errors import BadInput
from producer.sources import Candidate, Expanded, from_paths
from storage.blobs import image_store, sha256_hex
from storage.errors import NotFound
from storage.jobs import JobStore

# (stage, done, total): stage is "validating" (once per file), then "recorded" and "enqueued" (once each).
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
    accepted: int = 0      # distinct images that passed validation
    duplicates: int = 0    # files whose bytes repeat an earlier file of this submission
    uploaded: int = 0      # images new to this owner (never whether another owner stored the same bytes)
    new_items: int = 0     # image x model items added to the job by this call
    enqueued: int = 0      # image x model items sent to queues by this call (a resume sends what was left)
    rejected: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@functools.cache
def celery_app(settings: Settings):
    """The workers' Celery app configured for these settings (same broker options, so queues match)."""
    from workers.celery_app import create_app

    return create_app(settings)


def _check_resume(job: dict, owner: str, tier: str, models: list[str], preset: str) -> None:
    if job["owner"] != owner:
        raise BadInput(f"job id {job['_id']!r} is already taken; choose another --job-id")
    if job["state"] == "cancelled":
        raise BadInput(f"job {job['_id']!r} was cancelled; submit again with a new job id")
    if (job["tier"], list(job["models"]), job["preset"]) != (tier, models, preset):
        raise BadInput(f"job {job['_id']!r} was submitted with models={','.join(job['models'])} tier={job['tier']} "
                       f"preset={job['preset']}; resubmit with the same options to resume it, or use a new job id")


RECORD_CHUNK = 250  # images per MongoDB write while uploads go on


class _Recorder:
    """Records accepted images and their job items in chunks on one writer thread, so MongoDB writes overlap
    the uploads instead of following them. Each image is recorded once (the caller dedupes by sha256)."""

    def __init__(self, settings: Settings, jobs: JobStore, job_id: str, owner: str, models: list[str], preset: str):
        from storage.images import ImageRecords

        from storage.history import CaptionHistory

        self.images, self.jobs, self.history = ImageRecords(settings), jobs, CaptionHistory(settings)
        self.job_id, self.owner, self.models, self.preset = job_id, owner, models, preset
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="record")
        self.pending: list[tuple[dict, dict | None]] = []
        self.futures: list = []
        self.lock = threading.Lock()
        self.accepted = 0
        self.new_to_owner = 0

    def add(self, record: dict, meta: dict | None) -> None:
        self.accepted += 1
        self.pending.append((record, meta))
        if len(self.pending) >= RECORD_CHUNK:
            self.flush()

    def flush(self) -> None:
        chunk, self.pending = self.pending, []
        if chunk:
            self.futures.append(self.pool.submit(self._write, chunk))

    def _write(self, chunk: list[tuple[dict, dict | None]]) -> tuple[int, int]:
        fresh = [r for r, _ in chunk if "format" in r]  # known images have their record already
        self.images.record_many(fresh)
        # Asked before this chunk's items exist: "new" means new to this owner, whoever stored the bytes.
        owned = self.history.owned_shas(self.owner, [r["sha256"] for r in fresh])
        with self.lock:
            self.new_to_owner += sum(r["sha256"] not in owned for r in fresh)
        items = [{"sha256": r["sha256"], "model": m, "preset": self.preset, "file_name": r["file_name"], "meta": meta}
                 for r, meta in chunk for m in self.models]
        new = self.jobs.add_items(self.job_id, self.owner, items)
        return len(new), len(items)

    def finish(self) -> tuple[int, int]:
        """Wait for every write; -> (items new to the job, items named). Re-raises a failed write."""
        self.flush()
        done = [f.result() for f in self.futures]
        return sum(n for n, _ in done), sum(t for _, t in done)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Checked:
    seen: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    rejected: list[dict] = field(default_factory=list)
    duplicates: int = 0
    uploaded: int = 0

    def first(self, sha: str) -> bool:
        with self.lock:
            new = sha not in self.seen
            self.seen.add(sha)
            return new


def _check_one(settings: Settings, c: Candidate, checked: _Checked):
    """Read, inspect, hash and (first time this sha is seen) store one file. -> (sha, info, first, created)."""
    size = c.size() if c.size else None
    if size is not None and size > settings.max_image_bytes:
        raise InvalidImage(f"file is {size:,} bytes, over the {settings.max_image_bytes:,}-byte cap "
                           "(CAPQ_MAX_IMAGE_BYTES)")
    data = c.read()
    sha = sha256_hex(data)
    # Hashed before it is inspected: a copy of a file already in this submission costs no second decode.
    first = checked.first(sha)
    if not first:
        return sha, None, False, False
    info = inspect_image(data, settings.max_image_bytes, settings.max_image_pixels,
                         decode_budget(settings.decode_budget_pixels))
    created = image_store(settings).put(data, info.content_type, sha)[1]
    return sha, info, first, created


def _validate_and_store(settings: Settings, candidates: list[Candidate], checked: _Checked, recorder: _Recorder,
                        progress: Progress) -> None:
    failures: dict[int, str] = {}
    pool = ThreadPoolExecutor(settings.upload_concurrency, thread_name_prefix="submit")
    try:
        futures = {pool.submit(_check_one, settings, c, checked): i for i, c in enumerate(candidates)}
        for done, future in enumerate(as_completed(futures), 1):
            i = futures[future]
            try:
                sha, info, first, created = future.result()
            except InvalidImage as exc:
                failures[i] = str(exc)
            except NotFound:
                failures[i] = "no such object in the bucket"
            except OSError as exc:  # unreadable local file; service faults are not OSError and propagate
                failures[i] = f"cannot read file: {exc.strerror or exc}"
            else:
                checked.uploaded += created
                if first:
                    recorder.add(_record(sha, info, candidates[i].name), candidates[i].meta)
                else:
                    checked.duplicates += 1
            progress("validating", done, len(candidates))
    finally:
        # A failure (or an interrupting callback) must not wait for thousands of queued files.
        pool.shutdown(wait=True, cancel_futures=True)
    # Rejections in the order the files were named, whatever order the threads finished in.
    checked.rejected += [{"file": candidates[i].name, "reason": failures[i]} for i in sorted(failures)]


def _record(sha: str, info: ImageInfo, name: str) -> dict:
    return {"sha256": sha, "size": info.size, "format": info.format, "width": info.width,
            "height": info.height, "file_name": name}


def _known(settings: Settings, owner: str, candidates: list[Candidate], checked: _Checked,
           recorder: _Recorder) -> None:
    """Images named by sha256: accepted only if this owner submitted them before (no bytes are read)."""
    from storage.history import CaptionHistory

    owned = CaptionHistory(settings).owned_names(owner, [c.sha256 for c in candidates])
    for c in candidates:
        if c.sha256 not in owned:
            checked.rejected.append({"file": c.name, "reason": "not among your images: submit the file itself first"})
        elif not checked.first(c.sha256):
            checked.duplicates += 1
        else:
            # The name this owner gave the image, never another owner's name for the same bytes.
            recorder.add({"sha256": c.sha256, "file_name": owned[c.sha256] or c.name}, c.meta)


def submit(settings: Settings, paths_or_uploads: Sequence[str | os.PathLike | Candidate] | Expanded,
           models: str | Iterable[str], tier: str | None = None, preset: str | None = None, owner: str = "local",
           job_id: str | None = None, idempotency_key: str | None = None, progress: Progress | None = None,
           allow_local: bool = True, translate: str | None = None) -> SubmitResult:
    """Submit images for captioning by `models`; safe to repeat: the same job id or idempotency key resumes.

    :param paths_or_uploads: local paths/folders/manifests/s3:// URIs (CLI), or Candidates (API uploads/items).
    :param allow_local: False for callers that must never read server-local paths (the API).
    :param translate: a language code: each caption is also translated into it, by the translation worker.
    Every file is validated before anything is queued; bad files are listed in `rejected` and the job goes
    on with the rest. An image is queued at most once per model x preset within a job, however often the
    submission is repeated. A job with no accepted image finishes at once (state done).
    Raises BadInput for unknown models/tier/preset and bad names; storage errors when a service is down
    (the job stays resumable).
    """
    progress = progress or (lambda stage, done, total: None)
    models = choices.parse_models(list(models) if not isinstance(models, str) else models)
    tier = choices.check_tier(tier or settings.default_tier)
    preset = choices.check_preset(models, preset or settings.default_preset)
    owner = choices.check_owner(owner)
    if job_id is not None:
        choices.check_job_id(job_id)
    if idempotency_key is not None:
        choices.check_key(idempotency_key)
    quota.check(settings, owner, tier)  # issue 15: 429 / exit 2 with the reset time
    if translate is not None:
        from translation.results import check_lang

        translate = check_lang(translate)

    if isinstance(paths_or_uploads, Expanded):
        expanded = paths_or_uploads
    else:
        local = [p for p in paths_or_uploads if not isinstance(p, Candidate)]
        if local and not allow_local:
            raise BadInput("this entry point reads only uploads and s3:// keys, never server paths")
        expanded = from_paths(local, settings, owner)
        expanded.candidates += [p for p in paths_or_uploads if isinstance(p, Candidate)]

    jobs = JobStore(settings)
    job, created = jobs.create(owner, tier, models, preset, job_id=job_id, idempotency_key=idempotency_key,
                               meta={"translate": translate} if translate else None)
    if not created:
        _check_resume(job, owner, tier, models, preset)
    job_id = job["_id"]

    checked, recorder = _Checked(), _Recorder(settings, jobs, job_id, owner, models, preset)
    try:
        _validate_and_store(settings, [c for c in expanded.candidates if c.sha256 is None], checked, recorder,
                            progress)
        _known(settings, owner, [c for c in expanded.candidates if c.sha256 is not None], checked, recorder)
        new_items, named = recorder.finish()
    finally:
        recorder.close()
    quota.charge(settings, owner, new_items)
    rejected = expanded.rejected + checked.rejected
    jobs.record_rejections(job_id, rejected)
    progress("recorded", new_items, named)

    from producer.enqueue import enqueue_pending

    sent = enqueue_pending(celery_app(settings), jobs, job_id, tier, settings.batch_size * settings.shard_batches)
    progress("enqueued", sent, sent)
    if sent or job["state"] == "submitting":
        jobs.set_state(job_id, "queued")
    job = jobs.refresh_counts(job_id)
    return SubmitResult(job_id=job_id, created=created, state=job["state"], models=models, tier=tier, preset=preset,
                        accepted=recorder.accepted, duplicates=checked.duplicates, uploaded=recorder.new_to_owner,
                        new_items=new_items, enqueued=sent, rejected=rejected, counts=job["counts"])
