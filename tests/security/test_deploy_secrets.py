"""Finding 8: the deploy refuses placeholder secrets, keeps Flower to the broker, and publishes nothing it need not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def sh(script: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", "-ec", script], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=30
    )


def test_redis_is_never_healthy_with_the_placeholder_password():
    # The health check as the container runs it ($$ is compose's escape for $); redis-cli is not reached
    check = SERVICES["redis"]["healthcheck"]["test"][1].replace("$$", "$")
    out = sh(check, {"REDISCLI_AUTH": "change-me-redis"})
    assert out.returncode == 1 and "placeholder" in out.stderr
    assert "--requirepass" in SERVICES["redis"]["command"]


def test_minio_init_and_mongo_init_refuse_placeholders_before_touching_anything():
    init = SERVICES["minio-init"]["command"][0].replace("$$", "$")
    out = sh(init.split("mc alias")[0], {"MINIO_ROOT_PASSWORD": "real-one-123", "CAPQ_S3_SECRET_KEY": "change-me-x"})
    assert out.returncode == 1 and "placeholder" in out.stderr
    script = REPO / "deploy" / "mongo-init" / "create-app-user.sh"
    out = sh(script.read_text(), {"MONGO_INITDB_ROOT_PASSWORD": "real-one-123", "MONGO_APP_PASSWORD": "change-me-a"})
    assert out.returncode == 1 and "placeholder" in out.stderr
    assert "readWrite" in script.read_text() and "root" not in script.read_text().split("roles")[1]


def test_capq_services_reach_mongodb_as_the_app_user_and_flower_gets_only_the_broker():
    env = COMPOSE["x-capq-env"]
    assert "MONGO_APP_USERNAME" in env["CAPQ_MONGO_URL"] and "ROOT" not in env["CAPQ_MONGO_URL"]
    assert "REDIS_PASSWORD" in env["CAPQ_REDIS_URL"]
    assert set(SERVICES["flower"]["environment"]) == {"CAPQ_REDIS_URL", "FLOWER_BASIC_AUTH"}
    assert "9100" not in str(SERVICES["api"].get("ports")) and all(
        p.startswith("${API_BIND") for p in SERVICES["api"]["ports"]
    )
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()


@pytest.mark.parametrize("auth", ["", "operator", "operator:", ":secret", "operator:change-me-flower"])
def test_flower_refuses_to_start_with_an_empty_or_placeholder_password(auth):
    env = {**os.environ, "FLOWER_BASIC_AUTH": auth, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "capq", "flower", "--port", "1"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "FLOWER_BASIC_AUTH" in out.stderr
