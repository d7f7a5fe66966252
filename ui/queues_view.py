"""queues_view: queue depth per model and tier, workers online and their throughput, and a link to Flower."""

from __future__ import annotations

import streamlit as st

from ui.client import Api
from ui.common import attempt


def render(api: Api) -> None:
    st.header("Queues")
    snap = attempt(api.queues)
    if snap is None:
        return
    st.dataframe(
        [
            {
                "model": m["model"],
                **{f"{tier} queued": n for tier, n in m["queues"].items()},
                "workers online": m["workers_online"],
                "captions/min": m["captions_per_min"],
            }
            for m in snap["models"]
        ],
        hide_index=True,
        key="queues_table",
    )
    st.caption(f"queued = shards waiting per tier; captions/min over the last {snap['throughput_window_s'] // 60} min")
    c1, c2, c3 = st.columns(3)
    c1.metric("Evaluation queue", snap["eval_queue"])
    c2.metric("Translation queue", snap["translate_queue"])
    c3.metric("Translation workers", snap["translate_workers_online"])
    workers = [w | {"model": m["model"]} for m in snap["models"] for w in m["workers"]]
    if workers:
        st.dataframe(workers, hide_index=True, key="queues_workers")
    else:
        st.warning("No caption worker is online: queued work waits until one starts (`capq worker --model NAME`).")
    st.link_button("Open Flower (task monitor)", snap["flower_url"])
    st.button("Refresh", key="queues_refresh")
