"""ETA arithmetic: tier shares as the workers' tier cycle makes them, and piecewise finish times."""

from __future__ import annotations

import pytest

from producer.eta import finish_seconds, tier_shares

W = {"premium": 6, "plus": 3, "free": 1}


def test_shares_follow_the_weights_and_an_empty_tier_falls_through_to_the_highest_busy_one():
    assert tier_shares(W, {"premium", "plus", "free"}) == {"premium": 0.6, "plus": 0.3, "free": 0.1}
    assert tier_shares(W, {"plus", "free"}) == {"plus": 0.9, "free": 0.1}
    assert tier_shares(W, {"free"}) == {"free": 1.0}


def test_a_zero_weight_tier_waits_for_every_other_tier():
    strict = {"premium": 6, "plus": 3, "free": 0}
    assert tier_shares(strict, {"plus", "free"}) == {"plus": 1.0, "free": 0.0}
    # 10 plus images first at 2 images/s, then the 4 free ones
    assert finish_seconds("free", 4, {"plus": 10}, strict, 2.0) == pytest.approx(7.0)


def test_finish_time_counts_the_other_tiers_shares_while_the_job_waits():
    # 24 plus images and 40 free ones at 10 images/s: plus takes 0.9 of the picks, done at 24/9 s
    assert finish_seconds("plus", 24, {"free": 40}, W, 10.0) == pytest.approx(24 / 9)
    # the free job is done once all 64 images are (plus ran out first)
    assert finish_seconds("free", 40, {"plus": 24}, W, 10.0) == pytest.approx(6.4)
    # a premium job behind nothing else of its tier goes at 0.6 of the rate while the others are busy
    assert finish_seconds("premium", 6, {"plus": 100, "free": 100}, W, 1.0) == pytest.approx(10.0)
