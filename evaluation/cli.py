"""cli: `capq refs import` and `capq eval run|history|compare|seed`, added to the capq command by register()."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from capq.settings import get_settings
from evaluation import ops_cli, quality_cli

refs_app = typer.Typer(help="Reference captions that evaluation scores against.", no_args_is_help=True)
eval_app = typer.Typer(
    help="Caption quality: BLEU-1..4, ROUGE-L, CIDEr (and METEOR) with 95% intervals.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)
# The same names as evaluation.metrics.SCORE_NAMES; this module imports no metric code at load time, because
# `capq` starts in the slim API image, which has no pycocoevalcap (tests/unit/test_deploy.py checks it).
SCORE_NAMES = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider", "meteor")
# Issue 18: scores of the reference-free evaluations (evaluation.quality) shown in the same history.
REFERENCE_FREE_NAMES = ("clipscore", "empty_share", "repeated_share", "length_limit_share", "vocabulary")


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors in the user's input or environment: a message and exit 2 (storage outages exit 1 in capq.cli)."""
    from evaluation.java import JavaError
    from evaluation.metrics import MetricError
    from evaluation.references import ReferenceFormatError
    from evaluation.run import CompareError
    from evaluation.seed import SeedFormatError

    return ReferenceFormatError, SeedFormatError, MetricError, JavaError, CompareError


def _fail(exc: Exception) -> None:
    err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _print_json(value) -> None:
    typer.echo(json.dumps(value, indent=2, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)))


def _cell(scores: dict, ci95: dict | None, name: str) -> str:
    if scores.get(name) is None:
        return "-"
    lo_hi = (ci95 or {}).get(name)
    return f"{scores[name]:.4f}" + (f" ({lo_hi[0]:.3f}-{lo_hi[1]:.3f})" if lo_hi else "")


def _score_rows(table: Table, runs: list[tuple[dict, dict | None]]) -> None:
    for name in SCORE_NAMES + REFERENCE_FREE_NAMES:
        if any(scores.get(name) is not None for scores, _ in runs):
            table.add_row(name, *(_cell(scores, ci, name) for scores, ci in runs))


def _drop_cell(doc: dict) -> str:
    """Issue 18: the significant drops of this run against its trailing window, "none", or "-" when not tested."""
    test = doc.get("drop")
    if not test:
        return "-"
    dropped = [f"{n} p={t['p_value']:.3f}" for n, t in test["scores"].items() if t["significant"]]
    return ", ".join(dropped) or f"none ({test['method']}, {test['images']} images)"


def _runs_table(docs: list[dict], title: str) -> Table:
    """Runs side by side: one column per evaluation, one row per score (with its 95% interval)."""
    table = Table("", *(f"{d['model']}\n{str(d['created_at'])[:19]}" for d in docs), title=title)
    for label, get in (
        ("checkpoint", lambda d: d.get("checkpoint")),
        ("preset", lambda d: d.get("preset")),
        ("config", lambda d: d.get("config_hash")),
        ("trigger", lambda d: d.get("trigger")),
        ("kind", lambda d: d.get("kind") or "references"),
        ("images", lambda d: d["image_count"]),
        ("image set", lambda d: d["image_set_hash"][:12]),
        ("no refs / empty", lambda d: f"{d['counts']['no_reference']} / {d['counts']['empty']}"),
        ("drop vs trailing", _drop_cell),
    ):
        table.add_row(label, *(str(get(d)) for d in docs))
    _score_rows(table, [(d["scores"], d.get("ci95")) for d in docs])
    return table


@refs_app.command("import")
def refs_import(
    file: Path = typer.Argument(..., help="COCO captions JSON or the seed's captions_ground_truth.json"),
    as_json: bool = typer.Option(False, "--json", help="Print the import report as JSON."),
) -> None:
    """Import reference captions; the whole file is checked first, and importing it again changes nothing."""
    from evaluation.references import import_file

    try:
        report = import_file(get_settings(), file)
    except _user_errors() as exc:
        _fail(exc)
    if as_json:
        _print_json(vars(report))
    else:
        for line in report.lines():
            out.print(line, highlight=False, soft_wrap=True)


@eval_app.command("run")
def eval_run(
    model: str | None = typer.Option(None, help="Only this model (blip, blip2, git, vit-gpt2)."),
    preset: str | None = typer.Option(None, help="Only captions made with this preset."),
    job: str | None = typer.Option(None, help="Only captions made by this job id."),
    since: str | None = typer.Option(None, help="Only captions created at or after this ISO 8601 time."),
    meteor: bool = typer.Option(False, "--meteor", help="Also compute METEOR (Java; ~10 s to start)."),
    as_json: bool = typer.Option(False, "--json", help="Print the stored evaluations as JSON."),
) -> None:
    """Score finished captions that have references; store one evaluation per model/checkpoint/config."""
    from evaluation.run import evaluate_groups

    try:
        when = datetime.fromisoformat(since) if since else None
    except ValueError:
        raise typer.BadParameter(
            f"{since!r} is not ISO 8601, e.g. 2025-07-09T06:00:00Z", param_hint="--since"
        ) from None
    try:
        report = evaluate_groups(get_settings(), model=model, preset=preset, job_id=job, since=when, meteor=meteor)
    except _user_errors() as exc:
        _fail(exc)
    if as_json:
        _print_json({"evaluations": report.evaluations, "skipped": report.skipped})
        return
    if report.evaluations:
        out.print(_runs_table(report.evaluations, "stored evaluations"))
    for s in report.skipped:
        err.print(
            f"not evaluated: {s['model']} {s['checkpoint']} {s['config_hash']}: {s['reason']}",
            highlight=False,
            soft_wrap=True,
        )
    if not report.evaluations and not report.skipped:
        err.print("no finished captions match these filters; nothing to evaluate", highlight=False, soft_wrap=True)


@eval_app.command("history")
def eval_history(
    model: str | None = typer.Option(None, help="Only this model."),
    limit: int = typer.Option(6, min=1, help="How many of the newest runs to show."),
    as_json: bool = typer.Option(False, "--json", help="Print the evaluations as JSON."),
) -> None:
    """Past evaluations side by side, newest first, each score with its 95% interval."""
    from storage.evaluations import EvaluationStore

    docs = EvaluationStore(get_settings()).history(model=model, limit=limit)
    if as_json:
        _print_json(docs)
    elif docs:
        out.print(_runs_table(docs, "evaluations, newest first; CIDEr compares only within one image set"))
    else:
        err.print("no evaluations yet; run `capq eval run`", highlight=False, soft_wrap=True)


@eval_app.command("compare")
def eval_compare(
    a: str | None = typer.Argument(None, help="Model A, or a model alias to compare its arms"),
    b: str | None = typer.Argument(None, help="Model B (omit when A is an alias)"),
    preset: str | None = typer.Option(None, help="Only captions made with this preset."),
    alias: str | None = typer.Option(None, "--alias", help="Compare the arms of this model alias."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """A minus B on the images both captioned: difference, 95% interval and p-value (paired bootstrap). With
    --alias NAME (or one alias name): its arms on the captions of the jobs submitted to it, by CLIPScore, health
    signals and BLEU/CIDEr where references exist (unpaired bootstrap), stored for the exporter and dashboards."""
    from evaluation.run import compare_models

    if alias or (a and b is None):  # issue 18: the arms of an alias
        quality_cli.compare_alias(get_settings(), alias or a, as_json)
        return
    if not a or not b:
        raise typer.BadParameter("give two models (capq eval compare blip git) or --alias NAME")

    try:
        result = compare_models(get_settings(), a, b, preset=preset)
    except _user_errors() as exc:
        _fail(exc)
    if as_json:
        _print_json(result)
        return
    table = Table(
        "score",
        f"A: {a}",
        f"B: {b}",
        "A - B",
        "95% interval",
        "p",
        title=f"{result['images']} images captioned by both, with references",
    )
    for name, d in result["diff"].items():
        table.add_row(
            name,
            f"{result['scores_a'][name]:.4f}",
            f"{result['scores_b'][name]:.4f}",
            f"{d['diff']:+.4f}",
            f"{d['ci95'][0]:+.4f} .. {d['ci95'][1]:+.4f}",
            f"{d['p_value']:.3f}",
        )
    out.print(table)


@eval_app.command("seed")
def eval_seed(
    seed_dir: Path = typer.Argument(..., help="The seed folder, or its eval_result_json/ folder."),
    meteor: bool = typer.Option(False, "--meteor", help="Also compute METEOR (Java; ~10 s to start)."),
    as_json: bool = typer.Option(False, "--json", help="Print {model: {score: value}} as JSON."),
) -> None:
    """Score the seed project's eval JSON files as its notebook did (reproduces its results table)."""
    from evaluation.seed import differences_from_published, score_seed_dir

    try:
        scores = score_seed_dir(seed_dir, meteor=meteor)
    except _user_errors() as exc:
        _fail(exc)
    if as_json:
        _print_json({m: {name: s.get(name) for name in SCORE_NAMES} for m, s in scores.items()})
        return
    table = Table("score", *scores, title=f"seed eval files in {seed_dir}")
    _score_rows(table, [(s, None) for s in scores.values()])
    out.print(table)
    differ = differences_from_published(scores)
    out.print(
        "; ".join(differ) if differ else "every score above equals the seed's published table to 4 decimals",
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    quality_cli.register(eval_app)  # issue 18
    app.add_typer(refs_app, name="refs")
    app.add_typer(eval_app, name="eval")
    ops_cli.register(app)  # issue 18: `capq exporter`
