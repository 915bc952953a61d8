"""Local and S3 storage through pyarrow filesystems: resolution, deterministic listing, atomic writes.

Credentials are never read here: pyarrow's S3 client takes them from the environment, the AWS profile or the
instance/pod role, so they cannot leak into logs, configs or outputs.
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.change_tokens import listed_token
from pipeline.config import SCHEME_HINT, StorageConfig, canonical_uri
from pipeline.delta_tables import LOG as DELTA_LOG
from pipeline.delta_tables import check_iceberg, enclosing_table, live_listing, table_roots
from pipeline.errors import UserError
from pipeline.s3_listing import head_object, list_objects
from pipeline.s3_proxy import proxy_for
from pipeline.s3_tls import checked_ca_bundle
from pipeline.special_entries import (
    UnreadableEntryError,
    dangling_kind,
    dangling_links,
    dangling_on_the_way,
    first_unreadable,
    skipped_message,
    special_kind,
    system_folder,
    unlistable_folder,
    unreadable_files,
    unreadable_message,
)
from pipeline.transient_errors import TransientStorageError, is_transient
from pipeline.unicode_spelling import other_spelling

log = logging.getLogger(__name__)

GLOB_CHARS = "*?[{"
HIDDEN_PREFIXES = ("_", ".")  # _SUCCESS, _rejects/, .part-tmp files: never input, never dataset files


def missing_folders(path: str) -> list[str]:
    """The local folders `os.makedirs(path)` would create: `path` and its missing parents, deepest first (empty when
    `path` exists)."""
    missing = []
    head = os.path.abspath(path)
    while not os.path.lexists(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    return missing


def remove_empty_folders(folders: list[str]) -> None:
    """Remove `folders` (deepest first, as missing_folders gives them) while they are empty; a folder something was
    written into since, or that is gone, stays as it is, and so do the folders above it."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            return


@dataclass(frozen=True)
class Location:
    """A filesystem plus a path on it; `uri` is what the user wrote, for messages."""

    fs: pafs.FileSystem
    path: str
    uri: str

    def join(self, *parts: str) -> Location:
        """A location under this one; parts that would leave it (absolute, `..`) are refused, not normalized."""
        for part in parts:
            if part.startswith("/") or ".." in part.split("/"):
                raise ValueError(f"refusing to write outside {self.uri}: {part!r} is absolute or contains '..'")
        path = posixpath.join(self.path, *parts)
        uri = posixpath.join(self.uri, *parts)
        return Location(self.fs, path, uri)


class UnsupportedSchemeError(UserError, ValueError):
    """A URI of a scheme pipeline.storage does not open (the configs refuse it first; this covers the rest)."""


def make_filesystem(uri: str, storage: StorageConfig) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path on it) for a local path or an S3 URI.

    S3: pyarrow's client with the settings boto3's gets (pipeline.s3_listing.s3_client): endpoint, region,
    anonymous access, standard retries, the CA bundle (storage.ca_bundle, which must exist on this node), virtual
    addressing where storage.addressing_style says so (with an endpoint pyarrow is path-style otherwise; without one
    it is virtual whatever the style: AWS serves both), and the proxy boto3 would take from this process's
    environment (pipeline.s3_proxy; pyarrow's client reads none).

    Raises:
        CABundleError: storage.ca_bundle is missing on this node or holds no PEM certificate.
        UnsupportedSchemeError: another scheme than s3:// and file://.
    """
    uri = canonical_uri(uri)
    if uri.startswith("s3://"):
        retry = pafs.AwsStandardS3RetryStrategy(max_attempts=storage.max_attempts)
        kwargs = {"anonymous": storage.anon, "retry_strategy": retry}
        if storage.region:
            kwargs["region"] = storage.region
        if storage.endpoint_url:
            scheme, _, host = storage.endpoint_url.rpartition("://")
            kwargs.update(endpoint_override=host or storage.endpoint_url, scheme=scheme or "https")
            kwargs.setdefault("region", "us-east-1")  # custom endpoints (MinIO, moto) ignore it but pyarrow asks
        if storage.ca_bundle:
            kwargs["tls_ca_file_path"] = checked_ca_bundle(storage.ca_bundle)
        if storage.addressing_style == "virtual":
            kwargs["force_virtual_addressing"] = True
        if proxy := proxy_for(storage.endpoint_url, storage.region):
            kwargs["proxy_options"] = proxy
        return pafs.S3FileSystem(**kwargs), uri[len("s3://") :].rstrip("/")
    if "://" in uri and not uri.startswith("file://"):
        raise UnsupportedSchemeError(f"unsupported URI scheme in {uri!r}: {SCHEME_HINT}")
    path = uri.removeprefix("file://")
    # `~/corpus` is the user's home, as in a shell or pandas; unexpanded it was a directory named `~` in the working
    # directory: "no input files found" for an input, a stray `~` folder for an output
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))


def resolve(uri: str, storage: StorageConfig) -> Location:
    uri = canonical_uri(uri)  # s3a://, s3n:// (Spark configs): s3://
    fs, path = make_filesystem(uri, storage)
    return Location(fs, path, uri)


class InvalidGlobError(UserError, ValueError):
    """A glob pattern that cannot be compiled; the message names the config key and how to escape."""


def has_glob(segment: str) -> bool:
    return any(c in segment for c in GLOB_CHARS)


def glob_base(uri: str, storage: StorageConfig) -> tuple[str, str]:
    """(literal base URI, glob pattern relative to it) for a URI with glob characters.

    Segments are literal up to the first one with glob characters that does not exist as written: a directory
    named `run[v1]` is taken literally when it exists, and matched as a pattern only when it does not.
    """
    scheme, sep, rest = uri.partition("://")
    prefix, path = (scheme + sep, rest) if sep else ("", uri)
    segments = path.split("/")
    base: list[str] = []
    for i, segment in enumerate(segments):
        if has_glob(segment) and i < len(segments) - 1:
            candidate = prefix + "/".join([*base, segment])
            loc = resolve(candidate, storage)
            if loc.fs.get_file_info(loc.path).type != pafs.FileType.Directory:
                return prefix + "/".join(base), "/".join(segments[i:])
        elif has_glob(segment):
            return prefix + "/".join(base), "/".join(segments[i:])
        base.append(segment)
    return uri, ""


@dataclass(frozen=True)
class ListedFile:
    """One input file as the listing saw it: no request beyond the listing itself."""

    path: str  # relative to the listing root, as in the `_source` column and derived ids
    size: int  # bytes
    mtime_ns: int | None  # None where the filesystem reports none
    # Local files: the inode change time (one stat per file, with_change_times), which no tool sets back; None on S3,
    # where the server sets LastModified on every write and no client can set it back.
    ctime_ns: int | None = None
    # S3 objects: the ETag the listing gives with each object (pipeline.s3_listing), which changes with the content
    # even within LastModified's second; None for local files.
    etag: str | None = None

    @property
    def token(self) -> str:
        """The change token (pipeline.change_tokens): `mtime_ns:<m>;ctime_ns:<c>`, or `mtime_ns:<m>;etag:<e>` on S3."""
        return listed_token(self.mtime_ns, self.ctime_ns, self.etag)


def with_change_times(root: Location, names: list[ListedFile]) -> list[ListedFile]:
    """`names` (local files below `root`) with their inode change times: a file rewritten with its old size and
    mtime (`cp -p`, `rsync -t`, `touch -r`) is then told apart from the file an earlier run listed."""
    return [replace(f, ctime_ns=os.stat(posixpath.join(root.path, f.path)).st_ctime_ns) for f in names]


def list_files(uri: str | Sequence[str], storage: StorageConfig, key: str = "input.uri") -> tuple[Location, list[str]]:
    """`list_inputs` without sizes and times: the relative paths."""
    root, listed = list_inputs(uri, storage, key)
    return root, [f.path for f in listed]


def list_inputs(
    uri: str | Sequence[str], storage: StorageConfig, key: str = "input.uri"
) -> tuple[Location, list[ListedFile]]:
    """Sorted files of one location (list_location) or of a list of them (list_locations)."""
    if isinstance(uri, str):
        return list_location(canonical_uri(uri), storage, key)
    return list_locations([canonical_uri(u) for u in uri], storage, key)


class InputLocationsError(UserError, ValueError):
    """A list of input locations that cannot be read as one corpus (empty, local and S3 mixed)."""


def list_locations(
    uris: list[str], storage: StorageConfig, key: str = "input.uri"
) -> tuple[Location, list[ListedFile]]:
    """The files of several locations (directories/prefixes, files, globs) as one corpus, each file once.

    Paths are relative to the deepest directory holding every location (for S3 prefixes in several buckets, the
    store itself: `bucket/key`), so two locations with the same file name (`a/part-0.parquet`, `b/part-0.parquet`)
    stay two paths, and a list of one location lists as that location alone. A file that two locations reach (a
    folder and a glob inside it, or a symbolic link) is read once, with a warning.

    Raises:
        InputLocationsError: the list is empty, or mixes local paths and S3 URIs.
        FileNotFoundError, InvalidGlobError, InputNameError: as list_location, naming the location and its index.
    """
    if not uris:
        raise InputLocationsError(f"{key} is an empty list; give at least one location (a path, s3:// URI or glob)")
    kinds = {u.startswith("s3://") for u in uris}
    if len(kinds) > 1:
        local = next(u for u in uris if not u.startswith("s3://"))
        remote = next(u for u in uris if u.startswith("s3://"))
        raise InputLocationsError(
            f"{key} mixes local paths ({local}) and S3 URIs ({remote}); one run reads one store: copy the local files "
            "to S3 (or the S3 objects here) and list them together"
        )
    found: dict[str, ListedFile] = {}  # absolute path on the filesystem -> file (path relative to its location)
    again: list[str] = []
    roots: list[Location] = []
    for i, uri in enumerate(uris):
        root, listed = list_location(uri, storage, f"{key}[{i}]" if len(uris) > 1 else key)
        roots.append(root)
        for f in listed:
            full = posixpath.join(root.path, f.path)
            if full in found:
                again.append(full)
            found[full] = f
    if again:
        log.warning(
            "%s: %d files are matched by more than one location of the list (e.g. %s); each is read once",
            key,
            len(again),
            again[0],
        )
    common = common_directory([r.path for r in roots], local=not kinds.pop())
    if common == roots[0].path:
        base = roots[0]  # the location's own root, as the user wrote it: one location lists as without a list
    else:
        local = isinstance(roots[0].fs, pafs.LocalFileSystem)
        base = Location(roots[0].fs, common, common if local else f"s3://{common}")
    names = sorted((replace(f, path=below(full, common)) for full, f in found.items()), key=lambda n: n.path)
    if isinstance(base.fs, pafs.LocalFileSystem):
        names = once_per_file(base, names, key)
    return base, names


def common_directory(paths: list[str], local: bool) -> str:
    """The deepest directory holding every path, by whole segments; "" for S3 paths in different buckets."""
    if local:
        return os.path.commonpath(paths)
    split = [p.strip("/").split("/") for p in paths]
    common: list[str] = []
    for segments in zip(*split):
        if any(s != segments[0] for s in segments):
            break
        common.append(segments[0])
    return "/".join(common)


def below(path: str, directory: str) -> str:
    """`path` relative to `directory` (an ancestor of it, by whole segments; "" is the store's root)."""
    if not directory:
        return path.lstrip("/")
    return path[len(directory.rstrip("/")) + 1 :]


def list_location(uri: str, storage: StorageConfig, key: str = "input.uri") -> tuple[Location, list[ListedFile]]:
    """Sorted files under a directory/prefix, one file, or a glob; returns the listing root and relative paths.

    A path that exists is taken literally, glob characters and all (`export[2024-11]/part[0].jsonl`). Otherwise
    `*`, `?`, `[...]`, `**` (any depth) and `{a,b}` are glob syntax; escape a literal `[`, `]`, `*` or `?` as `[[]`, `[]]`,
    `[*]`, `[?]` (what Python's glob.escape writes).

    Args:
        key: the config key the URI came from, for error messages.

    Returns:
        The listing root and each file's relative path, size and modification time (from the listing requests),
        and for local files the inode change time (one stat per file).

    Raises:
        FileNotFoundError: nothing matches, naming the URI.
        InvalidGlobError: the pattern cannot be compiled (e.g. an unclosed `[`), naming `key`.
        InputNameError: a listed file name is not valid UTF-8, naming it.
    """
    root = resolve(uri, storage)
    info = root.fs.get_file_info(root.path)
    if info.type == pafs.FileType.Unknown:  # a named pipe, a socket: skipped like a directory, it matched nothing
        raise UnreadableEntryError(unreadable_message(key, uri, special_kind(root.path), 0))
    local = isinstance(root.fs, pafs.LocalFileSystem)
    if info.type == pafs.FileType.NotFound and local and (link := dangling_on_the_way(root.path)):
        shown = uri if link == os.path.normpath(root.path) else link
        raise UnreadableEntryError(unreadable_message(key, shown, dangling_kind(link), 0))
    if info.type == pafs.FileType.File and not local:
        info = object_or_prefix(uri, root, info, storage, key)
    if info.type == pafs.FileType.File:
        parent = resolve(posixpath.dirname(uri.rstrip("/")) or ".", storage)
        if isinstance(root.fs, pafs.LocalFileSystem):
            return parent, with_change_times(
                parent, [ListedFile(posixpath.basename(root.path), info.size, info.mtime_ns)]
            )
        obj = head_object(root.path, storage)
        return parent, [ListedFile(posixpath.basename(root.path), obj.size, obj.mtime_ns, etag=obj.etag)]
    pattern, deep = "", True
    if info.type != pafs.FileType.Directory and has_glob(uri):
        base_uri, pattern = glob_base(uri, storage)
        matcher = glob_regex(pattern, key, uri)
        root = resolve(base_uri.rstrip("/") or ("." if "://" not in uri else base_uri), storage)
        info = root.fs.get_file_info(root.path)
        if info.type == pafs.FileType.File:  # a pattern under a file matches nothing
            info = pafs.FileInfo(root.path, pafs.FileType.NotFound)
        elif info.type == pafs.FileType.NotFound and local and (link := dangling_on_the_way(root.path)):
            # the pattern's folder is (or is below) a link to nothing: it said 'no input files found'
            raise UnreadableEntryError(unreadable_message(key, link, dangling_kind(link), 0))
    names: list[ListedFile] = []
    unreadable: list[str] = []  # names that are not UTF-8: an error if the input includes them
    unaddressable: list[tuple[str, str]] = []  # S3 keys with "//" or "/./" below the root: (rel, key)
    problems: list[tuple[str, str]] = []  # local entries that are no file to read: (rel, what), special_entries
    system: set[str] = set()  # folders an OS or filesystem keeps (lost+found, ...) that the listing skipped
    delta_logs: list[str] = []  # entries in a Delta table's _delta_log/ (skipped as `_` names): delta_tables
    if info.type == pafs.FileType.Directory or root.uri.startswith("s3://"):
        try:
            # a pattern without '/' or '**' matches names in the base folder only: its subfolders are not listed
            # (one the job's user may not enter failed `corpus/*.jsonl`; a big tree was walked for nothing)
            deep = not pattern or "/" in pattern or "**" in pattern
            entries = list(listed_entries(root, storage, recursive=deep))
            if not deep and any(named_folder(matcher, root, e) for e in entries):
                deep = True  # a folder the pattern names (`corpus/{2023,2024}`, `data/*`) is read whole: list it
                entries = list(listed_entries(root, storage, recursive=True))
        except PermissionError as err:  # a folder below the input the job's user may not list: a bare traceback
            raise UnreadableEntryError(unreadable_message(key, root.uri, unlistable_folder(err), 0)) from err
        for entry in entries:
            rel = posixpath.relpath(entry.path, root.path)
            # the key's own segments below the root: relpath drops an empty or "." one and keeps a ".." one, which
            # the hidden-name rule below took for a hidden directory (`corpus/../b.jsonl` was skipped unseen)
            below = rel_to(root, entry.path).split("/")
            hidden = any(p.startswith(HIDDEN_PREFIXES) and p not in (".", "..") for p in below)
            if DELTA_LOG in below:
                delta_logs.append("/".join(below))
            if not hidden and (at := system_depth(below, entry.is_file)) is not None:
                system.add(posixpath.join(root.uri, *below[: at + 1]))
                hidden = True
            if entry.problem and not hidden:
                problems.append((rel, entry.problem))
            if not entry.is_file or hidden:
                continue
            if entry.path != posixpath.join(root.path, rel) or any(p in ("", ".", "..") for p in below):
                unaddressable.append((rel, entry.path))
                continue
            if entry.readable:
                names.append(ListedFile(rel, entry.size, entry.mtime_ns, etag=entry.etag))
            else:
                unreadable.append(rel)
    if system and deep:  # a pattern of the base folder's names alone (`*.jsonl`) could not match in them anyway
        log.info(skipped_message(key, sorted(system)))
    if pattern:
        matched = functools.partial(matches_or_is_in_match, matcher, {})
        names = [n for n in names if matched(n.path)]
        unreadable = [rel for rel in unreadable if matched(rel)]
        unaddressable = [(rel, path) for rel, path in unaddressable if matched(rel)]
        problems = [(rel, what) for rel, what in problems if matched(rel)]
    if problems:
        rel, what, more = first_unreadable(root.path, problems)
        raise UnreadableEntryError(unreadable_message(key, posixpath.join(root.uri, rel), what, more))
    if unaddressable:
        path = unaddressable[0][1]
        key_uri = "s3://" + path if root.uri.startswith("s3://") else path
        more = f" ({len(unaddressable)} objects below the input have such keys)" if len(unaddressable) > 1 else ""
        raise InputNameError(
            f"{key}: the object {key_uri!r} has an empty, '.' or '..' segment in its key ('//', '/./' or '/../', "
            f"often from joining a prefix that ends in '/'){more}; pyarrow's S3 client, that every read goes "
            "through, cannot read such a key (its error: 'Empty path component'; for '.' and '..': not found), so "
            f"its rows would be lost: copy it to a key without one{move_hint(path)}, or move it out of the input"
        )
    if unreadable:  # skipped, its rows would be lost unseen
        raise InputNameError(
            f"{key}: the file name {posixpath.join(root.uri, unreadable[0])!r} is not valid UTF-8 (shown with \\x "
            "escapes), so it cannot be read; rename it to UTF-8 (e.g. convmv -f latin1 -t utf8 --notest -r DIR) "
            "or move it out of the input"
        )
    if not names and not pattern and (info.type == pafs.FileType.Directory or root.uri.startswith("s3://")):
        names = versioned_files(root)
    if not names:
        skipped = ""
        if system:  # `*/*.jsonl` matching only in lost+found/ or @eaDir/: say so, not just 'check input.uri'
            folders = sorted(system)
            shown = ", ".join(repr(f) for f in folders[:3]) + (
                f" and {len(folders) - 3} more" if len(folders) > 3 else ""
            )
            skipped = (
                f"; skipped {shown}: a folder the filesystem or OS keeps, not data (to read files in it, give its path "
                "as the input)"
            )
        raise FileNotFoundError(
            f"no input files found at {uri} (check {key} and storage settings){skipped}{other_spelling(uri, storage)}"
        )
    names = sorted(names, key=lambda n: n.path)
    s3 = root.uri.startswith("s3://")
    for table in table_roots(delta_logs):  # a Delta table's folder: the files of its current version alone
        where = posixpath.join(root.path, table) if table else root.path
        names = live_listing(names, table, f"s3://{where}" if s3 else where, storage, key, complete=not pattern)
    if not delta_logs and (enclosing := enclosing_table(root.fs, root.path)):  # a partition folder of a table
        where, inside = enclosing
        names = live_listing(names, "", f"s3://{where}" if s3 else where, storage, key, not pattern, inside)
    if not names:  # a Delta table whose current version holds no file (every row deleted)
        raise FileNotFoundError(f"no input files found at {uri}: the Delta table's current version holds no file")
    check_iceberg(root.uri, [n.path for n in names], key)
    if isinstance(root.fs, pafs.LocalFileSystem):
        if denied := list(unreadable_files(root.path, (n.path for n in names))):
            rel, what = denied[0]
            raise UnreadableEntryError(unreadable_message(key, posixpath.join(root.uri, rel), what, len(denied) - 1))
        names = with_change_times(root, once_per_file(root, names, key))
    return root, names


def object_or_prefix(uri: str, root: Location, info: pafs.FileInfo, storage: StorageConfig, key: str) -> pafs.FileInfo:
    """What an S3 URI naming an object (`s3://b/corpus`) means where the prefix `corpus/` holds objects too (a
    `corpus` object written beside the folder by a tool or by mistake): pyarrow took the object, so the folder's
    rows were left out unseen (an empty marker object: the run read 0 rows), and `s3://b/corpus/` read the object too.

    Returns:
        `info` (the object) where no object lies below the prefix; a Directory for a URI ending in `/` or an empty
        object (a folder marker written without its `/`, INFO line), so that the prefix is listed.

    Raises:
        InputNameError: a non-empty object beside a non-empty prefix, without a trailing `/`: which is meant cannot
            be told; the message says how to ask for each.
    """
    directory = pafs.FileInfo(root.path, pafs.FileType.Directory)
    if uri.endswith("/"):
        return directory  # a trailing '/' names the prefix, as for `aws s3 ls` and s3fs
    if next(list_objects(root.path, storage), None) is None:
        return info
    if info.size == 0:
        log.info("%s: %s is an empty object beside the prefix %s/: read as that folder", key, uri, uri)
        return directory
    raise InputNameError(
        f"{key}: {uri} is an object ({info.size} bytes) and also a prefix with objects below it ({uri}/...); which "
        f"one to read cannot be told: write {uri}/ (with the '/') to read the objects below the prefix, or copy the "
        "object to a key of its own to read it alone"
    )


def rel_to(root: Location, path: str) -> str:
    """`path` (listed below `root`) relative to it."""
    return path.removeprefix(root.path.rstrip("/") + "/")


def named_folder(matcher: re.Pattern, root: Location, entry: Entry) -> bool:
    """Whether a listed entry is a folder (not hidden) that a glob names."""
    rel = rel_to(root, entry.path)
    folder = not entry.is_file and entry.problem is None and entry.readable
    return folder and not posixpath.basename(rel).startswith(HIDDEN_PREFIXES) and in_folder_matched(matcher, rel)


def in_folder_matched(matcher: re.Pattern, folder: str) -> bool:
    """Whether a glob (`matcher`) names `folder` (relative to the pattern's base), with or without a trailing '/'."""
    return matcher.fullmatch(folder) is not None or matcher.fullmatch(folder + "/") is not None


def matches_or_is_in_match(matcher: re.Pattern, folders: dict[str, bool], rel: str) -> bool:
    """Whether a listed file is matched by a glob, itself or through a folder the glob names (read whole, as a folder
    given as input is, and as Spark's Hadoop globs read one): `corpus/{2023,2024}` and `data/*` read the files in
    those folders; they said 'no input files found', or left a matched folder's files out beside matched files.
    `folders` caches each folder's answer (a listing holds many files per folder)."""
    if matcher.fullmatch(rel):
        return True
    parts = rel.split("/")
    for depth in range(1, len(parts)):
        folder = "/".join(parts[:depth])
        if folder not in folders:
            folders[folder] = in_folder_matched(matcher, folder)
        if folders[folder]:
            return True
    return False


@dataclass(frozen=True)
class Entry:
    """One entry of a recursive listing, local or S3."""

    path: str  # on the filesystem; a name that is not UTF-8 with \\x escapes (listed_path)
    readable: bool  # whether the name is valid UTF-8
    is_file: bool
    size: int | None
    mtime_ns: int | None
    etag: str | None = None  # S3 only
    problem: str | None = None  # local: why an entry that is no directory cannot be read as a file (special_entries)


def listed_entries(root: Location, storage: StorageConfig, recursive: bool = True) -> Iterator[Entry]:
    """Everything below `root` at any depth (a local folder's own entries only where not `recursive`): local files
    through pyarrow, S3 objects through pipeline.s3_listing (the same ListObjectsV2 pages pyarrow requests, with the
    ETags pyarrow drops)."""
    if not isinstance(root.fs, pafs.LocalFileSystem):
        for obj in list_objects(root.path, storage):
            yield Entry(obj.path, True, True, obj.size, obj.mtime_ns, obj.etag)
        return
    directories = [root.path]
    for info in local_listing(root, recursive):
        path, readable = listed_path(info)
        special = info.type == pafs.FileType.Unknown and readable
        yield Entry(path, readable, info.type == pafs.FileType.File, info.size, info.mtime_ns,
                    problem=special_kind(path) if special else None)  # fmt: skip
        if info.type == pafs.FileType.Directory and readable:
            directories.append(path)
    if os.path.isdir(root.path):  # pyarrow leaves dangling links out of its listing: they are looked for here
        for path, what in dangling_links(directories, HIDDEN_PREFIXES):
            yield Entry(path, True, False, None, None, problem=what)


def local_listing(root: Location, recursive: bool = True) -> list[pafs.FileInfo]:
    """pyarrow's listing of a local folder (recursive, or its own entries); where it stopped at a folder the job's
    user may not list that the listing skips anyway (a hidden one: `.snapshot`, another user's `.cache`; one an OS
    or filesystem keeps: `lost+found` at a volume's root, special_entries.SYSTEM_FOLDERS), the folders are listed one
    by one without entering those (it failed the job naming that folder).

    Raises:
        PermissionError: a folder that is neither hidden nor a system folder cannot be listed.
    """
    try:
        return root.fs.get_file_info(pafs.FileSelector(root.path, recursive=recursive, allow_not_found=True))
    except PermissionError as err:
        denied = re.search(r"Cannot list directory '(.*?)'", str(err))
        if denied is None or not skipped_below(root.path, denied.group(1)):
            raise
    infos, todo = [], [root.path]
    while todo:
        folder = todo.pop()
        try:
            listed = root.fs.get_file_info(pafs.FileSelector(folder, recursive=False))
        except PermissionError:
            raise
        except OSError:  # a loop of links followed until the OS gave up (ELOOP): the recursive listing skips it too
            continue
        infos += listed
        todo += [i.path for i in listed if i.type == pafs.FileType.Directory and not skipped_name(i.base_name)]
    return infos


def hidden_name(name: str) -> bool:
    return name.startswith(HIDDEN_PREFIXES)


def skipped_name(name: str) -> bool:
    """Whether the listing skips a folder of this name: hidden, or one an OS or filesystem keeps."""
    return hidden_name(name) or system_folder(name)


def skipped_below(root: str, path: str) -> bool:
    """Whether `path`, below `root`, is in or is a folder the listing skips (a segment below `root` starts with _ or
    ., or names a system folder such as lost+found)."""
    rel = os.path.relpath(path, root)
    return not rel.startswith("..") and any(skipped_name(p) and p not in (".", "..") for p in rel.split(os.sep))


def system_depth(below: list[str], is_file: bool) -> int | None:
    """The index of the first segment of an entry's path below the root that names a system folder
    (special_entries.SYSTEM_FOLDERS), a file's own name aside; None when there is none."""
    folders = below[:-1] if is_file else below
    return next((i for i, p in enumerate(folders) if system_folder(p)), None)


def move_hint(path: str) -> str:
    """` (e.g. aws s3 mv 's3://b/x//a.jsonl' 's3://b/x/a.jsonl')` for a `bucket/key` with empty or `.` segments:
    the key without them; "" for a key with `..` segments, which has no one obvious key to move to."""
    segments = path.split("/")
    if ".." in segments:
        return ""
    kept = "/".join(s for s in segments if s not in ("", "."))
    return f" (e.g. aws s3 mv 's3://{path}' 's3://{kept}', if no object has that key)"


def once_per_file(root: Location, names: list[ListedFile], key: str = "input.uri") -> list[ListedFile]:
    """Each local file once, however many paths reach it through symbolic links.

    The listing follows symbolic links to directories, so a link to an ancestor (`sub/up -> ..`) listed every file
    below it again at each depth until the OS gave up (41 copies of each row), and a link beside its target
    (`latest -> 2024-11`) read that directory twice. The path without links is kept (else the shortest, then the
    first in order), and a warning names what was left out.
    """
    real_root = os.path.realpath(root.path)
    # One lstat per file and one realpath per directory (a realpath per file cost 8 s per 100,000 files); without
    # any link below the root the listing is returned as it is.
    folders = {posixpath.dirname(f.path) for f in names}
    real_dirs = {d: os.path.realpath(posixpath.join(root.path, d)) for d in folders}
    linked_dirs = any(real_dirs[d] != posixpath.normpath(posixpath.join(real_root, d)) for d in folders)
    linked_files = {f.path for f in names if os.path.islink(posixpath.join(root.path, f.path))}
    if not linked_dirs and not linked_files:
        return names
    by_file: dict[str, list[ListedFile]] = {}
    for listed in names:
        folder, name = posixpath.split(listed.path)
        if listed.path in linked_files:
            real = os.path.realpath(posixpath.join(root.path, listed.path))
        else:
            real = posixpath.join(real_dirs[folder], name)
        by_file.setdefault(real, []).append(listed)
    if all(len(paths) == 1 for paths in by_file.values()):
        return names
    kept, dropped = set(), []
    for real, paths in by_file.items():
        direct = os.path.relpath(real, real_root)
        best = min(paths, key=lambda f: (f.path != direct, len(f.path), f.path))
        kept.add(best.path)
        dropped += [(f.path, best.path) for f in paths if f is not best]
    log.warning(
        "%s: %d paths reach files already listed under another path through symbolic links (e.g. %s is %s); "
        "each file is read once, under the path shown second",
        key,
        len(dropped),
        *min(dropped),
    )
    return [f for f in names if f.path in kept]


def versioned_files(root: Location) -> list[ListedFile]:
    """The data files of a re-embed dataset's current version (`python -m jobs.reembed` output), [] for any other
    directory. Its files live under hidden `_versions/` folders next to staged files of unfinished runs, so only
    the manifest that `_current.json` names says which are the dataset; the cluster and mining jobs (and anyone
    listing an input) then read a re-embed dataset like the embed job's output. Paths are relative to `root`."""
    from pipeline.reembed.layout import VERSIONS  # imported here: the re-embed modules import this one
    from pipeline.reembed.manifest import current_manifest

    manifest = current_manifest(root)
    if manifest is None:
        return []
    rels = [posixpath.join(VERSIONS, manifest.fingerprint, f) for f in manifest.output_files()]
    infos = root.fs.get_file_info([root.join(r).path for r in rels]) if rels else []
    return [ListedFile(r, i.size, i.mtime_ns) for r, i in zip(rels, infos)]


class InputNameError(UserError, ValueError):
    """A file name in the input listing that is not valid UTF-8 (pyarrow addresses files by UTF-8 names only)."""


def listed_path(entry: pafs.FileInfo) -> tuple[str, bool]:
    """(the entry's path, whether its name is valid UTF-8); an invalid name is given with `\\xNN` escapes.

    pyarrow addresses files by UTF-8 names only, so such a file (a Latin-1 `café.txt` copied from an old system)
    cannot be read; it used to raise a bare UnicodeDecodeError out of the listing.
    """
    try:
        return entry.path, True
    except UnicodeDecodeError as err:
        return (err.object.decode("utf-8", "backslashreplace") if isinstance(err.object, bytes) else "?"), False


class StorageWriteError(UserError, OSError):
    """A write that failed for good (denied, invalid); the message names the object and the error."""


def write_error(target: Location, err: OSError) -> OSError:
    """The error of a failed write, naming the object: TransientStorageError when another attempt may succeed (the
    S3 client's own retries were spent: throttling, 5xx, a dropped connection), else StorageWriteError."""
    kind = TransientStorageError if is_transient(err) else StorageWriteError
    return kind(f"cannot write {target.uri}: {err}")


def glob_regex(pattern: str, key: str = "input.uri", uri: str | None = None) -> re.Pattern:
    """Shell-style glob -> regex: `*`, `?` and `[...]` stay within one path segment, `**` crosses segments, and `**/`
    matches zero or more directories (`corpus/**/*.jsonl` also matches `corpus/a.jsonl`, as bash and Python's glob do).
    `{a,b}` matches either part (`*.{jsonl,parquet}`, as bash, Spark's Hadoop globs and DuckDB read it); `{x}` without
    a comma is literal.

    `[!...]`/`[^...]` negate a class; `]` right after the opening bracket (or `!`) is a member, so `[]]` and `[[]`
    match a literal bracket.

    Raises:
        InvalidGlobError: an unclosed `[` or a class regex cannot compile (e.g. a reversed range `[z-a]`).
    """
    return glob_compile(glob_translate(pattern, key, uri), key, pattern, uri)


def glob_translate(pattern: str, key: str, uri: str | None) -> str:
    """glob_regex's regex text for `pattern` (not compiled: brace alternatives translate each part)."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):  # zero or more directories, as in bash globstar and Python's glob
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = i + 1
            negate = j < n and pattern[j] in "!^"
            j += negate
            j += j < n and pattern[j] == "]"  # a leading ] is a member of the class
            close = pattern.find("]", j)
            if close < 0:
                raise InvalidGlobError(
                    f"{key}: invalid glob pattern {uri or pattern!r}: unclosed '[' at position {i} of {pattern!r}; "
                    "escape a literal bracket as [[] (Python's glob.escape), or point at a path that exists"
                )
            members = pattern[i + 1 + negate : close].replace("\\", "\\\\").replace("[", "\\[")
            out.append(f"[^/{members}]" if negate else f"(?!/)[{members}]")
            i = close + 1
        elif c == "{" and (parts := brace_parts(pattern, i)) is not None:
            close, alternatives = parts
            out.append("(?:" + "|".join(glob_translate(a, key, uri) for a in alternatives) + ")")
            i = close + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def brace_parts(pattern: str, start: int) -> tuple[int, list[str]] | None:
    """(index of the closing brace, the alternatives) of the `{a,b}` opening at `start`, as bash, Hadoop (Spark)
    and DuckDB globs read it (nested braces too); None when it has no closing brace or no comma at its level (`{x}`
    is literal, as in bash)."""
    depth, parts, last = 0, [], start + 1
    for j in range(start, len(pattern)):
        if pattern[j] == "{":
            depth += 1
        elif pattern[j] == "}":
            depth -= 1
            if depth == 0:
                return (j, [*parts, pattern[last:j]]) if parts else None
        elif pattern[j] == "," and depth == 1:
            parts.append(pattern[last:j])
            last = j + 1
    return None


def glob_compile(regex: str, key: str, pattern: str, uri: str | None) -> re.Pattern:
    try:
        return re.compile(regex)
    except re.error as err:
        raise InvalidGlobError(
            f"{key}: invalid glob pattern {uri or pattern!r}: {err}; escape literal [ ] * ? as [[] []] [*] [?] "
            "(Python's glob.escape)"
        ) from err


def write_parquet_atomic(table: pa.Table, target: Location) -> None:
    """Write so that readers never see a half-written file.

    S3 objects appear only when the upload completes; on local disks we write a hidden temp file and rename it.
    Writing again overwrites the object whole, so a retry of the caller is safe.

    Raises:
        TransientStorageError, StorageWriteError: see write_error.
    """
    try:
        target.fs.create_dir(posixpath.dirname(target.path), recursive=True)
        if isinstance(target.fs, pafs.LocalFileSystem):
            name = f".{posixpath.basename(target.path)}.{uuid.uuid4().hex}"
            tmp = posixpath.join(posixpath.dirname(target.path), name)
            pq.write_table(table, tmp, filesystem=target.fs)
            target.fs.move(tmp, target.path)
        else:
            pq.write_table(table, target.path, filesystem=target.fs)
    except OSError as err:
        raise write_error(target, err) from err


def write_bytes(data: bytes, target: Location) -> None:
    try:
        target.fs.create_dir(posixpath.dirname(target.path), recursive=True)
        with target.fs.open_output_stream(target.path) as out:
            out.write(data)
    except OSError as err:
        raise write_error(target, err) from err


def read_bytes(target: Location) -> bytes:
    """The whole object.

    Raises:
        TransientStorageError: a transient failure (pipeline.transient_errors), naming the object; any other
            OSError (FileNotFoundError, ...) propagates as it is.
    """
    try:
        with target.fs.open_input_stream(target.path) as f:
            return f.read()
    except OSError as err:
        if is_transient(err):
            raise TransientStorageError(f"cannot read {target.uri}: {err}") from err
        raise
