"""Where a location that holds nothing exists under another Unicode spelling of its accented names (NFC / NFD).

macOS and some sync tools write accented names decomposed (NFD: `e` + U+0301), editors and terminals mostly composed
(NFC: U+00E9), and the bytes differ, so `café/` typed in a config does not find the `café/` a Mac uploaded. Folders
of one path may have been written by different tools (`Müller/` composed, `café/` decomposed), and a glob's accented
letters (`corpus/café-*.jsonl`) must match names stored in either form. So the location is resolved one segment at a
time (a segment not found as written is looked up in its parent's listing by its NFC form), and a pattern is matched
against the listed names after normalizing both. Run on the error path of pipeline.storage.list_files only.
"""

from __future__ import annotations

import posixpath
import unicodedata

import pyarrow.fs as pafs

from pipeline.config import StorageConfig

FORMS = {"NFC": "composed (NFC)", "NFD": "decomposed (NFD, as macOS writes names)"}
SHORT = {"NFC": "composed (NFC)", "NFD": "decomposed (NFD)"}
SHOWN = 3


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def spelling(text: str) -> str | None:
    """`NFC` or `NFD` for a non-ASCII text normalized in that form, None for an ASCII or mixed one."""
    if text.isascii():
        return None
    for form in FORMS:
        if unicodedata.is_normalized(form, text):
            return form
    return None


def key_form(text: str) -> str:
    """The spelling of `text` in words: composed, decomposed or mixed."""
    if unicodedata.is_normalized("NFC", text):
        return "composed (NFC) spelling"
    return "decomposed (NFD) spelling" if unicodedata.is_normalized("NFD", text) else "mixed spelling"


def exists(fs: pafs.FileSystem, path: str) -> bool:
    try:
        return fs.get_file_info(path).type in (pafs.FileType.File, pafs.FileType.Directory)
    except (OSError, ValueError):
        return False


def stored_path(fs: pafs.FileSystem, path: str) -> str | None:
    """`path` as the store spells it, resolved one segment at a time: a segment that does not exist as written is
    the entry of its parent's listing with the same NFC form. None when a segment has no such entry (an ASCII one:
    no other spelling to try). One request per segment, and one listing per non-ASCII segment not found."""
    absolute = path.startswith("/")
    segments = [s for s in path.split("/") if s]
    current = "/" if absolute else ""
    for segment in segments:
        candidate = posixpath.join(current, segment) if current else segment
        if exists(fs, candidate):
            current = candidate
            continue
        if segment.isascii() or not current:  # an S3 bucket (the first segment) is ASCII
            return None
        try:
            listed = fs.get_file_info(pafs.FileSelector(current, recursive=False))
        except (OSError, ValueError):
            return None
        same = [info.base_name for info in listed if nfc(info.base_name) == nfc(segment)]
        if not same:
            return None
        current = posixpath.join(current, same[0])
    return current


def describe(found: str) -> tuple[str, str]:
    """(how the accented names of `found`, a path as the store spells it, are spelled; what to write)."""
    form = spelling(found)
    if form:
        return f"its accented letters {FORMS[form]}", f"unicodedata.normalize({form!r}, ...)"
    parts = [f"{name!r} {SHORT[spelling(name)]}" for name in found.split("/") if spelling(name)]
    names = ", ".join(parts) or "its names in mixed forms"
    return f"its folders spelled in different forms ({names})", "each name copied from a listing (ls, aws s3 ls)"


def other_spelling(uri: str, storage: StorageConfig) -> str:
    """A hint for a location that holds nothing (`; 's3://b/Müller/café' exists: ...`) where the same names in
    other Unicode normalizations exist, or a glob's pattern matches names once both are NFC; "" for an ASCII
    location, or when no other spelling exists.

    Requests: one per segment of the literal part, a listing of a folder holding a non-ASCII segment not found as
    written, and, for a non-ASCII pattern, one recursive listing of its base (as the failed listing made).
    """
    from pipeline.storage import glob_base, has_glob, resolve

    if uri.isascii():
        return ""
    try:  # a hint only: a failed request leaves the error as it was
        literal, pattern = glob_base(uri, storage) if has_glob(uri) else (uri, "")
        place = resolve(literal, storage)
    except (OSError, ValueError):
        return ""
    found = stored_path(place.fs, place.path)
    if found is None:
        return ""
    prefix = "s3://" if place.uri.startswith("s3://") else ""
    base = prefix + found
    hints = []
    if found != place.path.rstrip("/"):
        how, what = describe(found)
        at = posixpath.join(base, pattern) if pattern else base
        hints.append(
            f"; {base!r} exists: the same name with {how}, other bytes than the {key_form(literal)} written in the "
            f"config: write the location as the store spells it ({at!r}), e.g. {what}"
        )
    if pattern and not pattern.isascii():
        hints.append(pattern_hint(place.fs, found, base, pattern, uri))
    return "".join(hints)


def pattern_hint(fs: pafs.FileSystem, found: str, base: str, pattern: str, uri: str) -> str:
    """The hint for a glob `pattern` that matches files below `found` (`base`: its URI) once the pattern and their
    names are both NFC, though not as written; "" when none does."""
    from pipeline.storage import glob_regex

    try:
        exact, loose = glob_regex(pattern, uri=uri), glob_regex(nfc(pattern), uri=uri)
        listed = fs.get_file_info(pafs.FileSelector(found, recursive=True))
    except (OSError, ValueError):
        return ""
    matched = []
    for info in listed:
        rel = info.path.removeprefix(found.rstrip("/") + "/")
        heads = ["/".join(rel.split("/")[:depth]) for depth in range(1, rel.count("/") + 2)]  # itself or a folder
        if info.type != pafs.FileType.File or any(exact.fullmatch(h) for h in heads):
            continue
        if any(loose.fullmatch(nfc(h)) for h in heads):
            matched.append(rel)
    if not matched:
        return ""
    matched.sort()
    shown = ", ".join(repr(m) for m in matched[:SHOWN]) + (
        f" and {len(matched) - SHOWN} more" if len(matched) > SHOWN else ""
    )
    forms = {spelling(m) for m in matched if not m.isascii()}
    form = forms.pop() if len(forms) == 1 else None
    fix = (
        f"write {posixpath.join(base, unicodedata.normalize(form, pattern))!r} (the pattern spelled "
        f"{SHORT[form]}, as the names are)"
        if form
        else "write the pattern as the store spells the names (copy them from a listing: ls, aws s3 ls)"
    )
    return (
        f"; {len(matched)} files below {base!r} match the pattern {pattern!r} once accented letters are compared "
        f"whatever their Unicode spelling ({shown}), but their names have other bytes than the {key_form(pattern)} "
        f"of the config: {fix}"
    )
