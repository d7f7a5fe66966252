"""When a dead letter of an outage is re-driven: bounded attempts, doubling backoff, unreachable services only."""

from __future__ import annotations

from capq.settings import load_settings
from workers.healing import redrive_due

S = load_settings({"CAPQ_REDRIVE_MAX": "3", "CAPQ_REDRIVE_BACKOFF_S": "60"})
OUTAGE = {"error": "gave up after 5 retries: database unreachable at mongodb://db", "failed_at": 1000.0}


def test_an_outage_dead_letter_waits_a_backoff_that_doubles_with_each_redrive():
    assert not redrive_due(OUTAGE, 0, S, now=1059)
    assert redrive_due(OUTAGE, 0, S, now=1060)
    assert not redrive_due(OUTAGE, 1, S, now=1119) and redrive_due(OUTAGE, 1, S, now=1120)
    assert not redrive_due(OUTAGE, 2, S, now=1239) and redrive_due(OUTAGE, 2, S, now=1240)


def test_redrives_are_bounded_and_only_for_unreachable_services():
    assert not redrive_due(OUTAGE, 3, S, now=10**9)
    broken = {"error": "CheckpointError: config.json is not JSON", "failed_at": 1000.0}
    assert not redrive_due(broken, 0, S, now=10**9)
