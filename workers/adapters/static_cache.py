"""static_cache: fixed-size decoder caches and batch buckets, so that a GPU decodes through captured CUDA graphs.

transformers' `generate` compiles the decoder's forward with torch.compile(mode="reduce-overhead"), which captures
CUDA graphs and replays them per step, whenever the decoder's self-attention cache is a StaticCache and the model
runs on a GPU (`GenerationMixin._valid_auto_compile_criteria`), but in greedy search and sampling only: its beam
search calls the model uncompiled, so for beam presets the captioner compiles the decode steps itself
(`StaticCaches.compiled_steps`) over a cache that reorders its beams in place (`BeamStaticCache`). On a CPU the same
static cache runs eagerly, which is
how tests/unit/test_static_decode.py checks that the token ids are those of the dynamic cache. Shapes must repeat for
graphs to be reused: the cache is sized by the preset's length limit (not the captions'), and batches are padded
to power-of-two buckets.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
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


class BeamStaticCache(StaticCache):
    """A StaticCache whose beam reordering keeps every key and value tensor where it is.

    transformers' layers reorder by assigning `keys.index_select(...)`: new tensors at new addresses every step, which
    a captured CUDA graph would copy into its own buffers at every replay, and only after testing
    `get_seq_length() > 0`, a read-back from the GPU. The same values are copied in place here.
    """

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        for layer in self.layers:
            if layer.is_initialized:
                index = beam_idx.to(layer.keys.device)
                layer.keys.copy_(layer.keys.index_select(0, index))
                layer.values.copy_(layer.values.index_select(0, index))


class StaticCaches:
    """A captioner's static caches and image buffers, reset and reused call after call.

    A captured CUDA graph reads and writes its tensors at the addresses it was recorded with; tensors made anew
    each call would be copied into the graph's own at every step, or make it record again. So one cache per
    (rows, length) and one buffer per (name, shape) is kept, marked as static addresses.
    """

    def __init__(self) -> None:
        self._caches: dict[tuple, StaticCache] = {}
        self._buffers: dict[tuple, torch.Tensor] = {}
        self._compiled: dict[tuple, Any] = {}

    def self_attention(
        self, decoder: Any, kwargs: dict[str, Any], input_len: int, rows: int, extra_len: int = 0
    ) -> StaticCache:
        """The decoder's self-attention cache for a generate call over `rows` rows (images x beams), emptied.

        `extra_len`: positions the model caches ahead of its input ids, which generate does not count (GIT's image
        tokens).
        """
        length = extra_len + max_cache_len(kwargs, decoder.generation_config, input_len)
        key = (id(decoder), rows, length)
        cache = self._caches.get(key)
        if cache is None:
            # Its layers allocate on first use, with the rows of that call: one cache per row count.
            cache = self._caches[key] = BeamStaticCache(config=decoder.config, max_cache_len=length)
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

    @contextmanager
    def compiled_steps(self, module: torch.nn.Module, compile_config: Any) -> Iterator[None]:
        """Within: every forward of `module` after its first (generate's prefill) runs through torch.compile.

        For beam search, which transformers never compiles. One compiled forward per (module, config) is kept, so
        its graphs are reused call after call.
        """
        key = (id(module), repr(compile_config.to_dict()))
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = torch.compile(module.forward, **compile_config.to_dict())
        full, calls, own = module.forward, 0, vars(module).get("forward")

        @functools.wraps(full)  # generate checks its arguments against the forward's signature
        def forward(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return (full if calls == 1 else compiled)(*args, **kwargs)

        module.forward = forward
        try:
            yield
        finally:
            if own is None:
                del module.forward
            else:
                module.forward = own
