"""The worker's tier schedule (capq/tiers.py), driven the way kombu's Redis transport drives it, over fake queues."""

from __future__ import annotations

from collections import Counter, deque

import pytest

from capq import tiers
from capq.names import caption_queues
from capq.settings import load_settings


class FakeBroker:
    """Named lists and BRPOP: the first non-empty list in the order given yields its message."""

    def __init__(self, backlog: dict[str, int], model: str = "blip"):
        self.queues = {q: deque(range(backlog.get(tiers.tier_of_queue(q), 0))) for q in caption_queues(model)}

    def serve(self, cycle: tiers.TierCycle, n: int) -> list[str]:
        """Take n messages as kombu does: ask the cycle for the order, pop the first non-empty, rotate."""
        served = []
        for _ in range(n):
            order = cycle.consume(len(self.queues))
            queue = next((q for q in order if self.queues[q]), None)
            if queue is None:
                break
            self.queues[queue].popleft()
            cycle.rotate(queue)
            served.append(tiers.tier_of_queue(queue))
        return served


@pytest.fixture
def weights(monkeypatch):
    """Set the schedule's weights the way the worker does before consuming (from settings)."""

    def set_weights(raw: str | None = None) -> None:
        env = {} if raw is None else {"CAPQ_TIER_WEIGHTS": raw}
        monkeypatch.setattr(tiers, "WEIGHTS", dict(load_settings(env).tier_weights))

    return set_weights


def _cycle() -> tiers.TierCycle:
    cycle = tiers.TierCycle()
    cycle.update(caption_queues("blip"))
    return cycle


def test_every_tier_backlogged_gets_6_3_1_in_every_ten(weights):
    # Given the default weights and a deep backlog in every tier
    weights()
    broker = FakeBroker({"premium": 100, "plus": 100, "free": 100})
    # If the worker takes 100 messages
    served = broker.serve(_cycle(), 100)
    # I expect each run of ten to hold 6 premium, 3 plus and 1 free (plus's share measured, not only free's)
    for start in range(0, 100, 10):
        assert Counter(served[start : start + 10]) == {"premium": 6, "plus": 3, "free": 1}, served[start : start + 10]
    # and premium leads
    assert served[0] == "premium"


def test_module_default_matches_the_settings_default():
    assert tiers.WEIGHTS == load_settings({}).tier_weights == {"premium": 6, "plus": 3, "free": 1}


def test_an_idle_tier_gives_its_slots_to_the_next_tier(weights):
    weights()
    # Given premium idle, plus and free backlogged
    broker = FakeBroker({"plus": 50, "free": 50})
    served = broker.serve(_cycle(), 20)
    # I expect premium's slots to pass to plus (the next tier), free keeping exactly its own one in ten
    assert Counter(served) == {"plus": 18, "free": 2}


def test_a_lone_tier_gets_the_whole_worker(weights):
    weights()
    assert FakeBroker({"free": 7}).serve(_cycle(), 10) == ["free"] * 7


def test_free_weight_zero_makes_free_strictly_last(weights):
    weights("premium=1,plus=1,free=0")
    broker = FakeBroker({"premium": 5, "plus": 5, "free": 5})
    served = broker.serve(_cycle(), 15)
    assert served[10:] == ["free"] * 5 and Counter(served[:10]) == {"premium": 5, "plus": 5}


def test_custom_weights_are_followed(weights):
    weights("premium=1,plus=2,free=1")
    served = FakeBroker({"premium": 40, "plus": 40, "free": 40}).serve(_cycle(), 40)
    assert Counter(served) == {"premium": 10, "plus": 20, "free": 10}
