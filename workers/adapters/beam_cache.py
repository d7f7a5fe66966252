"""beam_cache: a key/value cache for image-conditioned beam search that leaves cross-attention entries in place."""
from __future__ import annotations

import torch
from transformers import DynamicCache, EncoderDecoderCache


class FixedCrossAttentionCache(EncoderDecoderCache):
    """transformers' beam search reorders every cached key and value at every step. The cross-attention ones are
    projections of the image, equal across the beams of one image, and beam search only ever picks beams of the
    same image for each row, so reordering them copies the same data onto itself. For BLIP-base that copy was a
    third of CPU generate time at batch 8 and grew with the batch, which is what cancelled the gain of batching.
    (The same observation: huggingface/transformers#28357, OpenNMT/OpenNMT-tf#606.)
    """

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)


def fixed_cross_attention_cache(config) -> FixedCrossAttentionCache:
    """An empty cache for one generate call of a decoder with cross-attention (config: the decoder's)."""
    return FixedCrossAttentionCache(DynamicCache(config=config), DynamicCache(config=config))
