"""vit_gpt2: ViT encoder + GPT-2 decoder (VisionEncoderDecoderModel), unconditional captioning."""

from __future__ import annotations

from typing import Any

from workers.adapters.base import Captioner, check_model_type
from workers.adapters.beam_cache import fixed_cross_attention_cache


class VitGpt2Captioner(Captioner):
    """ViT-GPT2 captioner, `nlpconnect/vit-gpt2-image-captioning` or a folder like it."""

    name = "vit-gpt2"
    supports_prompt = False
    supports_static_cache = True

    def _load(self) -> None:
        from transformers import AutoConfig, AutoTokenizer, VisionEncoderDecoderModel, ViTImageProcessorPil

        config = self.load_pretrained(AutoConfig.from_pretrained)
        check_model_type(self.name, self.checkpoint, config, ("vision-encoder-decoder",))
        # AutoProcessor yields only the tokenizer for this checkpoint: load both halves on their own.
        self.image_processor = self.load_pretrained(ViTImageProcessorPil.from_pretrained)
        self.tokenizer = self.load_pretrained(AutoTokenizer.from_pretrained)
        if self.tokenizer.pad_token is None:
            # GPT-2 has no pad token; the model card and the seed pad with eos.
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = self.load_pretrained(
            VisionEncoderDecoderModel.from_pretrained, config=config, dtype=self.torch_dtype
        )

    def _generate(self, batch: list[Any], prompt: str | None, kwargs: dict[str, Any]) -> list[str]:
        kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        kwargs.setdefault("eos_token_id", self.tokenizer.eos_token_id)
        decoder, config = self.model.decoder, self.model.generation_config
        own = None
        if self.static_cache:
            rows = len(batch) * max(
                kwargs.get("num_beams") or config.num_beams or 1,
                kwargs.get("num_return_sequences") or config.num_return_sequences or 1,
            )
            # The decoder starts from its start token alone: one position before the first new one.
            own = self.static_caches.self_attention(decoder, {"max_length": config.max_length, **kwargs}, 1, rows)
        kwargs.setdefault("cache", fixed_cross_attention_cache(decoder.config, own))
        out = self.model.generate(pixel_values=self.pixels(batch), **kwargs)
        # The first token is the decoder start token, never part of the caption.
        return self.tokenizer.batch_decode(out[:, 1:], skip_special_tokens=True)
