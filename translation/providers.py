"""providers: one small interface over Google Cloud Translation v2, Azure Translator v3 and AWS Translate."""

from __future__ import annotations

from abc import ABC, abstractmethod

import httpx

from capq.errors import Unavailable
from capq.settings import Settings


class ProviderError(Unavailable):
    """A provider could not translate (down, refused, misconfigured); the chain moves on to the next one."""


class RateLimited(ProviderError):
    """The provider answered 429 (or its throttling error); the chain moves on and says when to retry."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Provider(ABC):
    """A translation service. `paid` providers are never asked twice for the same text (the memory answers)."""

    name: str = ""
    paid: bool = True

    @abstractmethod
    def translate(self, texts: list[str], target: str) -> list[str]:
        """One translation per text, in order; raise ProviderError (or RateLimited) when it cannot."""


def _check_http(resp: httpx.Response, name: str) -> None:
    if resp.status_code == 429:
        after = resp.headers.get("Retry-After")
        raise RateLimited(
            f"{name} rate-limited the request (429)" + (f"; retry after {after}s" if after else ""),
            float(after) if after and after.replace(".", "", 1).isdigit() else None,
        )
    if resp.status_code >= 400:
        # The body may echo the request: keep only its status and a short excerpt, never the key.
        raise ProviderError(f"{name} answered {resp.status_code}: {resp.text[:200]}")


def _checked_count(out: list[str], texts: list[str], name: str) -> list[str]:
    if len(out) != len(texts):
        raise ProviderError(f"{name} returned {len(out)} translations, but {len(texts)} texts were sent")
    return out


class GoogleTranslate(Provider):
    """Cloud Translation Basic (v2) REST: POST {endpoint}/language/translate/v2 with an API key."""

    name = "google"

    def __init__(self, settings: Settings):
        if not settings.google_translate_key:
            raise ProviderError("google: set CAPQ_GOOGLE_TRANSLATE_KEY to an API key with Cloud Translation enabled")
        self.key, self.endpoint = settings.google_translate_key, settings.google_translate_endpoint.rstrip("/")
        self.timeout_s = settings.translate_timeout_s

    def translate(self, texts: list[str], target: str) -> list[str]:
        try:
            resp = httpx.post(
                f"{self.endpoint}/language/translate/v2",
                params={"key": self.key},
                json={"q": texts, "target": target, "format": "text"},
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise ProviderError(f"google unreachable: {type(exc).__name__}") from None
        _check_http(resp, self.name)
        try:
            out = [t["translatedText"] for t in resp.json()["data"]["translations"]]
        except (ValueError, KeyError, TypeError):
            raise ProviderError("google answered with an unexpected body") from None
        return _checked_count(out, texts, self.name)


class AzureTranslator(Provider):
    """Azure AI Translator v3 REST: POST {endpoint}/translate?api-version=3.0&to=TARGET."""

    name = "azure"

    def __init__(self, settings: Settings):
        if not settings.azure_translator_key:
            raise ProviderError(
                "azure: set CAPQ_AZURE_TRANSLATOR_KEY (and CAPQ_AZURE_TRANSLATOR_REGION for a regional resource)"
            )
        self.headers = {"Ocp-Apim-Subscription-Key": settings.azure_translator_key}
        if settings.azure_translator_region:
            self.headers["Ocp-Apim-Subscription-Region"] = settings.azure_translator_region
        self.endpoint = settings.azure_translator_endpoint.rstrip("/")
        self.timeout_s = settings.translate_timeout_s

    def translate(self, texts: list[str], target: str) -> list[str]:
        try:
            resp = httpx.post(
                f"{self.endpoint}/translate",
                params={"api-version": "3.0", "to": target},
                headers=self.headers,
                json=[{"Text": t} for t in texts],
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise ProviderError(f"azure unreachable: {type(exc).__name__}") from None
        _check_http(resp, self.name)
        try:
            out = [row["translations"][0]["text"] for row in resp.json()]
        except (ValueError, KeyError, TypeError, IndexError):
            raise ProviderError("azure answered with an unexpected body") from None
        return _checked_count(out, texts, self.name)


class AwsTranslate(Provider):
    """Amazon Translate through boto3 (TranslateText, one text per call); endpoint_url is configurable."""

    name = "aws"

    def __init__(self, settings: Settings):
        import boto3
        from botocore.config import Config

        creds = {}
        if settings.aws_translate_access_key:
            creds = {
                "aws_access_key_id": settings.aws_translate_access_key,
                "aws_secret_access_key": settings.aws_translate_secret_key,
            }
        # One attempt: on throttling the chain falls through at once instead of boto3 retrying in place.
        self.client = boto3.client(
            "translate",
            region_name=settings.aws_translate_region,
            endpoint_url=settings.aws_translate_endpoint or None,
            config=Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=settings.translate_timeout_s,
                read_timeout=settings.translate_timeout_s,
            ),
            **creds,
        )

    def translate(self, texts: list[str], target: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        out = []
        for text in texts:
            try:
                resp = self.client.translate_text(Text=text, SourceLanguageCode="auto", TargetLanguageCode=target)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code in ("ThrottlingException", "TooManyRequestsException") or status == 429:
                    raise RateLimited(f"aws throttled the request ({code or status})") from None
                raise ProviderError(f"aws refused the request: {code or status}") from None
            except BotoCoreError as exc:
                raise ProviderError(f"aws unreachable: {type(exc).__name__}") from None
            out.append(resp["TranslatedText"])
        return out
