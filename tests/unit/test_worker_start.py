"""`capq worker` at start-up: a wrong option is a one-line error (exit 2); a bug's ValueError keeps its traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}  # one line per message, however narrow

# A bug inside the start-up (here: in the model loader) that happens to be a ValueError.
BUG = """
import sys

import workers.models


def broken(*args, **kwargs):
    raise ValueError("a bug in an adapter")


workers.models.load_captioner = broken
sys.argv = ["capq", "worker", "--model", "git"]
from capq.cli import main

main()
"""


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "clip"], "error: unknown model 'clip'; models are blip, blip2, git, vit-gpt2"),
        (["--model", "git", "--dtype", "fp8"], "error: dtype must be one of ['bf16', 'fp16', 'fp32'], got 'fp8'"),
        (["--model", "git", "--device", "tpu"], "error: device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    ],
)
def test_a_wrong_option_is_a_plain_error_with_exit_code_2(args, message):
    proc = subprocess.run(
        [sys.executable, "-m", "capq", "worker", *args], capture_output=True, text=True, env=ENV, cwd=REPO
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_value_error_from_a_bug_is_not_taken_for_a_wrong_option():
    proc = subprocess.run([sys.executable, "-c", BUG], capture_output=True, text=True, env=ENV, cwd=REPO)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" in proc.stderr and "ValueError: a bug in an adapter" in proc.stderr, proc.stderr
    assert "error: a bug" not in proc.stderr
