"""The UI's words for the API's job ETA (producer/eta.py's shape): known, unknown with its reason, or none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ui.jobs_view import eta_words


def _eta(seconds: float) -> dict:
    at = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="seconds")
    return {"eta_s": seconds, "eta_at": at, "per_model": [{"model": "blip", "eta_s": seconds}]}


def test_a_known_eta_reads_as_a_clock_time_and_a_rough_wait():
    eta = _eta(185.0)
    clock = datetime.fromisoformat(eta["eta_at"]).strftime("%H:%M")
    words = eta_words(eta)
    assert words.startswith("expected to finish at ") and " UTC (in about 3 min)" in words
    assert clock in words
    assert eta_words(_eta(20.0)).endswith("(in under a minute)")
    assert eta_words(_eta(2 * 3600 + 600)).endswith("(in about 2 h 10 min)")
    # a finish on another day names its date
    assert datetime.fromisoformat(_eta(3 * 86400)["eta_at"]).strftime("%Y-%m-%d") in eta_words(_eta(3 * 86400))


def test_an_unknown_eta_gives_the_apis_reason_and_a_finished_job_none():
    unknown = {
        "eta_s": None,
        "eta_at": None,
        "reason": "no git worker online with a measured throughput (in the last 300 s)",
        "per_model": [],
    }
    assert eta_words(unknown) == "no estimate: no git worker online with a measured throughput (in the last 300 s)"
    assert eta_words(None) == ""
