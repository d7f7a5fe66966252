"""throughput: moved to capq.throughput (ETAs read it anywhere); this re-export keeps old imports working."""
from capq.throughput import live_workers, model_rates, record  # noqa: F401
