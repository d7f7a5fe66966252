"""tasks: the translation task on its own queue (capq.translate); caption workers send it by name (workers.tasks)."""

from __future__ import annotations

import functools
import logging

from celery import shared_task

from capq.names import TRANSLATE_TASK
from capq.settings import Settings, get_settings
from storage.translations import ResultTexts
from translation import offline
from translation.service import TranslationUnavailable, Translator

log = logging.getLogger("capq.translate")


@functools.cache
def translator(settings: Settings) -> Translator:
    """The translation worker's, one per process and settings: only this side builds the offline (Marian) provider,
    whose torch the worker image has (the API's, translation.results.translator, skips it)."""
    return Translator(settings, builders={"offline": offline.build})


@shared_task(name=TRANSLATE_TASK, ignore_result=True)
def translate_captions(job_id: str, model: str, preset: str, shas: list[str], target: str) -> dict:
    """Translate the captions of one finished shard into `target`; the memory then serves every reader."""
    settings = get_settings()
    texts = ResultTexts(settings).captions(job_id, model, preset, shas)
    try:
        done = translator(settings).translate(texts, target)
    except TranslationUnavailable as exc:
        # Recorded in the translation history; readers translate on demand later. The captions stand.
        log.warning("job %s: %s", job_id, exc)
        return {"translated": len(exc.done), "untranslated": len(set(texts)) - len(exc.done)}
    return {"translated": len(done), "untranslated": 0}
