"""render: rich tables and progress bars for the producer's CLI (stderr for progress, stdout for answers)."""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from capq.errors import BadInput

out = Console()
err = Console(stderr=True)


def fail(message) -> None:
    """An error line on stderr, unwrapped (log-friendly) and never parsed as markup."""
    err.print(f"[red]error:[/red] {escape(str(message))}", soft_wrap=True)


def exits(fn):
    """2 for input the caller must fix (message says what), 1 when a service is down."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        # Here, not at the top: every `capq` command imports this module, and only these need the clients' errors.
        from kombu.exceptions import OperationalError

        from storage.errors import NotFound, StorageError

        try:
            return fn(*args, **kwargs)
        except (BadInput, NotFound) as exc:
            fail(exc)
            raise typer.Exit(2) from None
        except StorageError as exc:
            fail(exc)
            raise typer.Exit(1) from None
        except OperationalError as exc:
            fail(
                f"message broker unreachable ({exc}); check Redis (capq stack status) and CAPQ_REDIS_URL; "
                "submitting again with the same --job-id resumes"
            )
            raise typer.Exit(1) from None

    return wrapper


class Bar:
    """One task's bar on stderr (stdout stays clean for job ids and JSON lines), shown from its first update,
    so that a request refused up front prints only its error."""

    def __init__(self, description: str):
        self.description = description
        self.progress: Progress | None = None
        self.task = 0

    def update(self, **fields) -> None:
        if self.progress is None:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
            )
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=None)
        self.progress.update(self.task, **fields)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@contextmanager
def progress_bar(description: str) -> Iterator[Bar]:
    bar = Bar(description)
    try:
        yield bar
    finally:
        bar.stop()


def safe(value) -> Text:
    """User text (file names, captions, owners, reasons) as a literal cell: never read as rich markup, and with
    terminal control characters (escape sequences, carriage returns) shown as '?' instead of obeyed."""
    return Text("".join("?" if unicodedata.category(c) == "Cc" else c for c in str(value if value is not None else "")))


def finished(job: dict) -> int:
    c = job.get("counts", {})
    return c.get("done", 0) + c.get("failed", 0) + c.get("cancelled", 0)


def eta_text(job: dict) -> str:
    """'in 3m20s (07:02:11Z)', 'unknown: <why>' or '-' for a finished job (issue 18)."""
    eta = job.get("eta")
    if not eta:
        return "-"
    if eta["eta_s"] is None:
        return f"unknown: {eta.get('reason', '')}"
    m, s = divmod(int(round(eta["eta_s"])), 60)
    return (f"in {m}m{s:02d}s" if m else f"in {s}s") + f" ({eta['eta_at'][11:19]}Z)"


def job_table(job: dict) -> Table:
    c = job.get("counts", {})
    table = Table(
        "job", "owner", "state", "models", "tier", "preset", "done", "failed", "queued", "total", "eta", title=None
    )
    table.add_row(
        safe(job["job_id"]),
        safe(job["owner"]),
        job["state"],
        ",".join(job["models"]),
        job["tier"],
        safe(job["preset"]),
        *(str(c.get(k, 0)) for k in ("done", "failed", "queued", "total")),
        eta_text(job),
    )
    return table


def jobs_table(jobs: list[dict]) -> Table:
    table = Table("job", "owner", "state", "models", "tier", "done/total", "created", "eta")
    for job in jobs:
        c = job.get("counts", {})
        table.add_row(
            safe(job["job_id"]),
            safe(job["owner"]),
            job["state"],
            ",".join(job["models"]),
            job["tier"],
            f"{finished(job)}/{c.get('total', 0)}",
            str(job.get("created_at") or "")[:19],
            eta_text(job),
        )
    return table


def rejections_table(rejected: list[dict]) -> Table:
    table = Table("rejected file", "reason", title=f"{len(rejected)} file(s) rejected")
    for r in rejected:
        table.add_row(safe(r.get("file")), safe(r.get("reason")))
    return table


def history_table(items: list[dict]) -> Table:
    table = Table("when", "image", "model", "caption", "job")
    for it in items:
        table.add_row(
            str(it.get("updated_at") or "")[:19],
            safe(it.get("file_name") or it["sha256"][:12]),
            it["model"],
            safe(it.get("caption") or ""),
            safe(it["job_id"][:12]),
        )
    return table


def captions_grid(rows: list[dict], models: list[str]) -> Table:
    """Rows: image file; columns: models; cells: captions (or the error)."""
    by_image: dict[str, dict[str, str]] = {}
    for r in rows:
        name = Path(r.get("file_name") or r["sha256"]).name
        cell = (
            safe(r.get("caption") or "")
            if r.get("status") == "done"
            else Text.assemble((f"{r.get('status')}: ", "red"), (safe(r.get("error") or ""), "red"))
        )
        by_image.setdefault(name, {})[r["model"]] = cell
    table = Table(show_lines=True)
    table.add_column("image", no_wrap=True)  # file names are the row keys: never cut them
    for m in models:
        table.add_column(m)
    for name in sorted(by_image):
        table.add_row(safe(name), *(by_image[name].get(m, "") for m in models))
    return table


FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A CSV cell a spreadsheet shows as text: one starting like a formula (= + - @, tab, CR) gets a leading
    apostrophe (OWASP's advice), so a file name such as '=HYPERLINK(...)' is never evaluated."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_LEADS) else value
