"""blip: BLIP (BlipForConditionalGeneration), unconditional or prompt-conditioned captioning."""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F

from workers.adapters.base import Captioner, check_model_type
from workers.adapters.beam_cache import image_cross_attention_cache


class BlipCaptioner(Captioner):
    """BLIP captioner; `Salesforce/blip-image-captioning-large` or `-base`, or a folder like them."""

    name = "blip"
    supports_static_cache = True

    def _load(self) -> None:
        from transformers import AutoConfig, AutoTokenizer, BlipForConditionalGeneration, BlipImageProcessorPil

        config = self.load_pretrained(AutoConfig.from_pretrained)
        check_model_type(self.name, self.checkpoint, config, ("blip",))
        self.image_processor = self.load_pretrained(BlipImageProcessorPil.from_pretrained)
        self.tokenizer = self.load_pretrained(AutoTokenizer.from_pretrained)
        self.model = self.load_pretrained(
            BlipForConditionalGeneration.from_pretrained, config=config, dtype=self.torch_dtype
        )
        fuse_vision_attention(self.model.vision_model)

    def _generate(self, batch: list[Any], prompt: str | None, kwargs: dict[str, Any]) -> list[str]:
        # What BlipForConditionalGeneration.generate does, except that the decoder's cross-attention keys and
        # values are projected here once per image instead of inside generate once per beam.
        model, text = self.model, self.model.config.text_config
        image_embeds = model.vision_model(pixel_values=self.pixels(batch))[0]
        if prompt:
            # [CLS] prompt [SEP] -> [DEC] prompt: the decoder starts from its bos, and the [SEP] would end the text.
            input_ids = self.tokenizer([prompt] * len(batch), return_tensors="pt").input_ids[:, :-1].to(self.device)
        else:
            input_ids = torch.empty((len(batch), 1), dtype=torch.long, device=self.device)
        input_ids[:, 0] = text.bos_token_id
        decoder = model.text_decoder
        # generate repeats each image's inputs this many times (its beams), and so must the cache.
        rows = max(
            kwargs.get("num_beams") or decoder.generation_config.num_beams or 1,
            kwargs.get("num_return_sequences") or decoder.generation_config.num_return_sequences or 1,
        )
        own = (
            self.static_caches.self_attention(decoder, kwargs, input_ids.shape[1], rows * len(batch))
            if self.static_cache
            else None
        )
        cache = image_cross_attention_cache(decoder.config, self._cross_keys_values(image_embeds), rows, own)
        if own is not None:
            self.static_caches.pin_cross_attention(cache)
        kwargs.setdefault("cache", cache)
        out = decoder.generate(
            input_ids=input_ids,
            eos_token_id=text.sep_token_id,
            pad_token_id=text.pad_token_id,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device),
            **kwargs,
        )
        # The output repeats bos + prompt; BLIP's own code strips the prompt from its captions too.
        return self.tokenizer.batch_decode(out[:, input_ids.shape[1] :], skip_special_tokens=True)

    def _search_module(self) -> torch.nn.Module:
        return self.model.text_decoder

    def _cross_keys_values(self, image_embeds: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention keys and values of the images: [images, heads, tokens, head_dim]."""
        pairs = []
        for layer in self.model.text_decoder.bert.encoder.layer:
            attention = layer.crossattention.self
            shape = (*image_embeds.shape[:-1], -1, attention.attention_head_size)
            pairs.append(
                (
                    attention.key(image_embeds).view(shape).transpose(1, 2),
                    attention.value(image_embeds).view(shape).transpose(1, 2),
                )
            )
        return pairs


def fuse_vision_attention(vision_model: torch.nn.Module) -> None:
    """Run BLIP's vision self-attention through torch's fused scaled_dot_product_attention.

    transformers implements it only as explicit matmul + softmax, which writes a [batch, heads, 577, 577]
    score matrix per layer: at batch 8 on the CPU that made the encoder 50 % slower per image than at batch 1.
    The fused kernel gives the same result (tests/unit/test_models.py checks it against the original).
    """
    from transformers.models.blip.modeling_blip import BlipAttention

    for module in vision_model.modules():
        if isinstance(module, BlipAttention):
            module.forward = types.MethodType(_fused_attention_forward, module)


def _fused_attention_forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, None]:
    batch, tokens, width = hidden_states.shape
    qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    context = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.scale)
    # No attention map: nothing in capq asks for one (output_attentions).
    return self.projection(context.transpose(1, 2).reshape(batch, tokens, width)), None
