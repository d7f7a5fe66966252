"""The architecture's walls (pyproject.toml [tool.importlinter]) hold: `lint-imports` passes from the repo root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_lint_imports_keeps_every_contract():
    # Run from the repo root on this checkout's code (not an installed copy); lint-imports sits beside the python.
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([str(lint), "--no-cache"], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert "0 broken" in out.stdout, out.stdout[-6000:]
