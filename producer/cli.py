"""cli: `capq submit|status|results|jobs|history|cancel|keys|api`, thin over producer's plain functions."""

from __future__ import annotations

import csv
import json
import os
import sys

import typer

from capq.settings import get_settings
from producer import aliases_cli, owners_cli
from producer.errors import BadInput
from producer.render import err, exits, fail, out

keys_app = typer.Typer(help="API keys: each maps to an owner and a tier; stored hashed.", no_args_is_help=True)


def default_owner() -> str:
    return os.environ.get("USER") or "local"


# Issue 11: `submit --wait` and `status --watch` exit with this when --timeout passes before the job finishes.
WAIT_TIMEOUT_EXIT = 3


def _timed_out(job_id: str, job: dict, timeout_s: float, as_json: bool) -> None:
    if job["state"] in ("done", "cancelled"):
        return
    if as_json:
        print(json.dumps({"event": "timeout", "job_id": job_id, "state": job["state"], "counts": job["counts"]}))
    else:
        fail(
            f"job {job_id} still {job['state']} after {timeout_s:g}s: {job['counts']}; "
            f"`capq status {job_id} --watch` follows it further"
        )
    raise typer.Exit(WAIT_TIMEOUT_EXIT)


def _watch(settings, job_id: str, as_json: bool, timeout_s: float | None = None) -> dict:
    from producer.queries import wait_job
    from producer.render import finished, progress_bar

    with progress_bar(f"job {job_id[:12]}") as bar:
        last: list = []

        def update(job: dict) -> None:
            bar.update(
                completed=finished(job),
                total=job["counts"].get("total", 0),
                description=f"job {job_id[:12]} {job['state']}",
            )
            if as_json and last != [job["state"], job["counts"]]:  # a line per change, not per poll
                last[:] = [job["state"], job["counts"]]
                print(
                    json.dumps({"event": "progress", "job_id": job_id, "state": job["state"], "counts": job["counts"]}),
                    flush=True,
                )

        def blip(exc) -> None:
            bar.update(description=f"job {job_id[:12]} (waiting: {type(exc).__name__})")

        return wait_job(settings, job_id, on_update=update, timeout_s=timeout_s, on_blip=blip)


@exits
def submit_cmd(
    paths: list[str] = typer.Argument(
        ...,
        help="Image files, folders (recursive), .jsonl/.csv/.parquet manifests, "
        ".tar shards or brace patterns, s3:// keys and s3://bucket/prefix/.",
    ),
    model: str = typer.Option(
        ..., "--model", "-m", help="Model(s), comma-separated: blip, blip2, git, vit-gpt2, or a model alias."
    ),
    tier: str | None = typer.Option(None, help="free, plus or premium (default CAPQ_DEFAULT_TIER)."),
    preset: str | None = typer.Option(None, help="Generation preset (default CAPQ_DEFAULT_PRESET)."),
    owner: str | None = typer.Option(None, help="Owner of the job (default $USER or 'local')."),
    job_id: str | None = typer.Option(None, "--job-id", help="Name the job; the same id again resumes it."),
    idempotency_key: str | None = typer.Option(None, "--idempotency-key", help="Same key again resumes the job."),
    wait: bool = typer.Option(False, "--wait", help="Wait until every image is captioned."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines; the last holds job_id, counts and rejections."),
    translate: str | None = typer.Option(
        None,
        "--translate",
        help="Also translate each caption into this language (e.g. vi), on the translation worker's queue.",
    ),
    timeout: float | None = typer.Option(
        None,
        "--timeout",
        min=0,
        help="With --wait: give up after this many seconds, print the state and exit 3 (the job goes on).",
    ),
) -> None:
    """Validate, upload and queue images for captioning; prints the job id."""
    from producer.queries import job_status
    from producer.render import progress_bar, rejections_table
    from producer.submit import SubmitRequest, submit

    settings = get_settings()
    with progress_bar("validating + uploading") as bar:

        def progress(stage: str, done: int, total: int) -> None:
            if stage == "validating":
                bar.update(completed=done, total=total)
            else:
                bar.update(description=f"{stage} {done} item(s)")

        def started(job: str, created: bool) -> None:
            # Printed first: after an interruption, the same command with --job-id resumes exactly.
            err.print(
                f"job {job} {'created' if created else 'resumed'}; if interrupted, run the same command "
                f"with --job-id {job} to resume"
            )
            if as_json:
                print(json.dumps({"event": "started", "job_id": job, "created": created}), flush=True)

        request = SubmitRequest(
            model,
            tier=tier,
            preset=preset,
            owner=owner or default_owner(),
            job_id=job_id,
            idempotency_key=idempotency_key,
            translate=translate,
        )
        result = submit(settings, paths, request, progress, on_job=started)
    if as_json:
        for r in result.rejected:
            print(json.dumps({"event": "rejected", **r}), flush=True)
    else:
        if result.rejected:
            err.print(rejections_table(result.rejected))
        err.print(
            f"job {result.job_id}: {result.accepted} image(s) accepted, {result.rejected_total} rejected, "
            f"{result.enqueued} item(s) queued"
            + ("" if result.created else " (resumed)")
            + f"; trace {result.trace_id}"
        )
        print(result.job_id, flush=True)
    _warn_offline(settings, result.models)
    final = _watch(settings, result.job_id, as_json, timeout) if wait else job_status(settings, result.job_id)
    if wait and timeout is not None:
        _timed_out(result.job_id, final, timeout, as_json)
    if as_json:
        print(
            json.dumps(
                {"event": "finished" if wait else "submitted"}
                | result.as_dict()
                | {"state": final["state"], "counts": final["counts"], "rejected": final["rejected"]}
            )
        )
    elif wait:
        err.print(f"job {result.job_id} {final['state']}: {final['counts']}")


def _warn_offline(settings, models: list[str]) -> None:
    """The job is accepted either way; say when no worker would take it now (issue 11)."""
    import redis

    from producer.waiting import models_offline, offline_message

    try:
        offline = models_offline(settings, models)
    except redis.RedisError:
        return
    for model, last_seen in offline.items():
        err.print(f"[yellow]warning:[/yellow] {offline_message(model, last_seen)}; the job waits until one is")


@exits
def status_cmd(
    job: str = typer.Argument(..., help="Job id."),
    watch: bool = typer.Option(False, "--watch", help="Follow until the job finishes."),
    as_json: bool = typer.Option(False, "--json"),
    timeout: float | None = typer.Option(
        None, "--timeout", min=0, help="With --watch: give up after this many seconds, print the state and exit 3."
    ),
) -> None:
    """Exact counts of a job and the files it rejected."""
    from producer.queries import job_status
    from producer.render import job_table, rejections_table

    settings = get_settings()
    status = _watch(settings, job, as_json, timeout) if watch else job_status(settings, job)
    if watch and timeout is not None and status["state"] not in ("done", "cancelled"):
        if not as_json:
            out.print(job_table(status))
        _timed_out(job, status, timeout, as_json)
    if as_json:
        print(json.dumps(status))
        return
    out.print(job_table(status))
    if status.get("waiting"):
        out.print(f"waiting: {status['waiting']}")
    if status["rejected"]:
        out.print(rejections_table(status["rejected"]))


@exits
def results_cmd(
    job: str = typer.Argument(..., help="Job id."),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl or csv."),
    lang: str | None = typer.Option(
        None, "--lang", help="Add each caption's translation into this language (translated on demand when missing)."
    ),
) -> None:
    """One record per image x model: sha256, file_name, model, preset, caption, status, error."""
    from producer.queries import RESULT_FIELDS, results

    if fmt not in ("jsonl", "csv"):
        raise BadInput(f"--format must be jsonl or csv, not {fmt!r}")
    rows = results(get_settings(), job)
    fields = RESULT_FIELDS
    if lang is not None:
        from translation.results import check_lang, with_translations

        rows, summary = with_translations(get_settings(), rows, check_lang(lang))
        fields = RESULT_FIELDS + ("translation",)
        if summary["error"]:
            err.print(f"translation: {summary['error']}")
    if fmt == "jsonl":
        for row in rows:
            print(json.dumps(row))
        return
    from producer.render import csv_cell

    writer = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)


@exits
def jobs_cmd(
    mine: bool = typer.Option(False, "--mine", help="Only jobs of --owner ($USER or 'local')."),
    owner: str | None = typer.Option(None, help="Only this owner's jobs."),
    limit: int = typer.Option(50, min=1, max=1000),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recent jobs, newest first."""
    from producer.queries import list_jobs
    from producer.render import jobs_table

    jobs = list_jobs(get_settings(), owner or (default_owner() if mine else None), limit)
    if as_json:
        for job in jobs:
            print(json.dumps(job))
    else:
        out.print(jobs_table(jobs) if jobs else "no jobs")
        for job in jobs:
            if job.get("waiting"):
                out.print(f"{job['job_id']} waiting: {job['waiting']}")


@exits
def history_cmd(
    image: str | None = typer.Option(None, help="An image file (hashed) or its sha256."),
    model: str | None = typer.Option(None),
    job: str | None = typer.Option(None),
    since: str | None = typer.Option(None, help="ISO time, epoch seconds, or an age: 30m, 2h, 7d."),
    limit: int = typer.Option(50),
    page: int | None = typer.Option(None, help="1-based page."),
    cursor: str | None = typer.Option(None, help="next_cursor of the previous page."),
    owner: str | None = typer.Option(None, help="Whose history (default $USER or 'local')."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Caption history, newest first."""
    from producer.queries import history
    from producer.render import history_table

    page_ = history(
        get_settings(),
        owner or default_owner(),
        image=image,
        model=model,
        job=job,
        since=since,
        limit=limit,
        page=page,
        cursor=cursor,
        allow_files=True,
    )
    if as_json:
        print(json.dumps(page_))
        return
    out.print(history_table(page_["items"]) if page_["items"] else "no captions")
    if page_["next_cursor"]:
        err.print(f"more: --cursor {page_['next_cursor']}")


@exits
def cancel_cmd(job: str = typer.Argument(..., help="Job id.")) -> None:
    """Cancel what is still queued; finished captions are kept."""
    from producer.queries import cancel_job
    from storage.errors import AlreadyFinished

    try:
        n = cancel_job(get_settings(), job)["cancelled_now"]
    except AlreadyFinished as exc:
        fail(exc)
        raise typer.Exit(2) from None
    out.print(f"job {job} cancelled: {n} queued item(s) will not be captioned")


@keys_app.command("create")
@exits
def keys_create(
    owner: str = typer.Option(..., help="Owner the key acts for."),
    tier: str = typer.Option(..., help="free, plus or premium."),
    note: str | None = typer.Option(None, help="A reminder of what the key is for."),
    role: str = typer.Option("user", help="user (its own data) or admin (the admin API routes)."),
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from producer.keys_admin import create_key

    key, record = create_key(get_settings(), owner, tier, role, note)
    err.print(
        f"key {record['prefix']}... for owner {owner}, tier {tier}, role {role}; store it now, it is not shown again"
    )
    print(key)


@keys_app.command("list")
@exits
def keys_list(owner: str | None = typer.Option(None), as_json: bool = typer.Option(False, "--json")) -> None:
    """Keys by prefix with their use this hour and day (the keys themselves are not stored)."""
    from rich.table import Table

    from producer.keys_admin import list_keys

    keys = list_keys(get_settings(), owner)
    if as_json:
        for k in keys:
            print(json.dumps(k, default=str))
        return
    table = Table(
        "prefix", "owner", "tier", "role", "created", "last used", "req h/d", "images h/d", "revoked", "expires", "note"
    )
    for k in keys:
        table.add_row(
            k["prefix"],
            k["owner"],
            k["tier"],
            k["role"],
            str(k["created_at"])[:19],
            str(k["last_used_at"] or "")[:19],
            f"{k['requests_hour']}/{k['requests_day']}",
            f"{k['images_hour']}/{k['images_day']}",
            str(k.get("revoked_at") or "")[:19],
            str(k.get("expires_at") or "")[:19],
            k.get("note") or "",
        )
    out.print(table if keys else "no keys")


@keys_app.command("revoke")
@exits
def keys_revoke(prefix: str = typer.Argument(..., help="The prefix `capq keys list` shows.")) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    from storage.apikeys import ApiKeys

    revoked = ApiKeys(get_settings()).revoke(prefix)
    if not revoked:
        raise BadInput(f"no live key with prefix {prefix!r}; `capq keys list` shows them")
    out.print(f"revoked {len(revoked)} key(s): {', '.join(k['prefix'] + ' (' + k['owner'] + ')' for k in revoked)}")


def api_cmd(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8000, min=1, max=65535)) -> None:
    """Serve the HTTP API (docs at /docs, OpenAPI at /openapi.json)."""
    import uvicorn

    from capq.logs import setup_logging
    from producer.api import create_app

    settings = get_settings()
    setup_logging(settings.log_json, secrets=(settings.s3_secret_key,))
    if settings.api_metrics_port:
        from prometheus_client import start_http_server

        # A port of its own, which compose and k8s never publish: the public port answers 404 on /metrics.
        start_http_server(settings.api_metrics_port, addr=host)
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None)


def register(app: typer.Typer) -> None:
    app.command("submit")(submit_cmd)
    app.command("status")(status_cmd)
    app.command("results")(results_cmd)
    app.command("jobs")(jobs_cmd)
    app.command("history")(history_cmd)
    app.command("cancel")(cancel_cmd)
    app.add_typer(keys_app, name="keys")
    app.command("api")(api_cmd)
    owners_cli.register(app, keys_app)  # issue 15: owners, usage, keys rotate, retention
    aliases_cli.register(app)  # issue 18
    from producer import capacity_cli  # issue 18: capacity planning

    capacity_cli.register(app)
