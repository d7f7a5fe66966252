"""Unit tests for a GPU worker's automatic batch size (workers.batch_size), on made-up memory figures."""

from __future__ import annotations

import json

import pytest

from capq.presets import get_preset
from workers.batch_size import BUCKETS, MemoryFootprint, choose_batch_size, worst_case
from workers.consume import heartbeat_value

GiB, MiB = 2**30, 2**20


@pytest.mark.parametrize(
    ("free_gib", "per_image_mib", "fixed_gib", "expected"),
    [
        # BLIP-base on an 80 GB H100 (docs/benchmarks.md: 18.1 GiB peak at 256, 9.3 at 128 -> ~70 MiB per image)
        (78, 70, 0.5, 256),
        # the same model with 12 GiB free: 0.8 x 12 - 0.5 = 9.1 GiB -> 128 x 70 MiB = 8.75 GiB fits, 256 does not
        (12, 70, 0.5, 128),
        # BLIP-2 OPT-2.7b with 40 GiB free after its 7.5 GiB of weights, ~600 MiB per image (5 beams)
        (40, 600, 1.0, 32),
        # nothing fits: still one image at a time, never zero
        (1, 2000, 0.5, 1),
    ],
)
def test_largest_bucket_that_fits_the_free_memory(free_gib, per_image_mib, fixed_gib, expected):
    footprint = MemoryFootprint(int(fixed_gib * GiB), per_image_mib * MiB)
    size = choose_batch_size(free_gib * GiB, footprint)
    assert size == expected and size in BUCKETS
    if size < max(BUCKETS):  # the next bucket up would not have fitted
        assert footprint.fixed_bytes + 2 * size * footprint.per_image_bytes > 0.8 * free_gib * GiB


def test_headroom_and_buckets_are_honoured():
    footprint = MemoryFootprint(0, 100 * MiB)
    assert choose_batch_size(10 * GiB, footprint, headroom=1.0) == 64  # 102 would fit, 128 does not
    assert choose_batch_size(10 * GiB, footprint, headroom=0.5) == 32
    assert choose_batch_size(10 * GiB, footprint, buckets=(1, 3, 24)) == 24


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, MemoryFootprint(0, 1)), "non-negative"),
        ((GiB, MemoryFootprint(0, 0)), "per image > 0"),
        ((GiB, MemoryFootprint(-5, 1)), "non-negative"),
    ],
)
def test_nonsense_figures_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        choose_batch_size(*args)
    with pytest.raises(ValueError, match="headroom"):
        choose_batch_size(GiB, MemoryFootprint(0, 1), headroom=1.5)


def test_memory_is_measured_on_captions_forced_to_their_length_limit():
    blip = worst_case(get_preset("blip", "default"))
    assert blip["generate"]["min_length"] == blip["generate"]["max_length"] == 20
    blip2 = worst_case(get_preset("blip2", "default"))
    assert blip2["generate"]["min_new_tokens"] == blip2["generate"]["max_new_tokens"] == 30
    assert blip2["prompt"] == get_preset("blip2", "default")["prompt"]
    assert get_preset("blip", "default")["generate"]["min_length"] == 5  # the preset itself is left alone


def test_the_heartbeat_carries_the_batch_size():
    value = json.loads(heartbeat_value({"batch_size": 128, "device": "cuda:0"}))
    assert value["batch_size"] == 128 and value["device"] == "cuda:0" and value["at"] > 0
