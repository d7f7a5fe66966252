"""history_view: caption history searchable by image, model, job and date, paged, with thumbnails."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from ui.client import Api
from ui.common import LANGUAGES, attempt, thumbnail_urls

PAGE = 20


def render(api: Api) -> None:
    st.header("History")
    c1, c2, c3 = st.columns(3)
    image = c1.text_input("Image sha256", key="history_image").strip()
    model = c2.selectbox(
        "Model", ["", "blip", "blip2", "git", "vit-gpt2"], format_func=lambda m: m or "(any)", key="history_model"
    )
    job = c3.text_input("Job id", key="history_job").strip()
    c4, c5, c6 = st.columns(3)
    since = c4.date_input("Since", value=None, key="history_since")
    lang = c5.selectbox("Translations", list(LANGUAGES), format_func=LANGUAGES.get, key="history_lang")
    page = c6.number_input("Page", min_value=1, value=1, step=1, key="history_page")
    filters = {
        "image": image or None,
        "model": model or None,
        "job": job or None,
        "lang": lang or None,
        "since": dt.datetime.combine(since, dt.time()).isoformat() + "Z" if since else None,
        "limit": PAGE,
        "page": int(page),
    }
    found = attempt(api.history, **filters)
    if found is None:
        return
    items = found["items"]
    if not items:
        st.info("No captions match." if page == 1 else "No more captions: go back a page.")
        return
    thumbs = thumbnail_urls(api, [r["sha256"] for r in items])
    st.dataframe(
        [
            {
                "thumbnail": thumbs.get(r["sha256"]),
                "when": (r.get("updated_at") or "")[:19],
                "file": r.get("file_name"),
                "model": r["model"],
                "caption": r.get("caption"),
                **({"translation": r.get("translation")} if lang else {}),
                "job": r["job_id"][:12],
                "sha256": r["sha256"],
            }
            for r in items
        ],
        column_config={"thumbnail": st.column_config.ImageColumn("image")},
        hide_index=True,
        key="history_table",
    )
    st.caption(
        f"page {int(page)}: {len(items)} caption(s)" + ("; more on the next page" if found["next_cursor"] else "")
    )
