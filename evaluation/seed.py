"""seed: read the seed project's eval JSON files and ground truth, and score them the way its notebook did."""

from __future__ import annotations

import json
import re
from pathlib import Path

from evaluation.errors import SeedFormatError
from evaluation.java import MeteorProcess
from evaluation.metrics import corpus_stats, tokenize

# The notebook silently dropped predictions whose text mentions a failure.
_FAILED = re.compile(r"failed|error", re.IGNORECASE)
# The seed's published table (SEED_RESULTS.md, from its screenshots/results.png), keyed by models_tested name.
_NAMES = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")
PUBLISHED = {
    model: dict(zip(_NAMES, row, strict=True))
    for model, row in {
        "blip2": (0.5000, 0.3177, 0.1290, 0.0000, 0.1454, 0.3642, 0.3771),
        "blip": (0.5339, 0.3733, 0.2493, 0.1613, 0.2827, 0.4012, 0.1519),
        "git": (0.6250, 0.4633, 0.3208, 0.2062, 0.2972, 0.4749, 0.5401),
        "vit_gpt2": (0.3541, 0.1606, 0.0689, 0.0346, 0.1884, 0.3127, 0.1211),
    }.items()
}


def _load_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SeedFormatError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SeedFormatError(f"{path}: not valid UTF-8 JSON ({exc})") from None


def read_eval_file(path: Path) -> tuple[str, dict[str, str], dict[str, list[str]]]:
    """One eval_result_json file -> (models_tested name, {image_name: caption}, {image_name: ground truth}).

    Keeps the first `model_results` value per image (as the notebook did) and drops failed predictions.
    """
    data = _load_json(path)
    if not isinstance(data, dict) or not data:
        raise SeedFormatError(f"{path}: expected an object with keys image_1, image_2, ...")
    models, captions, refs = set(), {}, {}
    for key, entry in data.items():
        where = f"{path}: {key}"
        if not isinstance(entry, dict):
            raise SeedFormatError(f"{where}: expected an object")
        name, tested, truth, results = (
            entry.get(k) for k in ("image_name", "models_tested", "ground_truth", "model_results")
        )
        if not isinstance(name, str) or not name:
            raise SeedFormatError(f"{where}: 'image_name' must be a file name")
        if not isinstance(tested, list) or not tested or not all(isinstance(t, str) for t in tested):
            raise SeedFormatError(f"{where}: 'models_tested' must be a list of model names")
        if not isinstance(truth, list) or not truth or not all(isinstance(t, str) and t.strip() for t in truth):
            raise SeedFormatError(f"{where}: 'ground_truth' must be a list of non-empty captions")
        if not isinstance(results, dict) or not results:
            raise SeedFormatError(f"{where}: 'model_results' must map a model label to its caption")
        caption = next(iter(results.values()))
        if not isinstance(caption, str):
            raise SeedFormatError(f"{where}: the caption in 'model_results' must be a string")
        models.add(tested[0])
        refs.setdefault(name, truth)
        if not _FAILED.search(caption):
            captions[name] = caption
    if len(models) != 1:
        raise SeedFormatError(f"{path}: expected one model per file in 'models_tested', found {sorted(models)}")
    return models.pop(), captions, refs


def load_seed_dir(seed_dir: Path) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """({model: {image_name: caption}}, {image_name: refs}) from DIR/eval_result_json/*.json, or from DIR/*.json
    when DIR is that eval_result_json/ folder itself (the folder that holds the files is the natural one to name).

    References come from the eval files' own ground_truth (as the notebook's did), first file first.
    """
    folder = Path(seed_dir)
    files = sorted((folder / "eval_result_json").glob("*.json")) or sorted(folder.glob("*.json"))
    if not files:
        raise SeedFormatError(
            f"{seed_dir}: no eval JSON files here nor in eval_result_json/ under it; pass the seed "
            "folder or its eval_result_json/ folder"
        )
    by_model, refs = {}, {}
    for path in files:
        model, captions, truth = read_eval_file(path)
        if model in by_model:
            raise SeedFormatError(f"{path}: model {model!r} appears in two files")
        by_model[model] = captions
        for name, caps in truth.items():
            refs.setdefault(name, caps)
    return by_model, refs


def differences_from_published(scores: dict[str, dict[str, float]]) -> list[str]:
    """'model score: got X, published Y' for every computed score that differs at 4 decimals."""
    return [
        f"{m} {name}: got {value:.4f}, published {PUBLISHED[m][name]:.4f}"
        for m, got in scores.items()
        if m in PUBLISHED
        for name, value in got.items()
        if round(value, 4) != PUBLISHED[m][name]
    ]


def score_seed_dir(seed_dir: Path, meteor: bool = False) -> dict[str, dict[str, float]]:
    """{models_tested name: {bleu_1..bleu_4, rouge_l, cider[, meteor]}} for the seed's eval files.

    One tokenizer run for all models; each model is scored on its own image set (CIDEr's IDF included).
    """
    by_model, refs = load_seed_dir(seed_dir)
    models = list(by_model)
    first, tok_refs, *rest = tokenize(
        {n: [c] for n, c in by_model[models[0]].items()},
        refs,
        *({n: [c] for n, c in by_model[m].items()} for m in models[1:]),
    )
    tokenized = dict(zip(models, [first, *rest]))
    if not meteor:
        return {m: corpus_stats(c, tok_refs).scores() for m, c in tokenized.items()}
    with MeteorProcess() as proc:
        return {m: corpus_stats(c, tok_refs, proc).scores() for m, c in tokenized.items()}
