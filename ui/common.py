"""common: what every page shares: the API from the sidebar's settings, error display, thumbnails."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from ui.client import Api, ApiProblem

T = TypeVar("T")
LANGUAGES = {
    "": "(no translation)",
    "vi": "Vietnamese",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "ja": "Japanese",
    "zh-Hans": "Chinese (simplified)",
}
SEED_SCORES = (
    ("BLEU-1", "bleu_1"),
    ("BLEU-2", "bleu_2"),
    ("BLEU-3", "bleu_3"),
    ("BLEU-4", "bleu_4"),
    ("METEOR", "meteor"),
    ("ROUGE-L", "rouge_l"),
    ("CIDEr", "cider"),
)


def show_problem(problem: ApiProblem) -> None:
    """429 and 503 are passing: a warning with the wait; anything else is an error. The page goes on."""
    if problem.status in (429, 503):
        st.warning(problem.message, icon="⏳")
    else:
        st.error(problem.message, icon="⚠️")


def attempt(fn: Callable[..., T], *args, **kwargs) -> T | None:
    """fn's answer, or None after showing what went wrong."""
    try:
        return fn(*args, **kwargs)
    except ApiProblem as problem:
        show_problem(problem)
        return None


def thumbnail_urls(api: Api, shas: list[str]) -> dict[str, str]:
    """Data URLs of the images' thumbnails (the browser cannot send the API key itself), fetched in one request
    for those not seen yet in this session; an image that cannot be shown is simply left out."""
    cache = st.session_state.setdefault("_thumbs", {})
    todo = [s for s in dict.fromkeys(shas) if s not in cache]
    if todo:
        try:
            found = api.thumbnails(todo)
        except ApiProblem:
            found = {}
        cache.update({s: found.get(s) for s in todo})
    return {s: cache[s] for s in shas if cache.get(s)}
