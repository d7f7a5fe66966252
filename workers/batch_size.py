"""batch_size: a GPU worker's batch size, picked from the model's memory per image and the GPU's free memory."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("capq.worker")

# Power-of-two sizes: the graph path captures one CUDA graph per size, so a few sizes are reused by every batch.
BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Share of the free memory a batch may plan for: the allocator fragments, and other processes may grow.
HEADROOM = 0.8


@dataclass(frozen=True)
class MemoryFootprint:
    """What one generate call costs in GPU memory beyond the loaded weights: fixed + per_image x batch (bytes)."""

    fixed_bytes: int
    per_image_bytes: int


def choose_batch_size(
    free_bytes: int, footprint: MemoryFootprint, headroom: float = HEADROOM, buckets: tuple[int, ...] = BUCKETS
) -> int:
    """The largest bucket whose generate fits in `headroom` x `free_bytes`; the smallest bucket if none does.

    :param free_bytes: GPU memory free for this worker once its weights are loaded.
    :param footprint: the model's cost per generate call (`measure_footprint` on a GPU).
    """
    if free_bytes < 0 or footprint.fixed_bytes < 0 or footprint.per_image_bytes <= 0:
        raise ValueError(
            f"free bytes and footprint must be non-negative (per image > 0), got {free_bytes}, {footprint}"
        )
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}")
    budget = headroom * free_bytes - footprint.fixed_bytes
    fitting = [size for size in sorted(buckets) if size * footprint.per_image_bytes <= budget]
    return fitting[-1] if fitting else min(buckets)


def worst_case(preset: dict) -> dict:
    """The preset with captions forced to their length limit, which is what memory must be planned for."""
    generate = dict(preset.get("generate") or {})
    for limit, floor in (("max_new_tokens", "min_new_tokens"), ("max_length", "min_length")):
        if limit in generate:
            generate[floor] = generate[limit]
    return {**preset, "generate": generate}


def measure_footprint(captioner, preset: dict, sizes: tuple[int, int] = (2, 8)) -> MemoryFootprint:
    """Peak GPU memory of two worst-case generate calls on blank images, fitted as fixed + per image x batch."""
    import torch
    from PIL import Image

    blank = captioner.preprocess(Image.new("RGB", (640, 480), "gray"))
    device = torch.device(captioner.device)
    base = torch.cuda.memory_allocated(device)
    peaks = []
    saved, captioner.max_batch_size = captioner.max_batch_size, max(sizes)
    try:
        for size in sizes:
            torch.cuda.reset_peak_memory_stats(device)
            captioner.generate([blank] * size, worst_case(preset))
            peaks.append(torch.cuda.max_memory_allocated(device) - base)
    finally:
        captioner.max_batch_size = saved
    per_image = max(1, (peaks[1] - peaks[0]) // (sizes[1] - sizes[0]))
    return MemoryFootprint(max(0, peaks[0] - per_image * sizes[0]), per_image)


def free_gpu_bytes(device: str) -> int:
    """Free memory on the device, counting what torch's caching allocator holds but does not use as free."""
    import torch

    dev = torch.device(device)
    free, _ = torch.cuda.mem_get_info(dev)
    return free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)


def auto_batch_size(captioner, preset: dict) -> int:
    """Measure the loaded model on its GPU and pick its batch size; logged with the figures it came from."""
    footprint = measure_footprint(captioner, preset)
    free = free_gpu_bytes(captioner.device)
    size = choose_batch_size(free, footprint)
    log.info(
        "batch size %d picked for %s on %s: %.2f GiB free, %.1f MiB per image, %.2f GiB fixed",
        size,
        captioner.name,
        captioner.device,
        free / 2**30,
        footprint.per_image_bytes / 2**20,
        footprint.fixed_bytes / 2**30,
    )
    return size
