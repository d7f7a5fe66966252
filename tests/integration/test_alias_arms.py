"""The arms of an alias compared on reference scores where references exist (unpaired bootstrap, one CIDEr IDF for
both arms), stored, exported for the dashboards and served by GET /v1/aliases/{name}/comparison."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from capq.settings import load_settings
from evaluation.quality import compare_alias_arms
from evaluation.score_metrics import score_families
from producer.api import create_app
from storage.aliases import AliasStore
from storage.db import mongo
from tests.conftest import settings_env
from tests.integration.test_eval_drop import _references, _store
from tests.integration.test_producer_api import key_for


@pytest.fixture
def asettings(settings):
    s = load_settings({**settings_env(settings), "CAPQ_BOOTSTRAP_SAMPLES": "500", "CAPQ_CLIP_CHECKPOINT": ""})
    db = mongo(s)
    for name in ("images", "captions", "references", "evaluations", "jobs", "model_aliases"):
        db[name].delete_many({})
    return s


def test_arms_with_references_are_compared_on_bleu_and_cider_and_exported(asettings):
    # Given caption-default = blip:50, git:50; blip captioned 5 seed images of the alias's job with their own
    # first reference, git the other 5 with another image's caption
    good = _references(asettings)
    shas = list(good)
    AliasStore(asettings).set("caption-default", [{"model": "blip", "weight": 50}, {"model": "git", "weight": 50}], "t")
    mongo(asettings)["jobs"].insert_one(
        {"_id": "alias-job", "aliases": {"caption-default": []}, "created_at": datetime.now(UTC)}
    )
    _store(asettings, "blip", "v1", {sha: good[sha] for sha in shas[:5]})
    _store(asettings, "git", "v1", {sha: good[shas[(n + 1) % 10]] for n, sha in enumerate(shas) if n >= 5})
    mongo(asettings)["captions"].update_many({}, {"$set": {"job_id": "alias-job"}})
    # If the arms are compared and the comparison stored (as the CLI and the schedule do)
    result = compare_alias_arms(asettings, "caption-default", store=True)
    # I expect each arm's reference scores on its 5 images and blip's CIDEr lead to be significant
    assert result["per_arm"]["blip"]["references"]["images"] == 5
    assert result["per_arm"]["git"]["references"]["images"] == 5
    cider = result["diff"]["blip - git"]["references"]["cider"]
    assert cider["diff"] > 0 and cider["ci95"][0] > 0 and cider["significant"]
    assert "bleu_4" in result["diff"]["blip - git"]["references"]
    # and the exporter reports the arms' scores and the difference's significance
    families = {f.name: f for f in score_families(asettings)}
    sig = {
        (s.labels["kind"], s.labels["score"]): s.value
        for s in families["capq_alias_arm_significant"].samples
        if s.labels["alias"] == "caption-default" and s.labels["pair"] == "blip - git"
    }
    assert sig[("references", "cider")] == 1.0
    arm = {(s.labels["model"], s.labels["kind"], s.labels["score"]) for s in families["capq_alias_arm_score"].samples}
    assert {("blip", "references", "cider"), ("git", "health", "empty_share")} <= arm
    # and the API serves the stored comparison; the history of model runs does not list it
    client = TestClient(create_app(asettings))
    key = key_for(asettings, "una")
    body = client.get("/v1/aliases/caption-default/comparison", headers=key).json()
    assert body["diff"]["blip - git"]["references"]["cider"]["significant"] is True
    missing = client.get("/v1/aliases/nope/comparison", headers=key)
    assert missing.status_code == 404 and "capq eval compare --alias nope" in missing.json()["error"]
    assert all(r.get("kind") != "alias" for r in client.get("/v1/evaluations", headers=key).json()["evaluations"])


def test_the_schedule_compares_every_alias_and_stores_it(asettings, monkeypatch):
    from capq.celery_app import beat_schedule
    from capq.names import ALIAS_COMPARE_TASK, EVAL_QUEUE
    from evaluation import quality_tasks

    # Given an alias whose arms captioned the alias's job
    AliasStore(asettings).set("caption-default", [{"model": "blip", "weight": 90}, {"model": "git", "weight": 10}], "t")
    mongo(asettings)["jobs"].insert_one(
        {"_id": "alias-job", "aliases": {"caption-default": []}, "created_at": datetime.now(UTC)}
    )
    _store(asettings, "blip", "v1", {f"{n:064x}": "a dog" for n in range(12)})
    _store(asettings, "git", "v1", {f"{n + 100:064x}": f"a cat {n}" for n in range(12)})
    mongo(asettings)["captions"].update_many({}, {"$set": {"job_id": "alias-job"}})
    # If beat's entry runs (the task body the evaluation worker runs)
    [entry] = [e for e in beat_schedule(asettings).values() if e["task"] == ALIAS_COMPARE_TASK]
    assert entry["options"]["queue"] == EVAL_QUEUE
    monkeypatch.setattr(quality_tasks, "get_settings", lambda: asettings)
    summary = quality_tasks.compare_aliases.run()
    # I expect the comparison stored, its significant differences summarised (blip repeats itself, git never)
    assert "repeated_share" in summary["aliases"]["caption-default"]["blip - git"]["health"]
    assert mongo(asettings)["evaluations"].count_documents({"kind": "alias", "alias": "caption-default"}) == 1
