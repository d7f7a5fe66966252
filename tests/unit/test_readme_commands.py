"""Every command the README shows is one the CLI accepts as written; the cheap ones are run as written."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from capq.cli import app
from tooling.paths import seed_dir

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SEED_DIR = seed_dir()


def _split(line: str) -> list[list[str]]:
    """One README line -> its commands. A line may hold several (`capq a    capq b`, `a && b`, `a / b`);
    `capq stack up | down | status` is shorthand for three; a leading VAR=value is the environment."""
    tokens = shlex.split(line, comments=True)
    commands: list[list[str]] = []
    for token in tokens:
        if token in ("capq", ".venv/bin/capq", "make"):
            commands.append([token])
        elif token not in ("&&", "/") and commands:
            commands[-1].append(token)
    out = []
    for command in commands:
        if "|" in command:  # alternatives of the last word
            head = command[: command.index("|") - 1]
            out += [head + [word] for word in command[len(head) :] if word != "|"]
        else:
            out.append(command)
    return out


def readme_commands() -> tuple[list[list[str]], list[list[str]]]:
    """(the commands in the README's ```bash blocks, those in its inline `capq ...` spans). Prose may name a
    command without its arguments (`capq submit` exits 2 when...), so inline spans need only name one."""
    text = README.read_text(encoding="utf-8")
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]
    spans = re.findall(r"`((?:\.venv/bin/)?capq [^`]+)`", text)
    return (
        [command for line in lines for command in _split(line)],
        [command[1:] for span in spans for command in _split(span)],
    )


COMMANDS, INLINE = readme_commands()
CAPQ = [c[1:] for c in COMMANDS if c[0] != "make"]


def parse(args: list[str], complete: bool = True) -> typer.Context:
    """Resolve `capq ARGS` to its command and parse its arguments as the CLI would, without running it
    (complete=False: the arguments may be left out, but the command must exist and what is given must parse)."""
    command, name, ctx = typer.main.get_command(app), "capq", None
    # Typer ships its own click, so a group is known by what it does, not by click's Group class.
    while hasattr(command, "resolve_command"):
        ctx = typer.Context(command, info_name=name, parent=ctx)
        name, command, args = command.resolve_command(ctx, list(args))
    return command.make_context(name, list(args), parent=ctx, resilient_parsing=not complete)


def test_the_readme_shows_commands_of_every_kind():
    # A parser slip that found nothing would make the tests below pass vacuously.
    assert ["make", "demo"] in COMMANDS and ["make", "test"] in COMMANDS
    firsts = {args[0] for args in CAPQ}
    assert {"stack", "submit", "worker", "eval", "dlq", "keys", "api", "flower"} <= firsts, firsts
    assert ["stack", "down"] in CAPQ + INLINE and len(CAPQ) >= 20 and ["models", "list"] in INLINE


@pytest.mark.parametrize("args", CAPQ, ids=lambda args: " ".join(args))
def test_each_capq_command_parses(args):
    ctx = parse(args)
    assert ctx.command.callback is not None, f"capq {' '.join(args)} names a group, not a command"


@pytest.mark.parametrize("args", INLINE, ids=lambda args: " ".join(args))
def test_each_capq_command_named_in_the_prose_exists(args):
    assert parse(args, complete=False).command.callback is not None


def test_a_wrong_command_does_not_parse():
    with pytest.raises(Exception, match="No such option: --tier-of-service") as wrong_option:
        parse(["submit", "photos/", "--tier-of-service", "gold"])
    with pytest.raises(Exception, match="No such command 'sed'") as wrong_command:
        parse(["eval", "sed", "folder"])
    assert {type(e.value).__name__ for e in (wrong_option, wrong_command)} == {"NoSuchOption", "UsageError"}


@pytest.mark.parametrize("target", sorted({c[1] for c in COMMANDS if c[0] == "make"}))
def test_each_make_target_exists(target):
    done = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "capq", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_models_list_runs_as_written():
    assert ["models", "list"] in CAPQ + INLINE
    done = _run(["models", "list"])
    assert done.returncode == 0, done.stderr
    assert all(name in done.stdout for name in ("blip", "blip2", "git", "vit-gpt2"))


def test_eval_seed_runs_as_written():
    (args,) = [args for args in CAPQ if args[:2] == ["eval", "seed"]]
    # The README names the seed data beside the checkout; elsewhere it is at CAPQ_SEED_DIR.
    args = [
        str(SEED_DIR / Path(a).relative_to("../shared/seed"))
        if a.startswith("../shared/seed") and not (REPO / a).exists()
        else a
        for a in args
    ]
    done = _run(args)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == {"blip", "blip2", "git", "vit_gpt2"}
