"""api_guard: the API's outer door: a key checked from headers before any body byte is read, and body size caps."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from capq.settings import Settings
from producer.apiauth import ApiError
from producer.ratelimit import LimiterUnavailable
from storage.errors import StorageError

GUARDED_PREFIX = "/v1/"
CALLER_KEY = "capq_caller"  # where the resolved Caller waits in scope["state"] for the route's dependency


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def presented_key(scope: Scope) -> str | None:
    key = _header(scope, b"x-api-key")
    if key:
        return key.strip()
    scheme, _, token = (_header(scope, b"authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def client_address(scope: Scope) -> str:
    # uvicorn puts the proxy's X-Forwarded-For here only for --forwarded-allow-ips (docs/security.md).
    client = scope.get("client")
    return client[0] if client else "unknown"


class Guard:
    """Pure ASGI middleware for /v1/*: (1) resolve the key from headers alone (unknown keys cost no body read),
    (2) refuse a declared Content-Length over the cap, (3) count body bytes as they stream and answer 413 at
    the cap, whichever parser (form, JSON, FastAPI's UploadFile) is reading."""

    def __init__(self, app: ASGIApp, settings: Settings, resolve):
        self.app, self.settings, self.resolve = app, settings, resolve

    def _limit(self, scope: Scope) -> tuple[int, str]:
        kind = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            return self.settings.max_request_bytes, "CAPQ_MAX_REQUEST_BYTES"
        return self.settings.max_body_bytes, "CAPQ_MAX_BODY_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(GUARDED_PREFIX):
            await self.app(scope, receive, send)
            return
        try:
            caller = await run_in_threadpool(self.resolve, presented_key(scope), client_address(scope))
        except ApiError as exc:
            await JSONResponse({"error": exc.message}, exc.status, exc.headers)(scope, receive, send)
            return
        except LimiterUnavailable as exc:
            await JSONResponse({"error": str(exc)}, 503, {"Retry-After": "5"})(scope, receive, send)
            return
        except StorageError as exc:
            service = getattr(exc, "service", "a backing service")
            await JSONResponse({"error": f"{service} unreachable; retry shortly"}, 503, {"Retry-After": "5"})(
                scope, receive, send
            )
            return
        scope.setdefault("state", {})[CALLER_KEY] = caller

        limit, setting = self._limit(scope)
        too_large = f"request body is over the {limit:,}-byte cap ({setting}); send fewer or smaller files per request"
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await JSONResponse({"error": too_large}, 413, {"Connection": "close"})(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Parsers re-raise an HTTPException (FastAPI says middleware errors pass through as they are).
                    raise HTTPException(413, too_large)
            return message

        await self.app(scope, counted, send)


def install(app: FastAPI, settings: Settings, auth) -> None:
    """Put the guard in front of every /v1 route; `auth.resolve` is the key check the routes' dependency uses."""
    app.add_middleware(Guard, settings=settings, resolve=auth.resolve)
