"""queries: job status, results, job lists and caption history, each scoped to an owner and fed only plain values."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from capq.settings import Settings
from producer import choices
from producer.errors import BadInput
from producer.eta import with_etas
from producer.sources import SHA256
from producer.waiting import annotate
from storage.errors import NotFound, ServiceUnreachable
from storage.history import CaptionHistory
from storage.jobs import JobStore
from storage.usage import UsageStore

MAX_LIMIT = 1000
_AGE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
RESULT_FIELDS = ("sha256", "file_name", "model", "preset", "caption", "status", "error")  # CSV columns


def plain(name: str, value):
    """A filter value must be a plain string or number: a dict, list or '$'-operator could rewrite the query."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadInput(
            f"{name} must be a plain string or number, not {type(value).__name__}; "
            'query operators such as {"$ne": null} are not accepted'
        )
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "[", "$"):
        raise BadInput(
            f"{name} must be a plain value, not a JSON object or operator ({value[:40]!r}); "
            'query operators such as {"$ne": null} are not accepted'
        )
    return value


def _int(name: str, value, low: int, high: int) -> int:
    value = plain(name, value)
    try:
        number = int(value)
        if isinstance(value, float) and number != value:
            raise ValueError
    except (TypeError, ValueError):
        raise BadInput(f"{name} must be a whole number from {low} to {high}, got {value!r}") from None
    if not low <= number <= high:
        raise BadInput(f"{name} must be from {low} to {high}, got {number}")
    return number


def parse_since(value, now: datetime | None = None) -> datetime:
    """ISO time ('2024-05-01', '2024-05-01T12:00:00Z'), epoch seconds, or an age such as '30m', '2h', '7d'."""
    value = plain("since", value)
    now = now or datetime.now(UTC)
    hint = "since must be an ISO time like 2024-05-01T12:00:00Z, epoch seconds, or an age like 30m, 2h, 7d"
    if isinstance(value, (int, float)) or (isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value.strip())):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            raise BadInput(f"{hint}; got {value!r}") from None
    age = _AGE.match(value.strip())
    if age:
        try:
            return now - timedelta(seconds=int(age.group(1)) * _UNITS[age.group(2)])
        except (OverflowError, ValueError):
            raise BadInput(f"{hint}; the age {value!r} reaches before year 1") from None
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadInput(f"{hint}; got {value!r}") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def image_sha(value, allow_files: bool) -> str:
    """A sha256, or (CLI only) a local file whose bytes are hashed; the API never opens paths."""
    value = plain("image", value)
    text = str(value).strip()
    if SHA256.match(text.lower()):
        return text.lower()
    if allow_files and Path(text).is_file():
        return hashlib.sha256(Path(text).read_bytes()).hexdigest()
    what = "a sha256 (64 hex characters) or an existing image file" if allow_files else "a sha256 (64 hex characters)"
    raise BadInput(f"image must be {what}; got {text[:80]!r}")


def encode_cursor(item: dict) -> str:
    ms = int(item["updated_at"].timestamp() * 1000)
    return base64.urlsafe_b64encode(f"{ms}:{item['_id']}".encode()).decode().rstrip("=")


def decode_cursor(cursor) -> tuple[datetime, str]:
    cursor = plain("cursor", cursor)
    try:
        raw = base64.urlsafe_b64decode(str(cursor) + "=" * (-len(str(cursor)) % 4)).decode()
        ms, item_id = raw.split(":")
        if not re.fullmatch(r"[0-9a-f]{24}", item_id):
            raise ValueError
        return datetime.fromtimestamp(int(ms) / 1000, UTC), item_id
    except (ValueError, OverflowError, OSError, binascii.Error, UnicodeDecodeError):
        raise BadInput("cursor is not one this service returned; pass next_cursor from the previous page") from None


def _iso(value):
    return value.isoformat() if isinstance(value, datetime) else value


def public_job(job: dict) -> dict:
    return {
        "job_id": job["_id"],
        "owner": job["owner"],
        "tier": job["tier"],
        "models": job["models"],
        "preset": job["preset"],
        "state": job["state"],
        "counts": job.get("counts", {}),
        "rejected": job.get("rejected", []),
        "created_at": _iso(job.get("created_at")),
        "updated_at": _iso(job.get("updated_at")),
        "finished_at": _iso(job.get("finished_at")),
    }


def owned_job(jobs: JobStore, job_id, owner: str | None) -> dict:
    """The job if `owner` (None: anyone, for operators) owns it; another owner's job is 'not found' too."""
    job_id = choices.check_job_id(plain("job", job_id))
    missing = NotFound(f"no job {job_id!r} among yours; use the job_id that submit returned (list: jobs)")
    try:
        job = jobs.get(job_id)
    except NotFound:
        raise missing from None
    if owner is not None and job["owner"] != owner:
        raise missing
    return job


def job_status(settings: Settings, job_id, owner: str | None = None) -> dict:
    """The job with exact counts (recomputed from its items) and its rejected files."""
    jobs = JobStore(settings)
    owned_job(jobs, job_id, owner)
    jobs_ = annotate(settings, [public_job(jobs.refresh_counts(job_id))])  # with `waiting` (issue 11)
    return with_etas(settings, jobs_)[0] | {"gpu_s": UsageStore(settings).job_gpu_s(job_id)}


def results(settings: Settings, job_id, owner: str | None = None, page: int = 1000) -> Iterator[dict]:
    """One record per image x model, read page by page so a large job never sits in memory at once."""
    jobs = JobStore(settings)
    job = owned_job(jobs, job_id, owner)
    skip = 0
    while True:
        batch = jobs.items_of(job["_id"], skip=skip, limit=page)
        for item in batch:
            row = {
                "sha256": item["sha256"],
                "file_name": item.get("file_name"),
                "model": item["model"],
                "preset": item["preset"],
                "caption": item.get("caption"),
                "status": item["state"],
                "error": item.get("error"),
            }
            yield row | ({"meta": item["meta"]} if item.get("meta") else {})
        if len(batch) < page:
            return
        skip += page


def list_jobs(settings: Settings, owner: str | None = None, limit=50) -> list[dict]:
    owner = choices.check_owner(plain("owner", owner)) if owner is not None else None
    jobs_ = [public_job(j) for j in JobStore(settings).list(owner, _int("limit", limit, 1, MAX_LIMIT))]
    return with_etas(settings, annotate(settings, jobs_))


def history(
    settings: Settings,
    owner: str,
    image=None,
    model=None,
    job=None,
    since=None,
    limit=50,
    page=None,
    cursor=None,
    allow_files: bool = False,
) -> dict:
    """Captions of `owner`, newest first. Pages by `page` (1-based, skips) or by `cursor` (next_cursor of the
    previous page; stable while new captions arrive). -> {"items": [...], "next_cursor": str | None}."""
    owner = choices.check_owner(owner)
    sha = image_sha(image, allow_files) if image is not None else None
    model = choices.check_model(plain("model", model)) if model is not None else None
    job_id = choices.check_job_id(plain("job", job)) if job is not None else None
    since_at = parse_since(since) if since is not None else None
    limit = _int("limit", limit, 1, MAX_LIMIT)
    if page is not None and cursor is not None:
        raise BadInput("give page or cursor, not both")
    skip = (_int("page", page, 1, 1_000_000) - 1) * limit if page is not None else 0
    before = decode_cursor(cursor) if cursor is not None else None
    rows = CaptionHistory(settings).find(
        owner, sha256=sha, model=model, job_id=job_id, since=since_at, before=before, skip=skip, limit=limit
    )
    items = [
        {
            "sha256": r["sha256"],
            "file_name": r.get("file_name"),
            "model": r["model"],
            "preset": r.get("preset"),
            "caption": r.get("caption"),
            "job_id": r["job_id"],
            "checkpoint": r.get("checkpoint"),
            "updated_at": _iso(r.get("updated_at")),
        }
        | ({"meta": r["meta"]} if r.get("meta") else {})
        for r in rows
    ]
    return {"items": items, "next_cursor": encode_cursor(rows[-1]) if len(rows) == limit else None}


def wait_job(
    settings: Settings,
    job_id,
    owner: str | None = None,
    on_update=lambda job: None,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
    on_blip=lambda exc: None,
) -> dict:
    """Poll the job's exact status until it is done or cancelled (or `timeout_s` passes); returns the last status."""
    import time

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    job = None
    while True:
        try:
            job = job_status(settings, job_id, owner)
        except ServiceUnreachable as exc:
            # A blip of the database is no reason to stop waiting (issue 11): say so and poll on.
            on_blip(exc)
            if job is None and deadline is not None and time.monotonic() > deadline:
                raise
        else:
            on_update(job)
            if job["state"] in ("done", "cancelled"):
                return job
        if deadline is not None and time.monotonic() > deadline:
            return job
        time.sleep(poll_s)


def cancel_job(settings: Settings, job_id, owner: str | None = None) -> dict:
    """Issue 11: cancel the owner's job: what is queued is never captioned, finished results stay.
    -> the job's status with `cancelled_now` (items this call closed). Raises AlreadyFinished for a done job."""
    jobs = JobStore(settings)
    job = owned_job(jobs, job_id, owner)
    n = jobs.cancel(job["_id"])
    return job_status(settings, job["_id"], owner) | {"cancelled_now": n}
