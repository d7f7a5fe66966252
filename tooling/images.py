"""images: JPEGs of random noise, each with its own content, for tests and benchmarks."""

from __future__ import annotations

import io
import os
import random

from PIL import Image


def noise_jpeg(size: tuple[int, int], rng: random.Random | None = None, quality: int = 80) -> bytes:
    """A JPEG of random RGB noise: drawn from rng (reproducible), else from os.urandom.

    Noise barely compresses, so the file size follows the pixel count (about 20-100 KB at 160-340 px, q85)."""
    n = size[0] * size[1] * 3
    pixels = bytes(rng.getrandbits(8) for _ in range(n)) if rng else os.urandom(n)
    buf = io.BytesIO()
    Image.frombytes("RGB", size, pixels).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def random_images(n: int, seed: int = 0, size: int = 48) -> list[tuple[str, bytes]]:
    """n distinct small JPEGs (random noise, so every file has its own sha256) as (file name, bytes)."""
    rng = random.Random(seed)
    return [(f"img_{seed}_{i:05d}.jpg", noise_jpeg((size, size), rng)) for i in range(n)]
