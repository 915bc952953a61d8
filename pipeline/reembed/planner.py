"""Compare the corpus with the version's last manifest and the staged work: what to embed, what to reuse.

Pure: no storage, no Ray, so every case (new, changed, unchanged, deleted, resumed) is a plain unit test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pipeline.change_tokens import same_token
from pipeline.file_formats import compressed_name
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
    # New or changed files holding the content of an entry of the previous manifest under another path (renamed,
    # moved, swapped: pipeline.reembed.moves), with that entry: its vectors are reused, not embedded again.
    moves: list[tuple[SourceFile, FileEntry]] = field(default_factory=list)
    # The entries of `moves` once their outputs are written under the new paths (with_moved).
    moved: list[FileEntry] = field(default_factory=list)
    # Unchanged files whose change token moved without their content (a touch, a copy of the same bytes, an S3
    # upload in other parts, an older version's token): their entries get the new token, so the run publishes a new
    # manifest that records it (else the next run would compare the content again, and the one after it).
    retokened: int = 0

    @property
    def to_embed(self) -> list[SourceFile]:
        done = {e.key for e in self.resumed} | {s.key for s, _ in self.moves}
        return sorted((s for s in self.new + self.changed if s.key not in done), key=lambda s: s.path)

    @property
    def reused(self) -> list[FileEntry]:
        return self.unchanged + self.resumed + self.moved

    @property
    def dropped(self) -> list[FileEntry]:
        """Entries whose rows leave the version: deleted or replaced, unless their content moved to another path."""
        sources = {e.key for _, e in self.moves}
        return [e for e in self.deleted + self.replaced if e.key not in sources]

    def with_moved(self, entries: list[FileEntry | None]) -> Plan:
        """This plan with the entries of `moves` written under their new paths (pipeline.reembed.moves); a None in
        `entries` (its outputs could not be read) turns that move back into a file to embed."""
        kept = [(m, e) for m, e in zip(self.moves, entries, strict=True) if e is not None]
        return replace(self, moves=[m for m, _ in kept], moved=[e for _, e in kept])

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
            moved=[by_path.get(e.path, e) for e in self.moved],
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
            "moved": len(self.moves),
            "retokened": self.retokened,
        }


def make_plan(
    sources: list[SourceFile],
    previous: Manifest | None,
    staged: dict[str, FileEntry],
    duplicates: dict[str, str] | None = None,
    content_of: Callable[[str], str] | None = None,
    reads_alike: Callable[[str, str], bool] | None = None,
    earlier: list[FileEntry] = (),
    decompressed_of: Callable[[str], str | None] | None = None,
    same_format: Callable[[str, str], bool] | None = None,
    same_object: Callable[[str, int, str], bool] | None = None,
    declared_size: Callable[[str], int | None] | None = None,
    decompressed_etag: Callable[[str, int, str], bool] | None = None,
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
        reads_alike: whether the same bytes under two paths give the same rows (pipeline.reembed.moves); with it, a
            new or changed file (not resumed) that holds the content of an entry of `previous` under another path
            is a move of that entry (`Plan.moves`): on S3 the same size and ETag, on local disks the same size and
            sha256 (content_of, asked only for a file whose size equals such an entry's), the same duplicate-id
            digest, and not an unreadable entry. None: no moves.
        earlier: entries of the version's older manifests that garbage collection keeps (their outputs exist), also
            paired by `reads_alike`: a file deleted one night and restored the next, an edit reverted. The `staged`
            entries are paired too: a file an interrupted run embedded, moved before the rerun.
        decompressed_of, same_format: with them, a new or changed file not paired otherwise whose decompressed
            bytes (decompressed_of: None when it is not compressed) are the content of an entry of the same format
            is a move of it: `a.jsonl` compressed into `a.jsonl.gz` (pipeline.reembed.moves.decompressed_token).
        declared_size: the decompressed size (mod 2**32) a compressed file declares (pipeline.reembed.moves.
            declared_size: gzip's ISIZE, zstd's content size), None when it declares none: a file that declares a
            size no such entry has is not decompressed (decompressed_of is not asked), a new file's common case.
        decompressed_etag: with `declared_size` and `same_format`, S3: whether a compressed object decompresses to
            bytes of a size that give an ETag (pipeline.reembed.moves.decompressed_gives_etag: one download), asked
            for a new or changed compressed object not paired otherwise, against the S3 entries whose path is gone
            from the listing and whose size it declares: `a.jsonl` replaced by `a.jsonl.gz` is a move. An object
            that declares no size (bzip2, zstd from a pipe) is not read.
        same_object: whether the S3 object at a path, of a size, holds the bytes an entry's ETag names
            (pipeline.etags.bytes_give_etag: one download), asked only for an object whose ETag moved at its
            entry's size (the same bytes uploaded again with other part sizes): the same bytes are unchanged.
    """
    before = {e.path: e for e in previous.entries} if previous else {}

    def current(entry: FileEntry | None, src: SourceFile) -> bool:
        now = None if duplicates is None else duplicates.get(src.path)
        same_ids = duplicates is None or entry is None or (entry.duplicates or NO_DUPLICATES) == now
        same_file = entry is not None and entry.size == src.size and same_token(entry.token, src.token)
        hashed = not same_file and entry is not None and entry.size == src.size and entry.content and content_of
        if hashed:
            same_file = content_of(src.path) == entry.content
        # S3: an entry that records its content (ObjectChecks) was compared by it; else by its ETag (other parts)
        etags = entry is not None and entry.token.startswith("etag:") and src.token.startswith("etag:")
        if not same_file and not hashed and etags and entry.size == src.size and same_object is not None:
            same_file = same_object(src.path, src.size, entry.token)
        return same_file and same_ids

    plan = Plan()
    for src in sources:
        old = before.get(src.path)
        if current(old, src):
            # an older version's token is recorded in full from now on; the key, which names the entry's output
            # folder, stays
            plan.unchanged.append(old if old.token == src.token else replace(old, token=src.token))
            plan.retokened += old.token != src.token
            continue
        if old is not None:
            plan.changed.append(src)
            plan.replaced.append(old)
        else:
            plan.new.append(src)
        if current(staged.get(src.key), src):
            plan.resumed.append(staged[src.key])
    if reads_alike is not None:
        # the staged entries too: a file an interrupted run embedded (killed, or failed on another file), then
        # moved before the rerun; the newest entry of a key wins
        candidates = {e.key: e for e in [*earlier, *before.values(), *staged.values()]}
        plan.moves = find_moves(plan, list(candidates.values()), duplicates, content_of, reads_alike, same_object)
        if decompressed_of is not None and same_format is not None:
            present = {s.path for s in sources}
            # compressed entries whose file is gone or replaced now: a file recompressed (in place, or into another
            # compressor) has no declared size to compare with theirs (an entry records none), so a new compressed
            # file is decompressed for them only while such an entry exists
            left = [e for e in before.values() if e.path not in present] + plan.replaced
            plan.moves += recompressed_moves(
                plan,
                list(candidates.values()),
                duplicates,
                decompressed_of,
                same_format,
                content_of,
                declared_size,
                left,
            )
    present = {s.path for s in sources}
    if reads_alike is not None and decompressed_etag is not None and declared_size and same_format is not None:
        gone = [e for e in candidates.values() if e.path not in present]
        plan.moves += compressed_object_moves(plan, gone, duplicates, declared_size, decompressed_etag, same_format)
    plan.deleted = [e for e in before.values() if e.path not in present]
    return plan


def compressed_object_moves(
    plan: Plan,
    gone: list[FileEntry],
    duplicates: dict[str, str] | None,
    declared_size: Callable[[str], int | None],
    decompressed_etag: Callable[[str, int, str], bool],
    same_format: Callable[[str, str], bool],
) -> list[tuple[SourceFile, FileEntry]]:
    """(object, entry) for the new and changed S3 objects of `plan` not paired otherwise whose decompressed bytes give
    the ETag of an entry whose path is gone (`gone`) of the size they declare (make_plan's `decompressed_etag`):
    an object replaced by its gzip or zstd. Nothing is read unless such an entry exists; then one HEAD and a ranged
    GET or two per compressed object (its declared size), and one download per object whose size matches."""
    by_size: dict[int, list[FileEntry]] = {}
    for entry in gone:
        if entry.token.startswith("etag:") and not entry.unreadable:
            by_size.setdefault(entry.size % 2**32, []).append(entry)
    if not by_size:
        return []
    done = {e.key for e in plan.resumed} | {s.key for s, _ in plan.moves}
    moves = []
    for src in plan.new + plan.changed:
        if src.key in done or not src.token.startswith("etag:") or not compressed_name(src.path):
            continue
        declared = declared_size(src.path)
        now = NO_DUPLICATES if duplicates is None else duplicates.get(src.path)
        for entry in by_size.get(declared, []) if declared is not None else []:
            if not same_format(entry.path, src.path):
                continue
            if duplicates is not None and (entry.duplicates or NO_DUPLICATES) != now:
                continue
            if decompressed_etag(src.path, entry.size, entry.token):
                moves.append((src, entry))
                break
    return moves


def find_moves(
    plan: Plan,
    candidates: list[FileEntry],
    duplicates: dict[str, str] | None,
    content_of: Callable[[str], str] | None,
    reads_alike: Callable[[str, str], bool],
    same_object: Callable[[str, int, str], bool] | None = None,
) -> list[tuple[SourceFile, FileEntry]]:
    """(file, entry of the same content: another path's, or an earlier manifest's) for the new and changed files of
    `plan` that an interrupted run did not stage (make_plan's `reads_alike`). `same_object` (make_plan's): an S3
    object whose ETag is of another form than an entry's of its size (single-part / another part count) is read and
    compared with it: an object copied to a new key by a client that uploads in other parts."""
    by_size: dict[int, list[FileEntry]] = {}
    for entry in candidates:
        if not entry.unreadable:
            by_size.setdefault(entry.size, []).append(entry)
    staged = {e.key for e in plan.resumed}
    moves = []
    for src in plan.new + plan.changed:
        if src.key in staged:
            continue
        now = NO_DUPLICATES if duplicates is None else duplicates.get(src.path)
        for entry in by_size.get(src.size, []):
            if not reads_alike(entry.path, src.path):
                continue
            if duplicates is not None and (entry.duplicates or NO_DUPLICATES) != now:
                continue
            if src.token.startswith(("etag:", "sha256:")):  # the token names the content
                same = entry.token == src.token
                if not same and same_object is not None and other_etag_form(entry.token, src.token):
                    same = same_object(src.path, src.size, entry.token)
            else:
                same = entry.content is not None and content_of is not None and content_of(src.path) == entry.content
            if same:
                moves.append((src, entry))
                break
    return moves


def other_etag_form(listed: str, now: str) -> bool:
    """Whether two `etag:` tokens are of other forms (a single-part MD5 against a multipart `-N`, or other part
    counts): only then can other ETags name the same bytes. Two MD5s, or two of N parts of one size, that differ are
    other bytes (unless the part sizes differ: read, as pipeline.etags says)."""
    if not (listed.startswith("etag:") and now.startswith("etag:")):
        return False
    parts = [t.rpartition("-")[2] if "-" in t else "" for t in (listed, now)]
    return parts[0] != parts[1] or parts[0] != ""


def recompressed_moves(
    plan: Plan,
    candidates: list[FileEntry],
    duplicates: dict[str, str] | None,
    decompressed_of: Callable[[str], str | None],
    same_format: Callable[[str, str], bool],
    content_of: Callable[[str], str] | None = None,
    declared_size: Callable[[str], int | None] | None = None,
    left: list[FileEntry] = (),
) -> list[tuple[SourceFile, FileEntry]]:
    """(file, entry whose content is the file's decompressed bytes) for the new and changed files of `plan` that are
    neither staged nor paired by find_moves (make_plan's `decompressed_of`, not asked for a file whose
    `declared_size` no entry's size has); the same for a compressed entry whose decompressed bytes
    (FileEntry.decompressed) are the file's decompressed bytes: a file recompressed (gzip -9, pigz, another mtime in
    the gzip header, b.jsonl.gz -> b.jsonl.bz2 / .zst), asked while such an entry's file is gone or replaced (`left`:
    an entry records no decompressed size to compare a declared one with); and the other way round, with
    `content_of`: (file, compressed entry whose decompressed bytes are the file's): a file decompressed since
    (a.jsonl.gz -> a.jsonl)."""
    by_content = {e.content: e for e in candidates if e.content and not e.unreadable}
    by_plain = {e.decompressed: e for e in candidates if e.decompressed and not e.unreadable}
    if not by_content and not by_plain:
        return []
    left_keys = {e.key for e in left}
    recompressed = any(e.key in left_keys and compressed_name(e.path) for e in by_plain.values())
    done = {e.key for e in plan.resumed} | {s.key for s, _ in plan.moves}
    sizes = {e.size % 2**32 for e in by_content.values()}
    moves = []
    for src in plan.new + plan.changed:
        if src.key in done:
            continue
        declared = declared_size(src.path) if declared_size is not None and by_content else None
        maybe = by_content and (declared is None or declared in sizes)
        plain = (decompressed_of(src.path) or "") if maybe or recompressed else ""
        entry = (by_content.get(plain) or (by_plain.get(plain) if recompressed else None)) if plain else None
        if entry is None and by_plain and content_of is not None and not src.token.startswith("etag:"):
            entry = by_plain.get(content_of(src.path))
        if entry is None or not same_format(entry.path, src.path):
            continue
        now = NO_DUPLICATES if duplicates is None else duplicates.get(src.path)
        if duplicates is None or (entry.duplicates or NO_DUPLICATES) == now:
            moves.append((src, entry))
    return moves
