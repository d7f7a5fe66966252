"""errors: the storage error hierarchy; unreachable services are distinct from missing things."""

from capq.errors import CapqError, Unavailable
from capq.redact import mask_url


class StorageError(CapqError):
    """Base of every storage error."""


class ServiceUnreachable(StorageError, Unavailable):
    """A backing service did not answer within the configured timeout: a passing fault, worth a retry."""

    service = "service"

    def __init__(self, url: str, detail: str = ""):
        self.url = mask_url(url)  # the message reaches logs and operators: never the password
        super().__init__(
            f"{self.service} unreachable at {self.url}"
            + (f" ({detail})" if detail else "")
            + "; check that it runs (capq stack status) and the CAPQ_* URL is right"
        )


class ObjectStoreUnreachable(ServiceUnreachable):
    service = "object store"


class DatabaseUnreachable(ServiceUnreachable):
    service = "database"


class NotFound(StorageError):
    """The thing asked for does not exist: permanent, never retried."""


class AlreadyFinished(StorageError):
    """Issue 11: the job is done; there is nothing left to change (e.g. to cancel)."""
