"""cli: `capq translate text|history`, added to the capq command by register() (`worker`: workers.hosts)."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from capq.settings import get_settings

translate_app = typer.Typer(
    help="Caption translation: the translation worker, one-off translations, history.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)


@translate_app.command("text")
def text(
    texts: list[str] = typer.Argument(..., help="Text(s) to translate."),
    lang: str | None = typer.Option(None, "--lang", help="Target language (default CAPQ_TRANSLATE_TARGET)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Translate text through the configured chain (cache, memory, detection, providers)."""
    from translation.results import check_lang
    from translation.service import TranslationUnavailable
    from translation.tasks import translator  # the worker's chain, the offline provider included

    settings = get_settings()
    try:
        found = translator(settings).translate(texts, check_lang(lang or settings.translate_target))
    except TranslationUnavailable as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    for t in texts:
        row = found[t].as_dict() if t in found else {"text": t, "translation": t}
        print(json.dumps(row, ensure_ascii=False) if as_json else row["translation"])


@translate_app.command("history")
def history(limit: int = typer.Option(50, min=1, max=1000), as_json: bool = typer.Option(False, "--json")) -> None:
    """Which provider translated what, and when (newest first), failures and rate limits included."""
    from storage.translations import TranslationMemory

    rows = TranslationMemory(get_settings()).history(limit=limit)
    if as_json:
        for r in rows:
            print(json.dumps(r, default=str))
        return
    table = Table("at", "provider", "target", "outcome", "text sha256", "error")
    for r in rows:
        table.add_row(
            str(r["at"])[:19], r["provider"], r["target"], r["outcome"], r["text_sha256"][:12], r.get("error") or ""
        )
    out.print(table if rows else "no translations yet")


def register(app: typer.Typer) -> None:
    app.add_typer(translate_app, name="translate")
