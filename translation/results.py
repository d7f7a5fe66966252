"""results: add translations to caption rows (job results, history), translating on demand what the memory lacks."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable

from capq.errors import BadInput
from capq.settings import Settings
from storage.errors import StorageError
from translation.service import TranslationUnavailable, Translator

log = logging.getLogger("capq.translate")


@functools.cache
def translator(settings: Settings) -> Translator:
    """One per process and settings, for on-demand translation (the API, the producer's CLI): remote providers only,
    built once; the offline model is the translation worker's (translation.tasks.translator)."""
    return Translator(settings)


def check_lang(lang) -> str:
    """A target language code such as vi, fr or zh-Hans; anything else is refused with what to send."""
    text = str(lang).strip() if isinstance(lang, str) else ""
    if not (2 <= len(text) <= 8 and text.replace("-", "").isalpha()):
        raise BadInput(f"lang must be a language code such as vi, fr or zh-Hans, got {str(lang)[:20]!r}")
    return text


def with_translations(settings: Settings, rows: Iterable[dict], lang: str) -> tuple[list[dict], dict]:
    """Rows with a `translation` field (None where none could be made) and a summary:
    {"lang", "available", "error"}. Never raises for a provider problem: captions always come back."""
    rows = list(rows)
    texts = [r["caption"] for r in rows if r.get("caption")]
    summary = {"lang": lang, "available": True, "error": None}
    found: dict = {}
    try:
        found = translator(settings).translate(texts, lang) if texts else {}
    except TranslationUnavailable as exc:
        found = exc.done
        summary |= {"available": bool(found), "error": str(exc)}
    except StorageError as exc:
        log.warning("translation skipped: %s", exc)
        summary |= {"available": False, "error": f"translation memory unreachable: {exc}"}
    for row in rows:
        hit = found.get(row.get("caption") or "")
        row["translation"] = hit.translation if hit else None
        row["translation_provider"] = hit.provider if hit else None
    return rows, summary
