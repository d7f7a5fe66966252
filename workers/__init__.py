"""workers: caption workers, one pinned model each, fed by Celery over Redis."""
