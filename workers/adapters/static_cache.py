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

import torch
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


class StaticCaches:
    """A captioner's static caches and image buffers, reset and reused call after call.

    A captured CUDA graph reads and writes its tensors at the addresses it was recorded with; tensors made anew
    each call would be copied into the graph's own at every step, or make it record again. So one cache per
    (rows, length) and one buffer per (name, shape) is kept, marked as static addresses.
    """

    def __init__(self) -> None:
        self._caches: dict[tuple, StaticCache] = {}
        self._buffers: dict[tuple, torch.Tensor] = {}

    def self_attention(self, decoder: Any, kwargs: dict[str, Any], input_len: int, rows: int,
                       extra_len: int = 0) -> StaticCache:
        """The decoder's self-attention cache for a generate call over `rows` rows (images x beams), emptied.

        `extra_len`: positions the model caches ahead of its input ids, which generate does not count (GIT's image
        tokens).
        """
        length = extra_len + max_cache_len(kwargs, decoder.generation_config, input_len)
        key = (id(decoder), rows, length)
        cache = self._caches.get(key)
        if cache is None:
            # Its layers allocate on first use, with the rows of that call: one cache per row count.
            cache = self._caches[key] = StaticCache(config=decoder.config, max_cache_len=length)
        else:
            cache.reset()
        return cache

    def pin(self, name: Any, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor`'s values in this captioner's buffer for (name, shape, dtype), at the same address every call."""
        key = (name, tuple(tensor.shape), tensor.dtype, tensor.device)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = torch.empty_like(tensor)
            torch._dynamo.mark_static_address(buffer)
        return buffer.copy_(tensor)

    def pin_cross_attention(self, cache: Any) -> None:
        """Move a filled cross-attention cache's keys and values into pinned buffers (EncoderDecoderCache)."""
        for index, layer in enumerate(cache.cross_attention_cache.layers):
            layer.keys = self.pin(("cross-keys", index), layer.keys)
            layer.values = self.pin(("cross-values", index), layer.values)
