"""Fixtures for unit tests: the seed images and tiny random caption models built offline once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tooling.paths import seed_dir


@pytest.fixture(scope="session")
def seed_images():
    """The 10 seed COCO images as RGB PIL images, sorted by file name."""
    from PIL import Image

    folder = seed_dir() / "test_images" / "images"
    paths = sorted(folder.glob("*.jpg"))
    if not paths:
        pytest.skip(f"no seed images in {folder}; set CAPQ_SEED_DIR to the seed data folder")
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """{model name: folder} of tiny random-weight checkpoints for all four architectures."""
    from tooling.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def captioners(tiny_models):
    """{model name: loaded Captioner} over the tiny checkpoints, batch size 4, loaded once."""
    from workers.models import load_captioner

    return {name: load_captioner(name, folder, max_batch_size=4) for name, folder in tiny_models.items()}
