"""Compare the corpus with the version's last manifest and the staged work: what to embed, what to reuse.

Pure: no storage, no Ray, so every case (new, changed, unchanged, deleted, resumed) is a plain unit test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pipeline.change_tokens import same_token
from pipeline.reembed.manifest import NO_DUPLICATES, FileEntry, Manifest
from pipeline.reembed.sources import SourceFile


@dataclass
class Plan:
    new: list[SourceFile] = field(default_factory=list)
    changed: list[SourceFile] = field(default_factory=list)
    unchanged: list[FileEntry] = field(default_factory=list)
    deleted: list[FileEntry] = field(default_factory=list)
    # Previous entries of changed files: their outputs leave the dataset with the next manifest.
    replaced: list[FileEntry] = field(default_factory=list)
    # New or changed files that an interrupted run already embedded completely (a staged marker exists).
    resumed: list[FileEntry] = field(default_factory=list)
    # Reused entries whose output files this run wrote again with new kept-column types (pipeline.reembed.retype).
    rewritten: list[FileEntry] = field(default_factory=list)

    @property
    def to_embed(self) -> list[SourceFile]:
        done = {e.key for e in self.resumed}
        return sorted((s for s in self.new + self.changed if s.key not in done), key=lambda s: s.path)

    @property
    def reused(self) -> list[FileEntry]:
        return self.unchanged + self.resumed

    @property
    def is_noop(self) -> bool:
        return not (self.new or self.changed or self.deleted)

    def with_rewritten(self, entries: list[FileEntry]) -> Plan:
        """This plan with the reused entries whose output files a run wrote again (a kept column got its first
        values or a wider type, pipeline.reembed.retype) replaced by `entries`: still unchanged or resumed files,
        their rows reused, now in this run's folder."""
        if not entries:
            return self
        by_path = {e.path: e for e in entries}
        return replace(
            self,
            unchanged=[by_path.get(e.path, e) for e in self.unchanged],
            resumed=[by_path.get(e.path, e) for e in self.resumed],
            rewritten=self.rewritten + entries,
        )

    def counts(self) -> dict[str, int]:
        return {
            "new": len(self.new),
            "changed": len(self.changed),
            "unchanged": len(self.unchanged),
            "deleted": len(self.deleted),
            "resumed": len(self.resumed),
            "to_embed": len(self.to_embed),
            "rewritten": len(self.rewritten),
        }


def make_plan(
    sources: list[SourceFile],
    previous: Manifest | None,
    staged: dict[str, FileEntry],
    duplicates: dict[str, str] | None = None,
    content_of: Callable[[str], str] | None = None,
) -> Plan:
    """Classify every input file against `previous` (None: a version's first run).

    Args:
        sources: the corpus as listed now, with change tokens.
        previous: the last published manifest of this fingerprint.
        staged: completion markers by file key, left by runs that did not publish.
        duplicates: each file's duplicate-id digest now (pipeline.reembed.duplicates), None when ids are not
            checked. A file whose entry records another digest (its first copies moved: a new or deleted file) is
            changed even with the same content: its rejects differ. An entry recorded without the check (None)
            counts as one without repeats, so upgrading re-embeds only the files that repeat ids.
        content_of: the `sha256:<hex>` of a file by path, asked only for a file whose token moved but whose size
            did not and whose entry records its content (`touch`, a copy that sets new times): the same content is
            unchanged. None: the token alone decides.
    """
    before = {e.path: e for e in previous.entries} if previous else {}

    def current(entry: FileEntry | None, src: SourceFile) -> bool:
        now = None if duplicates is None else duplicates.get(src.path)
        same_ids = duplicates is None or entry is None or (entry.duplicates or NO_DUPLICATES) == now
        same_file = entry is not None and entry.size == src.size and same_token(entry.token, src.token)
        if not same_file and entry is not None and entry.size == src.size and entry.content and content_of:
            same_file = content_of(src.path) == entry.content
        return same_file and same_ids

    plan = Plan()
    for src in sources:
        old = before.get(src.path)
        if current(old, src):
            # an older version's token is recorded in full from now on; the key, which names the entry's output
            # folder, stays
            plan.unchanged.append(old if old.token == src.token else replace(old, token=src.token))
            continue
        if old is not None:
            plan.changed.append(src)
            plan.replaced.append(old)
        else:
            plan.new.append(src)
        if current(staged.get(src.key), src):
            plan.resumed.append(staged[src.key])
    present = {s.path for s in sources}
    plan.deleted = [e for e in before.values() if e.path not in present]
    return plan
