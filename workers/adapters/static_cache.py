"""static_cache: fixed-size decoder caches and batch buckets, so that a GPU decodes through captured CUDA graphs.

transformers' `generate` compiles the decoder's forward with torch.compile(mode="reduce-overhead"), which captures
CUDA graphs and replays them per step, whenever the decoder's self-attention cache is a StaticCache and the model
runs on a GPU (`GenerationMixin._valid_auto_compile_criteria`). On a CPU the same static cache runs eagerly, which is
how tests/unit/test_static_decode.py checks that the token ids are those of the dynamic cache. Shapes must repeat for
graphs to be reused: the cache is sized by the preset's length limit (not the captions'), and batches are padded
to power-of-two buckets.
"""
from __future__ import annotations

from typing import Any

from transformers import StaticCache


def bucket(size: int) -> int:
    """The batch a chunk of `size` inputs is padded to: the next power of two."""
    if size <= 0:
        raise ValueError(f"size must be greater than 0, got {size}")
    return 1 << (size - 1).bit_length()


def max_cache_len(kwargs: dict[str, Any], generation_config: Any, input_len: int) -> int:
    """Positions a generate call can reach: its prompt and its length limit, as generate itself resolves them."""
    if kwargs.get("max_new_tokens") is not None:
        return input_len + int(kwargs["max_new_tokens"])
    if kwargs.get("max_length") is not None:
        return int(kwargs["max_length"])
    if getattr(generation_config, "max_new_tokens", None) is not None:
        return input_len + int(generation_config.max_new_tokens)
    return max(int(generation_config.max_length), input_len + 1)


def static_self_attention(decoder: Any, kwargs: dict[str, Any], input_len: int) -> StaticCache:
    """An empty StaticCache for a decoder's self-attention over one generate call (allocated on first use)."""
    return StaticCache(config=decoder.config, max_cache_len=max_cache_len(kwargs, decoder.generation_config, input_len))
