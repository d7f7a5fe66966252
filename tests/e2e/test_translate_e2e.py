"""Translation end to end: `capq submit --translate vi` through a real caption worker and a real translation worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from storage.db import mongo
from storage.translations import TranslationMemory
from tests.conftest import REPO, SEED_IMAGES, settings_env
from tests.e2e.procs import spawn_capq, stop
from tests.integration.test_translation import StandIn
from tooling.workers import wait_heartbeat
from translation.service import text_sha


@pytest.fixture
def stand_in():
    s = StandIn()
    yield s
    s.server.shutdown()


@pytest.fixture
def translate_worker(settings, stand_in, clean_redis):
    env = {
        **os.environ,
        **settings_env(settings),
        "CAPQ_LOG_JSON": "false",
        "CAPQ_TRANSLATE_PROVIDERS": "google",
        "CAPQ_GOOGLE_TRANSLATE_KEY": "e2e-key",
        "CAPQ_GOOGLE_TRANSLATE_ENDPOINT": stand_in.url,
    }
    proc = spawn_capq(env, "translate", "translate", "worker", "--concurrency", "2")
    try:
        wait_heartbeat(proc, "translate", settings.redis_url)
        yield proc
    finally:
        stop(proc)


def capq(settings, *args):
    env = {**os.environ, **settings_env(settings), "CAPQ_TRANSLATE_PROVIDERS": ""}
    out = subprocess.run(
        [sys.executable, "-m", "capq", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_submit_translate_stores_translations_that_results_lang_reads(settings, workers, translate_worker, stand_in):
    # Given a caption worker and a translation worker whose provider is a Google stand-in, and an empty memory
    # (tiny models caption alike, so an earlier test may have translated these very captions)
    mongo(settings)["translations"].delete_many({})
    workers.start("blip")
    # If a job of three seed images is submitted with --translate vi and captioned
    final = json.loads(
        capq(
            settings,
            "submit",
            *map(str, SEED_IMAGES[:3]),
            "-m",
            "blip",
            "--translate",
            "vi",
            "--owner",
            "tran",
            "--wait",
            "--json",
        ).splitlines()[-1]
    )
    assert final["state"] == "done" and final["counts"]["done"] == 3
    rows = [json.loads(line) for line in capq(settings, "results", final["job_id"]).splitlines()]
    captions = {r["caption"] for r in rows}
    # I expect the translation worker to put every caption into the memory, translated by google
    memory = TranslationMemory(settings)
    deadline = time.monotonic() + 120
    while len(memory.lookup([text_sha(c) for c in captions], "vi")) < len(captions):
        assert time.monotonic() < deadline, "captions not translated within 120 s"
        time.sleep(0.3)
    sent = sorted(q for r in stand_in.of("google") for q in r["body"]["q"])
    assert sorted(captions) == sent, "each distinct caption went to the provider exactly once"
    # and `capq results --lang vi` (run with no provider at all) to read them from the memory
    translated = [json.loads(line) for line in capq(settings, "results", final["job_id"], "--lang", "vi").splitlines()]
    assert [(r["caption"], r["translation"], r["translation_provider"]) for r in translated] == [
        (r["caption"], f"[vi] {r['caption']}", "google") for r in rows
    ]
    assert len(stand_in.of("google")) == len({tuple(r["body"]["q"]) for r in stand_in.of("google")})
