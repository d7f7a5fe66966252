"""aliases: parse alias weights, split images between an alias's models by sha256, and expand a submission's names."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from capq.names import MODEL_NAMES
from capq.settings import Settings
from producer import choices
from producer.errors import BadInput
from storage.aliases import AliasStore

_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
Route = Callable[[str], list[str]]


def check_alias_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadInput(
            f"alias name {name!r} is not valid: start with a lowercase letter, then up to 63 lowercase "
            "letters, digits, '.', '_' or '-'"
        )
    if name in MODEL_NAMES:
        raise BadInput(f"{name!r} is a model name; an alias needs a name of its own")
    return name


def parse_arms(spec: str | list[str]) -> list[dict]:
    """'blip:90, git:10' (or ['blip:90', 'git:10']) -> [{model: blip, weight: 90}, {model: git, weight: 10}]."""
    parts = [p.strip() for s in ([spec] if isinstance(spec, str) else spec) for p in s.split(",") if p.strip()]
    if not parts:
        raise BadInput("give the alias's models with weights, e.g. 'blip:90,git:10'")
    arms: list[dict] = []
    for part in parts:
        model, sep, weight = part.partition(":")
        model = model.strip()
        if not sep or not weight.strip().isdigit():
            raise BadInput(f"{part!r}: write MODEL:WEIGHT with a whole-number weight, e.g. blip:90")
        choices.check_model(model)
        if any(a["model"] == model for a in arms):
            raise BadInput(f"model {model!r} appears twice; give each model once")
        arms.append({"model": model, "weight": int(weight)})
    if sum(a["weight"] for a in arms) <= 0:
        raise BadInput("at least one model needs a weight above 0")
    return arms


def pick(alias: str, arms: list[dict], sha256: str) -> str:
    """The arm an image goes to: a uniform draw from sha256(alias:image sha) over the cumulative weights. The same
    image and weights always give the same model, so a resubmission lands where it did before; raising one arm's
    weight moves only images into that arm."""
    total = sum(a["weight"] for a in arms)
    point = int.from_bytes(hashlib.sha256(f"{alias}:{sha256}".encode()).digest()[:8], "big") / 2**64 * total
    for arm in arms:
        point -= arm["weight"]
        if point < 0 and arm["weight"] > 0:
            return arm["model"]
    return next(a["model"] for a in reversed(arms) if a["weight"] > 0)


def expand(settings: Settings, models: str | list[str] | tuple[str, ...]) -> tuple[list[str], Route, dict]:
    """A submission's model names, where any may be an alias -> (models the job may use, image sha -> its models,
    {alias: arms} as read now). Without aliases this is choices.parse_models and every image gets every model."""
    names = []
    if isinstance(models, (list, tuple)) and all(isinstance(m, str) for m in models) or isinstance(models, str):
        names = list(
            dict.fromkeys(
                n.strip() for m in ([models] if isinstance(models, str) else models) for n in m.split(",") if n.strip()
            )
        )
    maybe_aliases = [n for n in names if n not in MODEL_NAMES and _NAME.match(n)]
    found = AliasStore(settings).get_many(maybe_aliases) if maybe_aliases else {}
    if not found:
        try:
            plain = choices.parse_models(models)
        except BadInput as exc:
            raise BadInput(f"{exc}; or name a model alias (capq aliases list)") from None
        return plain, lambda sha: plain, {}
    plain = choices.parse_models([n for n in names if n not in found]) if len(found) < len(names) else []
    used = list(dict.fromkeys(plain + [a["model"] for arms in found.values() for a in arms if a["weight"] > 0]))

    def route(sha: str) -> list[str]:
        return list(dict.fromkeys(plain + [pick(name, arms, sha) for name, arms in found.items()]))

    return used, route, found
