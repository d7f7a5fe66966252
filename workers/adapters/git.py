"""git: GIT (GitForCausalLM), image-conditioned language model captioning."""

from __future__ import annotations

import types
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
            pixel_values=self.pixels(batch),
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            **kwargs,
        )
        return self.tokenizer.batch_decode(out[:, input_ids.shape[1] :], skip_special_tokens=True)

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
        static cache's full length (positions not yet written masked). The decode steps also run through
        `_decode_step`, which torch.compile captures whole. Same ids as the dynamic cache, and one graph per step:
        tests/unit/test_static_decode.py.
        """
        model, config = self.model, self.model.generation_config
        vars(model).setdefault("create_masks_for_generate", _mask_left_to_the_model)
        if not isinstance(model.git.forward, types.MethodType) or model.git.forward.__func__ is not _decode_step:
            vars(model.git)["_full_forward"] = model.git.forward
            model.git.forward = types.MethodType(_decode_step, model.git)
        rows = images * max(
            kwargs.get("num_beams") or config.num_beams or 1,
            kwargs.get("num_return_sequences") or config.num_return_sequences or 1,
        )
        image_tokens = model.git.encoder.layer[0].attention.self.image_patch_tokens
        return self.static_caches.self_attention(model, kwargs, prefix_len, rows, extra_len=image_tokens)


def _mask_left_to_the_model(**kwargs: Any) -> None:
    """GitForCausalLM.create_masks_for_generate: no mask from generate, so GitModel makes one over image and text."""


def _decode_step(
    self,
    input_ids=None,
    attention_mask=None,
    position_ids=None,
    pixel_values=None,
    inputs_embeds=None,
    cache=None,
    use_cache=None,
    **kwargs: Any,
):
    """GitModel.forward, with a decode step over a static cache that has no data-dependent branch.

    GitModel.forward tests `cache.get_seq_length() > 0` at every step, and a StaticCache's length is a tensor: under
    torch.compile that branch breaks the graph and reads the length back from the GPU at every step. A decode step
    (text tokens only, positions given, no mask: what generate passes once the image tokens are cached) needs none of
    it, so it runs GitModel's own steps for that case here: embeddings, the causal mask with every token outside the
    image block, the encoder. Everything else (the first step, with the image) goes to GitModel.forward unchanged.
    """
    if (
        pixel_values is not None
        or inputs_embeds is not None
        or attention_mask is not None
        or position_ids is None
        or not getattr(cache, "is_compileable", False)
    ):
        return self._full_forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            pixel_values=pixel_values,
            inputs_embeds=inputs_embeds,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )
    from transformers.masking_utils import create_causal_mask
    from transformers.modeling_outputs import BaseModelOutputWithPast

    hidden = self.embeddings(input_ids=input_ids, position_ids=position_ids)
    # GitModel's group ids: 0 marks image tokens (attending each other both ways), -1 text; a decode step is text.
    text = torch.full(hidden.shape[:-1], -1, dtype=torch.long, device=hidden.device)
    mask = create_causal_mask(
        config=self.config.get_text_config(),
        inputs_embeds=hidden,
        attention_mask=None,
        cache=cache,
        position_ids=position_ids,
        block_sequence_ids=text,
    )
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("output_") and k != "return_dict"}
    out = self.encoder(hidden, attention_mask=mask, cache=cache, use_cache=use_cache, **kwargs)
    return BaseModelOutputWithPast(last_hidden_state=out.last_hidden_state, cache=out.cache)
