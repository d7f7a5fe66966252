"""translations: the translation memory (one translation per text and target) and the translation history."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from capq.settings import Settings
from storage.db import insert_new, mongo, translated


def text_sha(text: str) -> str:
    """The key of a caption text in the translation memory, history and cache."""
    return hashlib.sha256(text.encode()).hexdigest()


class TranslationMemory:
    """`translations`: written once per (text_sha256, target), so no text is sent to a paid provider twice.
    `translation_history`: one row per provider outcome (translated, failed, rate_limited), with its time."""

    def __init__(self, settings: Settings):
        self.mongo = mongo(settings)
        self.coll = self.mongo["translations"]
        self.history_coll = self.mongo["translation_history"]

    @translated
    def lookup(self, text_shas: list[str], target: str) -> dict[str, dict]:
        if not text_shas:
            return {}
        cur = self.coll.find({"text_sha256": {"$in": list(text_shas)}, "target": target}, {"_id": 0})
        return {doc["text_sha256"]: doc for doc in cur}

    @translated
    def remember(self, docs: list[dict]) -> None:
        """Store {text_sha256, target, text, translation, provider, source_lang}; a text already there keeps its
        first translation (two translators racing on one text both stay correct)."""
        now = datetime.now(UTC)
        insert_new(self.coll, [{"translated_at": now, **d} for d in docs])

    @translated
    def record(self, events: list[dict]) -> None:
        """Append history rows {text_sha256, target, provider, outcome, error?}."""
        if events:
            now = datetime.now(UTC)
            self.history_coll.insert_many([{"at": now, **e} for e in events])

    @translated
    def history(self, text_sha256: str | None = None, limit: int = 50) -> list[dict]:
        query = {"text_sha256": text_sha256} if text_sha256 else {}
        return list(self.history_coll.find(query, {"_id": 0}).sort("at", -1).limit(limit))


class ResultTexts:
    """The captions of a job's finished items, read for translation (job_results holds what an owner sees)."""

    def __init__(self, settings: Settings):
        self.mongo = mongo(settings)
        self.results = self.mongo["job_results"]

    @translated
    def captions(self, job_id: str, model: str, preset: str, shas: list[str]) -> list[str]:
        cur = self.results.find(
            {"job_id": job_id, "model": model, "preset": preset, "sha256": {"$in": list(shas)}, "state": "done"},
            {"_id": 0, "caption": 1},
        )
        return [doc["caption"] for doc in cur if doc.get("caption")]
