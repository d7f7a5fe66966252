"""metrics: the Prometheus series a worker exports."""

from prometheus_client import Counter, Gauge, Histogram

IMAGES_CAPTIONED = Counter("capq_images_captioned_total", "Images captioned (new or reused)", ["model", "source"])
FAILURES = Counter("capq_caption_failures_total", "Images that could not be captioned, by reason", ["model", "reason"])
BATCH_SIZE = Histogram("capq_batch_size", "Images per model batch", ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128))
MODEL_LATENCY = Histogram("capq_model_latency_seconds", "Seconds per generate() call", ["model"])
QUEUE_WAIT = Histogram(
    "capq_queue_wait_seconds",
    "Seconds a shard waited in its queue",
    ["model", "tier"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400),
)
MODEL_LOAD = Gauge("capq_model_load_seconds", "Seconds the pinned model took to load", ["model"])
SHARDS = Counter("capq_shards_total", "Shards handled, by outcome", ["model", "outcome"])
# Issue 15: usage per model and tier (never per owner: label cardinality)
USAGE_IMAGES = Counter(
    "capq_usage_images_total", "Images captioned by the model (reused captions excluded)", ["model", "tier"]
)
USAGE_GPU_SECONDS = Counter("capq_usage_gpu_seconds_total", "Model (generate) seconds spent", ["model", "tier"])
# Issue 17: set once at start; on a GPU picked from the model and free memory unless configured.
WORKER_BATCH_SIZE = Gauge("capq_worker_batch_size", "Images per model batch this worker runs", ["model"])
