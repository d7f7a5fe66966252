"""The alert rules are valid Prometheus rules, and promtool's unit tests of them pass."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import REPO

RULES = REPO / "deploy" / "prometheus"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:  # a failure, never a skip: CI installs it (.ci/run, apt package prometheus)
        pytest.fail("promtool not found: apt-get install -y prometheus", pytrace=False)
    return path


def test_alert_rules_are_valid():
    run = subprocess.run([_promtool(), "check", "rules", "alerts.yml"], cwd=RULES, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS: 7 rules found" in run.stdout


def test_alert_rules_fire_on_their_stories_and_only_there():
    run = subprocess.run([_promtool(), "test", "rules", "alerts_test.yml"], cwd=RULES, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_a_broken_expectation_is_caught(tmp_path):
    # The unit tests can fail: the same file with one expected label changed does.
    (tmp_path / "alerts.yml").write_text((RULES / "alerts.yml").read_text())
    (tmp_path / "t.yml").write_text(
        (RULES / "alerts_test.yml")
        .read_text()
        .replace("{severity: critical, model: blip}", "{severity: critical, model: git}")
    )
    run = subprocess.run([_promtool(), "test", "rules", "t.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode != 0 and "FAILED" in run.stdout + run.stderr
