"""Settings: every malformed variable gets a message that names it."""

import pytest

from capq.settings import SettingsError, load_settings


def test_defaults_work_on_the_local_stack():
    s = load_settings({})
    assert s.redis_url.startswith("redis://") and s.mongo_url.startswith("mongodb://")
    assert s.tier_weights == {"premium": 6, "plus": 3, "free": 1}
    assert s.rate_limits_per_hour == {"free": 100, "plus": 300, "premium": 1000}


@pytest.mark.parametrize(
    "var,value,needle",
    [
        ("CAPQ_REDIS_URL", "localhost:6379", "redis://"),
        ("CAPQ_REDIS_URL", "redis://host:notaport", "port"),
        ("CAPQ_MONGO_URL", "http://127.0.0.1:27017", "mongodb://"),
        ("CAPQ_S3_ENDPOINT", "127.0.0.1:8333", "http://"),
        ("CAPQ_S3_BUCKET", "Bad_Bucket", "lowercase"),
        ("CAPQ_BATCH_SIZE", "-4", "greater than 0"),
        ("CAPQ_BATCH_SIZE", "eight", "integer"),
        ("CAPQ_CONNECT_TIMEOUT_S", "0", "greater than 0"),
        ("CAPQ_DEFAULT_TIER", "gold", "unknown tier 'gold'"),
        ("CAPQ_TIER_WEIGHTS", "premium=6,plus=3,gold=1", "unknown tier name(s) ['gold']"),
        ("CAPQ_TIER_WEIGHTS", "premium=6,plus=3", "missing tier(s) ['free']"),
        ("CAPQ_TIER_WEIGHTS", "premium=0,plus=0,free=0", "at least one tier"),
        ("CAPQ_RATE_LIMITS_PER_HOUR", "free=lots,plus=1,premium=2", "not a whole number"),
        ("CAPQ_MAX_IMAGE_BYTES", "-1", "greater than 0"),
    ],
)
def test_malformed_variable_is_named(var, value, needle):
    with pytest.raises(SettingsError) as err:
        load_settings({var: value})
    message = str(err.value)
    assert var in message and needle in message


def test_every_bad_variable_is_reported_at_once():
    with pytest.raises(SettingsError) as err:
        load_settings({"CAPQ_BATCH_SIZE": "0", "CAPQ_DEFAULT_TIER": "vip"})
    assert "CAPQ_BATCH_SIZE" in str(err.value) and "CAPQ_DEFAULT_TIER" in str(err.value)


def test_cli_fails_at_start_naming_the_variable():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "capq", "stack", "status"],
        capture_output=True,
        text=True,
        env={"CAPQ_MONGO_URL": "nope", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert "CAPQ_MONGO_URL" in proc.stderr
