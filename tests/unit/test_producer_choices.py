"""Producer choices and query values: each wrong value gets a message naming what is allowed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from producer import choices
from producer.errors import BadInput
from producer.queries import decode_cursor, encode_cursor, image_sha, parse_since, plain


def test_models_parse_from_lists_and_commas():
    assert choices.parse_models("blip, git,blip") == ["blip", "git"]
    assert choices.parse_models(["vit-gpt2", "blip2"]) == ["vit-gpt2", "blip2"]


@pytest.mark.parametrize(
    "call,needle",
    [
        (lambda: choices.parse_models("blip,gpt5"), "unknown model(s) 'gpt5'; models are blip, blip2, git, vit-gpt2"),
        (lambda: choices.parse_models(""), "name at least one model"),
        (lambda: choices.parse_models({"$ne": None}), "models must be names"),
        (lambda: choices.check_tier("gold"), "unknown tier 'gold'; tiers are premium, plus, free"),
        (lambda: choices.check_preset(["blip", "git"], "fancy"), "unknown preset 'fancy' for blip, git"),
        (lambda: choices.check_job_id("../x"), "job id '../x' is not valid"),
        (lambda: choices.check_owner("a b"), "owner 'a b' is not valid"),
    ],
)
def test_wrong_choices_name_the_valid_ones(call, needle):
    with pytest.raises(BadInput) as err:
        call()
    assert needle in str(err.value)


def test_model_names_match_the_worker_registry():
    # The producer keeps torch out by not importing workers.models; the names must still agree.
    from workers.models import MODELS

    assert tuple(MODELS) == choices.MODEL_NAMES


@pytest.mark.parametrize("value", [{"$ne": None}, ["a"], '{"$ne": null}', "$where", True, b"x"])
def test_filter_values_must_be_plain(value):
    with pytest.raises(BadInput, match="plain"):
        plain("model", value)


def test_since_accepts_iso_epoch_and_ages():
    now = datetime(2024, 5, 2, tzinfo=UTC)
    assert parse_since("2024-05-01", now) == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_since("2024-05-01T12:00:00Z", now) == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_since(0, now) == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    with pytest.raises(BadInput, match="since must be an ISO time"):
        parse_since("yesterday", now)


def test_image_filter_is_a_sha_or_for_the_cli_a_file(tmp_path):
    sha = "A" * 64
    assert image_sha(sha, allow_files=False) == "a" * 64
    f = tmp_path / "x.jpg"
    f.write_bytes(b"abc")
    assert image_sha(str(f), allow_files=True) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with pytest.raises(BadInput, match="sha256"):
        image_sha(str(f), allow_files=False)  # the API never opens paths


def test_cursor_round_trips_and_rejects_forgeries():
    at = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    cursor = encode_cursor({"updated_at": at, "_id": "65f0c0ffee0000000000beef"})
    assert decode_cursor(cursor) == (at, "65f0c0ffee0000000000beef")
    with pytest.raises(BadInput, match="cursor"):
        decode_cursor("bm90LWEtY3Vyc29y")
