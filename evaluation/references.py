"""references: parse and validate reference-caption files, and import them keyed by image content hash."""

# Two formats: COCO captions annotations ({"images": [{id, file_name}], "annotations": [{image_id, caption}]})
# and the seed's captions_ground_truth.json ({"images": {coco_id: {filename, captions}}}). The whole file is
# checked before anything is written. References attach to images through the file names the images were
# submitted under (images.file_names), matched exactly. A file name that no submitted image carries yet is
# kept as a pending reference and attached when an evaluation meets an image with that name, so references
# and images can arrive in either order; a name carried by two different images is ambiguous and is not
# imported (guessing would score captions against another picture's references). Importing the same file
# again changes nothing; a changed caption list for an image replaces the stored one.
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from capq.settings import Settings
from evaluation.errors import ReferenceFormatError
from storage.references import PENDING_PREFIX, ReferenceStore, pending_key

_SHOW = 5  # problems listed per message; the count says how many more


@dataclass
class ImportReport:
    file: str
    format: str
    images_in_file: int
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    pending: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"{self.file} ({self.format}): {self.images_in_file} image(s) with captions; "
            f"{self.inserted} new, {self.updated} updated, {self.unchanged} unchanged"
        ]
        if self.pending:
            out.append(
                f"{len(self.pending)} file name(s) match no submitted image yet, e.g. {self.pending[:_SHOW]}: "
                "kept as pending and used once images are submitted under exactly those names"
            )
        if self.ambiguous:
            out.append(
                f"{len(self.ambiguous)} file name(s) belong to more than one submitted image (different bytes, "
                f"same name), e.g. {self.ambiguous[:_SHOW]}: not imported; rename or drop them in the file"
            )
        return out


def _fail(path: Path, problems: list[str]) -> None:
    more = f" (and {len(problems) - _SHOW} more)" if len(problems) > _SHOW else ""
    raise ReferenceFormatError(f"{path}: " + "; ".join(problems[:_SHOW]) + more)


def _caption_problem(c) -> bool:
    return not isinstance(c, str) or not c.strip()


def _name_problem(name) -> bool:
    return not isinstance(name, str) or not name.strip() or name.startswith(PENDING_PREFIX)


def _parse_coco(path: Path, data: dict) -> dict[str, list[str]]:
    images, annotations = data.get("images"), data.get("annotations")
    if not isinstance(images, list) or not isinstance(annotations, list):
        _fail(
            path,
            [
                "a COCO captions file needs an 'images' list and an 'annotations' list "
                "(an image-info file without 'annotations' has no captions to import)"
            ],
        )
    problems, names, seen = [], {}, {}
    for n, img in enumerate(images):
        if (
            not isinstance(img, dict)
            or not isinstance(img.get("id"), (int, str))
            or _name_problem(img.get("file_name"))
        ):
            problems.append(f"images[{n}] needs an 'id' (number or string) and a non-empty 'file_name'")
            continue
        name = img["file_name"].strip()
        if names.get(img["id"], name) != name:
            problems.append(f"images[{n}]: id {img['id']!r} is listed with two file names")
        if seen.setdefault(name, img["id"]) != img["id"]:
            problems.append(f"images[{n}]: file_name {name!r} is listed under two ids")
        names[img["id"]] = name
    by_name: dict[str, list[str]] = {}
    for n, ann in enumerate(annotations):
        if not isinstance(ann, dict) or not isinstance(ann.get("image_id"), (int, str)):
            problems.append(f"annotations[{n}] needs an 'image_id' and a 'caption'")
        elif ann["image_id"] not in names:
            problems.append(f"annotations[{n}]: image_id {ann['image_id']!r} is not in 'images'")
        elif _caption_problem(ann.get("caption")):
            problems.append(f"annotations[{n}]: 'caption' must be a non-empty string")
        else:
            by_name.setdefault(names[ann["image_id"]], []).append(ann["caption"])
    if problems:
        _fail(path, problems)
    return by_name


def _parse_seed(path: Path, data: dict) -> dict[str, list[str]]:
    problems, by_name = [], {}
    for key, entry in data["images"].items():
        name = entry.get("filename") if isinstance(entry, dict) else None
        caps = entry.get("captions") if isinstance(entry, dict) else None
        if _name_problem(name):
            problems.append(f"images.{key}: 'filename' must be a non-empty file name")
        elif not isinstance(caps, list) or not caps or any(_caption_problem(c) for c in caps):
            problems.append(f"images.{key}: 'captions' must be a list of non-empty strings")
        elif name.strip() in by_name:
            problems.append(f"images.{key}: filename {name!r} appears twice")
        else:
            by_name[name.strip()] = list(caps)
    if problems:
        _fail(path, problems)
    return by_name


def parse_file(path: Path) -> tuple[str, dict[str, list[str]]]:
    """(format, {file name: [captions]}) of a reference file; ReferenceFormatError says what to fix."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReferenceFormatError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ReferenceFormatError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ReferenceFormatError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("images"), dict):
        fmt, by_name = "seed-ground-truth", _parse_seed(path, data)
    elif isinstance(data, dict) and ("annotations" in data or isinstance(data.get("images"), list)):
        fmt, by_name = "coco-captions", _parse_coco(path, data)
    else:
        raise ReferenceFormatError(
            f"{path}: unknown format; expected COCO captions ({{'images': [{{'id', 'file_name'}}], "
            "'annotations': [{'image_id', 'caption'}]}) or the seed's captions_ground_truth.json "
            "({'images': {id: {'filename', 'captions'}}})"
        )
    if not by_name:
        raise ReferenceFormatError(f"{path}: no captions in the file")
    return fmt, by_name


def plan_import(
    by_name: dict[str, list[str]],
    name_to_shas: dict[str, set[str]],
    existing: dict[str, dict],
    source: str,
    now: datetime,
) -> tuple[list[dict], list[str], ImportReport]:
    """(documents to write, keys to delete, report) for one parsed file; pure, so it is tested alone."""
    report = ImportReport(file=source, format="", images_in_file=len(by_name))
    wanted: dict[str, dict] = {}
    deletes = []
    for name, caps in by_name.items():
        shas = name_to_shas.get(name, set())
        if len(shas) > 1:
            report.ambiguous.append(name)
            continue
        key = next(iter(shas)) if shas else pending_key(name)
        if shas and pending_key(name) in existing:
            deletes.append(pending_key(name))
        if shas:
            doc = wanted.setdefault(key, {"sha256": key, "file_name": name, "captions": []})
            # One image submitted under two names, both in the file: its references are the union.
            doc["captions"] += [c for c in caps if c not in doc["captions"]]
        else:
            report.pending.append(name)
            wanted[key] = {"sha256": key, "file_name": name, "captions": list(caps), "pending": True}
    upserts = []
    for key, doc in wanted.items():
        old = existing.get(key)
        if old and old.get("captions") == doc["captions"] and old.get("file_name") == doc["file_name"]:
            report.unchanged += 1
            continue
        report.updated += bool(old)
        report.inserted += not old
        upserts.append({**doc, "source": source, "imported_at": now})
    return upserts, deletes, report


def import_file(settings: Settings, path: Path) -> ImportReport:
    """Validate the whole file, then write its references; safe to run again (idempotent)."""
    fmt, by_name = parse_file(path)
    store = ReferenceStore(settings)
    name_to_shas = store.images_by_file_name(by_name)
    keys = {s for shas in name_to_shas.values() for s in shas} | {pending_key(n) for n in by_name}
    upserts, deletes, report = plan_import(by_name, name_to_shas, store.get(keys), Path(path).name, datetime.now(UTC))
    store.write(upserts, deletes)
    report.format = fmt
    return report


def resolve_pending(settings: Settings, shas: list[str]) -> int:
    """Attach pending references to these images (those without references); returns how many were attached.

    A pending name carried by several submitted images stays pending (ambiguous, see the module docstring).
    """
    store = ReferenceStore(settings)
    names_of = store.file_names_of(shas)
    names = {n for ns in names_of.values() for n in ns}
    pending = store.get(pending_key(n) for n in names)
    if not pending:
        return 0
    owners = store.images_by_file_name(doc["file_name"] for doc in pending.values())
    resolved: dict[str, dict] = {}
    deletes = []
    for key, doc in pending.items():
        holders = owners.get(doc["file_name"], set())
        if len(holders) == 1:
            sha = next(iter(holders))
            into = resolved.setdefault(
                sha, {**{k: v for k, v in doc.items() if k != "pending"}, "sha256": sha, "captions": []}
            )
            into["captions"] += [c for c in doc["captions"] if c not in into["captions"]]
            deletes.append(key)
    store.write(list(resolved.values()), deletes)
    return len(resolved)
