"""Incremental, model-version-aware, resumable re-embedding with atomic publishes (see docs/reembed.md)."""

from __future__ import annotations

from pipeline.reembed.reader import (
    NoPublishedVersionError,
    list_versions,
    open_current,
    published_manifest,
    read_current,
)

__all__ = ["NoPublishedVersionError", "list_versions", "open_current", "published_manifest", "read_current"]
