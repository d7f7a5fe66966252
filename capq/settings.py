"""settings: the one configuration object, read from CAPQ_* environment variables once."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from capq.names import TIERS


class SettingsError(ValueError):
    """A CAPQ_* variable is missing or malformed; the message names it and says what to fix."""


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"must be a URL like {schemes[0]}://HOST:PORT, got {value!r}")
    try:
        parts.port  # noqa: B018 - raises on a non-numeric port
    except ValueError:
        raise ValueError(f"has a port that is not a number: {value!r}") from None
    return value


def _parse_tier_map(value: str | Mapping[str, int], what: str) -> dict[str, int]:
    """'premium=6,plus=3,free=1' -> {'premium': 6, ...}; every tier must appear, values >= 0."""
    if isinstance(value, Mapping):
        items = dict(value)
    else:
        items = {}
        for part in filter(None, (p.strip() for p in str(value).split(","))):
            name, sep, number = part.partition("=")
            if not sep:
                raise ValueError(f"expected TIER=NUMBER pairs like 'premium=6,plus=3,free=1', got {part!r}")
            try:
                items[name.strip()] = int(number)
            except ValueError:
                raise ValueError(f"{what} for {name.strip()!r} is not a whole number: {number!r}") from None
    unknown = sorted(set(items) - set(TIERS))
    if unknown:
        raise ValueError(f"unknown tier name(s) {unknown}; tiers are {list(TIERS)}")
    missing = [t for t in TIERS if t not in items]
    if missing:
        raise ValueError(f"missing tier(s) {missing}; give all of {list(TIERS)}")
    if any(v < 0 for v in items.values()):
        raise ValueError(f"{what} must be 0 or more")
    return {t: items[t] for t in TIERS}


class Settings(BaseModel):
    """Every knob of every capq service. Only `load_settings` reads the environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Services
    redis_url: str = "redis://127.0.0.1:6379/0"
    # The local stack's server (SecantusDB) pays a scan of every recorded retryable write on each write, and
    # capq does not need them: its writes are idempotent inserts, $max and self-healing tallies.
    mongo_url: str = "mongodb://127.0.0.1:27017/?retryWrites=false"
    mongo_db: str = "capq"
    s3_endpoint: str = "http://127.0.0.1:8333"
    s3_bucket: str = "capq-images"
    s3_access_key: str = "capq"
    s3_secret_key: str = "capq-secret-key"
    s3_region: str = "us-east-1"
    connect_timeout_s: float = Field(3.0, gt=0)

    # Local stack (capq stack up): data, logs, tiny models
    home: Path = Path(".capq")

    # Work
    batch_size: int = Field(8, gt=0)
    shard_batches: int = Field(8, gt=0)
    # Threads that fetch, decode and preprocess a worker's next batches while the model runs. One thread
    # preprocesses 40-90 images/s; a GPU worker at large batches captions 150-500 images/s (docs/benchmarks.md).
    fetch_threads: int = Field(8, gt=0)
    default_tier: str = "free"
    default_preset: str = "default"
    tier_weights: dict[str, int] = Field(default_factory=lambda: {"premium": 6, "plus": 3, "free": 1})
    visibility_timeout_s: int = Field(3600, gt=0)
    task_max_retries: int = Field(5, ge=0)
    retry_backoff_max_s: int = Field(60, gt=0)

    # Producer validation
    max_image_bytes: int = Field(10 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(100_000_000, gt=0)
    upload_concurrency: int = Field(8, gt=0)

    # API
    rate_limits_per_hour: dict[str, int] = Field(
        default_factory=lambda: {"free": 100, "plus": 300, "premium": 1000}
    )
    caption_wait_s: float = Field(60.0, gt=0)

    # Evaluation
    eval_interval_s: int = Field(3600, gt=0)
    bootstrap_samples: int = Field(1000, gt=0)

    # Observability
    metrics_port: int = Field(0, ge=0, le=65535)
    log_json: bool = True

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, v: str) -> str:
        return _check_url(v, ("redis", "rediss"))

    @field_validator("mongo_url")
    @classmethod
    def _mongo(cls, v: str) -> str:
        return _check_url(v, ("mongodb", "mongodb+srv"))

    @field_validator("s3_endpoint")
    @classmethod
    def _s3(cls, v: str) -> str:
        return _check_url(v, ("http", "https"))

    @field_validator("s3_bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not (3 <= len(v) <= 63) or not all(c.islower() or c.isdigit() or c in "-." for c in v):
            raise ValueError(f"must be 3-63 lowercase letters, digits, '-' or '.', got {v!r}")
        return v

    @field_validator("default_tier")
    @classmethod
    def _tier(cls, v: str) -> str:
        if v not in TIERS:
            raise ValueError(f"unknown tier {v!r}; tiers are {list(TIERS)}")
        return v

    @field_validator("tier_weights", mode="before")
    @classmethod
    def _weights(cls, v):
        weights = _parse_tier_map(v, "weight")
        if sum(weights.values()) == 0:
            raise ValueError("at least one tier needs a weight above 0")
        return weights

    @field_validator("rate_limits_per_hour", mode="before")
    @classmethod
    def _limits(cls, v):
        return _parse_tier_map(v, "limit")

    def __hash__(self) -> int:
        # Frozen, so hashing the dump is stable; lets per-process client caches key on settings.
        return hash(self.model_dump_json())

    @property
    def stack_dir(self) -> Path:
        return self.home / "stack"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    # Issue 17: a GPU worker's batch size (0: picked from the model and free GPU memory; --batch-size overrides).
    gpu_batch_size: int = Field(0, ge=0)


def _env_name(field: str) -> str:
    return "CAPQ_" + field.upper()


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from CAPQ_* variables; raise SettingsError naming each bad variable."""
    env = os.environ if env is None else env
    values = {}
    for name in Settings.model_fields:
        raw = env.get(_env_name(name))
        if raw is not None:
            values[name] = raw
    try:
        return Settings(**values)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            msg = err["msg"].removeprefix("Value error, ")
            got = values.get(field, "<default>")
            lines.append(f"{_env_name(field)}={got!r}: {msg}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
