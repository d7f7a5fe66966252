"""The web UI through streamlit.testing's AppTest, against a real API process, a real worker and the real stack."""

from __future__ import annotations

import os
import re

import pytest
from streamlit.testing.v1 import AppTest

from storage.apikeys import ApiKeys
from tests.conftest import REPO, SEED_IMAGES, free_port, settings_env
from tests.e2e.conftest import random_images, wait_job
from tests.e2e.procs import spawn_capq
from tests.e2e.test_eta import _start_slow_worker
from tests.integration.test_api_catalog import seed_evaluations
from tests.integration.test_translation import StandIn
from tooling import procs
from ui.client import Api, ApiProblem

APP = str(REPO / "ui" / "app.py")


@pytest.fixture(scope="module")
def stand_in():
    s = StandIn()
    yield s
    s.server.shutdown()


@pytest.fixture(scope="module")
def api_url(settings, stand_in):
    """A real `capq api` process; free keys get 3 requests an hour (the 429 story), premium keys plenty."""
    port = free_port()
    env = {
        **os.environ,
        **settings_env(settings),
        "CAPQ_LOG_JSON": "false",
        "CAPQ_RATE_LIMITS_PER_HOUR": "free=3,plus=1000,premium=10000",
        "CAPQ_TRANSLATE_PROVIDERS": "google",
        "CAPQ_GOOGLE_TRANSLATE_KEY": "ui-key",
        "CAPQ_GOOGLE_TRANSLATE_ENDPOINT": stand_in.url,
        "CAPQ_FLOWER_URL": "http://127.0.0.1:5555",
    }
    proc = spawn_capq(env, "ui-api", "api", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        procs.wait_ready(proc, lambda: procs.http_ok(f"{url}/healthz"), 60, "the API", poll_s=0.3)
        yield url
    finally:
        procs.stop(proc, timeout_s=20)


def app(api_url: str, key: str, page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=150)
    at.session_state["api_url"] = api_url
    at.session_state["api_key"] = key
    at.session_state["page"] = page
    return at.run()


# st.dataframe's key is not kept on AppTest's elements: tables are found by their order on the page.


def texts(at: AppTest) -> str:
    parts = [
        e.value
        for kind in ("markdown", "caption", "success", "info", "warning", "error", "subheader")
        for e in getattr(at, kind)
    ]
    return "\n".join(str(p) for p in parts)


def test_caption_page_captions_a_seed_image_with_translation_then_jobs_and_history_show_it(settings, api_url, workers):
    # Given a blip worker (tiny model) and a premium key
    workers.start("blip")
    key, _ = ApiKeys(settings).create("ui-user", "premium")
    at = app(api_url, key, "Caption")
    assert not at.exception, at.exception
    # If a person uploads a seed image, picks blip and Vietnamese, and presses the button
    at.file_uploader(key="caption_files").set_value((SEED_IMAGES[0].name, SEED_IMAGES[0].read_bytes(), "image/jpeg"))
    at.multiselect(key="caption_models").set_value(["blip"])
    at.selectbox(key="caption_lang").set_value("vi")
    at.run()
    at.button(key="caption_go").click().run()
    assert not at.exception, at.exception
    # I expect the caption with its model, latency and the translation, side by side
    shown = texts(at)
    assert "1 caption(s) ready." in shown and "**blip**" in shown and "latency" in shown
    caption = next(m.value for m in at.markdown if m.value.startswith("**en:** ")).removeprefix("**en:** ")
    assert f"**vi:** [vi] {caption}" in shown
    # The Jobs page lists the job, with its results table and both downloads
    jobs = app(api_url, key, "Jobs")
    assert not jobs.exception, jobs.exception
    assert jobs.dataframe[0].value["state"].tolist() == ["done"]
    assert jobs.dataframe[0].value["expected finish"].tolist() == [""]  # a finished job has no ETA
    assert "expected to finish" not in texts(jobs) and "no estimate" not in texts(jobs)
    results = jobs.dataframe[1].value
    assert results["caption"].tolist() == [caption] and results["thumbnail"][0].startswith("data:image/jpeg;base64,")
    assert {"Download JSONL", "Download CSV"} <= {b.label for b in jobs.get("download_button")}
    # History finds it by model, with a thumbnail
    hist = app(api_url, key, "History")
    hist.selectbox(key="history_model").set_value("blip").run()
    table = hist.dataframe[0].value
    assert table["caption"].tolist() == [caption] and table["thumbnail"][0].startswith("data:image")
    hist.selectbox(key="history_model").set_value("git").run()
    assert "No captions match." in texts(hist)


def test_jobs_page_says_why_a_job_waits_and_shows_the_apis_answer_to_cancel(settings, api_url):
    key, _ = ApiKeys(settings).create("ui-waiter", "premium")
    job = Api(api_url, key).submit([("a.jpg", SEED_IMAGES[1].read_bytes())], ["vit-gpt2"], None)
    at = app(api_url, key, "Jobs")
    at.selectbox(key="jobs_pick").set_value(job["job_id"]).run()
    assert "Waiting: no worker is online for vit-gpt2" in texts(at)
    # and that its finish time cannot be estimated, with the API's reason, in the list and on the job
    listed = at.dataframe[0].value.set_index("job").loc[job["job_id"][:12], "expected finish"]
    assert listed.startswith("no estimate: no vit-gpt2 worker online with a measured throughput"), listed
    assert "Finish time: no estimate: no vit-gpt2 worker online with a measured throughput" in texts(at)
    at.button(key="jobs_cancel").click().run()
    assert not at.exception, at.exception
    # Whatever the API answers (cancelled, or 405 where DELETE /v1/jobs/{id} is not offered), it is shown in words
    shown = texts(at)
    assert "Cancel requested" in shown or "does not offer that yet" in shown


def test_jobs_page_shows_when_a_running_job_should_finish(settings, api_url, clean_redis):
    # Given a blip worker at a known 0.5 s per image whose rate was seen on a small job
    proc = _start_slow_worker(settings, seconds_per_image=0.5)
    try:
        key, _ = ApiKeys(settings).create("ui-eta", "premium")
        api = Api(api_url, key)
        warm = api.submit(random_images(4, seed=90), ["blip"], None)["job_id"]
        wait_job(settings, warm)
        # If a 40-image job (about 20 s of work) is submitted and the Jobs page opened at once
        job = api.submit(random_images(40, seed=91), ["blip"], None)["job_id"]
        at = app(api_url, key, "Jobs")
        at.selectbox(key="jobs_pick").set_value(job).run()
        assert not at.exception, at.exception
        # I expect its expected finish as a UTC clock time and a rough wait, in the list and on the job
        row = at.dataframe[0].value.set_index("job").loc[job[:12]]
        assert row["state"] in ("queued", "running"), row  # still unfinished when the page was drawn
        eta = r"expected to finish at \d\d:\d\d UTC \(in (under a minute|about \d+ min)\)"
        assert re.fullmatch(eta, row["expected finish"]), row["expected finish"]
        assert re.search(f"This job is {eta}\\.", texts(at)), texts(at)
        # and the finished warm-up job none
        assert at.dataframe[0].value.set_index("job").loc[warm[:12], "expected finish"] == ""
    finally:  # a warm stop would finish the slow job first; its leftovers go with clean_redis
        procs.kill9(proc)


def test_api_errors_read_as_plain_words_and_the_page_stays_usable(settings, api_url):
    bad = app(api_url, "capq_not_a_key", "Queues")
    assert not bad.exception and "API key was not accepted" in bad.error[0].value
    assert bad.radio(key="page").options == ["Caption", "Jobs", "History", "Evaluations", "Queues"]
    down = app(f"http://127.0.0.1:{free_port()}", "k", "Jobs")
    assert "Cannot reach the capq API" in down.error[0].value
    # A free key has 3 requests an hour here: the fourth page view gets 429 with its retry time
    key, _ = ApiKeys(settings).create("ui-free", "free")
    for _ in range(3):
        Api(api_url, key).jobs()
    limited = app(api_url, key, "Jobs")
    assert "hourly limit is reached. Try again in" in limited.warning[0].value
    with pytest.raises(ApiProblem, match="^Not found: no job 'no-such-job'") as missing:
        Api(api_url, ApiKeys(settings).create("ui-lost", "premium")[0]).job("no-such-job")
    assert missing.value.status == 404


def test_evaluations_page_shows_the_seed_table_history_and_a_comparison(settings, api_url, eval_worker):
    seed_evaluations(settings)
    key, _ = ApiKeys(settings).create("ui-eval", "premium")
    at = app(api_url, key, "Evaluations")
    assert not at.exception, at.exception
    latest = at.dataframe[0].value
    assert list(latest.columns[:8]) == ["Model", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
    assert latest.set_index("Model").loc["GIT", "CIDEr"] == pytest.approx(0.5401, abs=2e-4)
    assert at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")
    at.selectbox(key="eval_a").set_value("git")
    at.selectbox(key="eval_b").set_value("blip")
    at.button(key="eval_compare").click().run()
    diff = at.dataframe[1].value.set_index("score")
    assert diff.loc["CIDEr", "A - B"] == pytest.approx(0.5401 - 0.1519, abs=2e-4)


def test_queues_page_shows_depth_workers_and_flower(settings, api_url):
    key, _ = ApiKeys(settings).create("ui-ops", "premium")
    at = app(api_url, key, "Queues")
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert table["model"].tolist() == ["blip", "blip2", "git", "vit-gpt2"]
    assert {"premium queued", "plus queued", "free queued", "workers online", "captions/min"} <= set(table.columns)
    assert at.get("link_button")[0].proto.url == "http://127.0.0.1:5555"
