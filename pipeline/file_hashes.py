"""sha256 of local files, remembered across runs by (path, size, mtime, inode, ctime): a model is read once, not per
run.

The fingerprint of a local model directory is a content hash (pipeline.fingerprint): reading 54 GB of weights at
~1 GB/s would add a minute to every start of a 27b model. Like git's index, a file whose path, size, modification
time (ns), inode and inode change time (ns) are unchanged is taken to have the content it had; any change re-reads
it. The change time is there because the mtime can be set back (weights copied over with `cp -p`/`rsync -t`, `touch
-r`: same size, mtime and inode, new content) and the ctime cannot (pipeline.change_tokens); entries cached before
it was are not matched, so each file is read once more after the upgrade. The cache is one
JSON file (`$RAYEMBED_CACHE_DIR`, else `$XDG_CACHE_HOME/rayembed`, else `~/.cache/rayembed`), replaced atomically;
where it cannot be read or written, files are hashed again in every process (once per process: REMEMBERED).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK = 8 << 20
CACHE_NAME = "file-sha256.json"
# {stat key: sha256} of every file this process hashed or found cached, whatever the cache file could keep: where it
# cannot be written (a read-only home in a container), the driver hashed a model's weights twice at each start, for
# the fingerprint and again to hold the actors to it (pipeline.model_files.held_to).
REMEMBERED: dict[str, str] = {}


def cache_root() -> Path:
    """rayembed's cache directory: `$RAYEMBED_CACHE_DIR`, else `$XDG_CACHE_HOME/rayembed`, else ~/.cache/rayembed."""
    root = os.environ.get("RAYEMBED_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rayembed"


def cache_path() -> Path:
    return cache_root() / CACHE_NAME


def write_atomically(path: Path, text: str) -> None:
    """`text` into `path` (folders made) through a temporary file beside it and a rename: a concurrent reader sees
    the old content or the new, never part of it. Raises OSError."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def stat_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_ctime_ns}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_cache(path: Path) -> dict[str, str]:
    """The cache's {stat key: sha256} entries; {} where it is missing, unreadable or of another shape."""
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {k: v for k, v in loaded.items() if isinstance(v, str)}


class FileHashes:
    """`hashes.sha256(path)`: the file's sha256, from the cache when its stat key is unchanged; `save()` records the
    entries used since loading next to the others, dropping those of the same paths with an older stat key."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_path()
        self.known = read_cache(self.path)
        self.used: dict[str, str] = {}

    def sha256(self, path: Path) -> str:
        key = stat_key(path)
        value = self.known.get(key) or REMEMBERED.get(key) or sha256_of(path)
        self.used[key] = REMEMBERED[key] = value
        return value

    def save(self) -> None:
        fresh = {key.split("|", 1)[0] for key in self.used}
        kept = {k: v for k, v in self.known.items() if k.split("|", 1)[0] not in fresh}
        merged = {**kept, **self.used}
        if merged == self.known:
            return
        try:
            write_atomically(self.path, json.dumps(merged, indent=0, sort_keys=True))
        except OSError as err:  # a read-only home: hashing again next time is the only cost
            log.info("cannot record file hashes in %s: %s", self.path, err)
