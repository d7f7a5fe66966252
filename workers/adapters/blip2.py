"""blip2: BLIP-2 with an OPT language model (Blip2ForConditionalGeneration)."""

from __future__ import annotations

from typing import Any

import torch

from workers.adapters.base import Captioner, CheckpointError, check_model_type


class Blip2Captioner(Captioner):
    """BLIP-2 captioner for OPT-based checkpoints such as `Salesforce/blip2-opt-2.7b`."""

    name = "blip2"
    supports_static_cache = True

    def _load(self) -> None:
        from transformers import AutoConfig, AutoTokenizer, Blip2ForConditionalGeneration, BlipImageProcessorPil

        config = self.load_pretrained(AutoConfig.from_pretrained)
        check_model_type(self.name, self.checkpoint, config, ("blip-2",))
        if config.text_config.is_encoder_decoder:
            raise CheckpointError(
                self.name,
                self.checkpoint,
                "its language model is encoder-decoder (Flan-T5)",
                "use an OPT-based BLIP-2 checkpoint such as Salesforce/blip2-opt-2.7b",
            )
        if getattr(config, "image_token_id", None) is None:
            raise CheckpointError(
                self.name,
                self.checkpoint,
                "its config has no image_token_index",
                "use a checkpoint saved by transformers >= 4.47, whose tokenizer has <image>",
            )
        self.image_processor = self.load_pretrained(BlipImageProcessorPil.from_pretrained)
        self.tokenizer = self.load_pretrained(AutoTokenizer.from_pretrained)
        self.model = self.load_pretrained(
            Blip2ForConditionalGeneration.from_pretrained, config=config, dtype=self.torch_dtype
        )

    def _generate(self, batch: list[Any], prompt: str | None, kwargs: dict[str, Any]) -> list[str]:
        config = self.model.config
        n_query = config.num_query_tokens
        # One <image> placeholder per query token, then bos and the prompt: what Blip2Processor builds.
        prefix = [config.image_token_id] * n_query + [config.text_config.bos_token_id]
        if prompt:
            prefix += self.tokenizer(prompt, add_special_tokens=False).input_ids
        input_ids = torch.tensor([prefix] * len(batch), dtype=torch.long, device=self.device)
        # transformers 5 counts the placeholders in max_length/min_length; 4.x (which the seed and the
        # BLIP-2 examples ran on) counted text tokens only, so shift them back to that meaning.
        for key in ("max_length", "min_length"):
            if key in kwargs:
                kwargs[key] += n_query
        if self.static_cache:
            # OPT's static cache (the graph path on a GPU), sized as generate sizes its own; equal ids:
            # test_static_decode.py. capq's rather than cache_implementation="static", which reorders beams by
            # reallocating the cache.
            language, config = self.model.language_model, self.model.generation_config
            rows = len(batch) * max(
                kwargs.get("num_beams") or config.num_beams or 1,
                kwargs.get("num_return_sequences") or config.num_return_sequences or 1,
            )
            kwargs.setdefault("cache", self.static_caches.self_attention(language, kwargs, len(prefix), rows))
        out = self.model.generate(
            pixel_values=self.pixels(batch),
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            **kwargs,
        )
        # The output repeats the placeholders, bos and prompt; keep only the new tokens.
        return self.tokenizer.batch_decode(out[:, input_ids.shape[1] :], skip_special_tokens=True)

    def _search_module(self) -> torch.nn.Module:
        return self.model.language_model
