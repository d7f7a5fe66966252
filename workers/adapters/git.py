"""git: GIT (GitForCausalLM), image-conditioned language model captioning."""
from __future__ import annotations

from typing import Any

import torch

from workers.adapters.base import Captioner, check_model_type


class GitCaptioner(Captioner):
    """GIT captioner; `microsoft/git-base-coco` or `microsoft/git-large-coco`, or a folder like them."""

    name = "git"
    supports_static_cache = True

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
        if self.static_cache:
            kwargs.setdefault("cache", self._static_cache(kwargs, len(prefix), len(batch)))
        out = self.model.generate(
            pixel_values=self.pixels(batch), input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids), **kwargs,
        )
        return self.tokenizer.batch_decode(out[:, input_ids.shape[1]:], skip_special_tokens=True)

    def _static_cache(self, kwargs: dict[str, Any], prefix_len: int, images: int) -> Any:
        """An emptied StaticCache for this call, with room for the image tokens GIT caches ahead of the text.

        Two things stop transformers' GitForCausalLM from taking a StaticCache as it is (cache_implementation="static"
        fails with "Tensors must have same number of dimensions: got 2 and 4"):
        - GIT runs image and text tokens as one sequence: GitModel puts the image's projected patch tokens
          (`image_patch_tokens`, 197 for git-base) in front of the text embeddings at the first step, so they sit in
          the self-attention cache. `generate` sizes a static cache, and counts positions, by `input_ids` only.
        - For a static cache `generate` builds a 4-D causal mask over the text tokens alone
          (`prepare_inputs_for_generation`, through `create_masks_for_generate`), which GitModel then tries to
          concatenate to a 2-D mask of ones for the image tokens.
        So the cache is sized here with the image tokens, and `generate` is told to pass no mask: GitModel then builds
        the right one itself at every step, image tokens attending each other both ways and text causally, over the
        static cache's full length (positions not yet written masked). Same ids as the dynamic cache:
        tests/unit/test_static_decode.py.
        """
        model, config = self.model, self.model.generation_config
        vars(model).setdefault("create_masks_for_generate", _mask_left_to_the_model)
        rows = images * max(kwargs.get("num_beams") or config.num_beams or 1,
                            kwargs.get("num_return_sequences") or config.num_return_sequences or 1)
        image_tokens = model.git.encoder.layer[0].attention.self.image_patch_tokens
        return self.static_caches.self_attention(model, kwargs, prefix_len, rows, extra_len=image_tokens)


def _mask_left_to_the_model(**kwargs: Any) -> None:
    """GitForCausalLM.create_masks_for_generate: no mask from generate, so GitModel makes one over image and text."""
    return None
