"""Health signals of a caption sample: empty, repeated, at the length limit, vocabulary."""

from __future__ import annotations

import pytest

from evaluation.health import health_signals, hits_limit, length_limit


def test_each_signal_counts_what_it_names():
    captions = ["a dog on grass", "A dog on grass", "", "  ", "a cat", "a train at a station near a town"]
    at_limit = [False, False, False, False, False, True]
    s = health_signals(captions, at_limit)
    assert s["empty_share"] == pytest.approx(2 / 6)
    assert s["repeated_share"] == pytest.approx(2 / 6)  # the dog caption, twice (case aside)
    assert s["length_limit_share"] == pytest.approx(1 / 6)
    assert s["vocabulary"] == len({"a", "dog", "on", "grass", "cat", "train", "at", "station", "near", "town"})
    assert s["mean_words"] == pytest.approx((4 + 4 + 2 + 8) / 6)


def test_limits_come_from_the_preset_and_count_within_two_tokens():
    assert length_limit({"max_new_tokens": 30, "max_length": 99}) == 30
    assert length_limit({"max_length": 20}) == 20 and length_limit({}) is None
    assert hits_limit(18, 20) and not hits_limit(17, 20) and not hits_limit(500, None)


def test_an_empty_sample_is_refused():
    with pytest.raises(ValueError, match="no captions"):
        health_signals([], [])
