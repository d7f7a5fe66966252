"""caption_view: the seed's page done right: images x models side by side, with latency and translation."""

from __future__ import annotations

import time

import streamlit as st

from ui.client import Api, ApiProblem
from ui.common import LANGUAGES, attempt, show_problem

FOLLOW_S = 120  # how long the page follows a job before offering to keep following


def _pick(models: list[dict], translation: dict | None) -> tuple[list[str], str, str]:
    names = [m["model"] for m in models]
    chosen = st.multiselect("Models", names, default=names[:1], key="caption_models")
    infos = [m for m in models if m["model"] in chosen]
    common = sorted(set.intersection(*(set(m["presets"]) for m in infos))) if infos else ["default"]
    preset = st.selectbox(
        "Preset", common, index=common.index("default") if "default" in common else 0, key="caption_preset"
    )
    # Like the seed, translate by default when the API can: into its default language.
    default = translation["default_lang"] if translation and translation["available"] else ""
    langs = list(LANGUAGES) + ([default] if default not in LANGUAGES else [])
    lang = st.selectbox(
        "Translate into",
        langs,
        index=langs.index(default),
        format_func=lambda code: LANGUAGES.get(code, code),
        key="caption_lang",
    )
    for m in infos:
        if m["workers_online"] == 0:
            st.warning(
                f"No worker is online for {m['model']}: its captions wait in the queue until one starts "
                f"(`capq worker --model {m['model']}`)."
            )
    return chosen, preset, lang


def _grid(place, job: dict, rows: list[dict], models: list[str]) -> None:
    """One row per image: the image, then one column per model with caption, latency and translation."""
    by_file: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_file.setdefault(r["file_name"] or r["sha256"][:12], {})[r["model"]] = r
    with place.container():
        for name, per_model in by_file.items():
            cols = st.columns([1] + [2] * len(models))
            if name in job["files"]:
                cols[0].image(job["files"][name], caption=name, width="stretch")
            for col, model in zip(cols[1:], models):
                r = per_model.get(model)
                col.markdown(f"**{model}**")
                if r is None or r["status"] == "queued":
                    col.caption("waiting for a worker…")
                elif r["status"] != "done":
                    col.error(f"{r['status']}: {r.get('error') or ''}")
                else:
                    col.markdown(f"**en:** {r['caption']}")
                    latency = job["latency"].setdefault(f"{r['sha256']}:{model}", time.time() - job["t0"])
                    col.caption(f"latency {latency:.1f} s (submitted → caption)")
                    if r.get("translation"):
                        col.markdown(f"**{job['lang']}:** {r['translation']}")


def _follow(api: Api, job: dict) -> None:
    st.subheader(f"Job {job['id'][:12]}")
    place = st.empty()
    status = st.empty()
    deadline = time.monotonic() + FOLLOW_S
    while True:
        try:
            rows = api.results(job["id"])["results"]
            open_ = sum(r["status"] == "queued" for r in rows)
            _grid(place, job, rows, job["models"])
            if not open_ and job["lang"]:
                # Translated once the captions are in, so a caption's latency never includes its translation.
                body = api.results(job["id"], job["lang"])
                rows = body["results"]
                _grid(place, job, rows, job["models"])
                if body["translation"].get("error"):
                    status.info(
                        f"Translation unavailable: {body['translation']['error']}. The captions are not affected."
                    )
        except ApiProblem as problem:
            show_problem(problem)
            return
        if not open_:
            st.success(f"{len(rows)} caption(s) ready.")
            return
        if time.monotonic() > deadline:
            st.info(f"{open_} caption(s) still queued; the Jobs page shows why a job waits.")
            st.button("Keep following", key="caption_follow_more")
            return
        time.sleep(1.0)


def render(api: Api) -> None:
    st.header("Caption")
    catalogue = attempt(api.models)
    if catalogue is None:
        return
    files = st.file_uploader(
        "Images", type=["jpg", "jpeg", "png", "webp", "bmp", "gif"], accept_multiple_files=True, key="caption_files"
    )
    models, preset, lang = _pick(catalogue["models"], attempt(api.translation))
    if st.button("Generate captions", type="primary", disabled=not files or not models, key="caption_go"):
        uploads = [(f.name, f.getvalue()) for f in files]
        answer = attempt(api.submit, uploads, models, preset, None, lang or None)
        if answer is not None:
            for r in answer.get("rejected", []):
                st.warning(f"{r['file']} was not accepted: {r['reason']}")
            st.session_state.caption_job = {
                "id": answer["job_id"],
                "t0": time.time(),
                "lang": lang,
                "models": models,
                "files": dict(uploads),
                "latency": {},
            }
    job = st.session_state.get("caption_job")
    if job:
        _follow(api, job)
