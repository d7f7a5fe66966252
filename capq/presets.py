"""presets: named generation settings per model, their post-processors, and the config hash."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from capq.errors import InputError

# A preset: {"prompt": text prefix or None, "generate": model.generate() kwargs, "postprocess": name or None}.
# A prompt is fed to the text decoder and removed from the caption, as BLIP's and LAVIS's own code do.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "blip": {
        # salesforce/BLIP configs/caption_coco.yaml ("generation configs").
        "default": {
            "prompt": "a picture of ",
            "generate": {"max_length": 20, "min_length": 5, "num_beams": 3},
            "postprocess": None,
        },
        # Seed model/image_captioning_models.py test_blip().
        "seed": {
            "prompt": None,
            "generate": {
                "max_length": 200,
                "min_length": 25,
                "length_penalty": 1.2,
                "num_beams": 8,
                "early_stopping": True,
                "repetition_penalty": 1.3,
            },
            "postprocess": None,
        },
    },
    "blip2": {
        # salesforce/LAVIS blip2_caption_opt2.7b.yaml (prompt) + caption_coco_opt2.7b_eval.yaml (max_len 30,
        # min_len 8, num_beams 5). LAVIS passes max_len as max_new_tokens, so both are counted in new tokens.
        "default": {
            "prompt": "a photo of",
            "generate": {"max_new_tokens": 30, "min_new_tokens": 8, "num_beams": 5},
            "postprocess": None,
        },
        # Seed test_blip2(): temperature/top_p without do_sample, as passed there (beam search ignores them).
        "seed": {
            "prompt": None,
            "generate": {
                "max_length": 200,
                "min_length": 25,
                "num_beams": 8,
                "length_penalty": 1.2,
                "repetition_penalty": 1.3,
                "temperature": 0.8,
                "top_p": 0.9,
            },
            "postprocess": None,
        },
    },
    "git": {
        # microsoft/git-base-coco model card and transformers' GitForCausalLM captioning example.
        "default": {"prompt": None, "generate": {"max_length": 50}, "postprocess": None},
        # Seed test_git_model().
        "seed": {
            "prompt": None,
            "generate": {
                "max_length": 200,
                "min_length": 20,
                "num_beams": 8,
                "length_penalty": 1.2,
                "repetition_penalty": 1.2,
                "temperature": 0.7,
                "top_p": 0.9,
                "early_stopping": True,
            },
            "postprocess": None,
        },
    },
    "vit-gpt2": {
        # nlpconnect/vit-gpt2-image-captioning model card: gen_kwargs = {"max_length": 16, "num_beams": 4}.
        "default": {"prompt": None, "generate": {"max_length": 16, "num_beams": 4}, "postprocess": None},
        # Seed test_vit_gpt2(); its pad/eos ids come from the tokenizer, which the adapter always passes.
        "seed": {
            "prompt": None,
            "generate": {
                "max_length": 20,
                "num_beams": 5,
                "length_penalty": 0.8,
                "repetition_penalty": 1.5,
                "no_repeat_ngram_size": 3,
                "early_stopping": True,
            },
            "postprocess": "seed_vit_gpt2",
        },
    },
}


def _seed_vit_gpt2(caption: str) -> str:
    # The seed's clean-up: drop underscores, collapse whitespace, end with exactly one full stop.
    caption = re.sub(r"\s+", " ", re.sub(r"_+", "", caption.strip()))
    if caption and not caption.endswith("."):
        caption = caption.rstrip(".,!?") + "."
    return caption


POSTPROCESSORS: dict[str, Callable[[str], str]] = {"seed_vit_gpt2": _seed_vit_gpt2}


def apply_postprocess(name: str | None, caption: str) -> str:
    """Run the named post-processor on one caption (None: unchanged)."""
    if name is None:
        return caption
    try:
        return POSTPROCESSORS[name](caption)
    except KeyError:
        raise ValueError(f"unknown postprocess {name!r}; known: {sorted(POSTPROCESSORS)}") from None


def preset_names(model: str) -> list[str]:
    """Preset names for a model, 'default' first."""
    return sorted(PRESETS.get(model, {}), key=lambda n: (n != "default", n))


class UnknownPreset(InputError, ValueError):
    """No such preset for that model: a permanent error for the shard that names it."""


def get_preset(model: str, name: str = "default") -> dict[str, Any]:
    """A copy of a model's named preset; UnknownPreset (a ValueError) names the presets that exist."""
    if model not in PRESETS:
        raise UnknownPreset(f"no presets for model {model!r}; models with presets: {sorted(PRESETS)}")
    if name not in PRESETS[model]:
        raise UnknownPreset(f"unknown preset {name!r} for model {model!r}; available: {preset_names(model)}")
    return copy.deepcopy(PRESETS[model][name])


def config_hash(model: str, preset: dict[str, Any], checkpoint: str | None = None) -> str:
    """16 hex chars of sha256 over canonical JSON of (model, checkpoint, preset content).

    The preset's name is not part of it: two presets with the same content hash the same.
    """
    if not isinstance(preset, dict):
        raise TypeError(f"preset must be a dict like get_preset() returns, got {type(preset).__name__}")
    # Normalised so that a missing key and its default (None, {}) hash the same.
    content = {
        "prompt": preset.get("prompt") or None,
        "generate": preset.get("generate") or {},
        "postprocess": preset.get("postprocess"),
    }
    body = {"model": model, "checkpoint": checkpoint, "preset": content}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
