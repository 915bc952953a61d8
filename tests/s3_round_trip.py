"""What a job does with an S3 location, in one call: list it (boto3), read every file and write one (pyarrow)."""

from __future__ import annotations

from pipeline.config import StorageConfig
from pipeline.storage import list_files


def listed_and_read(storage: StorageConfig, uri: str, write: bool = True) -> dict[str, bytes]:
    """{relative path: bytes} of the files listed under `uri`; with `write`, then writes `<uri>/_written` (so both
    clients, and both directions of pyarrow's, have reached the store)."""
    root, files = list_files(uri, storage)
    out = {}
    for rel in files:
        with root.fs.open_input_stream(root.join(rel).path) as f:
            out[rel] = f.read()
    if write:
        with root.fs.open_output_stream(root.join("_written").path) as f:
            f.write(b"w")
    return out
