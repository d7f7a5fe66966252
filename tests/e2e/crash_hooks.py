"""crash_hooks: run `capq` with a SIGKILL planted right after a worker's first caption insert, for fault tests.

Usage: python -m tests.e2e.crash_hooks MARKER worker --model ... The process kills itself once, after its
first non-empty caption insert and before the items' results are written, and leaves MARKER behind so that
the test (and any later worker started the same way) knows the fault happened.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from storage.captions import CaptionStore


def plant(marker: Path) -> None:
    insert_new = CaptionStore.insert_new

    def insert_then_die(self, docs):
        new = insert_new(self, docs)
        if docs and not marker.exists():
            marker.write_text(f"{len(docs)}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return new

    CaptionStore.insert_new = insert_then_die


if __name__ == "__main__":
    plant(Path(sys.argv[1]))
    sys.argv = ["capq", *sys.argv[2:]]
    from capq.cli import main

    main()
