"""submit_crash_hook: run `capq` with a SIGKILL planted between a shard group's Redis push and the MongoDB cursor.

Usage: python -m tests.integration.submit_crash_hook MARKER submit ... The process kills itself once, on its
first cursor update (after the first group of shards is pushed and marked in Redis, before MongoDB hears of
it), and leaves MARKER behind so that a rerun started the same way goes through.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from storage.jobs import JobStore


def plant(marker: Path) -> None:
    mark_enqueued = JobStore.mark_enqueued

    def die_before_cursor(self, job_id, through_seq):
        if not marker.exists():
            marker.write_text(f"{through_seq}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return mark_enqueued(self, job_id, through_seq)

    JobStore.mark_enqueued = die_before_cursor


if __name__ == "__main__":
    plant(Path(sys.argv[1]))
    sys.argv = ["capq", *sys.argv[2:]]
    from capq.cli import main

    main()
