"""One trace id followed end to end: API request (or CLI submission) -> Celery shard -> worker log lines -> captions,
and OpenTelemetry spans of the API and the worker exported to an OTLP/HTTP endpoint under that same id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from storage.apikeys import ApiKeys
from storage.db import mongo
from tests.conftest import REPO, free_port, settings_env
from tests.e2e.conftest import LOG_DIR, random_images, wait_job
from tests.e2e.procs import spawn_capq, stop, wait_http

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class _Otlp(BaseHTTPRequestHandler):
    """A real OTLP/HTTP trace receiver: decodes each export request and keeps (trace id, span name)."""

    spans: list[tuple[str, str]] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                type(self).spans += [(s.trace_id.hex(), s.name) for s in ss.spans]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


def _json_lines(path: str) -> list[dict]:
    out = []
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def _wait_log_line(path: str, wanted, timeout_s: float = 60) -> None:
    """The worker logs a shard's line just after recording it, so the line may trail the job's end by a moment."""
    deadline = time.monotonic() + timeout_s
    while not any(wanted(line) for line in _json_lines(path)):
        assert time.monotonic() < deadline, f"no such line in {path}: {_json_lines(path)[-5:]}"
        time.sleep(0.2)


def test_one_trace_id_from_the_api_through_the_worker_to_captions_and_spans(settings, workers):
    otlp = ThreadingHTTPServer(("127.0.0.1", free_port()), _Otlp)
    threading.Thread(target=otlp.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{otlp.server_address[1]}/v1/traces"
    traced = {"CAPQ_LOG_JSON": "true", "CAPQ_TRACING_OTLP_ENDPOINT": endpoint}
    worker = workers.start("blip", extra_env=traced)
    env = {**os.environ, **settings_env(settings), **traced}
    api = spawn_capq(env, "api-trace", "api", "--port", str(port := free_port()))
    try:
        key, _ = ApiKeys(settings).create("tracer", "premium")
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=60)
        wait_http(client, "/healthz")
        # Given a request that names its trace id (as a caller's own tracing would)
        resp = client.post(
            "/v1/jobs",
            data={"models": "blip"},
            headers={"X-Trace-Id": TRACE},
            files=[("files", (n, d, "image/jpeg")) for n, d in random_images(3, seed=70)],
        )
        assert resp.status_code == 202 and resp.headers["X-Trace-Id"] == TRACE
        job_id = resp.json()["job_id"]
        assert resp.json()["trace_id"] == TRACE
        wait_job(settings, job_id)
        # I expect the id on the job, on every caption, and on log lines of both services about this job
        db = mongo(settings)
        assert db["jobs"].find_one({"_id": job_id})["trace_id"] == TRACE
        captions = list(db["captions"].find({"job_id": job_id}))
        assert len(captions) == 3 and {c.get("trace_id") for c in captions} == {TRACE}
        api_lines = [ln for ln in _json_lines(api.log_path) if ln.get("trace_id") == TRACE]
        assert any(ln.get("logger") == "capq.api" and "POST /v1/jobs 202" in ln["msg"] for ln in api_lines), api_lines
        assert any(ln.get("job_id") == job_id for ln in api_lines)
        _wait_log_line(
            worker.log_path,
            lambda ln: ln.get("trace_id") == TRACE and "shard done" in ln["msg"] and ln.get("job_id") == job_id,
        )
        # and no other request's id leaks onto the next one: a request without a header gets a new id
        other = client.get("/v1/jobs")
        assert other.headers["X-Trace-Id"] not in (TRACE, "") and len(other.headers["X-Trace-Id"]) == 32
        # and the spans of the API request and of the worker's task arrive under the same trace id
        deadline = time.monotonic() + 60
        want = {(TRACE, "POST /v1/jobs"), (TRACE, "capq.caption_shard")}
        while not want <= set(_Otlp.spans):
            assert time.monotonic() < deadline, f"spans missing: {want - set(_Otlp.spans)}; got {_Otlp.spans[:10]}"
            time.sleep(0.5)

        # A CLI submission starts its own trace, which the worker's log lines and captions carry too
        img = LOG_DIR / "trace-cli.jpg"
        img.write_bytes(random_images(1, seed=71)[0][1])
        cli = subprocess.run(
            [sys.executable, "-m", "capq", "submit", str(img), "-m", "blip", "--json"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 0, cli.stderr
        submitted = json.loads(cli.stdout.strip().splitlines()[-1])
        cli_trace = submitted["trace_id"]
        assert len(cli_trace) == 32 and cli_trace != TRACE
        wait_job(settings, submitted["job_id"])
        assert db["captions"].find_one({"job_id": submitted["job_id"]})["trace_id"] == cli_trace
        _wait_log_line(
            worker.log_path, lambda ln: ln.get("trace_id") == cli_trace and ln.get("job_id") == submitted["job_id"]
        )
    finally:
        stop(api)
        otlp.shutdown()
