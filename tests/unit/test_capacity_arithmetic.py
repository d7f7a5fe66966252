"""Capacity arithmetic: workers needed for a target queue age with headroom, and the time to drain a backlog."""

from __future__ import annotations

import math

import pytest

from capq.capacity import drain_seconds, model_plan, workers_needed
from capq.settings import load_settings


def test_workers_keep_up_with_arrivals_with_headroom():
    # 9 images/s arriving, 2 images/s per worker, no backlog: 4.5 workers' worth busy all the time; at most 80%
    # busy needs 11.25 / 2 -> 6 workers
    assert workers_needed(9.0, 0, 2.0, 600, max_utilization=0.8) == 6
    assert workers_needed(9.0, 0, 2.0, 600, max_utilization=1.0) == 5
    assert workers_needed(8.0, 0, 2.0, 600, max_utilization=1.0) == 4  # exactly 4, not 5 from float noise


def test_a_backlog_must_drain_within_the_target_age_while_work_keeps_arriving():
    # 1,200 images queued, 1 image/s arriving, 10 minutes target: 1 + 1200/600 = 3 images/s -> 2 workers at 1.5/s
    assert workers_needed(1.0, 1200, 1.5, 600) == 2
    # and then the backlog is gone in 1200 / (3 - 1) = 600 s: exactly the target
    assert drain_seconds(1200, 2, 1.5, 1.0) == pytest.approx(600.0)
    # one worker would need 1200 / (1.5 - 1) = 2400 s; workers slower than arrivals never drain
    assert drain_seconds(1200, 1, 1.5, 1.0) == pytest.approx(2400.0)
    assert drain_seconds(1200, 1, 0.5, 1.0) == math.inf
    assert drain_seconds(0, 0, 1.5, 1.0) == 0.0
    assert workers_needed(0.0, 0, 1.5, 600) == 0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        workers_needed(1.0, 10, 0.0, 600)
    with pytest.raises(ValueError):
        workers_needed(1.0, 10, 1.0, 600, max_utilization=0)


def test_a_model_row_uses_the_mean_measured_worker_and_says_when_nothing_was_measured():
    s = load_settings(
        {"CAPQ_ARRIVAL_WINDOW_S": "100", "CAPQ_CAPACITY_TARGET_AGE_S": "10", "CAPQ_CAPACITY_MAX_UTILIZATION": "0.8"}
    )
    # 40 images arrived in 100 s (0.4/s), 40 queued, workers measured at 2 and 3 images/s (mean 2.5), 1 online
    row = model_plan(s, "git", 1, {"git@a": 2.0, "git@b": 3.0}, 40, 40, 12.0)
    assert row["per_worker_images_per_s"] == 2.5 and row["arrival_images_per_s"] == 0.4
    assert row["workers_needed"] == 2  # (0.4 + 40/10) / 2.5 = 1.76
    assert row["drain_s"] == pytest.approx(40 / 2.1, abs=0.05) and row["drain_s_with_needed"] == pytest.approx(
        40 / 4.6, abs=0.05
    )
    unknown = model_plan(s, "git", 0, {}, 5, 40, 12.0)
    assert unknown["workers_needed"] is None and "start one" in unknown["reason"]
    idle = model_plan(s, "git", 0, {}, 0, 0, 0.0)
    assert idle["workers_needed"] == 0 and idle["drain_s"] == 0.0
