"""jobs_view: the owner's jobs with progress, expected finish, why a job waits, results, downloads and cancel."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import streamlit as st

from ui.client import Api
from ui.common import LANGUAGES, attempt, thumbnail_urls

CSV_FIELDS = ("sha256", "file_name", "model", "preset", "caption", "translation", "status", "error")
THUMBS = 50  # rows that get a thumbnail; a large job's table stays quick


def why_waiting(job: dict, catalogue: dict | None) -> list[str]:
    """Plain reasons a job still has queued items: no worker for a model, or work ahead of it in its tier."""
    if job["counts"].get("queued", 0) == 0 or job["state"] in ("done", "cancelled"):
        return []
    if catalogue is None:
        return ["queue state unknown (the model list could not be read)"]
    reasons = []
    by_model = {m["model"]: m for m in catalogue["models"]}
    for model in job["models"]:
        m = by_model.get(model)
        if m is None:
            continue
        if m["workers_online"] == 0:
            reasons.append(
                f"no worker is online for {model}: its items wait until one starts (`capq worker --model {model}`)"
            )
        else:
            ahead = m["queues"].get(job["tier"], 0)
            reasons.append(
                f"{model}: {m['workers_online']} worker(s) online, {ahead} shard(s) queued in the "
                f"{job['tier']} tier, about {m['captions_per_min']:g} captions/min lately"
            )
    return reasons


def _about(seconds: float) -> str:
    if seconds < 60:
        return "in under a minute"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"in about {minutes} min"
    h, m = divmod(minutes, 60)
    return f"in about {h} h {m} min" if m else f"in about {h} h"


def eta_words(eta: dict | None) -> str:
    """The API's `eta` (producer/eta.py) as a person reads it; "" for a finished job (it has none)."""
    if not eta:
        return ""
    if eta.get("eta_s") is None:
        return f"no estimate: {eta.get('reason') or 'unknown why'}"
    at = datetime.fromisoformat(eta["eta_at"])
    # a finish on another day names the day too, so "at 03:10 UTC" cannot be read as this morning
    same_day = at.date() == datetime.now(UTC).date()
    when = at.strftime("%H:%M UTC") if same_day else at.strftime("%Y-%m-%d %H:%M UTC")
    return f"expected to finish at {when} ({_about(eta['eta_s'])})"


def _csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _job_detail(api: Api, job: dict) -> None:
    counts = job["counts"]
    total = counts.get("total", 0) or 1
    finished = total - counts.get("queued", 0)
    st.progress(
        finished / total,
        text=f"{job['state']}: {finished}/{counts.get('total', 0)} finished "
        f"({counts.get('done', 0)} done, {counts.get('failed', 0)} failed, "
        f"{counts.get('cancelled', 0)} cancelled)",
    )
    if job.get("eta"):
        st.info(
            f"This job is {eta_words(job['eta'])}."
            if job["eta"].get("eta_s") is not None
            else f"Finish time: {eta_words(job['eta'])}."
        )
    for reason in why_waiting(job, attempt(api.models) if counts.get("queued") else None):
        st.info(f"Waiting: {reason}")
    for r in job.get("rejected", []):
        st.caption(f"rejected at submission: {r['file']}: {r['reason']}")
    if job["state"] not in ("done", "cancelled") and st.button("Cancel this job", key="jobs_cancel"):
        answer = attempt(api.cancel, job["job_id"])
        if answer is not None:
            st.success(f"Cancel requested: {answer}")
    lang = st.selectbox("Show translations", list(LANGUAGES), format_func=LANGUAGES.get, key="jobs_lang")
    body = attempt(api.results, job["job_id"], lang or None)
    if body is None:
        return
    rows = body["results"]
    if body.get("translation", {}).get("error"):
        st.info(f"Translation unavailable: {body['translation']['error']}")
    thumbs = thumbnail_urls(api, [r["sha256"] for r in rows[:THUMBS]])
    table = [{"thumbnail": thumbs.get(r["sha256"]), **r} for r in rows]
    st.dataframe(
        table,
        column_config={"thumbnail": st.column_config.ImageColumn("image")},
        hide_index=True,
        column_order=["thumbnail", "file_name", "model", "caption"]
        + (["translation"] if lang else [])
        + ["status", "error", "sha256"],
        key="jobs_results",
    )
    c1, c2 = st.columns(2)
    jsonl = attempt(api.results_jsonl, job["job_id"], lang or None)
    if jsonl is not None:
        c1.download_button("Download JSONL", jsonl, f"{job['job_id']}.jsonl", "application/x-ndjson")
    c2.download_button("Download CSV", _csv(rows), f"{job['job_id']}.csv", "text/csv")


def render(api: Api) -> None:
    st.header("Jobs")
    jobs = attempt(api.jobs)
    if jobs is None:
        return
    if not jobs:
        st.info("No jobs yet: caption some images on the Caption page.")
        return
    st.dataframe(
        [
            {
                "job": j["job_id"][:12],
                "state": j["state"],
                "models": ", ".join(j["models"]),
                "tier": j["tier"],
                "done": j["counts"].get("done", 0),
                "queued": j["counts"].get("queued", 0),
                "failed": j["counts"].get("failed", 0),
                "created": (j.get("created_at") or "")[:19],
                "expected finish": eta_words(j.get("eta")),
            }
            for j in jobs
        ],
        hide_index=True,
        key="jobs_table",
    )
    ids = [j["job_id"] for j in jobs]
    picked = st.selectbox(
        "Job",
        ids,
        format_func=lambda i: f"{i[:12]} ({next(j['state'] for j in jobs if j['job_id'] == i)})",
        key="jobs_pick",
    )
    job = attempt(api.job, picked)
    if job is not None:
        _job_detail(api, job)
    st.button("Refresh", key="jobs_refresh")
