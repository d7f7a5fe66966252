"""Trace ids: a caller's well-formed id is kept, anything else replaced; headers carry the id in hand."""

from __future__ import annotations

from capq import tracing


def test_only_well_formed_ids_are_accepted_from_callers():
    good = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tracing.accept(good) == good
    assert tracing.accept(good.upper()) == good
    assert tracing.accept(None, f"00-{good}-00f067aa0ba902b7-01") == good
    for bad in ("", "x" * 32, good + "0", "0" * 32, "<script>", "4bf92f35 77b34da6a3ce929d0e0e4736"):
        assert tracing.accept(bad) is None, bad
    assert tracing.accept(None, "00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None


def test_bound_sets_the_id_for_a_block_and_headers_carry_it():
    assert tracing.current() is None and tracing.celery_headers() == {}
    tid = tracing.new_trace_id()
    with tracing.bound(tid):
        assert tracing.accept(tid) == tid
        assert tracing.celery_headers() == {tracing.CELERY_HEADER: tid}
    assert tracing.current() is None  # nothing leaks to the next submission in this process
