"""errors: the one error hierarchy; every package's errors derive from CapqError (no imports here)."""


class CapqError(Exception):
    """Base of every error capq raises on purpose; anything else is a bug."""


class InputError(CapqError):
    """The caller's input is wrong (a name, a file, a request): permanent, never retried; the message says what to
    fix."""


class SetupError(InputError, ValueError):
    """A process or model cannot start as asked (unknown model, bad device or dtype, no GPU for cuda): the message
    says what to fix (exit 2). A ValueError too, as these checks always raised; a plain ValueError is a bug."""


class Unavailable(CapqError):
    """A backing service or tool did not answer or is missing: a passing fault, or a set-up step to take."""


class BadInput(InputError):
    """The request itself is wrong (unknown model, tier, preset, filter, path, language...); the message says what
    to fix (exit 2, HTTP 4xx). Shared: the API and the translation role check requests alike."""

    status = 400


class TooLarge(BadInput):
    """A single image or a request is over a size cap."""

    status = 413
