"""celery_app: for `celery -A workers.celery_app ...` (operators' inspect and control commands) only.

capq's own code builds its app with capq.celery_app.create_app(settings); nothing imports this module.
"""

from capq.celery_app import create_app
from capq.settings import get_settings

app = create_app(get_settings())
