"""models: the registry of captioning models a worker can be pinned to, and how to load one."""

from __future__ import annotations

import os
from dataclasses import dataclass

from capq.catalog import CATALOG, describe_models  # noqa: F401  (describe_models: re-exported)
from capq.errors import SetupError
from workers.adapters.base import Captioner
from workers.adapters.blip import BlipCaptioner
from workers.adapters.blip2 import Blip2Captioner
from workers.adapters.git import GitCaptioner
from workers.adapters.vit_gpt2 import VitGpt2Captioner


@dataclass(frozen=True)
class ModelSpec:
    """One model name: its adapter class, with the catalogue's checkpoints and description."""

    name: str
    adapter: type[Captioner]
    default_checkpoint: str
    other_checkpoints: tuple[str, ...]
    description: str


ADAPTERS: dict[str, type[Captioner]] = {
    "blip": BlipCaptioner,
    "blip2": Blip2Captioner,
    "git": GitCaptioner,
    "vit-gpt2": VitGpt2Captioner,
}
MODELS: dict[str, ModelSpec] = {
    info.name: ModelSpec(
        info.name, ADAPTERS[info.name], info.default_checkpoint, info.other_checkpoints, info.description
    )
    for info in CATALOG.values()
}


def get_spec(model: str) -> ModelSpec:
    """The registry entry for `model`; SetupError (a ValueError) lists the known names."""
    try:
        return MODELS[model]
    except (KeyError, TypeError):
        raise SetupError(f"unknown model {model!r}; known models: {sorted(MODELS)}") from None


def load_captioner(
    model: str,
    checkpoint: str | os.PathLike | None = None,
    device: str = "cpu",
    dtype: str = "fp32",
    max_batch_size: int = 8,
) -> Captioner:
    """Build and load the captioner for `model` from `checkpoint` (hub id or folder; None: default).

    Raises SetupError (a ValueError) for an unknown model or bad arguments, CheckpointError for a checkpoint that
    cannot be read.
    """
    spec = get_spec(model)
    chosen = spec.default_checkpoint if checkpoint is None else os.fspath(checkpoint)
    return spec.adapter(chosen, device=device, dtype=dtype, max_batch_size=max_batch_size).load()
