"""settings: the one configuration object, read from CAPQ_* environment variables once."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from capq.errors import InputError
from capq.names import MODEL_NAMES, TIERS, TRANSLATE_PROVIDERS


class SettingsError(InputError, ValueError):
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


def _pairs(value, example: str) -> dict[str, str]:
    """'a=1,b=2' -> {'a': '1', 'b': '2'}."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    out = {}
    for part in filter(None, (p.strip() for p in str(value).split(","))):
        name, sep, number = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected NAME=NUMBER pairs like {example!r}, got {part!r}")
        out[name.strip()] = number.strip()
    return out


def _parse_prices(value) -> dict[str, float]:
    """'blip:cuda=1.2,*:cpu=0.05' -> {'blip:cuda': 1.2, '*:cpu': 0.05}: USD per GPU-hour by model:device."""
    prices = {}
    for name, number in _pairs(value, "blip:cuda=1.2,*:cpu=0.05").items():
        model, sep, device = name.partition(":")
        if not sep or model not in (*MODEL_NAMES, "*") or not device:
            raise ValueError(
                f"price key {name!r} must be MODEL:DEVICE, MODEL one of {list(MODEL_NAMES)} or '*', "
                "DEVICE such as cuda, cpu or '*'"
            )
        try:
            prices[name] = float(number)
        except (TypeError, ValueError):
            raise ValueError(f"price for {name!r} is not a number: {number!r}") from None
        if prices[name] < 0:
            raise ValueError(f"price for {name!r} must be 0 or more")
    return prices


def _parse_quotas(value) -> dict[str, int]:
    """'free=500,plus=5000' -> {'free': 500, 'plus': 5000}; tiers left out have no quota."""
    quotas = {}
    for name, number in _pairs(value, "free=500,plus=5000").items():
        if name not in TIERS:
            raise ValueError(f"unknown tier {name!r}; tiers are {list(TIERS)}")
        try:
            quotas[name] = int(number)
        except (TypeError, ValueError):
            raise ValueError(f"quota for {name!r} is not a whole number: {number!r}") from None
        if quotas[name] < 0:
            raise ValueError(f"quota for {name!r} must be 0 or more")
    return quotas


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
    rate_limits_per_hour: dict[str, int] = Field(default_factory=lambda: {"free": 100, "plus": 300, "premium": 1000})
    caption_wait_s: float = Field(60.0, gt=0)

    # Evaluation
    eval_interval_s: int = Field(3600, gt=0)
    bootstrap_samples: int = Field(1000, gt=0)
    # Issue 13: how long GET /v1/evaluations/compare waits for an evaluation worker's answer.
    compare_wait_s: float = Field(120.0, gt=0)

    # Observability
    metrics_port: int = Field(0, ge=0, le=65535)
    log_json: bool = True

    # Issue 12: security limits (docs/security.md)
    # Bytes of one request body, counted while it streams (413 past it): multipart uploads, then anything else.
    max_request_bytes: int = Field(128 * 1024 * 1024, gt=0)
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    max_files_per_request: int = Field(500, gt=0)
    max_items_per_request: int = Field(10_000, gt=0)
    # Images per key per hour, on top of the request budget (rate_limits_per_hour).
    image_limits_per_hour: dict[str, int] = Field(default_factory=lambda: {"free": 100, "plus": 300, "premium": 1000})
    # Failed API keys per client address per window before that address gets 429.
    auth_failure_limit: int = Field(20, gt=0)
    auth_failure_window_s: int = Field(900, gt=0)
    # Pixels decoded at once per process (API and worker threads share it); bounds memory under a flood.
    decode_budget_pixels: int = Field(100_000_000, gt=0)
    # Longest side a JPEG is decoded at in the worker (DCT scaling, never the full header size above it).
    worker_decode_max_side_px: int = Field(1024, gt=0)
    # Serve the API's /metrics on this separate port (0: on the API port itself, for local use only).
    api_metrics_port: int = Field(0, ge=0, le=65535)
    # Issue 15: owners' data, usage, quotas, keys and retention
    retention_days: int = Field(0, ge=0)  # 0 = keep forever
    retention_interval_s: int = Field(86400, gt=0)
    key_rotation_grace_s: int = Field(86400, ge=0)
    # USD per GPU-hour by "model:device" ("*" matches any); the most specific entry wins.
    gpu_hour_prices: dict[str, float] = Field(default_factory=dict)
    # Items (image x model) an owner may submit per UTC day, by tier; a tier left out has no quota.
    daily_image_quotas: dict[str, int] = Field(default_factory=dict)
    # Issue 16: streaming submission and URL inputs
    submit_window: int = Field(256, gt=0)  # candidates read ahead and in flight at once while submitting
    submit_record_chunk: int = Field(250, gt=0)  # images per MongoDB write (and per enqueue) while submitting
    fetch_timeout_s: float = Field(10.0, gt=0)  # connect/read timeout of each http(s) fetch
    fetch_retries: int = Field(2, ge=0)  # retries of a fetch after a timeout, a dropped connection or 429/5xx
    fetch_backoff_s: float = Field(0.5, ge=0)  # first retry delay; doubles per retry
    fetch_per_host: int = Field(4, gt=0)  # concurrent fetches per host
    fetch_max_redirects: int = Field(5, ge=0)
    fetch_allow_private: bool = False  # fetch from private/loopback/link-local addresses (tests, intranets)
    max_url_items_per_request: int = Field(1000, gt=0)  # API: http(s) items it fetches before it answers
    # Issue 18: production monitoring (exporter, ETAs, aliases, reference-free quality, tracing)
    exporter_port: int = Field(9101, ge=1, le=65535)
    throughput_window_s: int = Field(300, gt=0)
    quality_interval_s: int = Field(3600, gt=0)
    quality_sample_size: int = Field(1000, gt=0)
    clip_checkpoint: str = ""  # hub id or folder; empty: no CLIPScore, health signals only
    clipscore_sample_size: int = Field(200, gt=0)
    tracing_otlp_endpoint: str = ""  # empty: no OpenTelemetry spans (trace ids stay in the logs)
    # Issue 14: caption translation (providers tried in order) and the web UI
    translate_providers: str = ""  # comma list of google, azure, aws, offline; empty = translation unavailable
    translate_target: str = "vi"
    translate_cache_ttl_s: int = Field(86400, gt=0)
    translate_timeout_s: float = Field(10.0, gt=0)
    google_translate_key: str = ""
    google_translate_endpoint: str = "https://translation.googleapis.com"
    azure_translator_key: str = ""
    azure_translator_region: str = ""
    azure_translator_endpoint: str = "https://api.cognitive.microsofttranslator.com"
    aws_translate_endpoint: str = ""  # empty: boto3's own endpoint for the region
    aws_translate_region: str = "us-east-1"
    aws_translate_access_key: str = ""  # empty: boto3's default credential chain
    aws_translate_secret_key: str = ""
    translate_offline_model: str = "Helsinki-NLP/opus-mt-en-vi"  # hub id or local folder of a Marian model
    translate_concurrency: int = Field(4, gt=0)
    ui_api_url: str = "http://127.0.0.1:8000"
    ui_api_key: str = ""
    flower_url: str = "http://127.0.0.1:5555"
    # Issue 11: healing. A worker silent this long is dead and its shards go back to the queue; the elected
    # worker looks this often (so a dead worker's shard is back within about the sum of the two).
    worker_lost_after_s: int = Field(20, ge=3)
    heal_interval_s: int = Field(5, gt=0)
    # An image whose worker died this many times while captioning it is failed, not sent again.
    poison_deaths: int = Field(3, gt=0)
    # Shards dead-lettered because a service was unreachable are re-driven once it answers: at most this many
    # times each, the first after redrive_backoff_s, doubling up to 16 times that.
    redrive_max: int = Field(5, ge=0)
    redrive_backoff_s: int = Field(60, gt=0)
    # Off only to measure what healing costs (bench/heal_cost_bench.py): a worker then neither records what it
    # holds nor heals; a dead worker's shards wait out the visibility timeout, as before issue 11.
    healing: bool = True

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

    @field_validator("rate_limits_per_hour", "image_limits_per_hour", mode="before")
    @classmethod
    def _limits(cls, v):
        return _parse_tier_map(v, "limit")

    @field_validator("gpu_hour_prices", mode="before")
    @classmethod
    def _prices(cls, v):
        return _parse_prices(v)

    @field_validator("daily_image_quotas", mode="before")
    @classmethod
    def _quotas(cls, v):
        return _parse_quotas(v)

    @field_validator("translate_providers")
    @classmethod
    def _providers(cls, v: str) -> str:
        names = [p.strip() for p in v.split(",") if p.strip()]
        unknown = sorted(set(names) - set(TRANSLATE_PROVIDERS))
        if unknown:
            raise ValueError(f"unknown translation provider(s) {unknown}; choose from {', '.join(TRANSLATE_PROVIDERS)}")
        return ",".join(names)

    @field_validator("translate_target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not (2 <= len(v) <= 8 and v.replace("-", "").isalpha()):
            raise ValueError(f"must be a language code such as vi, fr or zh-Hans, got {v!r}")
        return v

    @property
    def translate_chain(self) -> list[str]:
        return [p for p in self.translate_providers.split(",") if p]

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

    # Issue 18 (finish): a significant drop is tested against the trailing window's evaluations on the images both
    # scored; capacity is planned for the oldest queued item to wait at most capacity_target_age_s.
    drop_window_s: int = Field(7 * 86400, gt=0)  # trailing window of evaluations a new one is compared against
    drop_min_images: int = Field(10, ge=2)  # fewer images in common: an unpaired test on per-image values
    drop_max_images: int = Field(2000, gt=0)  # per-image statistics kept per evaluation (smallest sha256s)
    drop_p_value: float = Field(0.05, gt=0, lt=1)  # significance level of a drop
    capacity_target_age_s: float = Field(600.0, gt=0)
    capacity_max_utilization: float = Field(0.8, gt=0, le=1)  # headroom: workers busy at most this share of time
    arrival_window_s: int = Field(3600, gt=0)  # arrivals per model are counted over this window


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
