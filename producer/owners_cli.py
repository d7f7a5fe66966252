"""owners_cli: `capq owners list|delete|audit`, `capq usage`, `capq keys rotate` and `capq retention run`."""

from __future__ import annotations

import csv
import getpass
import json
import sys

import typer

from capq.settings import get_settings
from producer.render import err, exits, out

owners_app = typer.Typer(
    help="Owners: list them, erase one (data, keys, usage), read the audit trail.", no_args_is_help=True
)
retention_app = typer.Typer(
    help="Retention (CAPQ_RETENTION_DAYS): delete old images beat would delete.", no_args_is_help=True
)


def _operator() -> str:
    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):
        return "operator:unknown"


@owners_app.command("list")
@exits
def owners_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every owner with a key or a job: keys, jobs, last job."""
    from rich.table import Table

    from storage.owners import Owners

    owners = Owners(get_settings()).list()
    if as_json:
        for o in owners:
            print(json.dumps(o, default=str))
        return
    table = Table("owner", "keys", "jobs", "last job")
    for o in owners:
        table.add_row(o["owner"], str(o["keys"]), str(o["jobs"]), str(o["last_job_at"] or "")[:19])
    out.print(table if owners else "no owners")


@owners_app.command("delete")
@exits
def owners_delete(
    owner: str = typer.Argument(..., help="The owner to erase."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Erase an owner: jobs, results, file names, usage, staged uploads and every key; images and captions
    too unless another owner also submitted them. Safe while workers run; run it again if it was interrupted."""
    from producer.api_owners import erase_owner

    if not yes and not typer.confirm(f"erase everything of owner {owner!r}? This cannot be undone"):
        raise typer.Exit(1)
    result = erase_owner(get_settings(), owner, _operator())
    if as_json:
        print(json.dumps(result))
        return
    removed = result["removed"]
    out.print(f"owner {owner} erased: " + ", ".join(f"{k} {v}" for k, v in removed.items()))


@owners_app.command("audit")
@exits
def owners_audit(owner: str | None = typer.Option(None), limit: int = typer.Option(50, min=1, max=1000)) -> None:
    """Erasures and retention runs: who, what, when and how much (JSON lines, newest first)."""
    from storage.owners import Owners

    for entry in Owners(get_settings()).audit(owner, limit):
        print(json.dumps(entry, default=str))


@exits
def usage_cmd(
    owner: str | None = typer.Option(None, help="Only this owner (default: everyone)."),
    since: str = typer.Option("30d", help="ISO date, epoch seconds or an age: 24h, 30d."),
    by: str = typer.Option("model", help="Group by model, day, tier, owner or device."),
    as_json: bool = typer.Option(False, "--json"),
    as_csv: bool = typer.Option(False, "--csv"),
) -> None:
    """Images captioned, reused captions (free), GPU-seconds and estimated cost (CAPQ_GPU_HOUR_PRICES)."""
    from rich.table import Table

    from producer.errors import BadInput
    from producer.usage_report import COLUMNS, report

    if as_json and as_csv:
        raise BadInput("give --json or --csv, not both")
    rep = report(get_settings(), owner, since, by)
    if as_json:
        print(json.dumps(rep))
        return
    if as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=[by, *COLUMNS])
        writer.writeheader()
        writer.writerows(rep["rows"])
        return
    table = Table(
        by,
        "images",
        "reused",
        "GPU-s",
        "cost USD",
        title=f"usage since {rep['since_day']}" + (f" of {owner}" if owner else ""),
    )
    for r in rep["rows"] + [{by: "total", **rep["total"]}]:
        table.add_row(str(r[by]), str(r["images"]), str(r["reused"]), f"{r['gpu_s']:.3f}", f"{r['cost_usd']:.4f}")
    out.print(table)
    if rep["unpriced"]:
        err.print(f"no price for {', '.join(rep['unpriced'])}: set CAPQ_GPU_HOUR_PRICES (MODEL:DEVICE=USD)")


@exits
def keys_rotate(
    prefix: str = typer.Argument(..., help="The prefix `capq keys list` shows."),
    grace_s: float | None = typer.Option(
        None, help="Seconds the old key keeps working (default CAPQ_KEY_ROTATION_GRACE_S)."
    ),
) -> None:
    """A new key with the same owner, tier and role; the old one works for the grace period, then is refused."""
    from producer.keys_admin import rotate_key

    key, new, old = rotate_key(get_settings(), prefix, grace_s)
    err.print(
        f"new key {new['prefix']}... for owner {new['owner']}; the old key {old['prefix']}... works until "
        f"{old['expires_at']}; store the new key now, it is not shown again"
    )
    print(key)


@retention_app.command("run")
@exits
def retention_run() -> None:
    """Run retention now (beat runs it every CAPQ_RETENTION_INTERVAL_S when CAPQ_RETENTION_DAYS is set)."""
    from storage.owners import run_retention

    print(json.dumps(run_retention(get_settings())))


def register(app: typer.Typer, keys_app: typer.Typer) -> None:
    app.add_typer(owners_app, name="owners")
    app.add_typer(retention_app, name="retention")
    app.command("usage")(usage_cmd)
    keys_app.command("rotate")(keys_rotate)
