"""retention: the Celery task celery beat sends daily to delete images older than CAPQ_RETENTION_DAYS."""

from __future__ import annotations

from celery import shared_task

from capq.names import RETENTION_TASK
from capq.settings import get_settings
from storage.owners import run_retention  # the task calls it (tests import it from here)


@shared_task(name=RETENTION_TASK)
def retention() -> dict:
    return run_retention(get_settings())
