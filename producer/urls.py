"""urls: fetch http(s) images named in a manifest as img2dataset does, refusing private addresses on every hop."""

from __future__ import annotations

import functools
import ipaddress
import socket
import threading
import time

import httpx

from capq.errors import InputError
from capq.settings import Settings

USER_AGENT = "capq-fetcher/0.1 (batch image captioning; like img2dataset)"
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
MAX_URL_CHARS = 2048


class FetchError(InputError, ValueError):
    """One URL could not be fetched or may not be; the message says why (it becomes the item's rejection)."""


class _Passing(Exception):
    """A fault worth another try (timeout, dropped connection, 429/5xx)."""


def check_url(url: str) -> str:
    """A URL capq may try: http(s), with a host, no credentials in it; FetchError otherwise."""
    try:
        parts = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise FetchError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.host:
        raise FetchError("only http:// and https:// URLs with a host can be fetched")
    if parts.userinfo:
        raise FetchError("URLs with user:password@ are refused; credentials would be stored with the job")
    if len(url) > MAX_URL_CHARS:
        raise FetchError(f"URL is over {MAX_URL_CHARS} characters")
    return url


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(ip, "ipv4_mapped", None)
    ip = mapped or ip
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to for `host`, after checking every address it resolves to (SSRF guard).

    Connecting to the checked address itself (not the name again) leaves no window for a DNS answer that
    changes between the check and the connection.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host!r}: {getattr(exc, 'strerror', None) or exc}") from None
    ips = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not allow_private:
        bad = [ip for ip in ips if not _public(ip)]
        if bad:
            raise FetchError(
                f"refused: {host} resolves to {bad[0]}, a private, loopback, link-local or reserved "
                "address (CAPQ_FETCH_ALLOW_PRIVATE=true allows that on trusted private networks)"
            )
    return str(ips[0])


_slots: dict[str, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def _host_slot(host: str, limit: int) -> threading.BoundedSemaphore:
    """One semaphore per host: at most `limit` fetches from one server at a time, however many threads fetch."""
    with _slots_lock:
        return _slots.setdefault(host, threading.BoundedSemaphore(limit))


@functools.cache
def _client(settings: Settings) -> httpx.Client:
    # Redirects are followed by hand: each hop's address must pass the guard before it is contacted.
    return httpx.Client(
        follow_redirects=False,
        timeout=httpx.Timeout(settings.fetch_timeout_s),
        headers={"User-Agent": USER_AGENT},
        limits=httpx.Limits(max_connections=64),
    )


def _once(url: str, settings: Settings) -> bytes:
    cap = settings.max_image_bytes
    for _ in range(settings.fetch_max_redirects + 1):
        parts = httpx.URL(check_url(url))
        ip = resolve(parts.host, parts.port or (443 if parts.scheme == "https" else 80), settings.fetch_allow_private)
        target = parts.copy_with(host=ip)
        host_header = parts.host + (f":{parts.port}" if parts.port else "")
        extensions = {"sni_hostname": parts.host} if parts.scheme == "https" else {}
        with _host_slot(parts.host, settings.fetch_per_host):
            deadline = time.monotonic() + settings.fetch_timeout_s  # the wait for a slot is not the server's time
            with _client(settings).stream("GET", target, headers={"Host": host_header}, extensions=extensions) as r:
                if r.is_redirect:
                    url = str(parts.join(r.headers.get("location", "")))
                    continue
                if r.status_code in RETRY_STATUS:
                    raise _Passing(f"HTTP {r.status_code}")
                if r.status_code != 200:
                    raise FetchError(f"HTTP {r.status_code} {r.reason_phrase}".strip())
                declared = r.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise FetchError(
                        f"file is {int(declared):,} bytes, over the {cap:,}-byte cap (CAPQ_MAX_IMAGE_BYTES)"
                    )
                body = bytearray()
                for chunk in r.iter_bytes():
                    body += chunk
                    if len(body) > cap:
                        raise FetchError(f"file is over the {cap:,}-byte cap (CAPQ_MAX_IMAGE_BYTES)")
                    if time.monotonic() > deadline:
                        raise _Passing(f"timed out after {settings.fetch_timeout_s:g}s (CAPQ_FETCH_TIMEOUT_S)")
                return bytes(body)
    raise FetchError(f"more than {settings.fetch_max_redirects} redirects (CAPQ_FETCH_MAX_REDIRECTS)")


def fetch_url(url: str, settings: Settings) -> bytes:
    """The bytes at `url`, capped at CAPQ_MAX_IMAGE_BYTES; passing faults are retried with doubling backoff.

    Raises FetchError with the reason (HTTP status, too large, refused address, timed out, too many redirects).
    """
    for attempt in range(settings.fetch_retries + 1):
        try:
            return _once(url, settings)
        except httpx.TimeoutException:
            reason = f"timed out after {settings.fetch_timeout_s:g}s (CAPQ_FETCH_TIMEOUT_S)"
        except _Passing as exc:
            reason = str(exc)
        except httpx.TransportError as exc:
            reason = f"connection failed: {type(exc).__name__}"
        if attempt < settings.fetch_retries:
            time.sleep(settings.fetch_backoff_s * 2**attempt)
    raise FetchError(f"{reason}, after {settings.fetch_retries + 1} attempt(s)")
