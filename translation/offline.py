"""offline: a Marian translation model through transformers (hub id or local folder), for text that must stay here."""

from __future__ import annotations

import threading
from pathlib import Path

from capq.settings import Settings
from translation.providers import Provider, ProviderError


class MarianProvider(Provider):
    """A MarianMT checkpoint such as Helsinki-NLP/opus-mt-en-vi, loaded once on first use (CPU).

    A Marian checkpoint translates one language pair, so it serves the one target it was configured for.
    """

    name = "offline"
    paid = False

    def __init__(self, checkpoint: str, target: str | None = None, max_new_tokens: int = 128):
        self.checkpoint, self.target, self.max_new_tokens = checkpoint, target, max_new_tokens
        self._loaded = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._loaded is None:
                try:
                    from transformers import MarianMTModel, MarianTokenizer
                except ImportError:
                    raise ProviderError(
                        "offline: transformers (and torch) are not installed in this image; "
                        "run translation in the worker image or drop 'offline' from "
                        "CAPQ_TRANSLATE_PROVIDERS"
                    ) from None
                local = Path(self.checkpoint).expanduser().is_dir()
                try:
                    tokenizer = MarianTokenizer.from_pretrained(self.checkpoint, local_files_only=local)
                    model = MarianMTModel.from_pretrained(self.checkpoint, local_files_only=local).eval()
                except (OSError, ValueError, ImportError) as exc:
                    raise ProviderError(
                        f"offline: cannot load Marian model {self.checkpoint!r} (CAPQ_TRANSLATE_OFFLINE_MODEL): {exc}"
                    ) from None
                self._loaded = (tokenizer, model)
        return self._loaded

    def translate(self, texts: list[str], target: str) -> list[str]:
        if self.target and target != self.target:
            raise ProviderError(f"offline: the Marian model translates into {self.target!r} only, not {target!r}")
        import torch

        tokenizer, model = self._load()
        batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
        with torch.inference_mode():
            ids = model.generate(**batch, max_new_tokens=self.max_new_tokens, num_beams=1)
        return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def build(settings: Settings) -> MarianProvider:
    """The offline provider of CAPQ_TRANSLATE_OFFLINE_MODEL, for translation.service.Translator's `builders`."""
    return MarianProvider(settings.translate_offline_model)
