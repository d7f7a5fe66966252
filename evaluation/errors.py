"""errors: evaluation's error hierarchy under capq.errors.CapqError (no heavy imports: the metrics use it)."""

from capq.errors import CapqError, InputError, Unavailable


class EvaluationError(CapqError):
    """Base of every evaluation error."""


class MetricError(EvaluationError, InputError, ValueError):
    """The inputs cannot be scored; the message names the images to fix."""


class JavaError(EvaluationError, Unavailable, RuntimeError):
    """A Java tool is missing or failed; the message says what to install or which flag to drop."""


class SeedFormatError(EvaluationError, InputError, ValueError):
    """A seed file does not have the layout SEED_RESULTS.md describes; the message says which part."""


class ClipError(EvaluationError, InputError, ValueError):
    """The CLIP checkpoint cannot be loaded; the message says what to set."""


class ReferenceFormatError(EvaluationError, InputError, ValueError):
    """The reference file cannot be imported; the message says what to fix. Nothing was written."""


class CompareError(EvaluationError, InputError, ValueError):
    """The two models cannot be compared; the message says what is missing."""
