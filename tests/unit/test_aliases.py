"""Alias splits: deterministic per image, within binomial error of their weights, and moved only where weights move."""

from __future__ import annotations

import hashlib
import math

import pytest

from producer.aliases import check_alias_name, parse_arms, pick
from producer.errors import BadInput

SHAS = [hashlib.sha256(f"image-{i}".encode()).hexdigest() for i in range(10_000)]


def _split(arms):
    counts = {a["model"]: 0 for a in arms}
    for sha in SHAS:
        counts[pick("caption-default", arms, sha)] += 1
    return counts


@pytest.mark.parametrize("spec", ["blip:90,git:10", "blip:50, git:30, vit-gpt2:20", "blip:1,blip2:1,git:1,vit-gpt2:1"])
def test_splits_follow_the_weights_within_binomial_error(spec):
    arms = parse_arms(spec)
    total = sum(a["weight"] for a in arms)
    counts = _split(arms)
    for a in arms:
        p = a["weight"] / total
        sigma = math.sqrt(len(SHAS) * p * (1 - p))
        # 4 standard deviations: a correct split lands outside this once in ~16,000 checks
        assert abs(counts[a["model"]] - len(SHAS) * p) < 4 * sigma, (spec, counts)


def test_the_same_image_always_goes_to_the_same_model():
    arms = parse_arms("blip:90,git:10")
    first = [pick("caption-default", arms, s) for s in SHAS[:2000]]
    assert first == [pick("caption-default", parse_arms("blip:90, git:10"), s) for s in SHAS[:2000]]
    assert set(first) == {"blip", "git"}


def test_raising_one_weight_moves_images_only_into_that_arm():
    before = {s: pick("a", parse_arms("blip:90,git:10"), s) for s in SHAS}
    after = {s: pick("a", parse_arms("blip:80,git:20"), s) for s in SHAS}
    moved = [(before[s], after[s]) for s in SHAS if before[s] != after[s]]
    assert moved and set(moved) == {("blip", "git")}


def test_a_zero_weight_arm_gets_nothing():
    assert _split(parse_arms("blip:0,git:5")) == {"blip": 0, "git": 10_000}


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "e.g. 'blip:90,git:10'"),
        ("blip", "MODEL:WEIGHT"),
        ("blip:x", "whole-number"),
        ("blip:-1", "whole-number"),
        ("bleep:5", "unknown model"),
        ("blip:1,blip:2", "appears twice"),
        ("blip:0,git:0", "above 0"),
    ],
)
def test_malformed_weights_say_what_to_fix(spec, message):
    with pytest.raises(BadInput, match=message):
        parse_arms(spec)


def test_alias_names_cannot_shadow_models_or_carry_odd_characters():
    assert check_alias_name("caption-default") == "caption-default"
    for bad in ("blip", "Caption", "a b", "$ne", ""):
        with pytest.raises(BadInput):
            check_alias_name(bad)
