"""Finding 5: /metrics has a fixed set of method labels, and can live on a port of its own that is never published."""

from __future__ import annotations

import socket

import httpx

from tests.conftest import free_port


def raw(port: int, method: str, path: str = "/healthz") -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        while s.recv(65536):
            pass


def test_invented_methods_do_not_become_new_series(api):
    # An attacker sends many made-up methods, hoping each becomes a series kept forever
    invented = [f"ATTACK{i}" for i in range(30)] + ["get", "PROPFIND"]
    for method in invented:
        raw(api.port, method)
        raw(api.port, method, "/v1/jobs")
    text = httpx.get(api.url + "/metrics", timeout=10).text
    methods = {
        line.split('method="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("capq_api_requests_total{")
    }
    assert methods <= {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other"}, methods
    assert "other" in methods and not any(m.startswith("ATTACK") for m in methods)


def test_metrics_on_a_private_port_are_gone_from_the_public_one(start_api):
    private = free_port()
    api = start_api({"CAPQ_API_METRICS_PORT": str(private)})
    assert httpx.get(api.url + "/metrics", timeout=10).status_code == 404
    assert "capq_api_requests_total" in httpx.get(f"http://127.0.0.1:{private}/metrics", timeout=10).text
