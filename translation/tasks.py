"""tasks: the translation task on its own queue (capq.translate), and how a caption worker hands work to it."""
from __future__ import annotations

import functools
import logging

from capq.names import TRANSLATE_QUEUE, TRANSLATE_TASK
from capq.settings import get_settings
from storage.jobs import JobStore
from storage.translations import ResultTexts
from translation.results import translator
from translation.service import TranslationUnavailable
from workers.celery_app import app

log = logging.getLogger("capq.translate")


@app.task(name=TRANSLATE_TASK, ignore_result=True)
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


@functools.lru_cache(maxsize=1024)
def _job_target(job_id: str) -> str | None:
    # A job's translation target is set once, at creation: cached for the life of the worker.
    return JobStore(get_settings()).get(job_id, ("translate",)).get("translate")


def after_shard(job_id: str, model: str, preset: str, shas: list[str]) -> None:
    """Called by a caption worker after a shard is stored: queue its translation if the job asked for one.
    Only a message is sent; the worker never waits on a provider, and a failure here never fails the shard."""
    try:
        target = _job_target(job_id)
        if target:
            app.send_task(TRANSLATE_TASK, args=[job_id, model, preset, list(shas), target], queue=TRANSLATE_QUEUE)
    except Exception as exc:  # storage or broker: the caption is stored, and readers translate on demand
        log.warning("job %s: translation not queued: %s", job_id, exc)
