"""preprocess_bench: images/s per core from JPEG bytes to model pixels, the image processor's path vs capq's tensor
path.

Run: `python -m bench.preprocess_bench [--models blip,git] [--rounds 3]`. No stack, no model weights: only the
image processors of the real checkpoints' settings. One thread (torch and Pillow), so the figures are per core.
"Before" is what a worker did until issue 17: a full decode (capq.imaging.decode_rgb), then the Hugging Face PIL
image processor. "After" is what it does now: a JPEG decoded at the smallest scale not below the model's input
(Pillow's draft), then resize, crop and normalise as torch operations (workers.preprocess). Both run in the same
process on the same bytes, rounds alternating; the ratio is the median over rounds.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from capq.imaging import decode_rgb
from workers.preprocess import PixelRecipe, uint8_chw

SIZES = {"640x480": (640, 480), "1920x1080": (1920, 1080), "4000x3000": (4000, 3000)}
MAX_PIXELS = 100_000_000


def processors() -> dict:
    from transformers import BlipImageProcessorPil, CLIPImageProcessorPil, ViTImageProcessorPil

    return {
        "blip": BlipImageProcessorPil(size={"height": 384, "width": 384}),
        "blip2": BlipImageProcessorPil(size={"height": 224, "width": 224}),
        "git": CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}),
        "vit-gpt2": ViTImageProcessorPil(size={"height": 224, "width": 224}),
    }


def photo_jpeg(width: int, height: int, seed: int) -> bytes:
    """A photo-like JPEG (gradients, grain, edges) at quality 90: decode cost like a camera's."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 6 + seed, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 4, height, dtype=np.float32)[:, None, None]
    pixels = 127 + 100 * np.sin(x + y * np.array([1.0, 1.7, 2.3], dtype=np.float32))
    pixels += rng.normal(0, 12, (height, width, 3)).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def before(processor) -> Callable[[list[bytes]], torch.Tensor]:
    def run(batch: list[bytes]) -> torch.Tensor:
        return torch.stack(
            [
                processor(images=decode_rgb(data, MAX_PIXELS, max_side_px=10**5), return_tensors="pt").pixel_values[0]
                for data in batch
            ]
        )

    return run


def after(recipe: PixelRecipe) -> Callable[[list[bytes]], torch.Tensor]:
    def run(batch: list[bytes]) -> torch.Tensor:
        resized = [recipe.resize(uint8_chw(decode_rgb(data, MAX_PIXELS, min_size=recipe.draft_size))) for data in batch]
        return recipe.normalize(torch.stack(resized), torch.float32)

    return run


def rate(fn: Callable[[list[bytes]], torch.Tensor], images: list[bytes]) -> float:
    t0 = time.perf_counter()
    out = fn(images)
    assert out.shape[0] == len(images)
    return len(images) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="blip,git")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", default="16,8,4", help="images per round for 640x480,1920x1080,4000x3000")
    args = parser.parse_args()
    torch.set_num_threads(1)
    counts = dict(zip(SIZES, (int(n) for n in args.images.split(","))))
    print(f"torch {torch.__version__}, Pillow {Image.__version__}, 1 thread; median of {args.rounds} rounds\n")
    print("| model processor | JPEG | before images/s | after images/s | after / before |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name in args.models.split(","):
        processor = processors()[name]
        slow, fast = before(processor), after(PixelRecipe.from_processor(processor))
        for label, (width, height) in SIZES.items():
            images = [photo_jpeg(width, height, seed) for seed in range(counts[label])]
            slow(images[:1]), fast(images[:1])  # warm-up
            rounds = []
            for _ in range(args.rounds):
                rounds.append((rate(slow, images), rate(fast, images)))
            b = statistics.median(r[0] for r in rounds)
            a = statistics.median(r[1] for r in rounds)
            ratio = statistics.median(r[1] / r[0] for r in rounds)
            print(f"| {name} | {label} | {b:.1f} | {a:.1f} | {ratio:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
