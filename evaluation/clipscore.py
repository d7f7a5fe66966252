"""clipscore: reference-free CLIPScore of (image, caption) pairs with torchmetrics, from a CLIP checkpoint by hub id or
folder."""

# torchmetrics' clip_score is the maintained implementation (max(100 * cos(E_image, E_caption), 0), Hessel et al.
# 2021 without their 2.5 weight). It loads only a few hub ids by name; any other checkpoint goes in as the loader
# callable it accepts. Per-image scores come from calling it once per pair, so each image's score is kept for the
# bootstrap interval and for comparing the arms of an alias.
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from evaluation.errors import ClipError


def _features_as_tensors(model):
    """The CLIP model with get_image_features/get_text_features returning the projected embeddings as tensors:
    torchmetrics 1.9 expects transformers 4's return type, and transformers 5 returns an output object whose
    pooler_output holds them."""
    import torch

    class Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.config = model, model.config

        def get_image_features(self, *args, **kwargs):
            out = self.model.get_image_features(*args, **kwargs)
            return getattr(out, "pooler_output", out)

        def get_text_features(self, *args, **kwargs):
            out = self.model.get_text_features(*args, **kwargs)
            return getattr(out, "pooler_output", out)

    return Features()


@functools.cache
def load_clip(checkpoint: str):
    """(CLIP model for torchmetrics, CLIPProcessor) from a local folder or a hub id (hub ids obey HF_HUB_OFFLINE)."""
    from transformers import CLIPModel, CLIPProcessor

    local = Path(checkpoint).expanduser().is_dir()
    try:
        model = CLIPModel.from_pretrained(checkpoint, local_files_only=local).eval()
        processor = CLIPProcessor.from_pretrained(checkpoint, local_files_only=local)
    except (OSError, ValueError) as exc:
        raise ClipError(f"cannot load CLIP checkpoint {checkpoint!r} (CAPQ_CLIP_CHECKPOINT): {exc}") from None
    return _features_as_tensors(model), processor


def image_tensor(image):
    """A PIL RGB image as the [C, H, W] uint8 tensor torchmetrics expects."""
    import torch

    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


def clip_scores(checkpoint: str, images: list, captions: list[str]) -> list[float]:
    """One CLIPScore per (image, caption) pair, in order."""
    import torch
    from torchmetrics.functional.multimodal import clip_score

    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    loader = functools.partial(load_clip, checkpoint)
    with torch.no_grad():
        return [
            float(clip_score(image_tensor(img), text, model_name_or_path=loader)) for img, text in zip(images, captions)
        ]


def mean_ci95(values: list[float], samples: int, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """The mean and its 95% percentile-bootstrap interval."""
    arr = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, len(arr), size=(samples, len(arr)))].mean(axis=1)
    return float(arr.mean()), (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))
