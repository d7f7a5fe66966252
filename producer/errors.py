"""errors: the producer's error hierarchy; BadInput is the caller's to fix (exit 2, HTTP 4xx)."""
from capq.errors import CapqError, InputError


class ProducerError(CapqError):
    """Base of every producer error."""


class BadInput(ProducerError, InputError):
    """The request itself is wrong (unknown model, tier, preset, filter, path...); the message says what to fix."""

    status = 400


class TooLarge(BadInput):
    """A single image or a request is over a size cap."""

    status = 413


class CaptionTimeout(ProducerError):
    """A caption was not ready within the wait; the work stays queued and finishes later."""
