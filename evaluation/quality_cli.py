"""quality_cli: `capq eval quality` (reference-free quality of production captions) and the arms of an alias."""

from __future__ import annotations

import json
from datetime import datetime

import typer
from rich.console import Console
from rich.table import Table

from capq.settings import get_settings

out = Console()
err = Console(stderr=True)


def _json(value) -> None:
    typer.echo(json.dumps(value, indent=2, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)))


def eval_quality(
    model: str | None = typer.Option(None, help="Only this model (default: every model)."),
    clip: bool = typer.Option(True, "--clip/--no-clip", help="Also CLIPScore (needs CAPQ_CLIP_CHECKPOINT)."),
    as_json: bool = typer.Option(False, "--json", help="Print the stored evaluations as JSON."),
) -> None:
    """Measure each model's newest production captions without references (empty, repeated, at the length limit,
    vocabulary; CLIPScore with a 95% interval) and store them in the evaluation history."""
    from evaluation.clipscore import ClipError
    from evaluation.quality import measure_quality

    try:
        docs = measure_quality(get_settings(), model=model, clip=clip)
    except ClipError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        _json(docs)
        return
    if not docs:
        err.print("no finished captions to measure", highlight=False)
        return
    table = Table("model", "kind", "images", "scores")
    for d in docs:
        cells = ", ".join(
            f"{k} {v:.4g}" + (f" ({d['ci95'][k][0]:.3g}-{d['ci95'][k][1]:.3g})" if k in d["ci95"] else "")
            for k, v in d["scores"].items()
        )
        table.add_row(d["model"], d["kind"], str(d["image_count"]), cells)
    out.print(table)


def compare_alias(settings, alias: str, as_json: bool) -> None:
    """`capq eval compare --alias NAME`: the alias's arms side by side, and per pair of arms each score's difference
    with its 95% interval and p-value; the comparison is stored for the exporter."""
    from evaluation.clipscore import ClipError
    from evaluation.quality import compare_alias_arms

    try:
        result = compare_alias_arms(settings, alias, store=True)
    except (ValueError, ClipError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        _json(result)
        return
    table = Table(
        "arm",
        "weight",
        "captions",
        "clipscore (95%)",
        "empty",
        "repeated",
        "at limit",
        "vocabulary",
        "BLEU-4 / CIDEr (refs)",
        title=f"alias {alias}: {result['jobs']} job(s)",
    )
    for arm in result["arms"]:
        e = result["per_arm"].get(arm["model"], {})
        h, c, r = e.get("health", {}), e.get("clipscore"), e.get("references")
        table.add_row(
            arm["model"],
            str(arm["weight"]),
            str(e.get("captions", 0)),
            f"{c['mean']:.3f} ({c['ci95'][0]:.3f}-{c['ci95'][1]:.3f})" if c else "-",
            *(f"{h[k]:.3f}" if k in h else "-" for k in ("empty_share", "repeated_share", "length_limit_share")),
            f"{h['vocabulary']:.0f}" if h else "-",
            f"{r['scores']['bleu_4']:.3f} / {r['scores']['cider']:.3f} ({r['images']})" if r else "-",
        )
    out.print(table)
    diffs = Table("pair", "kind", "score", "A - B", "95% interval", "p", "", title="unpaired bootstrap")
    for pair, kinds in result["diff"].items():
        for kind, scores in kinds.items():
            for name, d in scores.items():
                diffs.add_row(
                    pair,
                    kind,
                    name,
                    f"{d['diff']:+.4f}",
                    f"{d['ci95'][0]:+.4f} .. {d['ci95'][1]:+.4f}",
                    f"{d['p_value']:.3f}",
                    "significant" if d["significant"] else "",
                )
    out.print(diffs)


def register(eval_app: typer.Typer) -> None:
    eval_app.command("quality")(eval_quality)
