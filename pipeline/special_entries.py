"""Entries of a local input listing that look like data files but cannot be read as one, found while listing.

pyarrow's recursive listing leaves out a symbolic link whose target is missing (a dangling link, or a loop of
links) without a word, and lists a named pipe, socket or device as type Unknown, which the walker then skipped
like a directory: either way the file's rows were missing from the run and nothing said so. These are reported
instead (pipeline.storage.list_location raises UnreadableEntryError naming them and what to do), as are files and
folders the job's user may not read: a file failed the job only when its read task reached it (hours in), a folder
the listing itself with a bare PermissionError traceback.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator

from pipeline.errors import UserError

# Folders that a filesystem, an OS or a storage appliance keeps at a volume's (or share's) root, holding no data of
# the user's and often readable by root only: fsck's lost+found (mode 700), Windows' System Volume Information and
# recycle bins (on a mounted NTFS/exFAT disk or SMB share), NetApp's ~snapshot (SMB), Synology's @eaDir / #recycle /
# #snapshot, QNAP's @Recycle / @Recently-Snapshot, chkdsk's found.000. Compared without case, as Windows names are.
# Names a user's data folder may well have are left out (old Windows' RECYCLER / RECYCLED: a `recycled/` corpus).
# Hidden ones (.snapshot, .Trashes, .zfs) are skipped by the hidden-name rule already.
SYSTEM_FOLDERS = frozenset(
    name.casefold()
    for name in (
        "lost+found",
        "System Volume Information",
        "$RECYCLE.BIN",
        "~snapshot",
        "@eaDir",
        "#recycle",
        "#snapshot",
        "@Recycle",
        "@Recently-Snapshot",
        "found.000",
    )
)


def system_folder(name: str) -> bool:
    """Whether a folder of this name is one a filesystem or OS keeps (SYSTEM_FOLDERS): never input, skipped."""
    return name.casefold() in SYSTEM_FOLDERS


def skipped_message(key: str, folders: list[str]) -> str:
    """The one log line for system folders below the input that the listing skipped."""
    shown = ", ".join(repr(f) for f in folders[:3]) + (f" and {len(folders) - 3} more" if len(folders) > 3 else "")
    return (
        f"{key}: skipped {shown}: a folder the filesystem or OS keeps (lost+found, System Volume Information, "
        "recycle bins, snapshots), not data; to read files in it, give its path as the input"
    )


class UnreadableEntryError(UserError, OSError):
    """An entry below the input that is listed but cannot be read as a file: the message names it and what to do."""


def special_kind(path: str) -> str:
    """What a non-regular, non-directory entry is and what to do, in words ('a named pipe (FIFO), ...: write its
    data to a regular file')."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        return f"not readable ({err.strerror}): give the job's user access to it"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO), not a regular file: write its data to a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file: write its data to a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a regular file: copy its data to a regular file"
    return "neither a regular file nor a directory: copy its data to a regular file"


def dangling_links(directories: Iterable[str], hidden: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(path, what) for each symbolic link in `directories` (not below them) whose target does not exist; names
    starting with a `hidden` prefix are left out. One scandir per directory and one stat per link: a regular file
    costs nothing more."""
    for directory in directories:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue  # the listing itself said what it could not list
        for entry in entries:
            if entry.name.startswith(hidden) or not entry.is_symlink() or os.path.exists(entry.path):
                continue
            if os.path.exists(os.path.realpath(entry.path)):
                continue  # a link to an ancestor, reached again below itself until the OS gave up: listed elsewhere
            yield entry.path, dangling_kind(entry.path)


def dangling_on_the_way(path: str) -> str | None:
    """The symbolic link to nothing that makes a missing local `path` missing: the path itself or a folder above it
    (`gone/2024/*.jsonl` with `gone -> /mnt/old`); None when the path exists or is missing for another reason."""
    path = os.path.normpath(path)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return path if os.path.islink(path) and not os.path.exists(path) else None


def dangling_kind(path: str) -> str:
    """A dangling symbolic link, in words, with its target and what to do."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return f"a symbolic link to {target!r}, which does not exist (or is a loop of links): restore its target"


def unreadable_message(key: str, shown: str, what: str, more: int) -> str:
    """The error for entries below the input that cannot be read: the first one, what it is, how many, what to do."""
    others = f" ({more} more entries below the input cannot be read as files)" if more else ""
    return (
        f"{key}: {shown!r} is {what}, or move it out of the input, and run again{others}. Its rows cannot be read; "
        "the run stops here rather than miss them without a word"
    )


def first_unreadable(root: str, problems: list[tuple[str, str]]) -> tuple[str, str, int]:
    """(rel, what, more) of the entries to report: one per entry on disk, each under its shortest path below `root`.

    A link to an ancestor folder (`sub/up -> ..`) reaches every entry below that folder again at each depth until
    the OS gives up (40 more paths); the error named the deepest of them ('sub/up/sub/up/.../x', first in sort
    order) and counted one bad entry as 41. An entry is its real folder and its name (a dangling link is not
    followed); its shortest path (then the first in order) stands for it, and the first of those in order is named.
    """
    shortest: dict[tuple[str, str], tuple[str, str]] = {}
    for rel, what in problems:
        folder, name = os.path.split(os.path.join(root, rel))
        entry = (os.path.realpath(folder), name)
        if entry not in shortest or (rel.count("/"), rel) < (shortest[entry][0].count("/"), shortest[entry][0]):
            shortest[entry] = (rel, what)
    rel, what = min(shortest.values())
    return rel, what, len(shortest) - 1


def unreadable_files(root: str, rels: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(rel, what) for each file below `root` the job's user may not read (one access() call per file)."""
    for rel in rels:
        if not os.access(os.path.join(root, rel), os.R_OK):
            yield rel, "a file the job's user may not read (permission denied): give it read access (chmod a+r)"


def unlistable_folder(err: PermissionError) -> str:
    """An input folder holding one the listing could not enter, in words, with pyarrow's message and what to do."""
    return (
        f"a folder holding one the job's user may not list ({str(err).strip()}): give the job's user read and "
        "execute access to it (chmod a+rx)"
    )
