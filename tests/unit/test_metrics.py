"""Metrics: pycocoevalcap parity, the seed's published table, bootstrap intervals and paired comparisons."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from typer.testing import CliRunner

from evaluation import metrics
from evaluation.cli import register
from evaluation.java import java_available, ptb_tokenize
from evaluation.seed import PUBLISHED, SeedFormatError, differences_from_published, load_seed_dir, score_seed_dir
from tooling.paths import seed_dir

REPO = Path(__file__).resolve().parents[2]
SEED_DIR = seed_dir()

# SEED_RESULTS.md, transcribed from the seed's screenshots/results.png.
NAMES = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")
SEED_TABLE = {
    model: dict(zip(NAMES, row))
    for model, row in {
        "blip2": (0.5000, 0.3177, 0.1290, 0.0000, 0.1454, 0.3642, 0.3771),
        "blip": (0.5339, 0.3733, 0.2493, 0.1613, 0.2827, 0.4012, 0.1519),
        "git": (0.6250, 0.4633, 0.3208, 0.2062, 0.2972, 0.4749, 0.5401),
        "vit_gpt2": (0.3541, 0.1606, 0.0689, 0.0346, 0.1884, 0.3127, 0.1211),
    }.items()
}
WITHOUT_METEOR = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider")

JAVA_REMEDY = "the PTB tokenizer needs Java: apt-get install -y openjdk-17-jre-headless (.ci/run does)"


@pytest.fixture(autouse=True)
def _java():
    """Without Java these tests skip on a developer's machine, but fail in CI: CI must never pass by skipping."""
    if not java_available():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(JAVA_REMEDY, pytrace=False)
        pytest.skip(JAVA_REMEDY)


def assert_table(got: dict, names=WITHOUT_METEOR) -> None:
    assert set(got) == set(SEED_TABLE)
    for model, expected in SEED_TABLE.items():
        for name in names:
            assert round(got[model][name], 4) == expected[name], f"{model} {name}: {got[model][name]:.6f}"


def seed_corpus(model: str) -> tuple[dict, dict]:
    by_model, refs = load_seed_dir(SEED_DIR)
    return {n: [c] for n, c in by_model[model].items()}, refs


def test_score_seed_dir_reproduces_the_seed_table():
    assert PUBLISHED == SEED_TABLE  # what `capq eval seed` and the integration tests compare against
    got = score_seed_dir(SEED_DIR)
    assert_table(got)
    assert differences_from_published(got) == []
    got["git"]["cider"] = 0.5
    assert differences_from_published(got) == ["git cider: got 0.5000, published 0.5401"]


def test_capq_eval_seed_json_reproduces_the_seed_table():
    # Given the real `capq` entry point (every package registers its commands)
    proc = subprocess.run(
        [sys.executable, "-c", "from capq.cli import main; main()", "eval", "seed", str(SEED_DIR), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert_table(got)
    assert all(set(scores) == set(metrics.SCORE_NAMES) for scores in got.values())


def test_cli_score_names_are_the_metric_names():
    from evaluation import cli

    assert cli.SCORE_NAMES == metrics.SCORE_NAMES


def test_cli_seed_with_a_wrong_folder_says_what_to_pass(tmp_path):
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["eval", "seed", str(tmp_path), "--json"])
    assert result.exit_code == 2
    assert "eval_result_json" in result.output


def test_seed_folder_or_its_eval_result_json_folder_read_the_same():
    # The README names the folder that holds the files; the seed folder itself works too.
    assert load_seed_dir(SEED_DIR / "eval_result_json") == load_seed_dir(SEED_DIR)


def test_meteor_reproduces_the_seed_table():
    assert_table(score_seed_dir(SEED_DIR, meteor=True), names=("meteor",))


def synthetic(n: int, seed: int = 0) -> tuple[dict, dict]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(60)] + ["a", "the", "dog", "on"]

    def sentence() -> str:
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(3, 14))) + rng.choice([".", "", " !"])

    return {i: [sentence()] for i in range(n)}, {i: [sentence() for _ in range(rng.randint(1, 5))] for i in range(n)}


def test_scores_equal_pycocoevalcap_exactly():
    cands, refs = synthetic(300)
    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": c} for c in v] for i, v in refs.items()})
    res = tok.tokenize({i: [{"caption": c} for c in v] for i, v in cands.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    got = metrics.evaluate(cands, refs, samples=10).scores
    assert [got[f"bleu_{k}"] for k in range(1, 5)] == bleu
    assert got["cider"] == pytest.approx(cider, abs=1e-12)
    assert got["rouge_l"] == pytest.approx(rouge, abs=1e-12)


def test_fast_rouge_l_matches_pycocoevalcap_per_image():
    rouge, rng = Rouge(), random.Random(3)
    words = ["a", "b", "c", "d", "e", ""]
    for _ in range(2000):
        cand = " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
        refs = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))) for _ in range(rng.randint(1, 4))]
        assert metrics.rouge_l(cand, refs) == rouge.calc_score([cand], refs)


def test_tokenizer_keeps_one_line_per_caption():
    # Line breaks inside a caption must not shift the captions after it onto other images.
    got = ptb_tokenize(["A dog.\nOn a mat", "", "Two\r\ncats\u2028here!", "   ", "The END."])
    assert got == ["a dog on a mat", "", "two cats here", "", "the end"]


def test_empty_candidate_scores_zero_not_an_error():
    cands, refs = {"x": [""], "y": ["a dog on a mat"]}, {"x": ["a cat"], "y": ["a dog on a mat"]}
    stats = metrics.evaluate(cands, refs, samples=10).stats
    assert stats.per_image["cider"][0] == 0 and stats.per_image["rouge_l"][0] == 0
    assert stats.bleu[0][0] == 0  # no tokens guessed


def test_images_without_references_are_named():
    with pytest.raises(metrics.MetricError, match="no references"):
        metrics.evaluate({"x": ["a dog"]}, {"x": []})
    with pytest.raises(metrics.MetricError, match="exactly one candidate"):
        metrics.evaluate({"x": "a dog"}, {"x": ["a dog"]})


def test_bootstrap_interval_contains_the_point_estimate():
    for model in SEED_TABLE:
        result = metrics.evaluate(*seed_corpus(model), samples=500, seed=1)
        for name, (lo, hi) in result.ci95.items():
            assert lo <= result.scores[name] <= hi, (model, name)
            assert 0 <= lo <= hi


def test_bootstrap_is_deterministic_and_narrows_with_more_images():
    small = metrics.evaluate(*synthetic(40), samples=300)
    again = metrics.evaluate(*synthetic(40), samples=300)
    large = metrics.evaluate(*synthetic(600), samples=300)
    assert small.ci95 == again.ci95
    width = lambda r: r.ci95["rouge_l"][1] - r.ci95["rouge_l"][0]  # noqa: E731
    assert width(large) < width(small)


def test_resampled_bleu_equals_a_rescoring_of_the_drawn_images():
    # BLEU from per-image statistics must equal pycocoevalcap run on the resampled corpus itself.
    cands, refs = synthetic(50, seed=5)
    stats = metrics.corpus_stats(*metrics.tokenize(cands, refs))
    rng = np.random.default_rng(0)
    draw = rng.integers(0, 50, size=50)
    c_tok, r_tok = metrics.tokenize(cands, refs)
    res = {k: [c_tok[stats.image_ids[i]]] for k, i in enumerate(draw)}
    gts = {k: r_tok[stats.image_ids[i]] for k, i in enumerate(draw)}
    expected, _ = Bleu(4).compute_score(gts, res, verbose=0)
    weights = np.bincount(draw, minlength=50).astype(float)
    assert np.allclose(metrics.bleu_from_sums(weights @ stats.bleu), expected, rtol=0, atol=1e-12)


def test_paired_bootstrap_of_a_model_against_itself_is_zero():
    cands, refs = seed_corpus("git")
    stats = metrics.corpus_stats(*metrics.tokenize(cands, refs))
    result = metrics.paired_bootstrap(stats, stats, samples=300)
    for name, d in result.items():
        assert d["diff"] == 0 and d["ci95"] == [0, 0] and d["p_value"] == 1, name


def test_paired_bootstrap_separates_a_good_model_from_a_bad_one():
    refs = synthetic(200, seed=7)[1]
    good = {i: [r[0]] for i, r in refs.items()}  # a reference itself: near-perfect
    bad = synthetic(200, seed=8)[0]
    result = metrics.compare(good, bad, refs, samples=500)
    assert result["images"] == 200
    for name in ("bleu_1", "rouge_l", "cider"):
        d = result["diff"][name]
        assert d["diff"] > 0 and d["ci95"][0] > 0 and d["p_value"] < 0.01, name


def test_paired_bootstrap_needs_the_same_images():
    a = metrics.corpus_stats({1: "a dog"}, {1: ["a dog"]})
    b = metrics.corpus_stats({2: "a dog"}, {2: ["a dog"]})
    with pytest.raises(metrics.MetricError, match="same images"):
        metrics.paired_bootstrap(a, b)


def test_malformed_seed_file_is_named(tmp_path):
    (tmp_path / "eval_result_json").mkdir()
    (tmp_path / "eval_result_json" / "local_evaluation_x.json").write_text('{"image_1": {"image_name": "a.jpg"}}')
    with pytest.raises(SeedFormatError, match="image_1: 'models_tested'"):
        score_seed_dir(tmp_path)
