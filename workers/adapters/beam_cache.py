"""beam_cache: key/value caches for image-conditioned beam search: image projections made once and left in place."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import Cache, DynamicCache, EncoderDecoderCache


class FixedCrossAttentionCache(EncoderDecoderCache):
    """transformers' beam search reorders every cached key and value at every step. The cross-attention ones are
    projections of the image, equal across the beams of one image, and beam search only ever picks beams of the
    same image for each row, so reordering them copies the same data onto itself. For BLIP-base that copy was a
    third of CPU generate time at batch 8 and grew with the batch, which is what cancelled the gain of batching.
    (The same observation: huggingface/transformers#28357, OpenNMT/OpenNMT-tf#606.)
    """

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)


def fixed_cross_attention_cache(config, self_attention: Cache | None = None) -> FixedCrossAttentionCache:
    """An empty cache for one generate call of a decoder with cross-attention (config: the decoder's).

    `self_attention`: the decoder's own cache, a StaticCache for the graph path (default: a DynamicCache).
    """
    return FixedCrossAttentionCache(self_attention or DynamicCache(config=config), DynamicCache(config=config))


def image_cross_attention_cache(
    config,
    keys_values: Iterable[tuple[torch.Tensor, torch.Tensor]],
    rows_per_image: int,
    self_attention: Cache | None = None,
) -> FixedCrossAttentionCache:
    """A cache whose cross-attention entries are already filled, so the decoder never projects the image itself.

    Left to itself, the decoder projects the image once per beam at the first step: with 3 beams, two thirds of
    that work (for BLIP-base 577 image tokens x 12 layers, as much compute as a third of its vision encoder)
    repeats itself. `keys_values` holds one (keys, values) pair per decoder layer, projected once per image
    ([images, heads, tokens, head_dim]); each row is repeated for the image's `rows_per_image` beams, in the
    order generate expands its inputs (repeat_interleave).
    """
    cross = DynamicCache(config=config)
    for layer, (keys, values) in enumerate(keys_values):
        cross.update(keys.repeat_interleave(rows_per_image, 0), values.repeat_interleave(rows_per_image, 0), layer)
    return FixedCrossAttentionCache(self_attention or DynamicCache(config=config), cross)
