"""cli_export: `capq export JOB|--model M|--since T --format F DEST`, thin over producer.export."""

from __future__ import annotations

import typer

from capq.settings import get_settings
from producer.cli import default_owner
from producer.errors import BadInput
from producer.render import err, exits


@exits
def export_cmd(
    targets: list[str] = typer.Argument(
        ...,
        metavar="[JOB] DEST",
        help="A job id (or none, with --model/--since) and a local folder or s3://BUCKET/owners/OWNER/... destination.",
    ),
    fmt: str = typer.Option("parquet", "--format", help="parquet, jsonl, csv, webdataset or hf."),
    model: str | None = typer.Option(None, help="Without a job: only this model's captions."),
    since: str | None = typer.Option(None, help="Without a job: captions since an ISO time, epoch or age (7d)."),
    owner: str | None = typer.Option(None, help="Whose captions (default $USER or 'local')."),
) -> None:
    """Export captions, one row per image with a caption column per model and preset; streamed to files."""
    from producer.export import export
    from producer.export_rows import select

    if len(targets) not in (1, 2):
        raise BadInput("give DEST, or JOB DEST (e.g. `capq export JOB out/ --format parquet`)")
    job, dest = (targets[0], targets[1]) if len(targets) == 2 else (None, targets[0])
    if job is None and model is None and since is None:
        raise BadInput("name a job, or filter with --model and/or --since")
    settings = get_settings()
    sel = select(settings, owner or default_owner(), job=job, model=model, since=since)
    done = export(settings, sel, fmt, dest)
    err.print(f"{done['rows']} row(s) of {sel.describe()} written to {dest}: {', '.join(done['files'])}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
