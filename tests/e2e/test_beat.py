"""Periodic evaluation with real processes: celery beat sends, an eval worker scores, MongoDB keeps the runs."""

from __future__ import annotations

import os
import time
from pathlib import Path

from evaluation.references import import_file
from storage.db import Mongo, mongo
from tests.e2e.conftest import env_settings
from tests.e2e.procs import spawn_capq, stop
from tests.integration.test_evaluation import GROUND_TRUTH, add_images, add_seed_captions


def test_beat_and_eval_worker_store_one_run_then_skip_unchanged(settings, clean_redis):
    # Given stored seed captions with references (in a database of this test's own), and a beat ticking every 2 s
    s, env = env_settings(settings, mongo_db=f"{settings.mongo_db}_beat", eval_interval_s=2, log_json="false")
    Mongo(s).ensure_indexes()
    db = mongo(s)
    add_seed_captions(db, add_images(db))
    import_file(s, GROUND_TRUTH)
    env = {**os.environ, **env}
    worker = spawn_capq(env, "eval-worker", "eval", "worker")
    beat = spawn_capq(env, "beat", "beat")
    worker_log = Path(worker.log_path)
    try:
        # I expect one evaluation per model to land in MongoDB
        deadline = time.monotonic() + 300
        while db["evaluations"].count_documents({}) < 4:
            assert worker.poll() is None and beat.poll() is None, "eval worker or beat died"
            assert time.monotonic() < deadline, "no scheduled evaluation landed"
            time.sleep(0.5)
        first = {d["model"]: d for d in db["evaluations"].find()}
        assert set(first) == {"blip", "blip2", "git", "vit-gpt2"}
        assert all(d["trigger"] == "beat" for d in first.values())
        assert round(first["git"]["scores"]["cider"], 4) == 0.5401
        # If more ticks pass with no new captions
        seen = worker_log.read_text().count("evaluation of vit-gpt2")
        while worker_log.read_text().count("evaluation of vit-gpt2") < seen + 2:
            assert time.monotonic() < deadline, "beat stopped ticking"
            time.sleep(0.5)
        # I expect nothing new written
        assert db["evaluations"].count_documents({}) == 4
    finally:
        stop(beat, worker)
        Mongo(s).client.drop_database(s.mongo_db)
