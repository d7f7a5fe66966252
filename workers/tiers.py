"""tiers: moved to capq.tiers (the Celery app factory binds the schedule); this re-export keeps old imports working."""
from capq.tiers import WEIGHTS, TierCycle, slot_schedule  # noqa: F401
