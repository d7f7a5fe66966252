"""queue_metrics: moved to capq.queue_metrics (the producer reads it too); this re-export keeps old imports working."""
from capq.queue_metrics import QueueCollector, QueueState, in_flight, read_queue, redis_client  # noqa: F401
