"""slow_worker: a real worker on the blip queues whose model takes a fixed time per image (a known throughput)."""

from __future__ import annotations

import os
import time

from capq.settings import get_settings
from storage.blobs import ImageStore
from storage.captions import CaptionStore
from storage.jobs import JobStore
from workers.consume import worker_id
from workers.pipeline import Worker
from workers.runtime import serve


class SleepCaptioner:
    """The Captioner surface; generate() takes CAPQ_TEST_SECONDS_PER_IMAGE per image."""

    def __init__(self, seconds_per_image: float):
        self.seconds_per_image = seconds_per_image

    def preprocess(self, image):
        return image.size

    def generate(self, batch, generation=None):
        time.sleep(self.seconds_per_image * len(batch))
        return ["a slow caption"] * len(batch)


def main() -> None:
    settings = get_settings()
    captioner = SleepCaptioner(float(os.environ["CAPQ_TEST_SECONDS_PER_IMAGE"]))
    worker = Worker(
        model="blip",
        checkpoint="sleep",
        captioner=captioner,
        images=ImageStore(settings),
        captions=CaptionStore(settings),
        jobs=JobStore(settings),
        worker_id=worker_id("blip"),
        batch_size=settings.batch_size,
        max_pixels=settings.max_image_pixels,
    )
    serve(settings, worker, loglevel="WARNING")


if __name__ == "__main__":
    main()
