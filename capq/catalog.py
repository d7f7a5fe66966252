"""catalog: the captioning models capq ships, as data (names, hub ids, presets); no adapter, no torch."""

from __future__ import annotations

from dataclasses import dataclass

from capq.presets import preset_names


@dataclass(frozen=True)
class ModelInfo:
    """One model name: its default checkpoint and others known to work."""

    name: str
    default_checkpoint: str
    other_checkpoints: tuple[str, ...]
    description: str


CATALOG: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo(
            "blip",
            "Salesforce/blip-image-captioning-large",
            ("Salesforce/blip-image-captioning-base",),
            "BLIP ViT + BERT decoder, fine-tuned on COCO captions",
        ),
        ModelInfo(
            "blip2",
            "Salesforce/blip2-opt-2.7b",
            ("Salesforce/blip2-opt-6.7b", "Salesforce/blip2-opt-6.7b-coco"),
            "BLIP-2: frozen ViT-g, Q-Former and an OPT language model",
        ),
        ModelInfo(
            "git",
            "microsoft/git-base-coco",
            ("microsoft/git-large-coco",),
            "GIT: CLIP ViT image tokens feeding one text decoder, fine-tuned on COCO",
        ),
        ModelInfo(
            "vit-gpt2",
            "nlpconnect/vit-gpt2-image-captioning",
            (),
            "ViT encoder + GPT-2 decoder, fine-tuned on COCO 2017",
        ),
    )
}


def describe_models() -> list[dict]:
    """One row per model for `capq models list`."""
    return [
        {
            "model": info.name,
            "default_checkpoint": info.default_checkpoint,
            "other_checkpoints": list(info.other_checkpoints),
            "presets": preset_names(info.name),
            "description": info.description,
        }
        for info in CATALOG.values()
    ]
