"""A local file's change token: what says that a file is still the one a run read, without reading it.

The modification time alone can be set back (`touch -r`, `cp -p` of an edited copy, `rsync -t` of an edit that
keeps the size, a tool restoring mtimes), so a file rewritten with its old size and mtime looked unchanged. The
inode change time (`st_ctime_ns`) moves with every write, rename over the file, chmod or link, and no user tool sets
it back: with it in the token such a file is seen as changed (a chmod or a hard link makes it look changed too: the
cautious side). Tokens recorded by older versions (`mtime_ns:<m>` alone) still match a file with that mtime
(`same_token`), so an upgrade changes nothing for files that did not change.

An S3 object has no ctime but an ETag, which changes with its content: the listing's token is
`mtime_ns:<m>;etag:<e>` (LastModified, to the second, and the ETag), so an object rewritten with its old size in the
same second is seen as changed. Tokens without it (older versions' `mtime_ns:<m>`) match on the mtime, as above.

Used by the re-embed job's sources (pipeline.reembed.sources) and by the input listings that the embed, cluster and
mining jobs pin for a resume (pipeline.storage.ListedFile, pipeline.fingerprint). No imports: light for any module.
"""

from __future__ import annotations


def local_token(mtime_ns: int | None, ctime_ns: int | None) -> str:
    """`mtime_ns:<m>;ctime_ns:<c>` (nanoseconds); `mtime_ns:<m>` alone where no change time is known (an S3 object,
    whose LastModified the server sets on every write and no client can set back; listed_token adds its ETag)."""
    if ctime_ns is None:
        return f"mtime_ns:{mtime_ns}"
    return f"mtime_ns:{mtime_ns};ctime_ns:{ctime_ns}"


def listed_token(mtime_ns: int | None, ctime_ns: int | None, etag: str | None) -> str:
    """local_token, with `;etag:<e>` where the listing gave an ETag (S3)."""
    token = local_token(mtime_ns, ctime_ns)
    return f"{token};etag:{etag}" if etag is not None else token


def same_token(recorded: str, now: str) -> bool:
    """Whether a file whose change token was `recorded` still has it (`now`): the same token, or an older version's
    token (`mtime_ns:<m>`, without the ctime or the ETag) with the same mtime, which that version took for unchanged
    too."""
    if recorded == now:
        return True
    return recorded.startswith("mtime_ns:") and ";" not in recorded and now.startswith(recorded + ";")
