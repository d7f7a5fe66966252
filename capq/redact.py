"""redact: connection URLs and free text with their passwords masked, for errors, logs and responses."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# scheme://user:password@host -> scheme://user:***@host, wherever such a URL sits in a text.
_USERINFO = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@:]*:)(?P<secret>[^\s/]+)@")
# Query parameters that carry secrets in connection strings and presigned URLs.
_SECRET_PARAMS = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|X-Amz-Signature|X-Amz-Credential|"
    r"AWSAccessKeyId|Signature|api[_-]?key)=([^&\s]+)"
)


def mask_url(url: str) -> str:
    """The URL with any password (and secret query parameters) replaced by ***; host and port kept."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            host = parts.hostname or ""
            host = f"[{host}]" if ":" in host else host
            netloc = f"{parts.username or ''}:{MASK}@{host}" + (f":{parts.port}" if parts.port else "")
            url = urlunsplit(parts._replace(netloc=netloc))
    except ValueError:  # a malformed URL: fall back to the text rule
        pass
    return redact(url)


def redact(text, secrets: tuple[str, ...] = ()) -> str:
    """`text` with URL passwords, secret query parameters and any of `secrets` (non-empty) masked."""
    text = _USERINFO.sub(lambda m: m.group("head") + MASK + "@", str(text))
    text = _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}={MASK}", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in every log record's message and arguments before any handler formats it."""

    def __init__(self, secrets: tuple[str, ...] = ()):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose args do not fit its format: leave it to the handler
            return True
        clean = redact(message, self.secrets)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secrets)
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        record.msg, record.args = clean, None
        return True
