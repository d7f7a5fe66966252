"""apikeys: API keys stored as sha256 hashes, each mapping to an owner and a tier; the key itself is shown once."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from capq.settings import Settings
from storage.db import mongo, translated

KEY_PREFIX = "capq_"
PREFIX_CHARS = 8


def hash_key(key: str) -> str:
    # Keys are 256-bit random tokens, so a plain sha256 is enough (no slow KDF needed, unlike passwords).
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeys:
    """The api_keys collection: {key_hash, prefix, owner, tier, note, created_at, revoked_at, role, expires_at?}."""

    def __init__(self, settings: Settings):
        self.mongo = mongo(settings)
        self.coll = self.mongo["api_keys"]

    @translated
    def create(self, owner: str, tier: str, note: str | None = None, role: str = "user") -> tuple[str, dict]:
        """Make a key for `owner` at `tier`; returns (the key, its record). Only the hash is stored."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        doc = {
            "key_hash": hash_key(key),
            "prefix": key[: len(KEY_PREFIX) + PREFIX_CHARS],
            "owner": owner,
            "tier": tier,
            "note": note,
            "created_at": datetime.now(UTC),
            "revoked_at": None,
            "role": role,
        }
        self.coll.insert_one(doc)
        doc.pop("_id", None)
        return key, {k: v for k, v in doc.items() if k != "key_hash"}

    @translated
    def lookup(self, key: str) -> dict | None:
        """The live record for a presented key, or None (unknown or revoked)."""
        if not isinstance(key, str) or not key.startswith(KEY_PREFIX):
            return None
        doc = self.coll.find_one({"key_hash": hash_key(key)}, {"_id": 0})
        if doc and doc.get("expires_at") and doc["expires_at"] <= datetime.now(UTC):
            return None  # a rotated key past its grace period
        return doc if doc and doc.get("revoked_at") is None else None

    @translated
    def list(self, owner: str | None = None) -> list[dict]:
        query = {"owner": owner} if owner else {}
        return list(self.coll.find(query, {"_id": 0, "key_hash": 0}).sort("created_at", -1))

    @translated
    def revoke(self, prefix: str) -> list[dict]:
        """Revoke the live key(s) whose shown prefix is `prefix`; returns the records revoked."""
        found = list(self.coll.find({"prefix": prefix, "revoked_at": None}, {"_id": 0, "key_hash": 0}))
        if found:
            self.coll.update_many({"prefix": prefix, "revoked_at": None}, {"$set": {"revoked_at": datetime.now(UTC)}})
        return found
