"""shard: the caption shard message (one model batch of image ids): its fields, version and wire layout, in one
place."""

from __future__ import annotations

from dataclasses import dataclass

from capq.errors import InputError

VERSION = 1


class BadShard(InputError):
    """A message this code cannot read (a newer version, or not a shard at all): refused, never retried."""


@dataclass(frozen=True)
class ShardMessage:
    """What a caption worker is sent: the job, the model and preset, and the shard's image ids."""

    job_id: str
    model: str
    preset: str
    shas: list[str]
    enqueued_at: float | None = None
    v: int = VERSION

    def to_args(self) -> list:
        # Positional on the wire, the version last: a message sent before the version field existed (v0: four or
        # five fields) still reads, and the queue and dead-letter readers that only need args[0] and args[3] agree.
        return [self.job_id, self.model, self.preset, list(self.shas), self.enqueued_at, VERSION]

    @classmethod
    def from_args(cls, args) -> ShardMessage:
        """Read a message's args; BadShard says what was wrong with one this code cannot read."""
        args = list(args) if isinstance(args, (list, tuple)) else [args]
        if len(args) in (4, 5):
            v = 0
        elif len(args) == 6 and args[5] == VERSION:
            v, args = VERSION, args[:5]
        else:
            version = args[5] if len(args) == 6 else "unknown"
            raise BadShard(
                f"shard message of version {version} with {len(args)} fields; this worker reads "
                f"versions 0 and {VERSION}: upgrade the worker, or re-drive it from the dead letters"
            )
        job_id, model, preset, shas, *rest = args
        if not (
            isinstance(job_id, str)
            and isinstance(model, str)
            and isinstance(preset, str)
            and isinstance(shas, list)
            and all(isinstance(s, str) for s in shas)
        ):
            raise BadShard(f"not a shard message: {str(args)[:200]}")
        enqueued_at = float(rest[0]) if rest and rest[0] else None
        return cls(job_id, model, preset, shas, enqueued_at, v)


def shard_of(args) -> ShardMessage | None:
    """The shard in a queued message's or a dead letter's args, or None for anything else (never raises)."""
    try:
        return ShardMessage.from_args(args)
    except (BadShard, TypeError, ValueError):
        return None
