"""Producer inputs: how paths, folders, manifests, s3:// keys and uploads become candidates, and what is refused."""

from __future__ import annotations

import json

import pytest

from capq.settings import load_settings
from producer.errors import BadInput
from producer.sources import Refused, check_meta, from_api_items, from_paths, owner_prefix, s3_candidate, upload_name

SETTINGS = load_settings({"CAPQ_S3_BUCKET": "capq-images"})
SHA = "ab" + "0" * 62


def names(expanded):
    return [c.name for c in expanded.candidates]


def test_folder_is_recursive_sorted_and_skips_hidden(tmp_path):
    # Given a folder with nested and hidden files
    for rel in ("b.jpg", "a.jpg", "sub/c.png", ".hidden.jpg", ".git/d.jpg", "sub/.e.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    # I expect every visible file, in sorted order, and nothing hidden
    got = names(from_paths([tmp_path], SETTINGS, "alice"))
    assert got == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"), str(tmp_path / "sub" / "c.png")]


def test_missing_argument_is_bad_input_naming_it(tmp_path):
    with pytest.raises(BadInput, match="nope.jpg: no such file or folder"):
        from_paths([tmp_path / "nope.jpg"], SETTINGS, "alice")


def test_jsonl_manifest_resolves_relative_paths_and_rejects_bad_lines_with_line_numbers(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"x")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "\n".join(
            [
                json.dumps({"path": "imgs/a.jpg", "meta": {"label": "cat"}}),
                json.dumps({"path": "imgs/missing.jpg"}),
                "{broken",
                json.dumps({"path": "imgs/a.jpg", "s3": "s3://x/y"}),
                "",
                json.dumps({"path": "imgs/a.jpg", "meta": {"$where": 1}}),
            ]
        )
        + "\n"
    )
    out = from_paths([manifest], SETTINGS, "alice")
    assert [(c.name, c.meta) for c in out.candidates] == [("imgs/a.jpg", {"label": "cat"})]
    assert out.candidates[0].read() == b"x"
    reasons = [(r["file"], r["reason"]) for r in out.rejected]
    assert len(reasons) == 4
    assert reasons[0][0] == "imgs/missing.jpg" and "line 2" in reasons[0][1] and "no such file" in reasons[0][1]
    assert "line 3" in reasons[1][1] and "not valid JSON" in reasons[1][1]
    assert "line 4" in reasons[2][1] and "exactly one of" in reasons[2][1]
    assert "line 6" in reasons[3][1] and "meta keys" in reasons[3][1]


def test_csv_manifest_keeps_metadata_columns(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,split\na.jpg,cat,val\ngone.jpg,dog,\n")
    out = from_paths([manifest], SETTINGS, "alice")
    assert [(c.name, c.meta) for c in out.candidates] == [("a.jpg", {"label": "cat", "split": "val"})]
    assert out.rejected[0]["file"] == "gone.jpg" and "line 3" in out.rejected[0]["reason"]


def test_csv_manifest_without_path_column_is_bad_input(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,label\na.jpg,cat\n")
    with pytest.raises(BadInput, match="needs a 'path' column"):
        from_paths([manifest], SETTINGS, "alice")


@pytest.mark.parametrize(
    "uri,needle",
    [
        ("s3://other-bucket/owners/alice/a.jpg", "bucket 'other-bucket' is not readable"),
        ("s3://capq-images/owners/bob/a.jpg", "outside your prefix"),
        ("s3://capq-images/owners/alice/../bob/a.jpg", "'..' segments"),
        ("s3://capq-images/owners/alice//a.jpg", "empty"),
        ("s3://capq-images/owners/alice/", "empty"),
        ("s3://capq-images/images/sha256/cd/" + SHA, "outside your prefix"),  # fan-out must match the sha
        ("/etc/passwd", "not an s3:// URI"),
        ("../../etc/passwd", "not an s3:// URI"),
    ],
)
def test_s3_rule_refuses_what_is_not_the_owners(uri, needle):
    with pytest.raises(Refused, match=needle):
        s3_candidate(uri, SETTINGS, "alice")


def test_s3_rule_allows_own_prefix_and_content_addresses():
    staged = s3_candidate(f"s3://capq-images/{owner_prefix('alice')}cats/a.jpg", SETTINGS, "alice")
    assert staged.read is not None and staged.sha256 is None
    known = s3_candidate(f"s3://capq-images/images/sha256/ab/{SHA}", SETTINGS, "alice")
    assert known.sha256 == SHA and known.read is None


def test_s3_argument_outside_the_rule_is_a_rejection_not_a_crash():
    out = from_paths(["s3://elsewhere/k.jpg"], SETTINGS, "alice")
    assert out.candidates == [] and "not readable" in out.rejected[0]["reason"]


@pytest.mark.parametrize(
    "items,needle",
    [
        ([{"path": "../../etc/passwd"}], "never reads files on the server"),
        ([{"path": "/etc/passwd"}], "never reads files on the server"),
        ([{"s3": "../../etc/passwd"}], "not an s3:// URI"),
        ([{"s3": "s3://capq-images/owners/bob/x.jpg"}], "outside your prefix"),
        ([{"sha256": "not-a-sha"}], "64 lowercase hex"),
        ([{"s3": "s3://capq-images/owners/alice/x.jpg", "sha256": SHA}], "exactly one of"),
        ([{"url": "http://example.com/a.jpg", "sha256": SHA}], "exactly one of"),
        ([{"url": ["http://example.com/a.jpg"]}], "url must be a string"),
        ([{"url": f"http://example.com/{i}.jpg"} for i in range(1001)], "1,001 url items is over the 1,000-URL cap"),
        ([{"file": "http://example.com/a.jpg"}], "unexpected keys: \\['file'\\]"),
        (["a.jpg"], "not an object"),
        ([], "non-empty list"),
        ({"s3": "x"}, "non-empty list"),
    ],
)
def test_api_items_refuse_anything_but_own_keys_shas_and_urls(items, needle):
    with pytest.raises(BadInput, match=needle):
        from_api_items(items, SETTINGS, "alice")


def test_api_items_accept_own_keys_and_shas():
    got = from_api_items(
        [{"s3": "s3://capq-images/owners/alice/a.jpg", "meta": {"k": "v"}}, {"sha256": SHA}], SETTINGS, "alice"
    )
    assert [c.meta for c in got] == [{"k": "v"}, None] and got[1].sha256 == SHA


def test_upload_names_are_labels_never_paths():
    assert upload_name("../../etc/passwd", 0) == "passwd"
    assert upload_name("C:\\photos\\cat.jpg", 0) == "cat.jpg"
    assert upload_name("..", 3) == "upload-3" and upload_name(None, 4) == "upload-4"


def test_meta_must_be_a_small_object_with_safe_keys():
    assert check_meta({"a": 1}) == {"a": 1}
    for bad in ([1], {"$ne": 1}, {"a.b": 1}, {"x": "y" * 5000}):
        with pytest.raises(Refused):
            check_meta(bad)
