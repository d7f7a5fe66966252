"""The shared core (issue 13): the versioned shard message, the heartbeat key, the catalogue and the error hierarchy."""

from __future__ import annotations

import os
import socket

import pytest

from capq.catalog import CATALOG, describe_models
from capq.celery_app import beat_schedule, create_app
from capq.errors import BadInput, CapqError, InputError
from capq.names import MODEL_NAMES, heartbeat_key, worker_id, worker_of_heartbeat
from capq.settings import load_settings
from capq.shard import VERSION, BadShard, ShardMessage, shard_of

SHAS = ["a" * 64, "b" * 64]


def test_a_shard_message_round_trips_with_its_version_last():
    message = ShardMessage("job-1", "blip", "default", SHAS, 12.5)
    args = message.to_args()
    assert args == ["job-1", "blip", "default", SHAS, 12.5, VERSION]
    assert ShardMessage.from_args(args) == message


@pytest.mark.parametrize("old", [["job-1", "blip", "default", SHAS], ["job-1", "blip", "default", SHAS, 12.5]])
def test_a_message_sent_before_the_version_field_is_still_read(old):
    message = ShardMessage.from_args(old)
    assert (message.v, message.job_id, message.model, message.shas) == (0, "job-1", "blip", SHAS)


@pytest.mark.parametrize(
    "bad,needle",
    [
        (["job-1", "blip", "default", SHAS, 12.5, VERSION + 1], f"version {VERSION + 1}"),
        (["job-1", "blip"], "with 2 fields"),
        (["job-1", "blip", "default", "not-a-list"], "not a shard message"),
    ],
)
def test_a_message_this_code_cannot_read_is_refused_with_what_to_do(bad, needle):
    with pytest.raises(BadShard, match=needle) as err:
        ShardMessage.from_args(bad)
    assert isinstance(err.value, InputError)  # permanent: dead-lettered, never retried
    assert shard_of(bad) is None


def test_the_caption_task_dead_letters_a_message_of_a_newer_version(monkeypatch):
    from workers import tasks

    letters: list[str] = []
    monkeypatch.setattr(tasks, "_dead_letter", lambda task, args, error: letters.append(error))
    assert tasks.caption_shard("job-1", "blip", "default", SHAS, 1.0, VERSION + 1) == {"dead": True}
    assert len(letters) == 1 and letters[0].startswith("BadShard: shard message of version")


def test_the_heartbeat_key_is_built_in_one_place():
    wid = worker_id("blip", 42)
    assert wid == f"blip@{socket.gethostname()}:42" and worker_id("git").endswith(f":{os.getpid()}")
    assert heartbeat_key(wid) == f"capq:worker:{wid}" and worker_of_heartbeat(heartbeat_key(wid)) == wid
    assert heartbeat_key(worker_id("*", "*")) == f"capq:worker:*@{socket.gethostname()}:*"


def test_the_catalogue_names_every_model_with_its_presets_and_no_torch():
    import subprocess
    import sys

    assert tuple(CATALOG) == MODEL_NAMES
    assert all(row["presets"][0] == "default" for row in describe_models())
    probe = (
        "import sys, capq.catalog, capq.celery_app, capq.shard; "
        "print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"


def test_every_package_error_is_a_capq_error():
    from evaluation.errors import EvaluationError, MetricError
    from producer.errors import ProducerError
    from storage.errors import NotFound, ServiceUnreachable

    assert all(
        issubclass(e, CapqError) for e in (ProducerError, BadInput, NotFound, ServiceUnreachable, EvaluationError)
    )
    assert issubclass(MetricError, ValueError) and issubclass(BadInput, InputError)


def test_the_app_binds_the_tier_weights_and_beat_needs_no_role_imported():
    settings = load_settings({"CAPQ_TIER_WEIGHTS": "premium=1,plus=1,free=0"})
    cycle = create_app(settings).conf.broker_transport_options["queue_order_strategy"]()
    assert cycle.slots == ["premium", "plus"]
    assert {e["task"] for e in beat_schedule(settings).values()} >= {"capq.evaluate", "capq.quality"}
