"""errors: the producer's errors; BadInput (the caller's to fix: exit 2, HTTP 4xx) lives in capq.errors."""

from capq.errors import BadInput, CapqError, TooLarge  # noqa: F401  (BadInput, TooLarge: re-exported)


class ProducerError(CapqError):
    """Base of the producer's own errors."""


class CaptionTimeout(ProducerError):
    """A caption was not ready within the wait; the work stays queued and finishes later."""
