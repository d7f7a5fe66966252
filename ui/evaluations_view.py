"""evaluations_view: score history with 95% intervals, the latest scores in the seed's table, a paired comparison."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from ui.client import Api
from ui.common import SEED_SCORES, attempt

SCORE_LABELS = dict((key, label) for label, key in SEED_SCORES)


def latest_table(runs: list[dict]) -> pd.DataFrame:
    """The newest run per model, as the seed's results table: Model, BLEU-1..4, METEOR, ROUGE-L, CIDEr."""
    latest: dict[str, dict] = {}
    for run in runs:  # newest first
        latest.setdefault(run["model"], run)
    rows = [
        {
            "Model": model.upper(),
            **{label: run["scores"].get(key) for label, key in SEED_SCORES},
            "images": run["image_count"],
            "evaluated": str(run["created_at"])[:19],
        }
        for model, run in latest.items()
    ]
    return pd.DataFrame(rows)


def history_frame(runs: list[dict], score: str) -> pd.DataFrame:
    rows = []
    for run in runs:
        value = run["scores"].get(score)
        if value is None:
            continue
        lo, hi = (run.get("ci95") or {}).get(score) or (value, value)
        rows.append(
            {"model": run["model"], "when": pd.to_datetime(run["created_at"]), "score": value, "lo": lo, "hi": hi}
        )
    return pd.DataFrame(rows)


def render(api: Api) -> None:
    st.header("Evaluations")
    runs = attempt(api.evaluations)
    if runs is None:
        return
    if not runs:
        st.info("No evaluations yet: import references (`capq refs import FILE`) and run `capq eval run`.")
        return
    st.subheader("Latest scores")
    st.dataframe(latest_table(runs), hide_index=True, key="eval_latest")
    st.subheader("Score history (95% intervals)")
    score = st.selectbox("Score", [k for _, k in SEED_SCORES], format_func=SCORE_LABELS.get, index=6, key="eval_score")
    frame = history_frame(runs, score)
    if not frame.empty:
        base = alt.Chart(frame).encode(x=alt.X("when:T", title="evaluated"), color="model:N")
        chart = base.mark_area(opacity=0.2).encode(y="lo:Q", y2="hi:Q") + base.mark_line(point=True).encode(
            y=alt.Y("score:Q", title=SCORE_LABELS[score]), tooltip=["model", "when", "score", "lo", "hi"]
        )
        st.altair_chart(chart, width="stretch")
    st.subheader("Paired comparison")
    models = sorted({r["model"] for r in runs} | {"blip", "blip2", "git", "vit-gpt2"})
    c1, c2 = st.columns(2)
    a = c1.selectbox("Model A", models, index=0, key="eval_a")
    b = c2.selectbox("Model B", models, index=min(1, len(models) - 1), key="eval_b")
    if st.button("Compare", key="eval_compare"):
        result = attempt(api.compare, a, b)
        if result is not None:
            st.caption(f"{result['images']} image(s) both models captioned, with references; paired bootstrap")
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "score": SCORE_LABELS.get(k, k),
                            "A": result["scores_a"].get(k),
                            "B": result["scores_b"].get(k),
                            "A - B": d["diff"],
                            "95% interval": f"{d['ci95'][0]:.4f} to {d['ci95'][1]:.4f}",
                            "p-value": d["p_value"],
                        }
                        for k, d in result["diff"].items()
                    ]
                ),
                hide_index=True,
                key="eval_diff",
            )
