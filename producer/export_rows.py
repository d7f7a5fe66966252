"""export_rows: one row per image with a caption column per model and preset, read page by page for exports."""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from capq.settings import Settings
from producer import choices
from producer.errors import BadInput
from producer.queries import owned_job, parse_since, plain
from storage.db import mongo
from storage.jobs import JobStore

PAGE = 1000
# Lookups by a list of images go out in lists of this many: the test stack's wire server answers an $in of
# 1000 values 40x slower than ten of 100 (docs/benchmarks.md).
IN_BATCH = 100


def column(kind: str, model: str, preset: str) -> str:
    """`caption_blip_default`: model names use '-' (vit-gpt2), which datasets and SQL dislike in column names."""
    return f"{kind}_{model}_{preset}".replace("-", "_")


@dataclass
class Selection:
    """What to export: one job of the owner's, or the owner's captions by model and/or since a time."""

    owner: str
    job_id: str | None = None
    model: str | None = None
    since: datetime | None = None
    runs: tuple[tuple[str, str], ...] = ()  # (model, preset) pairs, one caption column each

    def describe(self) -> str:
        if self.job_id:
            return f"job {self.job_id}"
        parts = [f"model {self.model}" if self.model else "", f"since {self.since.isoformat()}" if self.since else ""]
        return f"captions of {self.owner}" + (" (" + ", ".join(p for p in parts if p) + ")" if any(parts) else "")


def select(settings: Settings, owner: str, job=None, model=None, since=None) -> Selection:
    """Check what the caller asked for (plain values only; another owner's job reads as missing)."""
    owner = choices.check_owner(owner)
    if job is not None:
        if model is not None or since is not None:
            raise BadInput("export a job, or filter by --model/--since, not both")
        found = owned_job(JobStore(settings), job, owner)
        return Selection(owner, job_id=found["_id"], runs=tuple((m, found["preset"]) for m in found["models"]))
    sel = Selection(
        owner,
        model=choices.check_model(plain("model", model)) if model is not None else None,
        since=parse_since(since) if since is not None else None,
    )
    groups = mongo(settings)["job_results"].aggregate(
        [{"$match": _owner_query(sel)}, {"$group": {"_id": {"m": "$model", "p": "$preset"}}}]
    )
    sel.runs = tuple(sorted((g["_id"]["m"], g["_id"]["p"]) for g in groups))
    return sel


def _owner_query(sel: Selection) -> dict:
    query: dict = {"owner": sel.owner, "state": "done"}
    if sel.model:
        query["model"] = sel.model
    if sel.since:
        query["updated_at"] = {"$gte": sel.since}
    return query


def _row(sha: str, file_name, meta, job_id, created_at, runs, results: dict) -> dict:
    """results: {(model, preset): result doc}."""
    row = {
        "sha256": sha,
        "file_name": file_name,
        "key": (meta or {}).get("key"),
        "job_id": job_id,
        "meta": json.dumps(meta, sort_keys=True, default=str) if meta else None,
        "created_at": created_at,
        "updated_at": max((r["updated_at"] for r in results.values() if r.get("updated_at")), default=None),
    }
    for model, preset in runs:
        got = results.get((model, preset), {})
        row[column("caption", model, preset)] = got.get("caption") if got.get("state") == "done" else None
        row[column("checkpoint", model, preset)] = got.get("checkpoint")
    return row


ITEM_FIELDS = {"_id": 0, "sha256": 1, "model": 1, "preset": 1, "seq": 1, "file_name": 1, "meta": 1, "created_at": 1}
RESULT_FIELDS = {"_id": 0, "sha256": 1, "state": 1, "caption": 1, "checkpoint": 1, "updated_at": 1}
LOOKUP_THREADS = 4  # result lookups in flight at once: the wire server answers several faster than one at a time


def _item_pages(settings: Settings, sel: Selection) -> Iterator[list[dict]]:
    """The job's items of its first run (model, preset), PAGE at a time in submission order, from one cursor."""
    first = sel.runs[0]
    # Only (job_id, seq) in the filter: the index that walks the sequence (with the model in it as well,
    # the test stack's server took the unique index and sorted the whole job).
    cursor = (
        mongo(settings)["job_items"]
        .find({"job_id": sel.job_id, "seq": {"$gt": -1}}, ITEM_FIELDS)
        .sort("seq", 1)
        .batch_size(PAGE * len(sel.runs))
    )
    page: list[dict] = []
    for it in cursor:
        if (it["model"], it["preset"]) == first:
            page.append(it)
            if len(page) == PAGE:
                yield page
                page = []
    if page:
        yield page


def _lookup(settings: Settings, job_id: str, run: tuple[str, str], shas: list[str]) -> list[dict]:
    return list(
        mongo(settings)["job_results"].find(
            {"job_id": job_id, "model": run[0], "preset": run[1], "sha256": {"$in": shas}}, RESULT_FIELDS
        )
    )


def _job_rows(settings: Settings, sel: Selection) -> Iterator[dict]:
    """Every image of the job in submission order (the items of its first model), a page of images at a time.

    The next page's items are read, and its results looked up (IN_BATCH shas per query, LOOKUP_THREADS at a
    time), while the current page is turned into rows; at most two pages are held."""

    def lookups(page: list[dict]) -> list:
        shas = [it["sha256"] for it in page]
        return [
            (run, pool.submit(_lookup, settings, sel.job_id, run, shas[start : start + IN_BATCH]))
            for run in sel.runs
            for start in range(0, len(shas), IN_BATCH)
        ]

    def page_rows(page: list[dict], pending: list) -> Iterator[dict]:
        found: dict[str, dict] = {}
        for run, future in pending:
            for r in future.result():
                found.setdefault(r["sha256"], {})[run] = r
        for it in page:
            yield _row(
                it["sha256"],
                it.get("file_name"),
                it.get("meta"),
                sel.job_id,
                it.get("created_at"),
                sel.runs,
                found.get(it["sha256"], {}),
            )

    with ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="export") as pool:
        ahead: collections.deque = collections.deque()
        for page in _item_pages(settings, sel):
            ahead.append((page, lookups(page)))
            if len(ahead) == 2:
                yield from page_rows(*ahead.popleft())
        while ahead:
            yield from page_rows(*ahead.popleft())


def _owner_rows(settings: Settings, sel: Selection) -> Iterator[dict]:
    """The owner's finished captions grouped by image (sorted by sha256, newest caption per model and preset)."""
    cur = mongo(settings)["job_results"].find(_owner_query(sel), {"_id": 0}).sort([("sha256", 1), ("updated_at", -1)])
    sha, results, first = None, {}, None
    for r in cur:
        if r["sha256"] != sha:
            if sha is not None:
                yield _row(
                    sha,
                    first.get("file_name"),
                    first.get("meta"),
                    first["job_id"],
                    first.get("updated_at"),
                    sel.runs,
                    results,
                )
            sha, results, first = r["sha256"], {}, r
        results.setdefault((r["model"], r["preset"]), r)
        first = first if first["updated_at"] <= r["updated_at"] else r  # created_at: its earliest caption
    if sha is not None:
        yield _row(
            sha, first.get("file_name"), first.get("meta"), first["job_id"], first.get("updated_at"), sel.runs, results
        )


def rows(settings: Settings, sel: Selection) -> Iterator[dict]:
    """The selection's rows, streamed: a job's images in submission order, an owner's by sha256."""
    if sel.job_id:
        return _job_rows(settings, sel)
    return _owner_rows(settings, sel)
