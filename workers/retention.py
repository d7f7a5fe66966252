"""retention: the Celery task celery beat sends daily to delete images older than CAPQ_RETENTION_DAYS."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from celery import shared_task

from capq.names import RETENTION_TASK
from capq.settings import Settings, get_settings
from storage.owners import Owners

log = logging.getLogger("capq.retention")


def run_retention(settings: Settings, now: datetime | None = None) -> dict:
    """Delete what is older than the retention (storage.owners.Owners.expire); nothing when retention is off."""
    if not settings.retention_days:
        return {"retention": "off"}
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=settings.retention_days)
    counts = Owners(settings).expire(cutoff)
    log.info("retention before %s: %s", cutoff.isoformat(), counts)
    return counts


@shared_task(name=RETENTION_TASK)
def retention() -> dict:
    return run_retention(get_settings())

