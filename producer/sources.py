"""sources: turn what a submitter names (files, folders, manifests, s3:// keys, uploads, known images) into
candidates."""

from __future__ import annotations

import csv
import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from capq.errors import InputError
from capq.settings import Settings
from producer.errors import BadInput
from producer.urls import FetchError, check_url, fetch_url
from storage.blobs import image_store

SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_KEY = re.compile(r"^images/sha256/([0-9a-f]{2})/([0-9a-f]{64})$")
MAX_META_BYTES = 4096


def owner_prefix(owner: str) -> str:
    return f"owners/{owner}/"


class Refused(InputError, ValueError):
    """One named source may not be read; the message says why and what is allowed instead."""


@dataclass(frozen=True)
class Candidate:
    """One thing that may become an image of the job."""

    name: str  # as the submitter named it; recorded as the item's file_name
    read: Callable[[], bytes] | None = None  # fetches the bytes (None for an already-submitted image)
    size: Callable[[], int] | None = None  # cheap size, checked before reading
    sha256: str | None = None  # set for an image the owner already submitted: no bytes needed
    meta: dict | None = None


@dataclass
class Expanded:
    candidates: list[Candidate] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    def reject(self, file: str, reason: str) -> None:
        self.rejected.append({"file": file, "reason": reason})


def check_meta(meta, at_most: int | None = None) -> dict | None:
    """Metadata is a small JSON object whose keys are safe MongoDB field names.

    :param at_most: a bound the caller knows on the meta's JSON size; under the cap, it is not serialised to
        measure it (the shard reader, per sample)."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise Refused("meta must be a JSON object")
    bad = _bad_keys(meta)
    if bad:
        raise Refused(f"meta keys, at every depth, must be non-empty and contain no '$' prefix or '.': {bad}")
    if (at_most is None or at_most > MAX_META_BYTES) and len(json.dumps(meta, default=str)) > MAX_META_BYTES:
        raise Refused(f"meta is over {MAX_META_BYTES} bytes of JSON")
    return meta


def _bad_keys(value) -> list:
    """Keys that MongoDB could read as operators or paths, inside nested objects and lists too."""
    bad: list = []
    stack = [(value, 0)]
    while stack:  # a loop, not recursion: this runs once per item of a long submission
        value, depth = stack.pop()
        if depth > 20:
            return bad + ["<nested deeper than 20 levels>"]
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str) or not k or k[0] == "$" or "." in k:
                    bad.append(k)
                if isinstance(v, (dict, list)):
                    stack.append((v, depth + 1))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, (dict, list)))
    return bad


def s3_candidate(uri, settings: Settings, owner: str, meta: dict | None = None) -> Candidate:
    """A candidate for an s3:// URI that this rule allows (the same for the CLI and the API); Refused otherwise.

    * Only objects in the configured bucket (settings.s3_bucket): capq's credentials may reach other buckets,
      and a submitter must not borrow them.
    * In it, either a key under the owner's own staging prefix `owners/<owner>/...`, or the content address
      `images/sha256/<aa>/<sha256>` of an image that owner already submitted (checked later against the
      owner's job items; someone else's image reads as "not among your images").
    * Keys with empty, '.' or '..' segments, backslashes or control characters are refused outright, so no
      normalising server can be led outside the prefix.
    The API reads only uploads and such keys, never a server-local path (`from_api_items` refuses them).
    """
    allowed = f"s3://{settings.s3_bucket}/{owner_prefix(owner)}NAME or the sha256 of an image you submitted"
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise Refused(f"{uri!r} is not an s3:// URI; allowed: {allowed}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if bucket != settings.s3_bucket:
        raise Refused(f"bucket {bucket!r} is not readable through capq; allowed: {allowed}")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\\" in key or any(ord(c) < 32 for c in key):
        raise Refused(f"key {key!r} has empty, '.' or '..' segments or odd characters; allowed: {allowed}")
    content = _CONTENT_KEY.match(key)
    if content and content.group(2).startswith(content.group(1)):
        return Candidate(uri, sha256=content.group(2), meta=meta)
    if key.startswith(owner_prefix(owner)):
        store = image_store(settings)
        # The read is bounded itself: the object may grow between the size check and the GET.
        return Candidate(
            uri,
            read=lambda: store.get_key(key, settings.max_image_bytes),
            size=lambda: store.size_of_key(key),
            meta=meta,
        )
    raise Refused(f"key {key!r} is outside your prefix {owner_prefix(owner)!r}; allowed: {allowed}")


def _file(path: Path, name: str, meta: dict | None = None) -> Candidate:
    return Candidate(name, read=path.read_bytes, size=lambda: path.stat().st_size, meta=meta)


def _walk(folder: Path) -> Iterable[Path]:
    """Every non-hidden file under `folder`, in sorted order, not entering hidden folders."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


REFERENCES = ("path", "s3", "url", "sha256")  # the columns/keys that name an image in a manifest


def _entry(where: str, value: dict, base: Path, settings: Settings, owner: str) -> Candidate | dict:
    """One manifest entry {path|s3|url|sha256, meta?} -> a candidate, or a rejection naming `where`."""
    named = [k for k in REFERENCES if value.get(k) not in (None, "")]
    label = str(value.get(named[0])) if named else where
    try:
        meta = check_meta(value.get("meta"))
        if len(named) != 1:
            raise Refused("give exactly one of 'path', 's3', 'url' or 'sha256'")
        ref = value[named[0]]
        if not isinstance(ref, str):
            raise Refused(f"{named[0]} must be a string")
        if named[0] == "sha256":
            if not SHA256.match(ref):
                raise Refused("sha256 must be 64 lowercase hex characters")
            return Candidate(f"sha256:{ref}", sha256=ref, meta=meta)
        if named[0] == "url" or ref.startswith(("http://", "https://")):
            return Candidate(check_url(ref), read=functools.partial(fetch_url, ref, settings), meta=meta)
        if named[0] == "s3" or ref.startswith("s3://"):
            return s3_candidate(ref, settings, owner, meta)
        path = Path(ref) if os.path.isabs(ref) else base / ref
        if not path.is_file():
            raise Refused(f"no such file: {path}")
        return _file(path, ref, meta)
    except (Refused, FetchError) as exc:
        return {"file": label, "reason": f"{where}: {exc}"}


def _jsonl(manifest: Path, settings: Settings, owner: str) -> Iterator[Candidate | dict]:
    with manifest.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            where = f"manifest {manifest} line {lineno}"
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield {"file": where, "reason": f"{where}: not valid JSON ({exc.msg} at column {exc.colno})"}
                continue
            if not isinstance(value, dict):
                yield {"file": where, "reason": f'{where}: expected an object like {{"path": "a.jpg"}}'}
                continue
            yield _entry(where, value, manifest.parent, settings, owner)


def _csv(manifest: Path, settings: Settings, owner: str) -> Iterator[Candidate | dict]:
    with manifest.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if not set(REFERENCES) & set(header):
            raise BadInput(
                f"manifest {manifest} needs a 'path' column (or 's3', 'url', 'sha256') in its header row; "
                f"found {header}"
            )
        for row in reader:
            where = f"manifest {manifest} line {reader.line_num}"
            meta = {k: v for k, v in row.items() if k and k not in REFERENCES and v not in (None, "")}
            value = {k: (row.get(k) or "").strip() for k in REFERENCES if k in row}
            if value.get("path", "").startswith("s3://"):
                value["s3"] = value.pop("path")
            yield _entry(where, {**value, "meta": meta or None}, manifest.parent, settings, owner)


def iter_paths(paths: Iterable[str | os.PathLike], settings: Settings, owner: str) -> Iterator[Candidate | dict]:
    """Expand CLI arguments lazily: image files, folders (recursive), .jsonl/.csv manifests and s3:// URIs.

    Yields candidates and rejections ({file, reason}) as it reads, so a manifest of any length streams.
    A named argument that does not exist is BadInput (a typo to fix); problems inside folders and manifests
    are rejections and the job goes on.
    """
    for raw in paths:
        text = os.fspath(raw)
        if text.startswith("s3://"):
            try:
                yield s3_candidate(text, settings, owner)
            except Refused as exc:
                yield {"file": text, "reason": str(exc)}
            continue
        path = Path(text)
        if path.is_dir():
            yield from (_file(p, str(p)) for p in _walk(path))
        elif path.is_file() and path.suffix.lower() == ".jsonl":
            yield from _jsonl(path, settings, owner)
        elif path.is_file() and path.suffix.lower() == ".csv":
            yield from _csv(path, settings, owner)
        elif path.is_file():
            yield _file(path, text)
        else:
            raise BadInput(
                f"{text}: no such file or folder; name image files, folders, .jsonl/.csv/.parquet "
                "manifests, .tar shards or s3:// URIs"
            )


def from_paths(paths: Iterable[str | os.PathLike], settings: Settings, owner: str) -> Expanded:
    """iter_paths, collected (for small inputs and tests)."""
    out = Expanded()
    for got in iter_paths(paths, settings, owner):
        if isinstance(got, Candidate):
            out.candidates.append(got)
        else:
            out.rejected.append(got)
    return out


def upload_name(filename: str | None, index: int) -> str:
    """The recorded name of an upload: its base name only (a client's name is a label, never a path we open)."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    base = "".join(c for c in base if ord(c) >= 32)[:255]
    return base if base not in ("", ".", "..") else f"upload-{index}"


def _api_url(url, settings: Settings, meta: dict | None) -> Candidate:
    """An http(s) item of an API manifest: fetched by the submission's threads behind the same guard as the CLI's
    (checked, resolved and refused on every hop), so a bad or refused URL is that item's rejection."""
    if not isinstance(url, str):
        raise Refused("url must be a string")
    label = url[:MAX_URL_LABEL] + ("..." if len(url) > MAX_URL_LABEL else "")
    return Candidate(label, read=functools.partial(fetch_url, url, settings), meta=meta)


MAX_URL_LABEL = 300  # characters of a URL kept as an item's name (an over-long URL is rejected when fetched)
API_REFERENCES = ("s3", "sha256", "url")


def from_api_items(items, settings: Settings, owner: str) -> list[Candidate]:
    """Candidates for an API manifest's items: only {"s3": ...}, {"sha256": ...} and {"url": "http(s)://..."};
    anything else is BadInput. At most CAPQ_MAX_URL_ITEMS_PER_REQUEST URLs: the API fetches them before it answers."""
    allowed = (
        f'items may only be {{"s3": "s3://{settings.s3_bucket}/{owner_prefix(owner)}NAME"}}, '
        '{"sha256": "<sha256 of an image you submitted>"} or {"url": "https://..."}, each with an '
        "optional \"meta\" object; to send a file from your machine, upload it as multipart field 'files'"
    )
    if not isinstance(items, list) or not items:
        raise BadInput(f"'items' must be a non-empty list; {allowed}")
    urls = sum(isinstance(item, dict) and "url" in item for item in items)
    if urls > settings.max_url_items_per_request:
        raise BadInput(
            f"{urls:,} url items is over the {settings.max_url_items_per_request:,}-URL cap per request "
            "(CAPQ_MAX_URL_ITEMS_PER_REQUEST); split the list over several jobs"
        )
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadInput(f"items[{i}] is not an object; {allowed}")
        if "path" in item:
            raise BadInput(
                f"items[{i}]: the API never reads files on the server (got path {item['path']!r}); {allowed}"
            )
        extra = sorted(set(item) - {*API_REFERENCES, "meta"})
        if extra or sum(k in item for k in API_REFERENCES) != 1:
            raise BadInput(
                f"items[{i}] must have exactly one of 's3', 'sha256' or 'url' (unexpected keys: {extra}); {allowed}"
            )
        try:
            meta = check_meta(item.get("meta"))
            if "s3" in item:
                out.append(s3_candidate(item["s3"], settings, owner, meta))
            elif "url" in item:
                out.append(_api_url(item["url"], settings, meta))
            elif not isinstance(item["sha256"], str) or not SHA256.match(item["sha256"]):
                raise Refused("sha256 must be 64 lowercase hex characters")
            else:
                out.append(Candidate(f"sha256:{item['sha256']}", sha256=item["sha256"], meta=meta))
        except Refused as exc:
            raise BadInput(
                f"items[{i}]: {exc}; to send a file from your machine, upload it as multipart field 'files'"
            ) from None
    return out
