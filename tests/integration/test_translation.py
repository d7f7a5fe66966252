"""Translation: each provider against a local stand-in of its endpoint, the fallback chain, cache, memory, detection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from capq.settings import load_settings
from storage.translations import TranslationMemory
from tests.conftest import REPO, flush_redis, settings_env
from translation.providers import AwsTranslate, AzureTranslator, GoogleTranslate, ProviderError
from translation.results import with_translations
from translation.service import TranslationUnavailable, Translator, text_sha
from translation.tasks import translator as worker_translator


class StandIn:
    """A threaded HTTP server answering like a provider's endpoint; `answers` is a queue of (status, body, headers)
    per provider ('google', 'azure', 'aws'); with none queued it translates by prefixing '[vi]'."""

    def __init__(self):
        self.requests: list[dict] = []
        self.answers: dict[str, list[tuple[int, object, dict]]] = {"google": [], "azure": [], "aws": []}
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"null")
                url = urlsplit(self.path)
                kind = (
                    "aws"
                    if self.headers.get("X-Amz-Target")
                    else "google"
                    if url.path.endswith("/language/translate/v2")
                    else "azure"
                )
                stand_in.requests.append(
                    {
                        "kind": kind,
                        "path": url.path,
                        "query": parse_qs(url.query),
                        "headers": dict(self.headers),
                        "body": body,
                    }
                )
                queued = stand_in.answers[kind]
                status, payload, headers = queued.pop(0) if queued else (200, None, {})
                if payload is None:
                    payload = stand_in.translate(kind, body, parse_qs(url.query))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1" if kind == "aws" else "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def translate(kind: str, body, query) -> object:
        if kind == "google":
            return {"data": {"translations": [{"translatedText": f"[{body['target']}] {q}"} for q in body["q"]]}}
        if kind == "azure":
            to = query["to"][0]
            return [{"translations": [{"text": f"[{to}] {row['Text']}", "to": to}]} for row in body]
        return {
            "TranslatedText": f"[{body['TargetLanguageCode']}] {body['Text']}",
            "SourceLanguageCode": "en",
            "TargetLanguageCode": body["TargetLanguageCode"],
        }

    def of(self, kind: str) -> list[dict]:
        return [r for r in self.requests if r["kind"] == kind]


@pytest.fixture
def stand_in():
    s = StandIn()
    yield s
    s.server.shutdown()


def tsettings(settings, stand_in, providers: str, **extra):
    return load_settings(
        {
            **settings_env(settings),
            "CAPQ_TRANSLATE_PROVIDERS": providers,
            "CAPQ_GOOGLE_TRANSLATE_KEY": "g-key",
            "CAPQ_GOOGLE_TRANSLATE_ENDPOINT": stand_in.url,
            "CAPQ_AZURE_TRANSLATOR_KEY": "az-key",
            "CAPQ_AZURE_TRANSLATOR_REGION": "westeurope",
            "CAPQ_AZURE_TRANSLATOR_ENDPOINT": stand_in.url,
            "CAPQ_AWS_TRANSLATE_ENDPOINT": stand_in.url,
            "CAPQ_AWS_TRANSLATE_ACCESS_KEY": "AKIDEXAMPLE",
            "CAPQ_AWS_TRANSLATE_SECRET_KEY": "secret",
            **extra,
        }
    )


def caption() -> str:
    """A fresh English caption: the memory is shared by the session, so each test translates its own texts."""
    return f"a dog catching a frisbee in a grassy park number {uuid.uuid4().hex[:8]}"


def test_google_rest_v2_sends_key_target_and_texts(settings, stand_in):
    texts = [caption(), caption()]
    assert GoogleTranslate(tsettings(settings, stand_in, "google")).translate(texts, "vi") == [
        f"[vi] {t}" for t in texts
    ]
    (req,) = stand_in.of("google")
    assert req["query"]["key"] == ["g-key"] and req["body"] == {"q": texts, "target": "vi", "format": "text"}


def test_azure_v3_sends_subscription_headers(settings, stand_in):
    text = caption()
    assert AzureTranslator(tsettings(settings, stand_in, "azure")).translate([text], "vi") == [f"[vi] {text}"]
    (req,) = stand_in.of("azure")
    assert req["path"] == "/translate" and req["query"] == {"api-version": ["3.0"], "to": ["vi"]}
    assert req["headers"]["Ocp-Apim-Subscription-Key"] == "az-key"
    assert req["headers"]["Ocp-Apim-Subscription-Region"] == "westeurope" and req["body"] == [{"Text": text}]


def test_aws_through_boto3_with_endpoint_url(settings, stand_in):
    texts = [caption(), caption()]
    assert AwsTranslate(tsettings(settings, stand_in, "aws")).translate(texts, "vi") == [f"[vi] {t}" for t in texts]
    reqs = stand_in.of("aws")
    assert [r["body"]["Text"] for r in reqs] == texts
    assert reqs[0]["headers"]["X-Amz-Target"].endswith(".TranslateText")
    assert "AKIDEXAMPLE" in reqs[0]["headers"]["Authorization"]  # signed with the configured key (SigV4)


def test_a_missing_key_is_a_provider_error_that_names_the_setting(settings, stand_in):
    s = load_settings({**settings_env(settings), "CAPQ_TRANSLATE_PROVIDERS": "google"})
    with pytest.raises(ProviderError, match="CAPQ_GOOGLE_TRANSLATE_KEY"):
        GoogleTranslate(s)


def test_429_and_failure_fall_through_the_chain_and_are_recorded(settings, stand_in):
    # Given google rate-limits and azure fails, aws answers
    s = tsettings(settings, stand_in, "google,azure,aws")
    stand_in.answers["google"].append((429, {"error": {"code": 429}}, {"Retry-After": "30"}))
    stand_in.answers["azure"].append((503, {"error": "down"}, {}))
    text = caption()
    found = Translator(s).translate([text], "vi")
    assert found[text].translation == f"[vi] {text}" and found[text].provider == "aws" and found[text].via == "provider"
    outcomes = {(h["provider"], h["outcome"]) for h in TranslationMemory(s).history(text_sha(text))}
    assert outcomes == {("google", "rate_limited"), ("azure", "failed"), ("aws", "translated")}
    # and the key never appears in what was recorded
    assert "g-key" not in json.dumps(TranslationMemory(s).history(text_sha(text)), default=str)


def test_aws_throttling_falls_through_to_google(settings, stand_in):
    s = tsettings(settings, stand_in, "aws,google")
    stand_in.answers["aws"].append((400, {"__type": "ThrottlingException", "message": "slow down"}, {}))
    text = caption()
    found = Translator(s).translate([text], "vi")
    assert found[text].provider == "google" and len(stand_in.of("aws")) == 1  # one attempt, no retry in place


def test_second_call_is_a_cache_hit_and_the_memory_survives_a_redis_flush(settings, stand_in):
    s = tsettings(settings, stand_in, "google")
    text = caption()
    assert Translator(s).translate([text], "vi")[text].via == "provider"
    assert Translator(s).translate([text], "vi")[text].via == "cache"
    flush_redis(s)
    again = Translator(s).translate([text], "vi")[text]
    assert again.via == "memory" and again.provider == "google" and again.translation == f"[vi] {text}"
    assert len(stand_in.of("google")) == 1, "the paid provider saw the text once"
    assert Translator(s).translate([text], "vi")[text].via == "cache", "the memory refills the cache"


def test_text_already_in_the_target_language_is_not_sent(settings, stand_in):
    s = tsettings(settings, stand_in, "google")
    vietnamese = f"một con chó đang bắt đĩa bay trên bãi cỏ trong công viên {uuid.uuid4().hex[:6]}"
    found = Translator(s).translate([vietnamese], "vi")[vietnamese]
    assert (found.translation, found.provider, found.via, found.source_lang) == (vietnamese, "none", "detected", "vi")
    assert stand_in.requests == []


def test_no_provider_means_unavailable_and_captions_still_come_back(settings):
    s = load_settings({**settings_env(settings), "CAPQ_TRANSLATE_PROVIDERS": ""})
    with pytest.raises(TranslationUnavailable, match="CAPQ_TRANSLATE_PROVIDERS"):
        Translator(s).translate([caption()], "vi")
    text = caption()
    rows, summary = with_translations(s, [{"caption": text, "status": "done"}], "vi")
    assert rows == [{"caption": text, "status": "done", "translation": None, "translation_provider": None}]
    assert summary["available"] is False and "CAPQ_TRANSLATE_PROVIDERS" in summary["error"]


def test_offline_marian_provider_with_a_tiny_model(settings, tmp_path_factory):
    from tooling.tiny_marian import make_tiny_marian

    folder = make_tiny_marian(tmp_path_factory.mktemp("marian") / "tiny-marian")
    s = load_settings(
        {**settings_env(settings), "CAPQ_TRANSLATE_PROVIDERS": "offline", "CAPQ_TRANSLATE_OFFLINE_MODEL": str(folder)}
    )
    texts = [caption(), caption()]
    found = worker_translator(s).translate(texts, "vi")  # the translation worker's chain builds the offline provider
    assert all(found[t].provider == "offline" and isinstance(found[t].translation, str) for t in texts)
    # Random weights: the words mean nothing, but the same input gives the same output
    from translation.offline import MarianProvider

    assert MarianProvider(str(folder)).translate(texts[:1], "vi") == [found[texts[0]].translation]


API_TRANSLATES = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
import producer.api  # noqa: F401 - the API process's modules
from capq.settings import get_settings
from translation.results import translator

text = sys.argv[1]
found = translator(get_settings()).translate([text], "vi")[text]
heavy = sorted({"torch", "transformers", "translation.offline"} & set(sys.modules))
print(json.dumps({"provider": found.provider, "translation": found.translation, "loaded": heavy}))
"""


def test_the_api_skips_the_offline_provider_without_loading_torch_and_falls_through(settings, stand_in):
    # Given a chain that names the offline (Marian) provider first, the API process's translator
    env = {**os.environ, **settings_env(tsettings(settings, stand_in, "offline,google"))}
    text = caption()
    run = subprocess.run(
        [sys.executable, "-c", API_TRANSLATES, text], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    # translates through the next provider, says once that it skipped offline, and never imports torch or Marian
    assert json.loads(run.stdout) == {"provider": "google", "translation": f"[vi] {text}", "loaded": []}
    assert run.stderr.count("offline skipped in this process") == 1, run.stderr
    # With offline alone, on-demand translation says where it runs
    alone = tsettings(settings, stand_in, "offline")
    with pytest.raises(TranslationUnavailable, match="offline: runs in the translation worker only"):
        Translator(alone).translate([caption()], "vi")


def test_many_texts_go_in_slices_and_a_slice_that_fails_everywhere_leaves_the_rest_translated(settings, stand_in):
    from translation.service import BATCH

    s = tsettings(settings, stand_in, "google")
    texts = [caption() for _ in range(BATCH + 3)]
    stand_in.answers["google"].append((500, {"error": "boom"}, {}))  # the first slice fails, the second passes
    with pytest.raises(TranslationUnavailable, match="google answered 500") as partial:
        Translator(s).translate(texts, "vi")
    assert [len(r["body"]["q"]) for r in stand_in.of("google")] == [BATCH, 3]
    assert sorted(partial.value.done) == sorted(texts[BATCH:])
    # The failed slice is translated by the next call; the memory answers for the rest
    found = Translator(s).translate(texts, "vi")
    assert {found[t].via for t in texts[BATCH:]} == {"cache"} and {found[t].via for t in texts[:BATCH]} == {"provider"}
