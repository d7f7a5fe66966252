"""app: the capq web UI (Streamlit); `capq ui` serves it. It speaks to capq only through the HTTP API."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st

# `streamlit run ui/app.py` puts ui/ on the path, not its parent: the ui package is imported from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ui import caption_view, evaluations_view, history_view, jobs_view, queues_view  # noqa: E402
from ui.client import Api  # noqa: E402

PAGES = {
    "Caption": caption_view.render,
    "Jobs": jobs_view.render,
    "History": history_view.render,
    "Evaluations": evaluations_view.render,
    "Queues": queues_view.render,
}

st.set_page_config(page_title="capq", page_icon="🖼️", layout="wide")
with st.sidebar:
    st.title("capq")
    page = st.radio("Page", list(PAGES), key="page")
    # The UI's two settings (CAPQ_UI_API_URL, CAPQ_UI_API_KEY): a person may override both here.
    url = st.text_input("API", value=os.environ.get("CAPQ_UI_API_URL", "http://127.0.0.1:8000"), key="api_url")
    key = st.text_input("API key", value=os.environ.get("CAPQ_UI_API_KEY", ""), type="password", key="api_key")
    if not key:
        st.info("Paste your API key (an operator creates one with `capq keys create`).")
PAGES[page](Api(url, key))
