"""blip: BLIP (BlipForConditionalGeneration), unconditional or prompt-conditioned captioning."""
from __future__ import annotations

from typing import Any

from PIL import Image

from workers.adapters.base import Captioner, check_model_type
from workers.adapters.beam_cache import fixed_cross_attention_cache


class BlipCaptioner(Captioner):
    """BLIP captioner; `Salesforce/blip-image-captioning-large` or `-base`, or a folder like them."""

    name = "blip"

    def _load(self) -> None:
        from transformers import AutoConfig, AutoTokenizer, BlipForConditionalGeneration, BlipImageProcessorPil

        config = self.load_pretrained(AutoConfig.from_pretrained)
        check_model_type(self.name, self.checkpoint, config, ("blip",))
        self.image_processor = self.load_pretrained(BlipImageProcessorPil.from_pretrained)
        self.tokenizer = self.load_pretrained(AutoTokenizer.from_pretrained)
        self.model = self.load_pretrained(
            BlipForConditionalGeneration.from_pretrained, config=config, dtype=self.torch_dtype
        )

    def preprocess(self, image: Image.Image) -> Any:
        return self.image_processor(images=image, return_tensors="pt").pixel_values[0]

    def _generate(self, batch: list[Any], prompt: str | None, kwargs: dict[str, Any]) -> list[str]:
        pixel_values = self.pixels(batch)
        kwargs.setdefault("cache", fixed_cross_attention_cache(self.model.text_decoder.config))
        if prompt:
            # [CLS] prompt [SEP]: BLIP's generate swaps [CLS] for its bos ([DEC]) and drops the [SEP].
            input_ids = self.tokenizer([prompt] * len(batch), return_tensors="pt").input_ids.to(self.device)
            out = self.model.generate(pixel_values=pixel_values, input_ids=input_ids, **kwargs)
            start = input_ids.shape[1] - 1
        else:
            out = self.model.generate(pixel_values=pixel_values, **kwargs)
            start = 1
        # The output repeats bos + prompt; BLIP's own code strips the prompt from its captions too.
        return self.tokenizer.batch_decode(out[:, start:], skip_special_tokens=True)
