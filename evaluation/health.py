"""health: cheap reference-free signals of a model's production captions: empty, repeated, cut at the length limit,
and vocabulary size."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

HEALTH_SCORES = ("empty_share", "repeated_share", "length_limit_share", "vocabulary", "mean_words")


def length_limit(generate: dict) -> int | None:
    """The token budget a preset gives generation: max_new_tokens, else max_length."""
    return generate.get("max_new_tokens") or generate.get("max_length")


def hits_limit(tokens: int, limit: int | None) -> bool:
    """A caption reached its preset's token budget (within 2 tokens, for the begin and end tokens)."""
    return bool(limit) and tokens >= limit - 2


def health_signals(captions: Sequence[str], at_limit: Sequence[bool]) -> dict[str, float]:
    """Shares over the sample: empty captions; captions whose exact text another image's caption repeats; captions
    that reached the length limit (at_limit, one flag per caption); and the number of distinct lowercase words,
    with the mean words per caption."""
    n = len(captions)
    if n == 0:
        raise ValueError("no captions to measure")
    texts = [c.strip() for c in captions]
    counts = Counter(t.lower() for t in texts if t)
    words = [w for t in texts for w in t.lower().split()]
    return {
        "empty_share": sum(1 for t in texts if not t) / n,
        "repeated_share": sum(1 for t in texts if t and counts[t.lower()] > 1) / n,
        "length_limit_share": sum(1 for t, hit in zip(texts, at_limit) if t and hit) / n,
        "vocabulary": float(len(set(words))),
        "mean_words": len(words) / n,
    }
