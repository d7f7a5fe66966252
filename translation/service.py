"""service: translate texts through the cache, the memory, language detection and the provider chain, in that order."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import redis

from capq.errors import Unavailable
from capq.names import TRANSLATE_CACHE_KEY
from capq.settings import Settings
from storage.errors import StorageError
from storage.translations import TranslationMemory, text_sha
from translation.providers import AwsTranslate, AzureTranslator, GoogleTranslate, Provider, ProviderError, RateLimited

log = logging.getLogger("capq.translate")
BATCH = 50  # texts per provider request


class TranslationUnavailable(Unavailable):
    """No provider is configured, or every provider in the chain failed; the message says which and why.
    `done` holds what was translated before the chain ran out (it is also in the memory)."""

    def __init__(self, message: str, done: dict | None = None):
        super().__init__(message)
        self.done = done or {}


@dataclass
class Translation:
    text: str
    target: str
    translation: str
    provider: str  # the provider that made it, or "none" when the text was already in the target language
    source_lang: str | None
    via: str  # "cache", "memory", "provider" or "detected" (left as is)

    def as_dict(self) -> dict:
        return asdict(self)


Builder = Callable[[Settings], Provider]
# The remote providers, which every process may build. The offline (Marian) provider loads torch: only a process
# whose image may have it passes its builder (translation.tasks, for the translation worker and `capq translate
# text`); elsewhere (the API, the producer's CLI) the chain skips it.
BUILDERS: dict[str, Builder] = {"google": GoogleTranslate, "azure": AzureTranslator, "aws": AwsTranslate}


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of `text` by py3langid (its model ships inside the package), or None for blank text."""
    import py3langid

    return py3langid.classify(text)[0] if text.strip() else None


def same_language(lang: str | None, target: str) -> bool:
    return lang is not None and lang.lower() == target.split("-")[0].lower()


class Translator:
    """One per process: providers are built on first use and kept (an offline model loads once). `builders` add
    to BUILDERS; a provider of CAPQ_TRANSLATE_PROVIDERS that none builds is left out of this process's chain."""

    def __init__(
        self, settings: Settings, providers: list[Provider] | None = None, builders: Mapping[str, Builder] | None = None
    ):
        self.settings = settings
        self.builders = {**BUILDERS, **(builders or {})}
        chain = settings.translate_chain if providers is None else [p.name for p in providers]
        self._providers: dict[str, Provider] = {p.name: p for p in providers or []}
        self.chain = [n for n in chain if n in self._providers or n in self.builders]
        self.skipped = [n for n in chain if n not in self.chain]
        if self.skipped:
            log.info(
                "translation provider(s) %s skipped in this process: only the translation worker builds them "
                "(its image has torch); on-demand translation here uses %s",
                ", ".join(self.skipped),
                ", ".join(self.chain) or "the translation memory only",
            )
        self.memory = TranslationMemory(settings)
        self.redis = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=settings.connect_timeout_s,
            socket_timeout=settings.connect_timeout_s,
        )

    @property
    def available(self) -> bool:
        return bool(self.chain)

    def _provider(self, name: str) -> Provider:
        if name not in self._providers:
            self._providers[name] = self.builders[name](self.settings)
        return self._providers[name]

    def _cached(self, shas: list[str], target: str) -> dict[str, dict]:
        # The cache only saves round trips: when Redis is down the memory still answers.
        try:
            values = self.redis.mget([f"{TRANSLATE_CACHE_KEY}{target}:{s}" for s in shas])
        except redis.RedisError as exc:
            log.warning("translation cache unavailable: %s", exc)
            return {}
        return {s: json.loads(v) for s, v in zip(shas, values) if v}

    def _cache(self, found: list[Translation]) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for t in found:
                pipe.set(
                    f"{TRANSLATE_CACHE_KEY}{t.target}:{text_sha(t.text)}",
                    json.dumps({"translation": t.translation, "provider": t.provider, "source_lang": t.source_lang}),
                    ex=self.settings.translate_cache_ttl_s,
                )
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("translation cache unavailable: %s", exc)

    def translate(self, texts: list[str], target: str | None = None) -> dict[str, Translation]:
        """{text: Translation} for every distinct non-blank text. Raises TranslationUnavailable when some text
        could not be translated (no provider, or all failed); what was translated is kept in the memory."""
        target = target or self.settings.translate_target
        todo = {text_sha(t): t for t in dict.fromkeys(texts) if t and t.strip()}
        out: dict[str, Translation] = {}
        for sha, hit in self._cached(list(todo), target).items():
            out[todo[sha]] = Translation(
                todo[sha], target, hit["translation"], hit["provider"], hit.get("source_lang"), "cache"
            )
        missing = [s for s in todo if todo[s] not in out]
        remembered = [
            Translation(todo[s], target, doc["translation"], doc["provider"], doc.get("source_lang"), "memory")
            for s, doc in self.memory.lookup(missing, target).items()
        ]
        known = {t.text for t in remembered}
        fresh: list[Translation] = []
        send: dict[str, str | None] = {}
        for s in missing:
            if todo[s] in known:
                continue
            lang = detect_language(todo[s])
            if same_language(lang, target):
                fresh.append(Translation(todo[s], target, todo[s], "none", lang, "detected"))
            else:
                send[todo[s]] = lang
        failures: list[str] = []
        made: dict[str, tuple[str, str]] = {}
        for start in range(0, len(send), BATCH):
            # Providers cap a request (Google v2: 128 texts): each slice goes through the chain on its own.
            got, why = self._through_chain(list(send)[start : start + BATCH], target)
            made |= got
            failures += [w for w in why if w not in failures]
        if made:
            fresh += [Translation(text, target, made[text][0], made[text][1], send[text], "provider") for text in made]
            self.memory.remember(
                [
                    {
                        "text_sha256": text_sha(t.text),
                        "target": target,
                        "text": t.text,
                        "translation": t.translation,
                        "provider": t.provider,
                        "source_lang": t.source_lang,
                    }
                    for t in fresh
                    if t.via == "provider"
                ]
            )
        for t in remembered + fresh:
            out[t.text] = t
        self._cache(remembered + fresh)
        left = [t for t in send if t not in out]
        if left:
            reason = "; ".join(failures) or (
                f"{', '.join(self.skipped)}: runs in the translation worker only, not in this process"
                if self.skipped
                else "no translation provider is configured (set CAPQ_TRANSLATE_PROVIDERS)"
            )
            raise TranslationUnavailable(f"{len(left)} text(s) not translated into {target}: {reason}", out)
        return out

    def _through_chain(self, texts: list[str], target: str) -> tuple[dict[str, tuple[str, str]], list[str]]:
        """Try each provider in order on what is still untranslated; -> ({text: (translation, provider)}, why not)."""
        made: dict[str, tuple[str, str]] = {}
        failures: list[str] = []
        events: list[dict] = []
        for name in self.chain:
            left = [t for t in texts if t not in made]
            if not left:
                break
            try:
                result = self._provider(name).translate(left, target)
            except ProviderError as exc:
                outcome = "rate_limited" if isinstance(exc, RateLimited) else "failed"
                log.warning("translation provider %s %s: %s", name, outcome, exc)
                failures.append(f"{name}: {exc}")
                events += [
                    {
                        "text_sha256": text_sha(t),
                        "target": target,
                        "provider": name,
                        "outcome": outcome,
                        "error": str(exc)[:300],
                    }
                    for t in left
                ]
                continue
            made |= {t: (out, name) for t, out in zip(left, result)}
            events += [
                {"text_sha256": text_sha(t), "target": target, "provider": name, "outcome": "translated"} for t in left
            ]
        try:
            self.memory.record(events)
        except StorageError as exc:
            log.warning("translation history not recorded: %s", exc)
        return made, failures
