"""Exports against real services, each format read back with its own library (pyarrow, webdataset, datasets)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from producer.errors import BadInput
from producer.export import export
from producer.export_rows import select
from producer.queries import results
from producer.submit import submit
from storage.apikeys import ApiKeys
from storage.blobs import ImageStore
from storage.evaluations import EvaluationStore
from storage.jobs import JobStore
from tests.integration.test_dataset_inputs import make_shard
from tests.integration.test_producer_submit import random_jpeg

OWNER = "xena"


@pytest.fixture(scope="module")
def captioned(psettings, tmp_path_factory):  # noqa: F811
    """A job of two webdataset shards (6 samples) for blip and git; the workers' store call records blip's captions
    for all and git's for all but one, which stays queued."""
    folder = tmp_path_factory.mktemp("shards")
    keys = []
    for s in range(2):
        samples = {}
        for i in range(3):
            key = f"sample{s}{i}"
            keys.append(key)
            samples[key] = {"jpg": random_jpeg(900 + s * 3 + i), "json": json.dumps({"n": s * 3 + i}).encode()}
        make_shard(folder / f"{s:05}.tar", samples)
    job = submit(psettings, [str(folder / "{00000..00001}.tar")], "blip,git", owner=OWNER)
    items = {r["meta"]["key"]: r for r in results(psettings, job.job_id, OWNER) if r["model"] == "blip"}
    jobs = JobStore(psettings)
    for model in ("blip", "git"):
        done = keys if model == "blip" else keys[:-1]
        jobs.finish_items(
            job.job_id,
            OWNER,
            model,
            "default",
            [
                {
                    "sha256": items[k]["sha256"],
                    "state": "done",
                    "caption": f"{model} says {k}",
                    "checkpoint": f"tiny/{model}",
                    "file_name": items[k]["file_name"],
                    "meta": items[k]["meta"],
                }
                for k in done
            ],
        )
    EvaluationStore(psettings).insert(
        {
            "model": "blip",
            "checkpoint": "tiny/blip",
            "preset": "default",
            "scores": {"CIDEr": 0.4321, "BLEU-4": 0.1234},
            "created_at": datetime.now(UTC),
            "scope": {},
        }
    )
    return job.job_id, keys, {k: items[k]["sha256"] for k in keys}


def expect_row(row: dict, key: str, shas: dict, keys: list[str]) -> None:
    assert row["sha256"] == shas[key] and row["key"] == key
    assert row["caption_blip_default"] == f"blip says {key}" and row["checkpoint_blip_default"] == "tiny/blip"
    assert row["caption_git_default"] == (None if key == keys[-1] else f"git says {key}")
    meta = row["meta"] if isinstance(row["meta"], dict) else json.loads(row["meta"])
    assert meta["key"] == key and meta["json"]["n"] == keys.index(key)


def test_parquet_export_is_typed_one_row_per_image_in_submission_order(psettings, captioned, tmp_path):
    job_id, keys, shas = captioned
    done = export(psettings, select(psettings, OWNER, job=job_id), "parquet", str(tmp_path))
    table = pq.read_table(tmp_path / "captions.parquet")
    assert done["rows"] == 6 and table.num_rows == 6
    assert table.schema.field("created_at").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field("caption_blip_default").type == pa.string()
    rows = table.to_pylist()
    assert [r["key"] for r in rows] == keys
    for row in rows:
        expect_row(row, row["key"], shas, keys)
        assert row["job_id"] == job_id and row["updated_at"] >= row["created_at"]


def test_jsonl_and_csv_exports_hold_the_same_rows(psettings, captioned, tmp_path):
    job_id, keys, shas = captioned
    sel = select(psettings, OWNER, job=job_id)
    export(psettings, sel, "jsonl", str(tmp_path / "j"))
    export(psettings, sel, "csv", str(tmp_path / "c"))
    lines = [json.loads(x) for x in (tmp_path / "j" / "captions.jsonl").read_text().splitlines()]
    with open(tmp_path / "c" / "captions.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["key"] for r in lines] == [r["key"] for r in table] == keys
    for row in lines:
        expect_row(row, row["key"], shas, keys)
    for row in table:
        expect_row(row | {"caption_git_default": row["caption_git_default"] or None}, row["key"], shas, keys)


def test_webdataset_export_keeps_keys_and_source_shards(psettings, captioned, tmp_path):
    import webdataset as wds

    job_id, keys, shas = captioned
    export(psettings, select(psettings, OWNER, job=job_id), "webdataset", str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.tar", "00001.tar"]
    samples = list(wds.WebDataset([str(tmp_path / "00000.tar"), str(tmp_path / "00001.tar")], shardshuffle=False))
    assert [s["__key__"] for s in samples] == keys
    for sample in samples:
        key = sample["__key__"]
        expect_row(json.loads(sample["json"]), key, shas, keys)
        assert sample["txt"].decode() == f"blip says {key}\n"


def test_hf_export_loads_with_datasets_and_has_a_dataset_card(psettings, captioned, tmp_path):
    from datasets import load_dataset

    job_id, keys, shas = captioned
    export(psettings, select(psettings, OWNER, job=job_id), "hf", str(tmp_path / "ds"))
    ds = load_dataset(
        "parquet",
        data_files=str(tmp_path / "ds" / "data" / "*.parquet"),
        split="train",
        cache_dir=str(tmp_path / "cache"),
    )
    assert ds.num_rows == 6 and ds["key"] == keys
    for row in ds:
        expect_row(row, row["key"], shas, keys)
    by_card = load_dataset(str(tmp_path / "ds"), split="train", cache_dir=str(tmp_path / "cache2"))
    assert by_card["sha256"] == [shas[k] for k in keys]
    card = (tmp_path / "ds" / "README.md").read_text()
    assert f"job {job_id}" in card and "Images (rows): 6" in card and "Exported: " in card
    assert "| `caption_blip_default` | blip | default | tiny/blip, " in card and "CIDEr 0.4321" in card
    assert "| `caption_git_default` | git | default | none yet |" in card


def test_owner_export_by_model_to_s3_and_only_under_the_owners_prefix(psettings, captioned):
    job_id, keys, shas = captioned
    sel = select(psettings, OWNER, model="blip", since="1d")
    assert sel.runs == (("blip", "default"),)
    dest = f"s3://{psettings.s3_bucket}/owners/{OWNER}/exports/blip"
    done = export(psettings, sel, "parquet", dest)
    assert done["rows"] == 6 and done["files"] == ["captions.parquet"]
    data = ImageStore(psettings).get_key(f"owners/{OWNER}/exports/blip/captions.parquet")
    rows = pq.read_table(io.BytesIO(data)).to_pylist()
    assert sorted(r["sha256"] for r in rows) == sorted(shas.values())
    assert {r["caption_blip_default"] for r in rows} == {f"blip says {k}" for k in keys}
    assert "caption_git_default" not in rows[0]
    with pytest.raises(BadInput, match=f"under s3://{psettings.s3_bucket}/owners/{OWNER}/"):
        export(psettings, sel, "parquet", f"s3://{psettings.s3_bucket}/owners/someone-else/x")
    with pytest.raises(BadInput, match="--format must be one of parquet, jsonl, csv, webdataset, hf"):
        export(psettings, sel, "xlsx", "/tmp/never")
    # Another owner's job reads as missing
    from storage.errors import NotFound

    with pytest.raises(NotFound):
        select(psettings, "yuri", job=job_id)


def test_api_serves_a_jobs_results_as_parquet_to_its_owner_only(psettings, captioned):
    from producer.api import create_app

    job_id, keys, shas = captioned
    client = TestClient(create_app(psettings))
    mine = {"X-API-Key": ApiKeys(psettings).create(OWNER, "premium")[0]}
    theirs = {"X-API-Key": ApiKeys(psettings).create("yuri", "premium")[0]}
    resp = client.get(f"/v1/jobs/{job_id}/results?format=parquet", headers=mine)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/vnd.apache.parquet"
    rows = pq.read_table(io.BytesIO(resp.content)).to_pylist()
    assert [r["key"] for r in rows] == keys
    for row in rows:
        expect_row(row, row["key"], shas, keys)
    assert client.get(f"/v1/jobs/{job_id}/results?format=parquet", headers=theirs).status_code == 404
