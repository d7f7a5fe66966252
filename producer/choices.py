"""choices: the models, tiers, presets and names a request may use, each checked with a message listing the valid
ones."""

from __future__ import annotations

import re

# capq.names holds the model names so that the producer never imports workers.models (and with it torch).
from capq.names import MODEL_NAMES, TIERS
from capq.presets import preset_names
from producer.errors import BadInput

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def parse_models(models: str | list[str] | tuple[str, ...]) -> list[str]:
    """'blip,git' or ['blip', 'git'] -> ['blip', 'git'] (order kept, duplicates dropped); BadInput if unknown."""
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, (list, tuple)) or not all(isinstance(m, str) for m in models):
        raise BadInput(f"models must be names (strings) from {', '.join(MODEL_NAMES)}")
    names: list[str] = []
    for part in models:
        for name in (p.strip() for p in part.split(",")):
            if name and name not in names:
                names.append(name)
    if not names:
        raise BadInput(f"name at least one model: {', '.join(MODEL_NAMES)}")
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown:
        raise BadInput(f"unknown model(s) {', '.join(map(repr, unknown))}; models are {', '.join(MODEL_NAMES)}")
    return names


def check_model(name: str) -> str:
    """Exactly one known model name."""
    if name not in MODEL_NAMES:
        raise BadInput(f"unknown model {name!r}; models are {', '.join(MODEL_NAMES)}")
    return name


def check_tier(tier: str) -> str:
    if not isinstance(tier, str) or tier not in TIERS:
        raise BadInput(f"unknown tier {tier!r}; tiers are {', '.join(TIERS)}")
    return tier


def check_preset(models: list[str], preset: str) -> str:
    """The preset must exist for every model named (capq.presets holds them)."""
    if not isinstance(preset, str):
        raise BadInput("preset must be a name (string)")
    missing = [m for m in models if preset not in preset_names(m)]
    if missing:
        have = "; ".join(f"{m}: {', '.join(preset_names(m))}" for m in missing)
        raise BadInput(f"unknown preset {preset!r} for {', '.join(missing)}; available presets are {have}")
    return preset


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _ID.match(job_id):
        raise BadInput(f"job id {job_id!r} is not valid: use 1-64 letters, digits, '.', '_' or '-'")
    return job_id


def check_owner(owner: str) -> str:
    if not isinstance(owner, str) or not _OWNER.match(owner):
        raise BadInput(f"owner {owner!r} is not valid: use 1-64 letters, digits, '.', '_', '@' or '-'")
    return owner


def check_key(idempotency_key: str) -> str:
    if not isinstance(idempotency_key, str) or not (1 <= len(idempotency_key) <= 200):
        raise BadInput("idempotency key must be a string of 1-200 characters")
    return idempotency_key
