"""The manifest: which input files a dataset version covers, and which output files hold each one's rows.

A manifest is immutable once written; a version moves forward by writing a new one and then the pointers.
Output paths are relative to the version root, so a version can be copied or moved as a whole.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.objects import get_json
from pipeline.reembed.layout import CURRENT, VersionLayout
from pipeline.storage import Location

NO_DUPLICATES = "none"  # FileEntry.duplicates of a file without duplicate-id rejects


@dataclass(frozen=True)
class FileEntry:
    """One input file and its outputs. Row counts are input rows; `output_rows` counts chunks in chunk mode."""

    path: str
    size: int
    token: str
    key: str
    run_id: str
    rows: int
    embedded: int
    rejected: int
    output_rows: int
    files: list[str] = field(default_factory=list)
    rejects: list[str] = field(default_factory=list)
    # Digest of the file's duplicate-id rejects (pipeline.reembed.duplicates); None: ids were not checked (no id
    # column, duplicate_ids 'unchecked', or a manifest older than the check).
    duplicates: str | None = None
    # The file could not be read (corrupt, cut short: pipeline.units.corrupt_as_reject); its reject row says why.
    unreadable: bool = False
    # Local files: `sha256:<hex>` of the content embedded (pipeline.reembed.sources.content_token), so a file whose
    # change token moved without a change (`touch`, a copy that does not keep times) is reused; None on S3 (the
    # ETag is the content's) and in entries recorded before.
    content: str | None = None
    # Compressed local files (.gz, .zst, .bz2): `sha256:<hex>` of the decompressed bytes embedded, so that the file
    # decompressed since (a.jsonl.gz -> a.jsonl) is paired with this entry (pipeline.reembed.moves); None elsewhere
    # and in entries recorded before.
    decompressed: str | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> FileEntry:
        return cls(**raw)


@dataclass(frozen=True)
class Manifest:
    fingerprint: str
    recipe: dict[str, Any]
    generation: int
    run_id: str
    input_uri: str
    created_at: float
    entries: list[FileEntry]
    # Type of each kept column in every file of the version (pipeline.reembed.kept.encode); None: not recorded
    kept_types: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Manifest:
        entries = [FileEntry.from_json(e) for e in raw.pop("entries")]
        return cls(**raw, entries=entries)

    def output_files(self) -> list[str]:
        return [f for e in self.entries for f in e.files]

    @property
    def rows(self) -> int:
        return sum(e.embedded for e in self.entries)


def pointer(layout: VersionLayout, manifest_rel: str, generation: int) -> dict[str, Any]:
    """What `_current.json` and `_latest.json` hold; the manifest path is relative to the output root."""
    return {
        "fingerprint": layout.fingerprint,
        "manifest": manifest_rel,
        "generation": generation,
        "published_at": time.time(),
    }


def load_pointed(out: Location, pointer_loc: Location) -> Manifest | None:
    """The manifest a pointer object names, or None when the pointer does not exist yet."""
    ptr = get_json(pointer_loc)
    if ptr is None:
        return None
    raw = get_json(out.join(ptr["manifest"]))
    if raw is None:
        raise FileNotFoundError(f"{pointer_loc.uri} names {ptr['manifest']}, which does not exist (deleted by hand?)")
    return Manifest.from_json(raw)


def current_manifest(out: Location) -> Manifest | None:
    return load_pointed(out, out.join(CURRENT))


def version_manifest(layout: VersionLayout) -> Manifest | None:
    return load_pointed(layout.out, layout.latest)
