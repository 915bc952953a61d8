"""Where a versioned embeddings dataset keeps its objects; the only module that knows the names.

    <out>/_current.json                          pointer to the manifest of the current version (written last)
    <out>/_lease.json                            who is writing, until when
    <out>/_summary.json                          summary of the last run
    <out>/_versions/<fp>/_latest.json            pointer to this version's newest manifest
    <out>/_versions/<fp>/_manifests/<gen>-<run>.json   immutable manifests
    <out>/_versions/<fp>/_staged/<key>.json      an input file embedded completely, not yet published
    <out>/_versions/<fp>/data/<key>/<run>/part-*.parquet   outputs of one input file (key: path + size + etag)
    <out>/_versions/<fp>/_ids/<name>.parquet     each listed file's id digests, kept between runs
                                                 (pipeline.reembed.duplicates: IDS_DIR, and DUPLICATES_DIR for
                                                 the pass's repeats while a run goes on)

Every name starts with `_`, which storage.list_files skips, so pointing another job at `<out>` reads nothing by
accident; readers go through pipeline.reembed.reader, which follows the pointer.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.storage import Location

CURRENT = "_current.json"
LEASE = "_lease.json"
SUMMARY = "_summary.json"
VERSIONS = "_versions"


@dataclass(frozen=True)
class VersionLayout:
    out: Location
    fingerprint: str

    @property
    def root(self) -> Location:
        return self.out.join(VERSIONS, self.fingerprint)

    @property
    def latest(self) -> Location:
        return self.root.join("_latest.json")

    @property
    def manifests(self) -> Location:
        return self.root.join("_manifests")

    @property
    def staged(self) -> Location:
        return self.root.join("_staged")

    @property
    def data(self) -> Location:
        return self.root.join("data")

    def manifest(self, generation: int, run_id: str) -> Location:
        return self.manifests.join(f"{generation:08d}-{run_id}.json")

    def marker(self, key: str) -> Location:
        return self.staged.join(f"{key}.json")

    @staticmethod
    def run_dir(key: str, run_id: str) -> str:
        """Outputs of one input file in one run, relative to the version root."""
        return f"data/{key}/{run_id}"
