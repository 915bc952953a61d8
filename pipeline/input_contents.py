"""The content of a run's local input files, so that a resume goes on after a `touch` and refuses after an edit.

A resume compares the input listing with the one its run recorded (pipeline.fingerprint); a local file's change
token (mtime and ctime: pipeline.change_tokens) also moves when only its times or mode did: `touch`, `chmod`, a copy
that sets new times (`cp`, `rsync` without -t). Such a file was a changed file, and the user had to start over.
Here a run records the sha256 of each local input file (the re-embed job's content token,
pipeline.reembed.sources.content_token), hashed on driver threads while the run embeds them:

    <out>/_run/contents.json   {listing key: {path: {"token": change token when hashed, "sha256": "sha256:<hex>"}}}

written once every file is hashed. A resume whose listing differs only by files of moved tokens at unchanged sizes
hashes those files (only those: a resume that finds every token unchanged reads nothing) and goes on when each
holds the content recorded; a file whose content changed, or that no record covers (a run killed before its files
were hashed, or started by an older version), is still named in the refusal. A resume that goes on records the
files' new tokens (here, and in the run's fingerprint: pipeline.commit.begin), so the next resume does not hash them
again; a run interrupted (Ctrl-C, SIGTERM) while hashing records the files hashed by then. S3 objects are not hashed: their ETag
names their content (pipeline.fingerprint.content_moves).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow.fs as pafs

from pipeline.change_tokens import same_token
from pipeline.commit import RUN_DIR, committed_units
from pipeline.etags import same_object
from pipeline.fingerprint import SameContent, entry_token
from pipeline.objects import get_json, put_json
from pipeline.read_content import ReadAs, stat_token
from pipeline.reembed.sources import HASH_THREADS, changed_now, content_token, ranges_prefix_read
from pipeline.storage import ListedFile, Location
from pipeline.units import record_files

log = logging.getLogger(__name__)

CONTENTS = f"{RUN_DIR}/contents.json"


def is_local(root: Location) -> bool:
    return isinstance(root.fs, pafs.LocalFileSystem)


def changed_inputs(
    root: Location,
    listed: dict[str, ListedFile],
    paths: tuple[str, ...],
    sha_of: Callable[[ListedFile], str | None] = lambda f: None,
    confirmed: dict[str, str] | None = None,
    read: dict[str, ReadAs] | None = None,
    ranges: bool = False,
) -> dict[str, str]:
    """{path: how it changed} for the local files of `paths` whose size or change token is no longer the listed one
    (`listed`: the listing by path): checked by the embed job before it commits a unit, so that a unit whose file
    changed while it was read (appended, replaced, truncated, deleted) is never committed as the listed file. A file
    whose token alone moved (a `touch`, an rsync of the same bytes) is hashed and compared with `sha_of(file)` (its
    sha256 taken while it was as listed: ContentRecorder.sha_of) and is not a change when the content is the same
    (pipeline.reembed.sources.changed_now). `confirmed` ({path: token}, kept by the caller across calls): files
    whose content was found the listed one at that token, so that the later units of a split file touched once are
    not hashed again each. `read`: {path: ReadAs} of the whole files as the unit's read task read them
    (pipeline.read_content), for a file the driver had not hashed as listed before its token moved, or read up to
    its listed size when it had grown since it was listed. `ranges`: the unit reads a byte range of its one file
    (pipeline.line_ranges): a file grown since it was listed is not a change when its first listed-size bytes are
    still the listed ones (sources.ranges_prefix_read; once per size and token, for the file's later units). {} on
    S3, whose objects the job checks with one listing at its end (changed_objects)."""
    if not is_local(root):
        return {}
    changed = {}
    confirmed = {} if confirmed is None else confirmed
    for rel in paths:
        f = listed[rel]
        now = stat_token(root, rel)
        moved = now is not None and now[0] == f.size and now[1] != f.token
        if moved and confirmed.get(rel) == now[1]:
            continue
        if ranges and now is not None and now[0] > f.size:
            # a split file appended to: its ranges end at the listed size (one prefix hash per size and token)
            if confirmed.get(rel) == f"{now[0]}:{now[1]}":
                continue
            if how := ranges_prefix_read(root, rel, f.size, now, sha_of(f)):
                changed[rel] = how
            else:
                confirmed[rel] = f"{now[0]}:{now[1]}"
            continue
        as_read = (read or {}).get(rel)
        prefix = as_read is not None and as_read.is_prefix  # read up to its listed size: its hash is compared
        if how := changed_now(root, rel, f.size, f.token, now, sha_of(f) if moved or prefix else None, as_read):
            changed[rel] = how
        elif moved:
            confirmed[rel] = now[1]
    return changed


def changed_objects(
    now: list[ListedFile],
    listed: dict[str, ListedFile],
    paths: set[str],
    same_bytes: Callable[[str, int, str], bool] | None = None,
) -> dict[str, str]:
    """{path: how it changed} for the S3 objects of `paths` whose size or ETag differ between `listed` (the run's
    listing by path) and `now` (a new listing: one request per 1,000 objects, no request per object); an upload of
    the same bytes (new LastModified, same ETag) is the same object. `same_bytes(path, size, listed ETag)`: whether
    an object whose ETag alone moved holds the bytes of its listed one (pipeline.etags.same_object: uploaded again
    with other part sizes; one read of it), then not a change."""
    by_path = {f.path: f for f in now}
    changed = {}
    for rel in sorted(paths):
        f, then = by_path.get(rel), listed[rel]
        if f is None:
            changed[rel] = f"listed with {then.size} bytes, now gone"
        elif f.size != then.size:
            changed[rel] = f"listed with {then.size} bytes, now {f.size} bytes"
        elif f.etag != then.etag and not (same_bytes and then.etag and same_bytes(rel, f.size, then.etag)):
            changed[rel] = f"listed with ETag {then.etag}, now {f.etag} (same size)"
    return changed


def changed_inputs_message(root: Location, changed: dict[str, str]) -> str:
    """The embed job's error for input files that changed while it read them ({path: how})."""
    first = next(iter(changed))
    more = f" (and {len(changed) - 1} more: {', '.join(list(changed)[1:4])})" if len(changed) > 1 else ""
    return (
        f"{root.join(first).uri} changed while this run read it ({changed[first]}){more}: its rows could mix the file "
        "before and after the change, so they are not committed and the run stops. The output keeps the units "
        "committed so far; a resume is refused while the input differs from the listing it recorded: put the file "
        "back as it was and run the same command to resume, or set output.overwrite=true to embed the corpus as it "
        "is now. Write input files under another name (or a hidden .name) and rename them into the corpus when "
        "complete, so that a run never reads one being written"
    )


def same_content(roots: dict[str, Location], out: Location, units_of: str | None = None) -> SameContent:
    """fingerprint.differences' `same_content` for the listings of `roots` (listing key -> the input root its paths
    are relative to): a moved local file whose recorded hash (taken while it had the recorded token) equals the
    sha256 of its bytes now, or an S3 object whose bytes now give its recorded ETag (uploaded again with other part
    sizes: pipeline.etags). Reads `_run/contents.json` only for a local listing that has such files; a file it
    cannot read now (gone since the listing) is not cleared, so the refusal names it.

    `units_of`: the listing key whose files the committed units read (the embed job's `input.listing`): a file of
    it that no committed unit reads is cleared whatever its content, nothing of it being in the output (a file
    renamed away before its read and put back, whose run stopped naming it: pipeline.units.unless_gone; it had
    no hash to compare, so the rerun was refused)."""

    def uncommitted(moved: list[tuple[list, list]]) -> set[str]:
        read = {p for record in committed_units(out).values() for p in record_files(record)}
        return {before[0] for before, _ in moved if before[0] not in read}

    def check(key: str, moved: list[tuple[list, list]]) -> set[str]:
        root = roots.get(key)
        if root is None:
            return set()
        if key == units_of:
            if not_read := uncommitted(moved):
                log.info("input files no committed unit read, embedded as they are now: %s", sorted(not_read))
            rest = [(before, after) for before, after in moved if before[0] not in not_read]
            return not_read | (same_files(key, root, rest) if rest else set())
        return same_files(key, root, moved)

    def same_files(key: str, root: Location, moved: list[tuple[list, list]]) -> set[str]:
        if not is_local(root):
            # S3: an object uploaded again with other part sizes (another ETag at its size) holds the bytes its
            # recorded ETag names when they give it (pipeline.etags: one read of it)
            return {
                before[0]
                for before, after in moved
                if len(before) > 4 and before[4] and same_object(root, before[0], after[1], before[4])
            }
        recorded = (get_json(out.join(CONTENTS)) or {}).get(key, {})
        same = set()
        for before, after in moved:
            entry = recorded.get(before[0])
            if not entry or not same_token(entry_token(before), entry["token"]):
                continue
            try:
                now = content_token(root, before[0])
            except OSError as err:
                log.info("cannot read input file %s to compare its content: %s", before[0], err)
                continue
            if now == entry["sha256"]:
                same.add(before[0])
                entry["token"] = entry_token(after)  # the token it has now: a later resume reads it again no more
            else:
                log.info("input file %s changed its content since the run began", before[0])
        if same:
            try:
                put_json({**(get_json(out.join(CONTENTS)) or {}), key: recorded}, out.join(CONTENTS))
            except OSError as err:  # a later resume after another touch hashes them again, and is refused
                log.warning("cannot update %s: %s", out.join(CONTENTS).uri, err)
        return same

    return check


class ContentRecorder:
    """Hashes the local files of each listing (`listings`: listing key -> (input root, its files)) on HASH_THREADS
    driver threads and records them in `<out>/_run/contents.json`, once all are hashed. A file whose change token
    is not the listed one, before or after its hash, is left out (it changed while the run read it). S3 listings,
    and listings the record already covers, are not hashed. Use as a context manager around the run: leaving it
    waits for the hashes (seconds per GB, far less than the run's own work on the files), also after an error (a
    failed run is the one a resume needs them for); after Ctrl-C or SIGTERM it stops them within one 8 MiB read."""

    def __init__(self, out: Location, listings: dict[str, tuple[Location, list[ListedFile]]]):
        self.out, self.listings = out, listings
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.recorded: dict[str, dict] = {}
        self.hashes: dict[str, dict[str, Future[dict[str, str] | None]]] = {}
        self.pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> ContentRecorder:  # noqa: PYI034 -- the class is not subclassed
        self.recorded = get_json(self.out.join(CONTENTS)) or {}
        todo = {
            key: (root, listed)
            for key, (root, listed) in self.listings.items()
            if is_local(root) and any(f.path not in self.recorded.get(key, {}) for f in listed)
        }
        if todo:
            self.pool = ThreadPoolExecutor(HASH_THREADS)
            self.hashes = {
                key: {f.path: self.pool.submit(self.hash_one, root, f) for f in listed}
                for key, (root, listed) in todo.items()
            }
            self.thread = threading.Thread(target=self.record, args=(todo,), name="input-contents", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None and not issubclass(kind, Exception):  # KeyboardInterrupt, Terminated, SystemExit
            self.stop.set()
        if self.thread is not None:
            self.thread.join()
        if self.pool is not None:
            self.pool.shutdown()

    def sha_of(self, key: str, f: ListedFile) -> str | None:
        """The sha256 of listing `key`'s file `f` taken while it had its listed token (this run's hash, waited for,
        else the record's when taken at that token); None when none is known."""
        if (pending := self.hashes.get(key, {}).get(f.path)) is not None:
            try:
                hashed = pending.result()
            except OSError:  # unreadable now: the check says it cannot compare
                return None
            return hashed["sha256"] if hashed else None
        entry = self.recorded.get(key, {}).get(f.path)
        return entry["sha256"] if entry and same_token(f.token, entry["token"]) else None

    def hash_one(self, root: Location, f: ListedFile) -> dict[str, str] | None:
        if self.stop.is_set() or stat_token(root, f.path) != (f.size, f.token):
            return None
        sha = content_token(root, f.path, self.stop)
        if sha is None or stat_token(root, f.path) != (f.size, f.token):
            return None
        return {"token": f.token, "sha256": sha}

    def record(self, todo: dict[str, tuple[Location, list[ListedFile]]]) -> None:
        try:
            entries = {
                key: {f.path: h for f in listed if (h := self.hashes[key][f.path].result()) is not None}
                for key, (_, listed) in todo.items()
            }
            if not any(entries.values()):
                return
            # also after Ctrl-C or SIGTERM: the files hashed by then are recorded, so a resume after a touch of them
            # goes on (a resume hashes the others it finds unrecorded, as the run's own recorder)
            recorded = get_json(self.out.join(CONTENTS)) or {}
            merged = {key: {**recorded.get(key, {}), **files} for key, files in entries.items()}
            put_json({**recorded, **merged}, self.out.join(CONTENTS))
        except OSError as err:  # only a later resume after a touch loses: it is refused, as without the record
            log.warning("cannot record the content of the input files in %s: %s", self.out.join(CONTENTS).uri, err)
