"""keys_admin: list keys with their use, create them with a role, revoke and rotate them (CLI and admin API)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from capq.settings import Settings
from producer import choices, key_stats
from producer.errors import BadInput
from producer.queries import plain
from storage.apikeys import ApiKeys

ROLES = ("user", "admin")


def check_role(role) -> str:
    role = plain("role", role)
    if role not in ROLES:
        raise BadInput(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    return role


def _iso(value):
    return value.isoformat() if isinstance(value, datetime) else value


def public_key(record: dict, stats: dict | None = None) -> dict:
    """What may be shown of a key: never its hash or the key itself."""
    stats = stats or {}
    last = stats.get("last_used_at")
    return {
        "prefix": record["prefix"],
        "owner": record["owner"],
        "tier": record["tier"],
        "role": record.get("role", "user"),
        "note": record.get("note"),
        "created_at": _iso(record.get("created_at")),
        "revoked_at": _iso(record.get("revoked_at")),
        "expires_at": _iso(record.get("expires_at")),
        "last_used_at": datetime.fromtimestamp(last, UTC).isoformat() if last else None,
        **{k: stats.get(k, 0) for k in ("requests_hour", "requests_day", "images_hour", "images_day")},
    }


def list_keys(settings: Settings, owner: str | None = None) -> list[dict]:
    if owner is not None:
        owner = choices.check_owner(plain("owner", owner))
    records = ApiKeys(settings).list(owner)
    stats = key_stats.read(settings, [r["prefix"] for r in records])
    return [public_key(r, stats.get(r["prefix"])) for r in records]


def create_key(settings: Settings, owner, tier, role="user", note=None) -> tuple[str, dict]:
    key, record = ApiKeys(settings).create(
        choices.check_owner(plain("owner", owner)),
        choices.check_tier(plain("tier", tier)),
        plain("note", note),
        check_role(role),
    )
    return key, public_key(record)


def _live(settings: Settings, prefix, owner: str | None) -> dict:
    prefix = plain("prefix", prefix)
    now = datetime.now(UTC)
    for record in ApiKeys(settings).coll.find({"prefix": prefix, "revoked_at": None}, {"_id": 0, "key_hash": 0}):
        expired = record.get("expires_at") and record["expires_at"] <= now
        if (owner is None or record["owner"] == owner) and not expired:
            return record
    raise BadInput(
        f"no live key with prefix {prefix!r}"
        + ("" if owner is None else " among yours")
        + "; list them with `capq keys list` or GET /v1/admin/keys"
    )


def revoke_key(settings: Settings, prefix, owner: str | None = None) -> dict:
    record = _live(settings, prefix, owner)
    ApiKeys(settings).coll.update_one(
        {"prefix": record["prefix"], "owner": record["owner"], "revoked_at": None},
        {"$set": {"revoked_at": datetime.now(UTC)}},
    )
    return public_key(record | {"revoked_at": datetime.now(UTC)})


def rotate_key(settings: Settings, prefix, grace_s=None, owner: str | None = None) -> tuple[str, dict, dict]:
    """A new key with the old one's owner, tier, role and note; the old key keeps working for `grace_s`
    (default CAPQ_KEY_ROTATION_GRACE_S), then is refused. -> (new key, its record, the old key's record)."""
    record = _live(settings, prefix, owner)
    grace = settings.key_rotation_grace_s if grace_s is None else grace_s
    if isinstance(grace, bool) or not isinstance(grace, (int, float, str)):
        raise BadInput("grace_s must be a number of seconds")
    try:
        grace = float(grace)
    except ValueError:
        raise BadInput(f"grace_s must be a number of seconds, got {grace!r}") from None
    if not 0 <= grace <= 90 * 86400:
        raise BadInput("grace_s must be from 0 to 7776000 (90 days)")
    expires = datetime.now(UTC) + timedelta(seconds=grace)
    keys = ApiKeys(settings)
    key, new = keys.create(record["owner"], record["tier"], record.get("note"), record.get("role", "user"))
    keys.coll.update_one(
        {"prefix": record["prefix"], "owner": record["owner"], "revoked_at": None},
        {"$set": {"expires_at": expires, "rotated_to": new["prefix"]}},
    )
    return key, public_key(new), public_key(record | {"expires_at": expires})
