"""Evaluation against the real MongoDB wire server: references import, stored-caption runs, CLI and beat task."""

from __future__ import annotations

import json
import os
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from capq.names import EVAL_QUEUE, EVAL_TASK, MODEL_NAMES
from capq.settings import load_settings
from evaluation import cli as eval_cli
from evaluation.references import ReferenceFormatError, import_file, parse_file
from evaluation.run import compare_models, evaluate_groups, run_evaluation
from evaluation.seed import PUBLISHED as SEED_TABLE
from evaluation.seed import read_eval_file
from storage.blobs import sha256_hex
from storage.db import Mongo, mongo
from tooling.paths import seed_dir

REPO = Path(__file__).resolve().parents[2]
SEED_DIR = seed_dir()
GROUND_TRUTH = SEED_DIR / "captions_ground_truth.json"
# models_tested name in the seed files -> capq model name and the seed's checkpoint.
SEED_MODELS = {
    "blip": ("blip", "Salesforce/blip-image-captioning-large"),
    "blip2": ("blip2", "Salesforce/blip2-opt-2.7b"),
    "git": ("git", "microsoft/git-base-coco"),
    "vit_gpt2": ("vit-gpt2", "nlpconnect/vit-gpt2-image-captioning"),
}
COLLECTIONS = ("images", "captions", "references", "evaluations")


@pytest.fixture(scope="module")
def eval_settings():
    s = load_settings({**os.environ, "CAPQ_MONGO_DB": f"capq_test_eval_{uuid.uuid4().hex[:10]}"})
    Mongo(s).ensure_indexes()
    yield s
    Mongo(s).client.drop_database(s.mongo_db)


@pytest.fixture
def db(eval_settings):
    handle = mongo(eval_settings)
    for name in COLLECTIONS:
        handle[name].delete_many({})
    return handle


def snapshot(db, name: str) -> list[dict]:
    return sorted((({k: v for k, v in d.items() if k != "_id"}) for d in db[name].find()), key=lambda d: d["sha256"])


def add_images(db, names: list[str] | None = None) -> dict[str, str]:
    """Images docs for the seed files, as the producer writes them; returns {file name: sha256}."""
    out = {}
    for path in sorted((SEED_DIR / "test_images" / "images").glob("*.jpg")):
        if names is None or path.name in names:
            data = path.read_bytes()
            out[path.name] = sha256_hex(data)
            db["images"].insert_one(
                {
                    "sha256": out[path.name],
                    "size": len(data),
                    "format": "JPEG",
                    "width": 640,
                    "height": 480,
                    "first_seen": datetime.now(UTC),
                    "file_names": [path.name],
                }
            )
    return out


def caption_doc(sha: str, model: str, caption: str, **extra) -> dict:
    checkpoint = dict(SEED_MODELS.values()).get(model, "ck")
    return {
        "sha256": sha,
        "model": model,
        "checkpoint": checkpoint,
        "preset": "seed",
        "config_hash": f"seed-{model}",
        "caption": caption,
        "job_id": "job-seed",
        "worker_id": "test",
        "created_at": datetime.now(UTC),
        "status": "done",
        "error": None,
        **extra,
    }


def add_seed_captions(db, shas: dict[str, str]) -> None:
    for path in sorted((SEED_DIR / "eval_result_json").glob("*.json")):
        tested, captions, _ = read_eval_file(path)
        model = SEED_MODELS[tested][0]
        db["captions"].insert_many([caption_doc(shas[name], model, text) for name, text in captions.items()])


def write_json(tmp_path: Path, value, name: str = "refs.json") -> Path:
    path = tmp_path / name
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def coco(names_and_captions: dict[str, list[str]]) -> dict:
    images = [{"id": n, "file_name": name} for n, name in enumerate(names_and_captions)]
    annotations = [
        {"id": 100 * n + k, "image_id": n, "caption": c}
        for n, caps in enumerate(names_and_captions.values())
        for k, c in enumerate(caps)
    ]
    return {"images": images, "annotations": annotations}


def test_importing_the_same_references_twice_changes_nothing(eval_settings, db, tmp_path):
    add_images(db)
    first = import_file(eval_settings, GROUND_TRUTH)
    assert (first.inserted, first.updated, first.unchanged, first.format) == (10, 0, 0, "seed-ground-truth")
    before = snapshot(db, "references")
    second = import_file(eval_settings, GROUND_TRUTH)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, 10)
    assert snapshot(db, "references") == before
    # The same references as COCO annotations: same captions, so nothing changes either.
    refs = {name: caps for name, caps in parse_file(GROUND_TRUTH)[1].items()}
    third = import_file(eval_settings, write_json(tmp_path, coco(refs)))
    assert (third.format, third.unchanged, third.inserted) == ("coco-captions", 10, 0)
    assert snapshot(db, "references") == before


def test_run_evaluation_reproduces_the_seed_table(eval_settings, db):
    # Given the seed's images, references and the four models' captions stored as capq stores them
    shas = add_images(db)
    import_file(eval_settings, GROUND_TRUTH)
    add_seed_captions(db, shas)
    # If every model is evaluated
    docs = run_evaluation(eval_settings)
    # I expect one stored evaluation per model with the seed's published scores
    assert sorted(d["model"] for d in docs) == sorted(MODEL_NAMES)
    for doc in docs:
        expected = SEED_TABLE[next(k for k, (m, _) in SEED_MODELS.items() if m == doc["model"])]
        for name in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider"):
            assert round(doc["scores"][name], 4) == expected[name], (doc["model"], name)
            lo, hi = doc["ci95"][name]
            assert lo <= doc["scores"][name] <= hi
        assert doc["image_count"] == 10 and doc["counts"] == {
            "captions": 10,
            "scored": 10,
            "no_reference": 0,
            "empty": 0,
        }
        assert doc["trigger"] == "manual" and doc["preset"] == "seed"
    assert db["evaluations"].count_documents({}) == 4
    assert len({d["image_set_hash"] for d in docs}) == 1


def test_scheduler_mode_skips_unchanged_groups(eval_settings, db):
    shas = add_images(db)
    import_file(eval_settings, GROUND_TRUTH)
    add_seed_captions(db, shas)
    assert len(run_evaluation(eval_settings, model="git", trigger="beat", skip_if_unchanged=True)) == 1
    report = evaluate_groups(eval_settings, model="git", trigger="beat", skip_if_unchanged=True)
    assert report.evaluations == [] and "no caption or reference newer" in report.skipped[0]["reason"]
    # A new caption for the group (another image) makes it due again.
    db["images"].insert_one({"sha256": "f" * 64, "file_names": ["new.jpg"]})
    db["captions"].insert_one(
        caption_doc("f" * 64, "git", "a new caption", created_at=datetime.now(UTC) + timedelta(seconds=1))
    )
    again = run_evaluation(eval_settings, model="git", trigger="beat", skip_if_unchanged=True)
    assert len(again) == 1 and again[0]["counts"]["no_reference"] == 1 and again[0]["trigger"] == "beat"


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ({"images": [{"id": 1, "file_name": "a.jpg"}]}, "'annotations' list"),
        (
            {"images": [{"id": 1}], "annotations": []},
            "images[0] needs an 'id' (number or string) and a non-empty 'file_name'",
        ),
        (
            {"images": [{"id": [1], "file_name": "a.jpg"}], "annotations": [{"image_id": [1], "caption": "x"}]},
            "needs an 'id'",
        ),
        (
            coco({"a.jpg": ["a dog"]}) | {"annotations": [{"image_id": 7, "caption": "x"}]},
            "image_id 7 is not in 'images'",
        ),
        (coco({"a.jpg": ["a dog", "  "]}), "annotations[1]: 'caption' must be a non-empty string"),
        ({"images": {"1": {"filename": "a.jpg", "captions": []}}}, "'captions' must be a list of non-empty strings"),
        ([1, 2], "unknown format"),
    ],
)
def test_malformed_reference_file_is_rejected_whole(eval_settings, db, tmp_path, content, message):
    add_images(db)
    import_file(eval_settings, GROUND_TRUTH)
    before = snapshot(db, "references")
    with pytest.raises(ReferenceFormatError, match=re.escape(message)):
        import_file(eval_settings, write_json(tmp_path, content))
    assert snapshot(db, "references") == before


def test_one_bad_entry_means_nothing_is_written(eval_settings, db, tmp_path):
    add_images(db)
    refs = parse_file(GROUND_TRUTH)[1]
    data = coco(refs)
    data["annotations"].append({"image_id": 3, "caption": None})
    with pytest.raises(ReferenceFormatError, match="'caption' must be a non-empty string"):
        import_file(eval_settings, write_json(tmp_path, data))
    assert db["references"].count_documents({}) == 0


def test_references_for_unknown_images_wait_for_their_image(eval_settings, db, tmp_path):
    # Given references for a file name no image was submitted under
    path = write_json(
        tmp_path, coco({"000000397133.jpg": ["A man is in a kitchen making pizzas."], "x.jpg": ["a cat"]})
    )
    report = import_file(eval_settings, path)
    assert report.pending == ["000000397133.jpg", "x.jpg"] and report.inserted == 2
    assert "match no submitted image yet" in " ".join(report.lines())
    assert import_file(eval_settings, path).unchanged == 2  # still idempotent while pending
    # If the image is then submitted under that name and captioned
    shas = add_images(db, ["000000397133.jpg"])
    db["captions"].insert_one(caption_doc(shas["000000397133.jpg"], "git", "a man making pizzas in a kitchen"))
    docs = run_evaluation(eval_settings, model="git")
    # I expect the pending references to be attached by content hash and used
    assert docs[0]["counts"]["scored"] == 1
    stored = db["references"].find_one({"sha256": shas["000000397133.jpg"]})
    assert stored["file_name"] == "000000397133.jpg" and "pending" not in stored
    assert db["references"].count_documents({"pending": True}) == 1  # x.jpg still waits


def test_a_name_shared_by_two_images_is_not_guessed(eval_settings, db, tmp_path):
    db["images"].insert_many(
        [{"sha256": "a" * 64, "file_names": ["dup.jpg"]}, {"sha256": "b" * 64, "file_names": ["dup.jpg"]}]
    )
    report = import_file(eval_settings, write_json(tmp_path, coco({"dup.jpg": ["a dog"]})))
    assert report.ambiguous == ["dup.jpg"] and report.inserted == 0
    assert "more than one submitted image" in " ".join(report.lines())
    assert db["references"].count_documents({}) == 0


def test_captions_without_references_are_excluded_and_reported(eval_settings, db):
    shas = add_images(db)
    # Only one group, no references at all: nothing to score, and the reason says what to do.
    db["captions"].insert_one(caption_doc(shas["000000397133.jpg"], "blip", "a kitchen"))
    report = evaluate_groups(eval_settings, model="blip")
    assert report.evaluations == [] and "capq refs import" in report.skipped[0]["reason"]
    assert db["evaluations"].count_documents({}) == 0


def test_empty_captions_count_as_empty_candidates(eval_settings, db):
    shas = add_images(db)
    import_file(eval_settings, GROUND_TRUTH)
    add_seed_captions(db, shas)
    full = run_evaluation(eval_settings, model="git")[0]
    db["captions"].update_one({"model": "git", "sha256": shas["000000397133.jpg"]}, {"$set": {"caption": "  "}})
    db["captions"].update_one({"model": "git", "sha256": shas["000000037777.jpg"]}, {"$set": {"status": "failed"}})
    doc = run_evaluation(eval_settings, model="git")[0]
    assert doc["counts"] == {"captions": 9, "scored": 9, "no_reference": 0, "empty": 1}
    assert doc["scores"]["bleu_1"] < full["scores"]["bleu_1"]


def test_compare_two_models_on_the_images_both_captioned(eval_settings, db):
    shas = add_images(db)
    import_file(eval_settings, GROUND_TRUTH)
    add_seed_captions(db, shas)
    result = compare_models(eval_settings, "git", "blip")
    assert result["images"] == 10
    assert result["diff"]["cider"]["diff"] == pytest.approx(0.5401 - 0.1519, abs=2e-4)
    assert result["diff"]["bleu_4"]["p_value"] <= 1
    same = compare_models(eval_settings, "git", "git")
    assert all(d["diff"] == 0 and d["p_value"] == 1 for d in same["diff"].values())


def cli(eval_settings, monkeypatch, *args):
    monkeypatch.setattr(eval_cli, "get_settings", lambda: eval_settings)
    app = typer.Typer()
    eval_cli.register(app)
    return CliRunner().invoke(app, list(args))


def test_cli_commands(eval_settings, db, tmp_path, monkeypatch):
    shas = add_images(db)
    add_seed_captions(db, shas)
    bad = cli(eval_settings, monkeypatch, "refs", "import", str(write_json(tmp_path, "{oops")))
    assert bad.exit_code == 2 and "not valid JSON" in bad.output
    ok = cli(eval_settings, monkeypatch, "refs", "import", str(GROUND_TRUTH))
    assert ok.exit_code == 0 and "10 new" in ok.output
    assert cli(eval_settings, monkeypatch, "eval", "run", "--since", "yesterday").exit_code == 2
    run = cli(eval_settings, monkeypatch, "eval", "run", "--model", "blip2", "--json")
    assert run.exit_code == 0
    assert round(json.loads(run.output)["evaluations"][0]["scores"]["cider"], 4) == 0.3771
    table = cli(eval_settings, monkeypatch, "eval", "run", "--job", "job-seed")
    assert table.exit_code == 0 and "bleu_4" in table.output
    history = cli(eval_settings, monkeypatch, "eval", "history", "--model", "blip2", "--json")
    runs = json.loads(history.output)
    assert [d["model"] for d in runs] == ["blip2", "blip2"] and runs[0]["created_at"] > runs[1]["created_at"]
    assert cli(eval_settings, monkeypatch, "eval", "history").exit_code == 0
    cmp = cli(eval_settings, monkeypatch, "eval", "compare", "git", "vit-gpt2", "--json")
    assert cmp.exit_code == 0 and json.loads(cmp.output)["images"] == 10
    missing = cli(eval_settings, monkeypatch, "eval", "compare", "git", "nosuchmodel")
    assert missing.exit_code == 2 and "no finished captions for model 'nosuchmodel'" in missing.output


def test_beat_runs_one_evaluation_task_per_model(eval_settings, db, monkeypatch):
    from evaluation import tasks
    from workers.celery_app import app

    # (beat also sends the reference-free quality task, issue 18: tests/integration/test_quality.py)
    schedule = {k: e for k, e in app.conf.beat_schedule.items() if e["task"] == EVAL_TASK}
    assert {e["kwargs"]["model"] for e in schedule.values()} == set(MODEL_NAMES)
    assert all(e["task"] == EVAL_TASK and e["options"]["queue"] == EVAL_QUEUE for e in schedule.values())
    assert all(e["schedule"] == eval_settings.eval_interval_s for e in schedule.values())
    assert app.tasks[EVAL_TASK].run is tasks.evaluate.run
    assert app.amqp.router.route({}, EVAL_TASK)["queue"].name == EVAL_QUEUE
    # The task body (what a worker runs): evaluates once, then skips while nothing changed.
    shas = add_images(db)
    import_file(eval_settings, GROUND_TRUTH)
    add_seed_captions(db, shas)
    monkeypatch.setattr(tasks, "get_settings", lambda: eval_settings)
    first = tasks.evaluate.run(model="vit-gpt2")
    assert len(first["evaluated"]) == 1 and round(first["evaluated"][0]["cider"], 4) == 0.1211
    assert tasks.evaluate.run(model="vit-gpt2") == {"evaluated": [], "skipped": 1}
    assert db["evaluations"].find_one({"model": "vit-gpt2"})["trigger"] == "beat"
