"""enqueue: moved to capq.enqueue (the healer sends shards too); this re-export keeps old imports working."""
from capq.enqueue import enqueue_pending, resend_open  # noqa: F401
