"""Publish a version atomically on storage without rename, then collect what no kept manifest references.

Order is the whole trick: data files and the manifest are new, immutable objects nobody reads yet; the version's
`_latest.json` and then the output's `_current.json` are single small PUTs, each atomic. A reader that follows
`_current.json` therefore sees the previous complete manifest or the new complete one, never a mix, and a crash
anywhere before the last PUT leaves the previous version current.
"""

from __future__ import annotations

import logging
import posixpath

from pipeline.objects import delete_files, get_json, list_tree, put_json
from pipeline.reembed.layout import CURRENT, VersionLayout
from pipeline.reembed.lease import Lease
from pipeline.reembed.manifest import Manifest, pointer

log = logging.getLogger(__name__)


def publish(layout: VersionLayout, manifest: Manifest, lease: Lease, make_current: bool = True) -> str:
    """Write the manifest, then the pointers; returns the manifest path relative to the output root.

    Raises:
        FileNotFoundError: a referenced output file is missing (nothing is published).
        LeaseLostError: another run holds the lease (nothing is published).
    """
    existing = set(list_tree(layout.root))
    missing = [f for e in manifest.entries for f in e.files + e.rejects if f not in existing]
    if missing:
        raise FileNotFoundError(f"{len(missing)} output files of the new manifest are missing, e.g. {missing[:3]}")
    target = layout.manifest(manifest.generation, manifest.run_id)
    lease.check()
    put_json(manifest.to_json(), target)
    rel = posixpath.relpath(target.path, layout.out.path)
    lease.check()
    put_json(pointer(layout, rel, manifest.generation), layout.latest)
    if make_current:
        put_json(pointer(layout, rel, manifest.generation), layout.out.join(CURRENT))
    return rel


def repoint_current(layout: VersionLayout, manifest_rel: str, generation: int, lease: Lease) -> None:
    """Make an already published version current again (a config rolled back to an earlier model)."""
    lease.check()
    put_json(pointer(layout, manifest_rel, generation), layout.out.join(CURRENT))


def collect_garbage(layout: VersionLayout, keep: int, lease: Lease) -> dict[str, int]:
    """Delete this version's markers, old manifests, and data files that no kept manifest references.

    Data of the `keep` newest manifests stays, so a reader that opened the previous manifest moments before the
    switch can still read its files. Returns counts of what was deleted.
    """
    lease.check()
    manifests = sorted(list_tree(layout.manifests))
    kept, dropped = manifests[-keep:], manifests[:-keep]
    referenced: set[str] = set()
    for name in kept:
        raw = get_json(layout.manifests.join(name)) or {"entries": []}
        referenced |= {VersionLayout.run_dir(e["key"], e["run_id"]) for e in raw["entries"]}
    data = list_tree(layout.data, temp_files=True)  # a killed write's temp file is garbage too
    orphans = [f for f in data if "/".join(f"data/{f}".split("/")[:3]) not in referenced]
    markers = list_tree(layout.staged)
    delete_files(layout.data, orphans)
    delete_files(layout.staged, markers)
    delete_files(layout.manifests, dropped)
    if orphans or dropped:
        log.info("garbage collection: %d data files, %d manifests", len(orphans), len(dropped))
    return {"data_files": len(orphans), "markers": len(markers), "manifests": len(dropped)}
