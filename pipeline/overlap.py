"""An output location apart from the inputs, decided from the configured URIs before anything is read or deleted.

`output.overwrite: true` deletes everything under the output location before a run, so an output that holds an input
(`input.uri: data/corpus`, `output.uri: data`) deleted the corpus; without overwrite the refusal ("already holds N
files ... set output.overwrite=true") pointed at exactly that. An output inside an input directory is read back as
input by the next run (its `part-*.parquet` files are listed with the corpus). Both are configuration errors.

Pure path logic: local paths are compared after `~` expansion, making them absolute and resolving symbolic links
(what exists of them), S3 URIs by bucket and key prefix, both by whole path segments (`corpus2` is not inside
`corpus`). A glob input is compared by its literal base directory; an output below that base is refused only when
the pattern could list the output's files. A folder whose name starts with `_` or `.` is never listed as input
(pipeline.storage), so an output such as `corpus/_embeddings` is allowed.
"""

from __future__ import annotations

import os
import posixpath

from pipeline.storage import GLOB_CHARS, HIDDEN_PREFIXES, glob_regex, matches_or_is_in_match

# Paths an output's files take below it (the embed job's part files; the re-embed job's versioned folders): an input
# glob that matches one of them would read the output back.
OUTPUT_FILE_SAMPLES = ("part-0.parquet", "v/part-0.parquet", "v/w/part-0.parquet")


def normalized(uri: str) -> tuple[str, str]:
    """(scheme, path) of `uri` for comparison: ("s3", "bucket/key") or ("local", "/abs/path")."""
    if uri.startswith("s3://"):
        return "s3", "/".join(part for part in uri[len("s3://") :].split("/") if part not in ("", "."))
    path = uri.removeprefix("file://")
    return "local", os.path.realpath(os.path.expanduser(path))


def literal_base(uri: str) -> tuple[str, str]:
    """(URI up to the first path segment with glob characters, pattern of the rest); ("uri", "") without globs.

    A local path that exists as written is literal, glob characters and all, as the listing takes it.
    """
    if not any(c in uri for c in GLOB_CHARS):
        return uri, ""
    if not uri.startswith("s3://") and os.path.exists(os.path.expanduser(uri.removeprefix("file://"))):
        return uri, ""
    scheme, sep, rest = uri.partition("://")
    segments = rest.split("/") if sep else uri.split("/")
    for i, segment in enumerate(segments):
        if any(c in segment for c in GLOB_CHARS):
            base = "/".join(segments[:i]) or ("/" if uri.startswith("/") else ".")
            return (scheme + sep + base if sep else base), "/".join(segments[i:])
    return uri, ""


def relative_below(inner: tuple[str, str], outer: tuple[str, str]) -> str | None:
    """`inner`'s path relative to `outer` when it is `outer` ("") or below it, else None."""
    if inner[0] != outer[0]:
        return None
    if inner[1] == outer[1]:
        return ""
    prefix = outer[1] if outer[1].endswith("/") or not outer[1] else outer[1] + "/"
    return inner[1][len(prefix) :] if inner[1].startswith(prefix) else None


def overlap_error(output_key: str, output_uri: str, input_key: str, input_uri: str) -> str | None:
    """Why `output_uri` cannot be written beside the input `input_uri`, or None when they are apart.

    Args:
        output_key, input_key: the config keys, named in the message (e.g. "output.uri", "source.uri").
        output_uri, input_uri: as configured (relative local paths count from the current directory).
    """
    out = normalized(output_uri)
    base_uri, pattern = literal_base(input_uri)
    base = normalized(base_uri)
    if relative_below(base, out) is not None:
        same = "is" if relative_below(out, base) == "" and not pattern else "contains"
        return (
            f"{output_key} ({output_uri}) {same} the input {input_key} ({input_uri}): the output location is "
            "emptied by output.overwrite and read as one dataset, so the input would be deleted or mixed with the "
            f"embeddings; choose an {output_key} outside the input"
        )
    rel = relative_below(out, base)
    if rel is None or any(part.startswith(HIDDEN_PREFIXES) for part in rel.split("/")):
        return None
    if pattern:
        matcher = glob_regex(pattern, input_key, input_uri)
        # a file the glob matches, or one in a folder it names (read whole: storage.matches_or_is_in_match)
        if not any(matches_or_is_in_match(matcher, {}, posixpath.join(rel, f)) for f in OUTPUT_FILE_SAMPLES):
            return None
    return (
        f"{output_key} ({output_uri}) is inside the input {input_key} ({input_uri}): the next run would list the "
        f"output's files as input; choose an {output_key} outside the input, or a folder whose name starts with '_' "
        "(never listed as input), e.g. "
        f"{posixpath.join(posixpath.dirname(output_uri.rstrip('/')), '_' + posixpath.basename(output_uri.rstrip('/')))}"
    )


def check_apart(output_key: str, output_uri: str, inputs: dict[str, str | list[str] | None]) -> None:
    """Raise ValueError (a config error) when the output overlaps one of `inputs` ({key: uri or list of uris; None is
    skipped}; each location of a list is checked, named `key[i]`)."""
    listed = {}
    for key, uri in inputs.items():
        if isinstance(uri, list):
            listed.update({f"{key}[{i}]": u for i, u in enumerate(uri)} if len(uri) > 1 else {key: uri[0]})
        else:
            listed[key] = uri
    for key, uri in listed.items():
        if uri is None:
            continue
        error = overlap_error(output_key, output_uri, key, uri)
        if error:
            raise ValueError(error)
