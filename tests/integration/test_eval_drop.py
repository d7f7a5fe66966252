"""A degraded model's stored captions raise a significant drop against the trailing window (paired bootstrap by image,
real MongoDB and the real metric code), an unchanged one does not, and the exporter reports it for the alert: by
reference scores, by health signals and by CLIPScore."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from capq.settings import load_settings
from evaluation.drop import compare_to_trailing, doc_stats
from evaluation.quality import measure_quality
from evaluation.references import import_file
from evaluation.run import evaluate_groups
from evaluation.score_metrics import score_families
from storage.blobs import ImageStore
from storage.db import mongo
from tests.conftest import REPO, SEED_DIR, settings_env
from tests.integration.test_evaluation import GROUND_TRUTH, add_images


@pytest.fixture
def dsettings(settings):
    s = load_settings({**settings_env(settings), "CAPQ_BOOTSTRAP_SAMPLES": "500", "CAPQ_QUALITY_SAMPLE_SIZE": "10"})
    db = mongo(s)
    for name in ("images", "captions", "references", "evaluations"):
        db[name].delete_many({})
    return s


def _store(s, model: str, checkpoint: str, captions: dict[str, str], age_s: float = 0.0) -> None:
    at = datetime.now(UTC) - timedelta(seconds=age_s)
    mongo(s)["captions"].insert_many(
        [
            {
                "sha256": sha,
                "model": model,
                "checkpoint": checkpoint,
                "preset": "default",
                "config_hash": checkpoint,
                "caption": text,
                "job_id": "j",
                "status": "done",
                "created_at": at,
            }
            for sha, text in captions.items()
        ]
    )


def _references(s) -> dict[str, str]:
    """{sha256: its first reference caption} for the 10 seed images, with their references imported."""
    shas = add_images(mongo(s))
    import_file(s, GROUND_TRUTH)
    refs = {r["sha256"]: r["captions"][0] for r in mongo(s)["references"].find()}
    return {sha: refs[sha] for sha in shas.values()}


def _exported(s, model: str, kind: str) -> dict[str, float]:
    families = {f.name: f for f in score_families(s)}
    return {
        x.labels["score"]: x.value
        for x in families["capq_eval_significant_drop"].samples
        if x.labels["model"] == model and x.labels["kind"] == kind
    }


@pytest.mark.parametrize("degraded", [True, False], ids=["degraded", "unchanged"])
def test_a_new_checkpoint_that_captions_worse_is_a_significant_drop(dsettings, degraded):
    # Given blip's v1 checkpoint captioning the 10 seed images well, evaluated against references
    good = _references(dsettings)
    _store(dsettings, "blip", "v1", good, age_s=60)
    [first] = evaluate_groups(dsettings, model="blip").evaluations
    assert first["drop"] is None  # nothing trails the first evaluation
    # If v2 replaces it and captions the same images, each with another image's caption (or the same captions)
    shas = list(good)
    v2 = {sha: good[shas[(n + 1) % len(shas)]] for n, sha in enumerate(shas)} if degraded else dict(good)
    _store(dsettings, "blip", "v2", v2)
    newest = evaluate_groups(dsettings, model="blip").evaluations[-1]
    # I expect v2 (captioned last, so evaluated last) tested against v1 on the same 10 images, paired
    assert newest["checkpoint"] == "v2"
    test = newest["drop"]
    assert test["method"] == "paired" and test["images"] == 10 and test["trailing"] >= 1
    cider = test["scores"]["cider"]
    if degraded:  # a drop whose whole interval is below 0, and the exporter flags it for the alert
        assert cider["significant"] and cider["ci95"][1] < 0 and cider["p_value"] < 0.05
        assert test["scores"]["bleu_4"]["diff"] < 0
        assert _exported(dsettings, "blip", "references")["cider"] == 1.0
        env = {**os.environ, **settings_env(dsettings), "COLUMNS": "250"}
        shown = subprocess.run(
            [sys.executable, "-m", "capq", "eval", "history", "--model", "blip"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shown.returncode == 0 and "drop vs trailing" in shown.stdout and "cider p=" in shown.stdout, shown.stderr
    else:  # the same captions: difference 0, p 1, no alert
        assert not any(t["significant"] for t in test["scores"].values())
        assert cider["diff"] == 0 and cider["p_value"] == 1.0
        assert set(_exported(dsettings, "blip", "references").values()) == {0.0}


@pytest.mark.parametrize("degraded", [True, False], ids=["degraded", "unchanged"])
def test_health_signals_drop_when_production_captions_turn_empty_or_repeated(dsettings, degraded):
    # Given git's production captions of the seed images, each different, measured on schedule
    good = _references(dsettings)
    _store(dsettings, "git", "v1", good, age_s=60)
    measure_quality(dsettings, model="git", clip=False)
    # If a new config captions the same images again: half empty, half one repeated text (or as before)
    shas = list(good)
    bad = {sha: ("" if n % 2 else "a picture of a thing") for n, sha in enumerate(shas)}
    _store(dsettings, "git", "v2", bad if degraded else good)
    [doc] = measure_quality(dsettings, model="git", clip=False)
    # I expect the newest sample (v2's 10 captions) paired with v1's by image
    test = doc["drop"]
    assert test["method"] == "paired" and test["images"] == 10
    empty, repeated = test["scores"]["empty_share"], test["scores"]["repeated_share"]
    if degraded:
        assert empty["diff"] == pytest.approx(0.5) and empty["significant"] and empty["ci95"][0] > 0
        assert repeated["significant"]
        assert _exported(dsettings, "git", "health")["empty_share"] == 1.0
    else:
        assert not any(t["significant"] for t in test["scores"].values())


def test_new_images_only_are_compared_unpaired(dsettings):
    # Given a trailing CLIPScore evaluation on 10 images and a new one on 10 other images, clearly lower
    old = {"kind": "clipscore", "per_image": {f"a{n}": 30.0 + n % 3 for n in range(10)}}
    new = {"kind": "clipscore", "per_image": {f"b{n}": 20.0 + n % 3 for n in range(10)}}
    same = {"kind": "clipscore", "per_image": {f"c{n}": 30.0 + (n + 1) % 3 for n in range(10)}}
    # I expect an unpaired test: a significant drop for the lower one, none for the same distribution
    dropped = compare_to_trailing(doc_stats(new), doc_stats(old), dsettings)
    assert dropped["method"] == "unpaired" and dropped["scores"]["clipscore"]["significant"]
    assert dropped["scores"]["clipscore"]["diff"] == pytest.approx(-10.0)
    kept = compare_to_trailing(doc_stats(same), doc_stats(old), dsettings)
    assert not kept["scores"]["clipscore"]["significant"]


def test_clipscore_drops_when_a_new_config_captions_what_clip_rates_worst(dsettings, clip_dir):
    # Given the 10 seed images, and for each the caption (of the 10 first references) the tiny CLIP rates best and
    # the one it rates worst: a model that switches from the first to the second is worse by CLIPScore's own measure
    from PIL import Image

    from evaluation.clipscore import clip_scores

    s = load_settings({**settings_env(dsettings), "CAPQ_CLIP_CHECKPOINT": str(clip_dir)})
    good = _references(s)
    texts = list(good.values())
    by_sha = {r["sha256"]: r["file_names"][0] for r in mongo(s)["images"].find()}
    best, worst = {}, {}
    for sha in good:
        image = Image.open(SEED_DIR / "test_images" / "images" / by_sha[sha]).convert("RGB")
        scores = clip_scores(str(clip_dir), [image] * len(texts), texts)
        best[sha], worst[sha] = texts[scores.index(max(scores))], texts[scores.index(min(scores))]
    assert sum(best[sha] != worst[sha] for sha in good) >= 8
    for sha in good:  # measure_quality reads image bytes from S3
        ImageStore(s).put((SEED_DIR / "test_images" / "images" / by_sha[sha]).read_bytes())
    _store(s, "git", "v1", best, age_s=60)
    measure_quality(s, model="git")
    # If v2 captions the same images with the worst-rated captions
    _store(s, "git", "v2", worst)
    docs = {d["kind"]: d for d in measure_quality(s, model="git")}
    # I expect a paired, significant CLIPScore drop
    test = docs["clipscore"]["drop"]
    assert test["method"] == "paired" and test["images"] == 10
    clip = test["scores"]["clipscore"]
    assert clip["diff"] < 0 and clip["significant"], clip
