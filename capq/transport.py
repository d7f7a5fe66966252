"""transport: Redis only carries work, and may lose it all; the epoch tells a Redis that did from one that did not."""

from __future__ import annotations

import uuid

import redis

from capq.names import REDIS_EPOCH_KEY


def redis_epoch(client: redis.Redis) -> str:
    """This Redis's epoch: a random id set once. A Redis that restarts empty gets a new one, so a job sent
    under an older epoch may have lost its queued messages (MongoDB still knows every pending item)."""
    client.set(REDIS_EPOCH_KEY, uuid.uuid4().hex, nx=True)
    epoch = client.get(REDIS_EPOCH_KEY)
    return epoch.decode() if isinstance(epoch, bytes) else epoch
