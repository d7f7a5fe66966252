"""sample_images: small random JPEGs, each with its own content, for tests and benchmarks (no test imports)."""
from __future__ import annotations

import io
import random

from PIL import Image


def random_images(n: int, seed: int = 0, size: int = 48) -> list[tuple[str, bytes]]:
    """n distinct small JPEGs (random noise, so every file has its own sha256) as (file name, bytes)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        img = Image.frombytes("RGB", (size, size), bytes(rng.getrandbits(8) for _ in range(size * size * 3)))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=80)
        out.append((f"img_{seed}_{i:05d}.jpg", buf.getvalue()))
    return out
