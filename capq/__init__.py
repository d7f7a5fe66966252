"""capq: distributed, queue-based batch image captioning."""

__version__ = "0.1.0"
