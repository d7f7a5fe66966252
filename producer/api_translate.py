"""api_translate: translation over HTTP: whether it is available, and translating texts on demand."""

from __future__ import annotations

from fastapi import Body, Depends, FastAPI
from fastapi.concurrency import run_in_threadpool

from capq.settings import Settings
from producer.apiauth import ApiError, Caller
from producer.errors import BadInput
from translation.results import check_lang, translator
from translation.service import TranslationUnavailable

MAX_TEXTS = 100
MAX_CHARS = 2000


def install(app: FastAPI, settings: Settings, auth) -> None:
    """GET /v1/translate and POST /v1/translate; `?lang=` on results and history is in producer.api."""

    @app.get("/v1/translate", tags=["translation"])
    def status(caller: Caller = Depends(auth)) -> dict:
        """Whether translation is configured, the provider chain (in order) and the default target language."""
        chain = settings.translate_chain
        return {
            "available": bool(chain),
            "providers": chain,
            "default_lang": settings.translate_target,
            "reason": None if chain else "no provider configured (CAPQ_TRANSLATE_PROVIDERS is empty)",
        }

    @app.post("/v1/translate", tags=["translation"])
    async def translate(
        texts: list[str] = Body(..., embed=True, description=f"up to {MAX_TEXTS} texts"),
        lang: str | None = Body(None, embed=True, description="target, e.g. vi"),
        caller: Caller = Depends(auth),
    ) -> dict:
        """Translate texts through the cache, the translation memory and the provider chain. 503 when no
        provider is configured or all failed (the message says which and why)."""
        if not texts or len(texts) > MAX_TEXTS:
            raise BadInput(f"send 1 to {MAX_TEXTS} texts, got {len(texts)}")
        if any(len(t) > MAX_CHARS for t in texts):
            raise BadInput(f"each text must be at most {MAX_CHARS} characters")
        target = check_lang(lang or settings.translate_target)
        try:
            found = await run_in_threadpool(translator(settings).translate, texts, target)
        except TranslationUnavailable as exc:
            raise ApiError(503, f"translation unavailable: {exc}", {"Retry-After": "30"}) from None
        return {
            "lang": target,
            "translations": [
                found[t].as_dict() if t in found else {"text": t, "translation": t, "provider": "none", "via": "blank"}
                for t in texts
            ],
        }
