"""git: GIT (GitForCausalLM), image-conditioned language model captioning."""
from __future__ import annotations

from typing import Any

import torch

from workers.adapters.base import Captioner, check_model_type


class GitCaptioner(Captioner):
    """GIT captioner; `microsoft/git-base-coco` or `microsoft/git-large-coco`, or a folder like them."""

    name = "git"

    def _load(self) -> None:
        from transformers import AutoConfig, AutoTokenizer, CLIPImageProcessorPil, GitForCausalLM

        config = self.load_pretrained(AutoConfig.from_pretrained)
        check_model_type(self.name, self.checkpoint, config, ("git",))
        self.image_processor = self.load_pretrained(CLIPImageProcessorPil.from_pretrained)
        self.tokenizer = self.load_pretrained(AutoTokenizer.from_pretrained)
        self.model = self.load_pretrained(GitForCausalLM.from_pretrained, config=config, dtype=self.torch_dtype)

    def _generate(self, batch: list[Any], prompt: str | None, kwargs: dict[str, Any]) -> list[str]:
        # GIT starts text with [CLS]; ids are built here rather than by the tokenizer so that no
        # token_type_ids reach generate(), which GIT rejects.
        prefix = [self.tokenizer.cls_token_id]
        if prompt:
            prefix += self.tokenizer(prompt, add_special_tokens=False).input_ids
        input_ids = torch.tensor([prefix] * len(batch), dtype=torch.long, device=self.device)
        out = self.model.generate(
            pixel_values=self.pixels(batch), input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids), **kwargs,
        )
        return self.tokenizer.batch_decode(out[:, input_ids.shape[1]:], skip_special_tokens=True)
