"""inputs: every kind of submission input (files, manifests, Parquet, shards, s3 prefixes) as one lazy stream."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from capq.settings import Settings
from producer import shards
from producer.errors import BadInput
from producer.sources import REFERENCES, Candidate, Refused, _entry, iter_paths, owner_prefix, s3_candidate
from storage.blobs import image_store

Item = Candidate | dict  # a candidate, or a rejection {file, reason}


def _columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        names = pq.ParquetFile(path).schema_arrow.names
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise BadInput(f"manifest {path} is not a readable Parquet file: {exc}") from None
    if not set(REFERENCES) & set(names):
        raise BadInput(f"manifest {path} needs a 'path', 's3', 'url' or 'sha256' column; found {names}")
    return names


def _parquet(path: Path, settings: Settings, owner: str) -> Iterator[Item]:
    """One entry per row, read a row group batch at a time; the other columns become the item's metadata."""
    import pyarrow.parquet as pq

    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for values in batch.to_pylist():
            row += 1
            # Through JSON: timestamps, decimals and bytes become plain values MongoDB and exports can hold.
            meta = json.loads(
                json.dumps({k: v for k, v in values.items() if k not in REFERENCES and v is not None}, default=str)
            )
            refs = {k: values[k] for k in REFERENCES if values.get(k) not in (None, "")}
            if str(refs.get("path", "")).startswith("s3://"):
                refs["s3"] = refs.pop("path")
            yield _entry(f"manifest {path} row {row}", {**refs, "meta": meta or None}, path.parent, settings, owner)


def _s3_prefix(uri: str, settings: Settings, owner: str) -> Iterator[Item]:
    """Every image under an s3://bucket/prefix/ of the owner's own; each key passes the single-key rule too."""
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    mine = owner_prefix(owner)
    if bucket != settings.s3_bucket or not prefix.startswith(mine) or ".." in prefix.split("/"):
        yield {"file": uri, "reason": f"prefix is outside your own; allowed: s3://{settings.s3_bucket}/{mine}..."}
        return
    for key in image_store(settings).list_keys(prefix):
        if key.rsplit(".", 1)[-1].lower() not in shards.IMAGE_EXTS:
            continue
        try:
            yield s3_candidate(f"s3://{bucket}/{key}", settings, owner)
        except Refused as exc:
            yield {"file": f"s3://{bucket}/{key}", "reason": str(exc)}


def check_named(items: Iterable, settings: Settings, owner: str) -> None:
    """Cheap checks of what was named, before a job exists: a typo is BadInput, never a half-made job."""
    for raw in items:
        if isinstance(raw, Candidate):
            continue
        text = os.fspath(raw)
        if shards.is_shard_spec(text):
            shards.check_shards(text)
        elif text.endswith(".parquet") and not text.startswith("s3://"):
            _columns(Path(text))
        elif not text.startswith("s3://") and not Path(text).exists():
            raise BadInput(
                f"{text}: no such file or folder; name image files, folders, .jsonl/.csv/.parquet "
                "manifests, .tar shards or s3:// URIs"
            )


def iter_inputs(items: Iterable, settings: Settings, owner: str) -> Iterator[Item]:
    """Everything named, lazily: candidates and rejections in input order, however large the input.

    * `s3://bucket/prefix/` (ending in '/'): every image under the owner's own prefix.
    * `*.tar` or a brace pattern `shards/{00000..00099}.tar`, local or s3://: webdataset samples.
    * `*.parquet`: a manifest with a path, s3, url or sha256 column; other columns are metadata.
    * Candidates pass through; anything else as `sources.iter_paths` (files, folders, .jsonl/.csv, s3:// keys).
    """
    for raw in items:
        if isinstance(raw, Candidate):
            yield raw
            continue
        text = os.fspath(raw)
        if text.startswith("s3://") and text.endswith("/"):
            yield from _s3_prefix(text, settings, owner)
        elif shards.is_shard_spec(text):
            yield from shards.iter_shards(text, settings, owner)
        elif text.endswith(".parquet") and not text.startswith("s3://"):
            yield from _parquet(Path(text), settings, owner)
        else:
            yield from iter_paths([text], settings, owner)
