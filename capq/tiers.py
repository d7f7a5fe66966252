"""tiers: the order a worker reads its tier queues in: weighted, so premium leads and free never starves."""

from __future__ import annotations

from capq.names import TIERS, tier_of_queue

# The default (CAPQ_TIER_WEIGHTS); a worker's Celery app binds its own weights to the cycle (capq.celery_app).
WEIGHTS: dict[str, int] = {"premium": 6, "plus": 3, "free": 1}


def slot_schedule(weights: dict[str, int]) -> list[str]:
    """Interleave tiers by weight, e.g. 6:3:1 -> 10 slots where free holds the last one.

    Smooth weighted round robin (as in nginx): each slot goes to the tier furthest behind its share,
    so a tier's slots are spread out rather than bunched.
    """
    active = {t: w for t, w in weights.items() if w > 0}
    total = sum(active.values())
    current = {t: 0 for t in active}
    slots = []
    for _ in range(total):
        for t, w in active.items():
            current[t] += w
        # Ties go to the higher tier (TIERS order).
        best = max(active, key=lambda t: (current[t], -TIERS.index(t)))
        current[best] -= total
        slots.append(best)
    return slots


class TierCycle:
    """A kombu queue cycle (see kombu.utils.scheduling) for the Redis transport's BRPOP.

    BRPOP returns from the first non-empty list named, so the order given is the service order. Each
    message taken advances one slot of the weighted schedule; the slot's tier is named first and the
    rest follow in tier order. Under sustained load from every tier this serves 6:3:1 (by default);
    an empty tier's slot falls through to the next tier, so idle tiers cost nothing and earn no credit.
    A weight of 0 makes that tier strictly lowest: it is served only when the others are empty.
    """

    def __init__(self, it=None, weights: dict[str, int] | None = None):
        self.items: list[str] = list(it) if it is not None else []
        self.slots = slot_schedule(WEIGHTS if weights is None else weights)
        self.pos = 0

    def update(self, it) -> None:
        self.items[:] = it

    def consume(self, n: int) -> list[str]:
        preferred = self.slots[self.pos % len(self.slots)]

        def rank(queue: str) -> tuple[int, int]:
            tier = tier_of_queue(queue)
            order = TIERS.index(tier) if tier else len(TIERS)
            return (0 if tier == preferred else 1, order)

        return sorted(self.items, key=rank)[:n]

    def rotate(self, last_used: str) -> str:
        self.pos += 1
        return last_used
