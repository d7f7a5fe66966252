"""The Grafana dashboards are valid JSON of the expected shape, and every metric they (and the alert rules) query
is exported by a live worker, API or exporter."""

from __future__ import annotations

import json
import os
import re
import subprocess

import httpx
import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, free_port, settings_env
from tests.e2e.conftest import make_job, random_images, wait_job
from tests.e2e.procs import spawn_capq, stop, wait_http

DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
METRIC = re.compile(r"\b(capq_[a-z0-9_]+)\b")

# The part of Grafana's dashboard model (schemaVersion 39) that provisioning and these panels rely on.
DASHBOARD_SCHEMA = {
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "panels", "templating"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos"],
                "properties": {
                    "type": {"enum": ["row", "timeseries", "stat", "gauge", "table", "bargauge"]},
                    "gridPos": {
                        "type": "object",
                        "required": ["h", "w", "x", "y"],
                        "properties": {
                            "w": {"type": "integer", "minimum": 1, "maximum": 24},
                            "x": {"type": "integer", "minimum": 0, "maximum": 23},
                        },
                    },
                    "datasource": {
                        "type": "object",
                        "required": ["type", "uid"],
                        "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${datasource}"}},
                    },
                    "targets": {"type": "array", "items": {"type": "object", "required": ["refId", "expr"]}},
                },
                "if": {"properties": {"type": {"not": {"const": "row"}}}},
                "then": {"required": ["datasource", "targets"], "properties": {"targets": {"minItems": 1}}},
            },
        },
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "contains": {
                        "type": "object",
                        "required": ["name", "type", "query"],
                        "properties": {
                            "name": {"const": "datasource"},
                            "type": {"const": "datasource"},
                            "query": {"const": "prometheus"},
                        },
                    },
                }
            },
        },
    },
}


def dashboard_exprs() -> list[str]:
    return [
        t["expr"] for path in DASHBOARDS for p in json.loads(path.read_text())["panels"] for t in p.get("targets", [])
    ]


def alert_exprs() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_json_is_valid_and_covers_what_operators_need(path):
    dash = json.loads(path.read_text())
    jsonschema.validate(dash, DASHBOARD_SCHEMA)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = " ".join(dashboard_exprs())
    for needed in (
        "capq_queue_shards",
        "capq_queue_oldest_age_seconds",
        "capq_workers_online",
        "capq_images_captioned_total",
        "capq_model_latency_seconds_sum",
        "capq_caption_failures_total",
        "capq_dead_letters",
        "capq_api_request_seconds_bucket",
        "capq_api_requests_total",
        "capq_eval_score",
        "capq_alias_weight",
        # issue 18: drop tests, alias arms with significance, capacity planning
        "capq_eval_significant_drop",
        "capq_alias_arm_diff",
        "capq_alias_arm_p_value",
        "capq_capacity_workers_needed",
        "capq_capacity_drain_seconds",
    ):
        assert needed in exprs, f"no panel queries {needed}"


def test_every_dashboard_query_is_valid_promql(tmp_path):
    # promtool parses each expression as a recording rule: a typo in a panel fails here, not on an operator's screen
    from tests.unit.test_alerts import _promtool

    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"capq:panel_{n}", "expr": e} for n, e in enumerate(dashboard_exprs())],
            }
        ]
    }
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    run = subprocess.run([_promtool(), "check", "rules", "panels.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(dashboard_exprs())} rules found" in run.stdout


def _exported(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names |= {
            family.name + s
            for s in {
                "counter": ("_total",),
                "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("_sum", "_count"),
            }.get(family.type, ())
        }
    return names


def test_every_metric_queried_is_exported_by_a_live_process(settings, workers):
    # Given a worker that captioned a job, the API that answered a request, and the exporter, all running
    wport, eport, aport = free_port(), free_port(), free_port()
    workers.start("blip", args=["--metrics-port", str(wport)])
    wait_job(settings, make_job(settings, random_images(2, seed=7), "blip"))
    env = {**os.environ, **settings_env(settings), "CAPQ_LOG_JSON": "false"}
    procs = [
        spawn_capq(env, "exporter", "exporter", "--port", str(eport), "--address", "127.0.0.1"),
        spawn_capq(env, "api", "api", "--port", str(aport)),
    ]
    try:
        client = httpx.Client(timeout=30)
        wait_http(client, f"http://127.0.0.1:{aport}/healthz")
        exported = set()
        for port in (wport, eport, aport):
            exported |= _exported(wait_http(client, f"http://127.0.0.1:{port}/metrics").text)
        # I expect every name a dashboard or an alert queries among the live series' names
        queried = {m for e in dashboard_exprs() + alert_exprs() for m in METRIC.findall(e)}
        assert queried - exported == set(), f"queried but not exported: {sorted(queried - exported)}"
        assert len(queried) >= 12
    finally:
        stop(*procs)
