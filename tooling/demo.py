"""demo: `capq demo`, the main job end to end on one machine: stack, models, workers, API, seed images, captions."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from capq.settings import Settings
from producer.choices import parse_models
from producer.errors import BadInput
from producer.render import Bar, captions_grid, err, finished, out
from tooling import stack
from tooling.paths import missing_seed_images, seed_images
from tooling.ports import free_port
from tooling.procs import ProcessError, Processes
from tooling.workers import heartbeat_key

DEMO_OWNER = "demo"


class DemoError(ProcessError):
    """A process the demo started died or never became ready; the message carries its log tail."""


def parse_checkpoints(pairs: list[str], models: list[str]) -> dict[str, str]:
    """['blip=Salesforce/blip-image-captioning-large', ...] -> {'blip': '...'}; models must be among those run."""
    chosen = {}
    for pair in pairs:
        model, sep, ckpt = pair.partition("=")
        if not sep or not ckpt.strip():
            raise BadInput(f"--checkpoint takes MODEL=HUB_ID_OR_DIR, got {pair!r}")
        if model.strip() not in models:
            raise BadInput(f"--checkpoint names {model.strip()!r}, which is not among --models {','.join(models)}")
        chosen[model.strip()] = ckpt.strip()
    return chosen


def _wait_ready(
    settings: Settings, procs: Processes, workers: dict[str, subprocess.Popen], api_url: str | None, timeout_s: float
) -> None:
    import httpx
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    pending = {heartbeat_key(m, p.pid): m for m, p in workers.items()}
    deadline = time.monotonic() + timeout_s
    while pending or api_url:
        procs.check()
        for key in [k for k in pending if client.exists(k)]:
            err.print(f"worker {pending.pop(key)} ready")
        if api_url:
            try:
                if httpx.get(f"{api_url}/healthz", timeout=1).status_code == 200:
                    err.print(f"API ready at {api_url} (docs: {api_url}/docs)")
                    api_url = None
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            raise DemoError(
                f"not ready within {timeout_s:.0f}s: {', '.join(pending.values()) or 'API'}; "
                f"see the logs in {procs.log_dir}"
            )
        time.sleep(0.5)


def _via_api(settings: Settings, api_url: str, images: list[Path], models: list[str], timeout_s: float, bar: Bar):
    """Submit and follow the job over HTTP with a fresh key for owner 'demo' (revoked afterwards)."""
    import httpx

    from storage.apikeys import ApiKeys

    keys = ApiKeys(settings)
    key, record = keys.create(DEMO_OWNER, "premium", note="capq demo")
    try:
        with httpx.Client(base_url=api_url, headers={"X-API-Key": key}, timeout=120) as http:
            files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in images]
            resp = http.post("/v1/jobs", files=files, data={"models": ",".join(models)})
            if resp.status_code != 202:
                raise DemoError(f"POST /v1/jobs answered {resp.status_code}: {resp.text}")
            job_id = resp.json()["job_id"]
            err.print(f"submitted job {job_id} over HTTP (POST /v1/jobs) as owner {DEMO_OWNER!r}")
            deadline = time.monotonic() + timeout_s
            while True:
                job = http.get(f"/v1/jobs/{job_id}").json()
                bar.update(
                    completed=finished(job), total=job["counts"]["total"], description=f"captioning ({job['state']})"
                )
                if job["state"] in ("done", "cancelled") or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
            return job, http.get(f"/v1/jobs/{job_id}/results").json()["results"]
    finally:
        keys.revoke(record["prefix"])


def _direct(settings: Settings, images: list[Path], models: list[str], timeout_s: float, bar: Bar):
    from producer.queries import results, wait_job
    from producer.submit import submit

    result = submit(settings, images, models, owner=DEMO_OWNER)
    err.print(f"submitted job {result.job_id}")
    job = wait_job(
        settings,
        result.job_id,
        on_update=lambda j: bar.update(
            completed=finished(j), total=j["counts"]["total"], description=f"captioning ({j['state']})"
        ),
        timeout_s=timeout_s,
    )
    return job, list(results(settings, result.job_id))


def _keep_running(settings: Settings, procs: Processes, api_url: str, ui_host: str, ui_port: int) -> None:
    """Issue 14: leave workers and API up, add the translation worker and the web UI, and wait for Ctrl-C.
    The UI gets a key of its own for owner 'demo' (revoked when the demo stops)."""
    import httpx

    from storage.apikeys import ApiKeys

    keys = ApiKeys(settings)
    key, record = keys.create(DEMO_OWNER, "premium", note="capq demo --keep-running (web UI)")
    try:
        if settings.translate_chain:
            procs.start_capq("translate", ["translate", "worker"])
        os.environ["CAPQ_UI_API_KEY"] = key  # to the UI process only: never on a command line (ps shows those)
        procs.start_capq("ui", ["ui", "--host", ui_host, "--port", str(ui_port), "--api", api_url])
        os.environ.pop("CAPQ_UI_API_KEY")
        url = f"http://{ui_host}:{ui_port}"
        deadline = time.monotonic() + 120
        while True:
            procs.check()
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise DemoError(f"the web UI did not answer at {url} within 120 s; see {procs.log_dir / 'ui.log'}")
            time.sleep(0.5)
        err.print(f"web UI ready: {url}  (API {api_url}, docs {api_url}/docs); Ctrl-C stops everything")
        print(url, flush=True)
        while True:
            procs.check()
            time.sleep(1.0)
    finally:
        keys.revoke(record["prefix"])


def run_demo(
    settings: Settings,
    models: str,
    checkpoints: list[str],
    device: str,
    use_api: bool,
    timeout_s: float,
    keep_running: bool = False,
    ui_host: str = "127.0.0.1",
    ui_port: int = 8501,
) -> int:
    """Run the demo; returns the exit code (0 when every seed image got a caption from every model).
    With keep_running, the stack, workers, API and web UI stay up (URL printed) until Ctrl-C."""
    models_ = parse_models(models)
    chosen = parse_checkpoints(checkpoints, models_)
    images = seed_images()
    if not images:
        raise BadInput(missing_seed_images())
    stack.up(settings, lambda name, state, url: err.print(f"{name}: {state} ({url})"))
    tiny = [m for m in models_ if m not in chosen]
    if tiny:
        from tooling.tiny import make_tiny

        err.print(f"tiny offline models for {', '.join(tiny)} in {settings.models_dir} (built if absent)")
        chosen |= {m: str(p) for m, p in make_tiny(settings.models_dir, tiny).items()}
    if keep_running and not use_api:
        raise BadInput("--keep-running serves the web UI, which needs the API: drop --no-api")
    procs = Processes(settings.home / "demo", {"PYTHONUNBUFFERED": "1"})
    t0 = time.monotonic()
    try:
        workers = {
            m: procs.start_capq(f"worker-{m}", ["worker", "--model", m, "--checkpoint", chosen[m], "--device", device])
            for m in models_
        }
        api_url = None
        if use_api:
            port = free_port()
            procs.start_capq("api", ["api", "--host", "127.0.0.1", "--port", str(port)])
            api_url = f"http://127.0.0.1:{port}"
        _wait_ready(settings, procs, workers, api_url, timeout_s)
        bar = Bar("captioning")
        try:
            job, rows = (
                _via_api(settings, api_url, images, models_, timeout_s, bar)
                if api_url
                else _direct(settings, images, models_, timeout_s, bar)
            )
        finally:
            bar.stop()
        if keep_running:
            out.print(captions_grid(rows, models_))
            _keep_running(settings, procs, api_url, ui_host, ui_port)
    except KeyboardInterrupt:
        err.print("interrupted: stopping the workers and API the demo started")
        return 130
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave orphans running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        procs.stop_all()
    out.print(captions_grid(rows, models_))
    c = job["counts"]
    err.print(
        f"job {job['job_id']} {job['state']} in {time.monotonic() - t0:.0f}s: {c['done']} captioned, "
        f"{c['failed']} failed, {c['queued']} still queued; logs in {procs.log_dir}"
    )
    return 0 if job["state"] == "done" and c["done"] == c["total"] == len(images) * len(models_) else 1
