"""noop_worker: a worker on the blip queues whose model returns at once, to measure the plumbing alone."""

from __future__ import annotations

import os

from capq.settings import get_settings
from storage.blobs import ImageStore
from storage.captions import CaptionStore
from storage.jobs import JobStore
from workers.consume import worker_id
from workers.pipeline import Worker
from workers.runtime import serve


class NoopCaptioner:
    """The Captioner surface with no model behind it."""

    def preprocess(self, image):
        return image.size

    def generate(self, batch, generation=None):
        return ["noop"] * len(batch)


def main() -> None:
    settings = get_settings()
    worker = Worker(
        model="blip",
        checkpoint="noop",
        captioner=NoopCaptioner(),
        images=ImageStore(settings),
        captions=CaptionStore(settings),
        jobs=JobStore(settings),
        worker_id=worker_id("blip"),
        batch_size=settings.batch_size,
        max_pixels=settings.max_image_pixels,
    )
    serve(settings, worker, loglevel=os.environ.get("CAPQ_BENCH_LOGLEVEL", "WARNING"))


if __name__ == "__main__":
    main()
