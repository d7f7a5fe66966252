"""export: captions as Parquet, JSONL, CSV, webdataset shards or a Hugging Face dataset folder, streamed."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from capq.settings import Settings
from producer.errors import BadInput
from producer.export_rows import PAGE, Selection, column, rows
from producer.sources import owner_prefix
from storage.blobs import image_store
from storage.evaluations import EvaluationStore

FORMATS = ("parquet", "jsonl", "csv", "webdataset", "hf")
SHARD_SAMPLES = 10_000  # samples per webdataset shard when the rows carry no source shard


def schema(sel: Selection):
    """Typed columns: ids and names as strings, times as UTC timestamps, one caption and checkpoint per run."""
    import pyarrow as pa

    fields = [
        ("sha256", pa.string()),
        ("file_name", pa.string()),
        ("key", pa.string()),
        ("job_id", pa.string()),
        ("meta", pa.string()),
        ("created_at", pa.timestamp("ms", tz="UTC")),
        ("updated_at", pa.timestamp("ms", tz="UTC")),
    ]
    for model, preset in sel.runs:
        fields += [(column("caption", model, preset), pa.string()), (column("checkpoint", model, preset), pa.string())]
    return pa.schema(fields)


def _pages(items: Iterable[dict]) -> Iterator[list[dict]]:
    page: list[dict] = []
    for row in items:
        page.append(row)
        if len(page) == PAGE:
            yield page
            page = []
    if page:
        yield page


def write_parquet(items: Iterable[dict], sel: Selection, path: Path) -> int:
    """Rows to one Parquet file, a row group per page; -> rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 0
    with pq.ParquetWriter(path, schema(sel), compression="zstd") as writer:
        for page in _pages(items):
            writer.write_table(pa.Table.from_pylist(page, schema(sel)))
            n += len(page)
    return n


def _plain(row: dict) -> dict:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def write_jsonl(items: Iterable[dict], sel: Selection, path: Path) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for row in items:
            f.write(json.dumps(_plain(row) | {"meta": json.loads(row["meta"]) if row["meta"] else None}) + "\n")
            n += 1
    return n


def write_csv(items: Iterable[dict], sel: Selection, path: Path) -> int:
    n = 0
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=schema(sel).names)
        writer.writeheader()
        for row in items:
            writer.writerow(_plain(row))
            n += 1
    return n


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(items: Iterable[dict], sel: Selection, folder: Path) -> int:
    """Caption shards beside the originals: a sample's key is kept, with `KEY.json` (every column) and `KEY.txt`
    (the first caption). Samples from a source shard `x.tar` go to `x.tar` here, in their order; rows without
    one (files, manifests) go to `captions-00000.tar`, ... of SHARD_SAMPLES each."""
    first = column("caption", *sel.runs[0])
    tar, current, used, n, numbered, filled = None, None, set(), 0, 0, 0
    try:
        for row in items:
            meta = json.loads(row["meta"]) if row["meta"] else {}
            source = Path(meta["shard"]).name if meta.get("shard") and row.get("key") else None
            if source is None:
                unnumbered = current is None or not current.startswith("captions-")
                source = f"captions-{numbered:05d}.tar" if unnumbered or filled == SHARD_SAMPLES else current
            if source != current:
                if tar is not None:
                    tar.close()
                name = source
                while name in used:  # a source shard met again later: a new shard, never an overwrite
                    name = f"{Path(name).stem}-more.tar"
                tar, current = tarfile.open(folder / name, "w"), source
                used.add(name)
                if source.startswith("captions-"):
                    numbered, filled = numbered + 1, 0
            key = row.get("key") or row["sha256"]
            _add(tar, f"{key}.json", json.dumps(_plain(row) | {"meta": meta or None}).encode())
            _add(tar, f"{key}.txt", ((row.get(first) or "") + "\n").encode())
            n, filled = n + 1, filled + 1
    finally:
        if tar is not None:
            tar.close()
    return n


def dataset_card(settings: Settings, sel: Selection, count: int) -> str:
    """README.md of an hf export: what it holds, from which models and checkpoints, and their latest scores."""
    evals = EvaluationStore(settings)
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/*.parquet",
        "---",
        f"# capq captions: {sel.describe()}",
        "",
        f"- Exported: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- Images (rows): {count}",
        f"- Caption columns: {len(sel.runs)}",
        "",
        "| column | model | preset | latest evaluation (checkpoint, date): scores |",
        "| --- | --- | --- | --- |",
    ]
    for model, preset in sel.runs:
        latest = next((e for e in evals.history(model, limit=50) if e.get("preset") in (None, preset)), None)
        scores = "none yet"
        if latest:
            shown = ", ".join(
                f"{k} {v:.4f}" for k, v in sorted(latest.get("scores", {}).items()) if isinstance(v, (int, float))
            )
            scores = f"{latest.get('checkpoint')}, {str(latest.get('created_at'))[:10]}: {shown}"
        lines.append(f"| `{column('caption', model, preset)}` | {model} | {preset} | {scores} |")
    lines += [
        "",
        "Checkpoints per caption are in the `checkpoint_<model>_<preset>` columns. Load with "
        '`datasets.load_dataset("parquet", data_files="data/*.parquet")` or `load_dataset(FOLDER)`.',
        "",
    ]
    return "\n".join(lines)


def write_hf(items: Iterable[dict], sel: Selection, folder: Path, settings: Settings) -> int:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    n = write_parquet(items, sel, folder / "data" / "train-00000-of-00001.parquet")
    (folder / "README.md").write_text(dataset_card(settings, sel, n), encoding="utf-8")
    return n


def _s3_dest(dest: str, settings: Settings, owner: str) -> str:
    """The key prefix of an s3:// destination: the configured bucket, under the owner's own prefix."""
    bucket, _, prefix = dest[len("s3://") :].partition("/")
    prefix = prefix.rstrip("/") + "/"
    if bucket != settings.s3_bucket or not prefix.startswith(owner_prefix(owner)) or ".." in prefix.split("/"):
        raise BadInput(f"export destination must be under s3://{settings.s3_bucket}/{owner_prefix(owner)}; got {dest}")
    return prefix


def export(settings: Settings, sel: Selection, fmt: str, dest: str) -> dict:
    """Write the selection to `dest` (a local folder, created if missing, or s3://bucket/owners/OWNER/...).

    Rows stream from MongoDB a page at a time into the files; an s3:// destination is written to a temporary
    folder first and uploaded file by file. -> {"rows", "files", "dest"}.
    """
    if fmt not in FORMATS:
        raise BadInput(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not sel.runs:
        raise BadInput(f"nothing to export: {sel.describe()} has no captions")
    remote = dest.startswith("s3://")
    prefix = _s3_dest(dest, settings, sel.owner) if remote else None
    folder = Path(tempfile.mkdtemp(prefix="capq-export-")) if remote else Path(dest)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        items = rows(settings, sel)
        if fmt == "webdataset":
            n = write_webdataset(items, sel, folder)
        elif fmt == "hf":
            n = write_hf(items, sel, folder, settings)
        else:
            n = {"parquet": write_parquet, "jsonl": write_jsonl, "csv": write_csv}[fmt](
                items, sel, folder / f"captions.{fmt}"
            )
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        if remote:
            for name in files:
                image_store(settings).upload_file(str(folder / name), prefix + name)
        return {"rows": n, "files": files, "dest": dest}
    finally:
        if remote:
            shutil.rmtree(folder, ignore_errors=True)


def parquet_file(settings: Settings, sel: Selection) -> str:
    """The selection as a temporary Parquet file (the caller deletes it): for HTTP responses."""
    fd, path = tempfile.mkstemp(prefix="capq-results-", suffix=".parquet")
    os.close(fd)
    try:
        write_parquet(rows(settings, sel), sel, Path(path))
    except BaseException:
        os.unlink(path)
        raise
    return path
