"""Reference-free quality against real MongoDB and S3: CLIPScore equals the reference implementation's, health signals
and CLIPScore land in the evaluation history on schedule and in the exporter, and an alias's arms are compared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import torch
from PIL import Image

from capq.names import EVAL_QUEUE, MODEL_NAMES, QUALITY_TASK
from capq.settings import load_settings
from evaluation.clipscore import clip_scores, load_clip, mean_ci95
from evaluation.metrics import compare_unpaired
from evaluation.quality import compare_alias_arms, measure_quality
from evaluation.score_metrics import score_families
from storage.aliases import AliasStore
from storage.blobs import ImageStore
from storage.db import mongo
from tests.conftest import REPO, SEED_DIR, SEED_IMAGES, settings_env

# file name -> its first reference caption: fixed, real (image, caption) pairs
FIRST_CAPTION = {
    e["filename"]: e["captions"][0]
    for e in json.loads((SEED_DIR / "captions_ground_truth.json").read_text())["images"].values()
}


@pytest.fixture
def qsettings(settings, clip_dir):
    s = load_settings(
        {**settings_env(settings), "CAPQ_CLIP_CHECKPOINT": str(clip_dir), "CAPQ_BOOTSTRAP_SAMPLES": "200"}
    )
    db = mongo(s)
    for name in ("captions", "evaluations", "jobs", "model_aliases"):
        db[name].delete_many({})
    return s


def test_clipscore_equals_the_reference_implementation_on_fixed_inputs(clip_dir):
    from torchmetrics.multimodal.clip_score import CLIPScore

    images = [Image.open(p).convert("RGB") for p in SEED_IMAGES]
    texts = [FIRST_CAPTION[p.name] for p in SEED_IMAGES]
    ours = clip_scores(str(clip_dir), images, texts)
    # Reference 1: torchmetrics' CLIPScore module, one pair at a time (per pair it gives max(100 cos, 0), the
    # paper's CLIP-S with w=100; over a batch the module clips the mean instead, so pairs are fed singly)
    from evaluation.clipscore import image_tensor

    reference = []
    for image, text in zip(images, texts):
        metric = CLIPScore(model_name_or_path=lambda: load_clip(str(clip_dir)))
        metric.update(image_tensor(image), text)
        reference.append(float(metric.compute()))
    assert ours == pytest.approx(reference, abs=1e-4)
    # Reference 2: the definition, from transformers' CLIPModel directly: max(100 * cos(E_image, E_text), 0)
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(clip_dir, local_files_only=True)
    with torch.no_grad():
        out = model(**processor(text=texts, images=images, return_tensors="pt", padding=True))
    cos = (out.image_embeds * out.text_embeds).sum(-1)  # both already unit length
    assert ours == pytest.approx([max(100 * float(c), 0.0) for c in cos], abs=1e-3)
    assert any(s > 0 for s in ours) and len(ours) == 10


def test_bootstrap_interval_and_unpaired_comparison():
    mean, (lo, hi) = mean_ci95([10.0, 12.0, 11.0, 13.0, 9.0] * 10, samples=500)
    assert mean == pytest.approx(11.0) and lo < 11.0 < hi
    far = compare_unpaired([20.0, 21.0, 22.0] * 20, [10.0, 11.0, 12.0] * 20, samples=500)
    assert far["diff"] == pytest.approx(10.0) and far["p_value"] < 0.01 and far["ci95"][0] > 0
    same = compare_unpaired([10.0, 11.0, 12.0] * 20, [12.0, 11.0, 10.0] * 20, samples=500)
    assert same["p_value"] > 0.5


def _captions(s, model: str, texts: list[str], job_id: str = "j1", preset: str = "default", config: str = "h") -> None:
    store, now = ImageStore(s), datetime.now(UTC)
    docs = []
    for n, (path, text) in enumerate(zip(SEED_IMAGES * 3, texts)):
        sha = store.put(path.read_bytes())[0]
        docs.append(
            {
                "sha256": sha,
                "model": model,
                "checkpoint": "no-such-checkpoint",
                "preset": preset,
                "config_hash": config,
                "caption": text,
                "job_id": job_id,
                "status": "done",
                "created_at": now - timedelta(seconds=n),
            }
        )
    mongo(s)["captions"].insert_many(docs)


def test_health_and_clipscore_are_stored_in_the_history_and_exported(qsettings):
    # Given 10 git captions: 2 empty, 4 the same text, 1 long enough to hit the 50-token default preset limit
    long = " ".join(["word"] * 60)
    texts = ["", "", "a dog", "a dog", "a dog", "a dog", "a red bus", "two cats", "a train", long]
    _captions(qsettings, "git", texts)
    # If the scheduled quality task runs for git (the task body a worker runs)
    from evaluation import quality_tasks

    quality_tasks.get_settings = lambda: qsettings
    summary = quality_tasks.measure.run(model="git")
    # I expect a health and a CLIPScore evaluation stored, as beat stored them
    kinds = {d["kind"]: d for d in summary["stored"]}
    assert set(kinds) == {"health", "clipscore"}
    assert kinds["health"]["empty_share"] == pytest.approx(0.2)
    assert kinds["health"]["repeated_share"] == pytest.approx(0.4)
    assert kinds["health"]["length_limit_share"] == pytest.approx(0.1)
    assert kinds["health"]["vocabulary"] == 8  # a dog red bus two cats train word
    stored = mongo(qsettings)["evaluations"].find_one({"kind": "clipscore", "model": "git"})
    assert stored["trigger"] == "beat" and stored["image_count"] == 10 and len(stored["per_image"]) == 10
    lo, hi = stored["ci95"]["clipscore"]
    assert lo <= stored["scores"]["clipscore"] <= hi
    # and the exporter reports both kinds
    families = {f.name: f for f in score_families(qsettings)}
    got = {(s.labels["kind"], s.labels["score"]) for s in families["capq_eval_score"].samples}
    assert {("health", "empty_share"), ("clipscore", "clipscore")} <= got
    # and `capq eval history` shows them beside reference scores
    env = {**os.environ, **settings_env(qsettings), "COLUMNS": "250"}
    shown = subprocess.run(
        [sys.executable, "-m", "capq", "eval", "history", "--model", "git"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0 and "clipscore" in shown.stdout and "empty_share" in shown.stdout, shown.stderr


def test_beat_schedules_quality_for_every_model_on_the_eval_queue(qsettings):
    from capq.celery_app import beat_schedule

    entries = [e for e in beat_schedule(qsettings).values() if e["task"] == QUALITY_TASK]
    assert {e["kwargs"]["model"] for e in entries} == set(MODEL_NAMES)
    assert all(e["options"]["queue"] == EVAL_QUEUE and e["schedule"] == qsettings.quality_interval_s for e in entries)


def test_the_arms_of_an_alias_are_compared_on_the_alias_traffic(qsettings):
    # Given caption-default = blip:50, git:50 and a job submitted to it that both arms captioned
    AliasStore(qsettings).set("caption-default", [{"model": "blip", "weight": 50}, {"model": "git", "weight": 50}], "t")
    mongo(qsettings)["jobs"].insert_one(
        {"_id": "alias-job", "aliases": {"caption-default": []}, "created_at": datetime.now(UTC)}
    )
    _captions(qsettings, "blip", ["a dog"] * 10, job_id="alias-job")
    _captions(
        qsettings,
        "git",
        ["a train", "", "a cat", "a bus", "a man", "a boat", "a cake", "a sign", "a horse", "a clock"],
        job_id="alias-job",
    )
    _captions(qsettings, "git", ["outside the alias"] * 5, job_id="other-job", config="h2")
    result = compare_alias_arms(qsettings, "caption-default")
    # I expect each arm measured on the alias's job only, and their CLIPScore difference with its significance
    assert result["jobs"] == 1
    assert result["per_arm"]["blip"]["health"]["repeated_share"] == 1.0
    assert result["per_arm"]["git"]["health"]["empty_share"] == pytest.approx(0.1)
    assert result["per_arm"]["git"]["captions"] == 10
    [(pair, kinds)] = result["diff"].items()
    diff = kinds["clipscore"]["clipscore"]
    assert pair == "blip - git" and 0.0 <= diff["p_value"] <= 1.0 and diff["ci95"][0] <= diff["diff"] <= diff["ci95"][1]
    # every blip caption repeats another, no git caption does: a significant health difference
    repeated = kinds["health"]["repeated_share"]
    assert repeated["diff"] == 1.0 and repeated["significant"] and repeated["p_value"] < 0.05
    assert not kinds["health"]["empty_share"]["significant"]  # 0 of 10 against 1 of 10: no evidence
    with pytest.raises(ValueError, match="capq aliases list"):
        compare_alias_arms(qsettings, "no-such-alias")
    # and `capq eval compare ALIAS` prints the same comparison
    env = {**os.environ, **settings_env(qsettings), "COLUMNS": "250"}
    for args in (["caption-default"], ["--alias", "caption-default"]):
        shown = subprocess.run(
            [sys.executable, "-m", "capq", "eval", "compare", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shown.returncode == 0 and "blip - git" in shown.stdout, shown.stdout + shown.stderr
        assert "repeated_share" in shown.stdout and "significant" in shown.stdout


def test_no_captions_stores_nothing(qsettings):
    assert measure_quality(qsettings, model="blip2") == []
