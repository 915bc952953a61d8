"""Read only published versions: follow `_current.json` (or a version's `_latest.json`) to its manifest's files.

Listing the output prefix would also find staged files of a running or killed run and data kept for readers of
the previous manifest; the manifest is the one list of files that make up a complete version.
"""

from __future__ import annotations

import posixpath

import pyarrow.dataset as pads

from pipeline.config import StorageConfig, storage_for
from pipeline.objects import list_tree
from pipeline.reembed.layout import VERSIONS, VersionLayout
from pipeline.reembed.manifest import Manifest, current_manifest, version_manifest
from pipeline.storage import Location, resolve


class NoPublishedVersionError(FileNotFoundError):
    """The output has no complete version yet (no run has published)."""


def published_manifest(uri: str, fingerprint: str | None = None, storage: StorageConfig | None = None) -> Manifest:
    """The current manifest, or the newest of version `fingerprint`."""
    out = resolve(uri, storage_for(uri, storage))
    if fingerprint is None:
        manifest = current_manifest(out)
    else:
        manifest = version_manifest(VersionLayout(out, fingerprint))
    if manifest is None:
        which = f"version {fingerprint}" if fingerprint else "current version"
        raise NoPublishedVersionError(f"{uri} has no published {which}; run `python -m jobs.reembed` first")
    return manifest


def read_current(uri: str, storage: StorageConfig | None = None, fingerprint: str | None = None) -> list[str]:
    """URIs of the Parquet files of the current complete version (or of version `fingerprint`), sorted."""
    manifest = published_manifest(uri, fingerprint, storage)
    root = posixpath.join(uri.rstrip("/"), VERSIONS, manifest.fingerprint)
    return sorted(posixpath.join(root, f) for f in manifest.output_files())


def open_current(uri: str, storage: StorageConfig | None = None, fingerprint: str | None = None) -> pads.Dataset:
    """A pyarrow dataset over the current complete version: `.to_table()`, or hand it to duckdb/polars."""
    storage = storage_for(uri, storage)
    files = read_current(uri, storage, fingerprint)
    fs = resolve(uri, storage).fs
    paths = [resolve(f, storage).path for f in files]
    return pads.dataset(paths, filesystem=fs, format="parquet")


def list_versions(uri: str, storage: StorageConfig | None = None) -> list[str]:
    """Fingerprints that have a published version under `uri`."""
    out: Location = resolve(uri, storage_for(uri, storage))
    names = {p.split("/")[0] for p in list_tree(out.join(VERSIONS)) if p.endswith("/_latest.json")}
    return sorted(names)
