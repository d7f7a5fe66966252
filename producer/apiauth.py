"""apiauth: API keys -> (owner, tier) with a per-key rate limit, and the API's JSON error bodies."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from kombu.exceptions import OperationalError as KombuOperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from capq.errors import CapqError
from capq.settings import Settings
from producer import key_stats
from producer.errors import BadInput, CaptionTimeout
from producer.ratelimit import AuthFailures, ImageBudget, LimiterUnavailable, RateLimiter
from storage.apikeys import ApiKeys
from storage.errors import NotFound, StorageError

log = logging.getLogger("capq.api")
HOW_TO_KEY = (
    "send it as header 'X-API-Key: KEY' or 'Authorization: Bearer KEY'; an operator creates one with "
    "`capq keys create --owner NAME --tier TIER`"
)


class ApiError(CapqError):
    """An HTTP error with a message that says what to fix."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass(frozen=True)
class Caller:
    owner: str
    tier: str
    key_prefix: str
    key_hash: str = ""  # counts the key's images (ratelimit.ImageBudget)
    role: str = "user"  # issue 15: "user" or "admin"


def authenticator(settings: Settings) -> Callable[..., Caller]:
    """A FastAPI dependency: resolve the presented key, count the request against its tier's hourly budget.

    Its `resolve(key, address)` does the work; the API's guard (producer.api_guard) calls it from the
    headers before any body byte is read, and the dependency then returns the caller the guard found.
    Failed keys are counted per client address: past settings.auth_failure_limit that address gets 429
    before its key is looked up.
    """
    keys, limiter = ApiKeys(settings), RateLimiter(settings)
    failures = AuthFailures(settings, limiter.redis)
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")
    bearer = HTTPBearer(auto_error=False, description="API key as a bearer token")

    def resolve(key: str | None, address: str) -> Caller:
        challenge = {"WWW-Authenticate": "Bearer"}
        if not key:
            raise ApiError(401, f"missing API key: {HOW_TO_KEY}", challenge)
        wait_s = failures.blocked(address)
        if wait_s:
            raise ApiError(
                429,
                f"too many failed API keys from your address; retry in {wait_s}s with a valid key",
                {"Retry-After": str(wait_s)},
            )
        record = keys.lookup(key)
        if record is None:
            failures.failed(address)
            raise ApiError(401, f"API key not recognised (wrong or revoked): {HOW_TO_KEY}", challenge)
        decision = limiter.hit(record["key_hash"], record["tier"])
        if not decision.allowed:
            raise ApiError(
                429,
                f"rate limit reached: tier {record['tier']} allows {decision.limit} requests per "
                f"hour per key; retry in {decision.retry_after_s}s or ask for a higher tier",
                {
                    "Retry-After": str(decision.retry_after_s),
                    "X-RateLimit-Limit": str(decision.limit),
                    "X-RateLimit-Remaining": "0",
                },
            )
        key_stats.touch(settings, record["prefix"])
        return Caller(record["owner"], record["tier"], record["prefix"], record["key_hash"], record.get("role", "user"))

    def caller(
        request: Request,
        api_key: str | None = Security(header),
        token: HTTPAuthorizationCredentials | None = Security(bearer),
    ) -> Caller:
        known = request.scope.get("state", {}).get("capq_caller")  # producer.api_guard.CALLER_KEY
        if known is not None:
            return known
        key = api_key or (token.credentials if token else None)
        return resolve(key, request.client.host if request.client else "unknown")

    caller.resolve = resolve
    return caller


def take_images(settings: Settings, caller: Caller, images: int) -> None:
    """Count a request's images against the key's hourly image budget; 429 (nothing counted) when over it."""
    decision = _image_budget(settings).take(caller.key_hash, caller.tier, images)
    if not decision.allowed:
        raise ApiError(
            429,
            f"image limit reached: tier {caller.tier} allows {decision.limit} images per hour per "
            f"key ({decision.remaining} left this hour, this request has {images}); retry in "
            f"{decision.retry_after_s}s, send fewer images, or ask for a higher tier "
            "(CAPQ_IMAGE_LIMITS_PER_HOUR)",
            {
                "Retry-After": str(decision.retry_after_s),
                "X-RateLimit-Limit": str(decision.limit),
                "X-RateLimit-Remaining": str(decision.remaining),
            },
        )


@functools.cache
def _image_budget(settings: Settings) -> ImageBudget:
    return ImageBudget(settings)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header"))
        msg = "is required" if err.get("type") == "missing" else err.get("msg", "is not valid")
        parts.append(f"{where or 'request'} {msg}")
    return "invalid request: " + "; ".join(parts) + " (see /docs for the expected fields)"


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as {"error": "..."} with its status; FastAPI's default 422 body is replaced too."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError):
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(BadInput)
    async def _bad(request: Request, exc: BadInput):
        return _error(exc.status, str(exc))

    @app.exception_handler(NotFound)
    async def _missing(request: Request, exc: NotFound):
        return _error(404, str(exc))

    @app.exception_handler(CaptionTimeout)
    async def _timeout(request: Request, exc: CaptionTimeout):
        return _error(504, str(exc))

    @app.exception_handler(LimiterUnavailable)
    async def _limiter(request: Request, exc: LimiterUnavailable):
        return _error(503, str(exc), {"Retry-After": "5"})

    @app.exception_handler(StorageError)
    async def _storage(request: Request, exc: StorageError):
        log.error("storage error on %s %s: %s", request.method, request.url.path, exc)
        # The log has the (password-masked) detail; the caller learns which service, never its address.
        return _error(
            503,
            f"{getattr(exc, 'service', 'a backing service')} unreachable or failing; retry shortly",
            {"Retry-After": "5"},
        )

    @app.exception_handler(KombuOperationalError)
    async def _broker(request: Request, exc: KombuOperationalError):
        log.error("broker error on %s %s: %s", request.method, request.url.path, exc)
        return _error(
            503,
            "the message broker (Redis) is unreachable; retry shortly (with the same "
            "idempotency_key a retried submission resumes the same job)",
            {"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; it is logged on the server")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _error(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}; see /docs for the API"
        return _error(exc.status_code, message, getattr(exc, "headers", None))
