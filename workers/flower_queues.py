"""flower_queues: make Flower list every declared capq queue, not only the queues of workers online."""

from __future__ import annotations


def all_queue_names(handler) -> list[str]:
    """The union of the queues workers consume and the app's declared queues (conf.task_queues)."""
    queues = {q["name"] for info in handler.application.workers.values() for q in info.get("active_queues", [])}
    queues |= {handler.capp.conf.task_default_queue}
    queues |= {q.name for q in handler.capp.conf.task_queues or [] if q.name}
    return sorted(queues)


def install() -> None:
    """Patch Flower's one queue-picking method (flower.views.BaseHandler.get_active_queue_names).

    Flower 2.2 shows the declared queues only while no worker is known; once one registers it shows that
    worker's queues alone, which hides a model whose queue fills with no worker online, the case an operator
    most needs to see. Flower has no option for this, so `capq flower` replaces the method before it starts.
    """
    from flower.views import BaseHandler

    BaseHandler.get_active_queue_names = all_queue_names
