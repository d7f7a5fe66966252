"""usage_report: images captioned, reused captions, GPU-seconds and estimated cost, grouped by model, day or tier."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from capq.settings import Settings
from producer import choices
from producer.errors import BadInput
from producer.queries import parse_since, plain
from storage.usage import UsageStore, day_of

GROUPS = ("model", "day", "tier", "owner", "device")
COLUMNS = ("images", "reused", "gpu_s", "cost_usd")


def price_per_hour(settings: Settings, model: str, device: str) -> float | None:
    """USD per GPU-hour for this model on this device: the most specific CAPQ_GPU_HOUR_PRICES entry, or None."""
    for key in (f"{model}:{device}", f"{model}:*", f"*:{device}", "*:*"):
        if key in settings.gpu_hour_prices:
            return settings.gpu_hour_prices[key]
    return None


def report(settings: Settings, owner: str | None = None, since="30d", by: str = "model") -> dict:
    """Usage of `owner` (None: every owner, for operators and admins) since `since`, one row per `by` value.

    Reused captions cost no model time and so nothing. Rows with no configured price have cost_usd 0 and are
    listed in `unpriced` (model:device) so a missing price is visible, not silently free.
    """
    by = plain("by", by)
    if by not in GROUPS:
        raise BadInput(f"by must be one of {', '.join(GROUPS)}, got {by!r}")
    if owner is not None:
        owner = choices.check_owner(plain("owner", owner))
    start: datetime = parse_since(since)
    groups: dict[str, dict] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
    unpriced: set[str] = set()
    for row in UsageStore(settings).rows(owner, day_of(start)):
        g = groups[str(row.get(by))]
        g["images"] += row.get("images", 0)
        g["reused"] += row.get("reused", 0)
        g["gpu_s"] += row.get("gpu_s", 0.0)
        price = price_per_hour(settings, row["model"], row.get("device", "cpu"))
        if price is None:
            unpriced.add(f"{row['model']}:{row.get('device', 'cpu')}")
        else:
            g["cost_usd"] += row.get("gpu_s", 0.0) / 3600 * price
    rows = [
        {by: key} | {c: round(v, 6) if isinstance(v, float) else v for c, v in vals.items()}
        for key, vals in sorted(groups.items())
    ]
    total = {c: sum(r[c] for r in rows) for c in COLUMNS}
    return {
        "owner": owner,
        "since_day": day_of(start),
        "by": by,
        "rows": rows,
        "total": {c: round(v, 6) if isinstance(v, float) else v for c, v in total.items()},
        "unpriced": sorted(unpriced),
    }
