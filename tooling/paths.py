"""paths: where the harness finds the checkout, the seed data, its logs and its tiny models."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Logs of the processes tests and benches start, and the tiny models they share across runs.
LOG_DIR = REPO / ".capq" / "test-logs"
TINY_DIR = Path(os.environ.get("CAPQ_TEST_MODELS") or REPO / ".capq" / "test-models")


def seed_dir() -> Path:
    """The seed project's data: $CAPQ_SEED_DIR, else <repo>/../shared/seed."""
    return Path(os.environ.get("CAPQ_SEED_DIR") or REPO.parent / "shared" / "seed")


def seed_images() -> list[Path]:
    """The seed JPEGs (test_images/images/*.jpg under seed_dir()), sorted by name; [] when there are none."""
    return sorted((seed_dir() / "test_images" / "images").glob("*.jpg"))


def missing_seed_images() -> str:
    """What to do when seed_images() is empty."""
    return (
        f"no seed images in {seed_dir() / 'test_images' / 'images'}; set CAPQ_SEED_DIR to the seed folder "
        "(the one holding test_images/images/*.jpg)"
    )
