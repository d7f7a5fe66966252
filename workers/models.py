"""models: the registry of captioning models a worker can be pinned to, and how to load one."""
from __future__ import annotations

import os
from dataclasses import dataclass

from workers.adapters.base import Captioner
from workers.adapters.blip import BlipCaptioner
from workers.adapters.blip2 import Blip2Captioner
from workers.adapters.git import GitCaptioner
from workers.adapters.vit_gpt2 import VitGpt2Captioner
from workers.presets import preset_names


@dataclass(frozen=True)
class ModelSpec:
    """One model name: its adapter class, its default checkpoint and others known to work."""

    name: str
    adapter: type[Captioner]
    default_checkpoint: str
    other_checkpoints: tuple[str, ...]
    description: str


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("blip", BlipCaptioner, "Salesforce/blip-image-captioning-large",
                  ("Salesforce/blip-image-captioning-base",),
                  "BLIP ViT + BERT decoder, fine-tuned on COCO captions"),
        ModelSpec("blip2", Blip2Captioner, "Salesforce/blip2-opt-2.7b",
                  ("Salesforce/blip2-opt-6.7b", "Salesforce/blip2-opt-6.7b-coco"),
                  "BLIP-2: frozen ViT-g, Q-Former and an OPT language model"),
        ModelSpec("git", GitCaptioner, "microsoft/git-base-coco", ("microsoft/git-large-coco",),
                  "GIT: CLIP ViT image tokens feeding one text decoder, fine-tuned on COCO"),
        ModelSpec("vit-gpt2", VitGpt2Captioner, "nlpconnect/vit-gpt2-image-captioning", (),
                  "ViT encoder + GPT-2 decoder, fine-tuned on COCO 2017"),
    )
}


def get_spec(model: str) -> ModelSpec:
    """The registry entry for `model`; ValueError lists the known names."""
    try:
        return MODELS[model]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {model!r}; known models: {sorted(MODELS)}") from None


def load_captioner(
    model: str,
    checkpoint: str | os.PathLike | None = None,
    device: str = "cpu",
    dtype: str = "fp32",
    max_batch_size: int = 8,
) -> Captioner:
    """Build and load the captioner for `model` from `checkpoint` (hub id or folder; None: default).

    Raises ValueError for an unknown model or bad arguments, CheckpointError for a checkpoint that
    cannot be read.
    """
    spec = get_spec(model)
    chosen = spec.default_checkpoint if checkpoint is None else os.fspath(checkpoint)
    return spec.adapter(chosen, device=device, dtype=dtype, max_batch_size=max_batch_size).load()


def describe_models() -> list[dict]:
    """One row per model for `capq models list`."""
    return [
        {
            "model": spec.name,
            "default_checkpoint": spec.default_checkpoint,
            "other_checkpoints": list(spec.other_checkpoints),
            "presets": preset_names(spec.name),
            "description": spec.description,
        }
        for spec in MODELS.values()
    ]
