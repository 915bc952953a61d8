"""Kept pairs (row numbers) -> pairs with ids, texts and kept columns, in score order, one folder per pair.

The pairs are joined to the two sides' text files without a driver holding either side:

    kept pairs routed by source text file --attach_source (task per source file)--> routed by target text file
    --attach_target (task per target file)--> routed by rank chunk --finalize (one task per pair)--> part files

Each task holds one text file and the pairs that point into it; `finalize` holds one chunk of `rows_per_file` pairs
(plus, only when identical text pairs are possible, a 16-byte digest per written pair).
"""

from __future__ import annotations

import posixpath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.bitext.prepare import text_digests
from pipeline.bitext.store import StoreRef, read_text_rows
from pipeline.bitext.stream_select import DIRECTION, DIRECTIONS, RANK, TGT, read_table
from pipeline.config import StorageConfig
from pipeline.shared_output import RunLease, check_output_is_the_drivers
from pipeline.storage import resolve, write_parquet_atomic

PAIRS_SCHEMA = pa.schema(
    [
        ("src_id", pa.string()),
        ("tgt_id", pa.string()),
        ("src_text", pa.string()),
        ("tgt_text", pa.string()),
        ("score", pa.float32()),
        ("cosine", pa.float32()),
        ("src_lang", pa.string()),
        ("tgt_lang", pa.string()),
        ("direction", pa.string()),  # forward (the source's best), backward (the target's best) or both
    ]
)


LANG_DICTIONARY = pa.dictionary(pa.int32(), pa.string())


def output_schema(schema: pa.Schema, partitioned: bool) -> pa.Schema:
    """PAIRS_SCHEMA's types for its columns (kept columns as they came), languages dictionary-encoded if partitioned."""
    fields = []
    for f in schema:
        f = PAIRS_SCHEMA.field(f.name) if f.name in PAIRS_SCHEMA.names else f
        if partitioned and f.name in ("src_lang", "tgt_lang"):
            f = f.with_type(LANG_DICTIONARY)
        fields.append(f)
    return pa.schema(fields)


def attach(
    pairs: pa.Table, store: StoreRef, file_index: int, prefix: str, keep: list[str], storage: StorageConfig
) -> pa.Table:
    """Add <prefix>id, <prefix>text and <prefix><keep> of the rows in `pairs[<prefix>row]` from one text file."""
    texts = read_text_rows(store, file_index, storage, ["id", "text", *keep])
    first = store.text_files[file_index][1]
    pos = pa.array(pairs.column(f"{prefix}row").to_numpy() - first)
    for name in ["id", "text", *keep]:
        pairs = pairs.append_column(f"{prefix}{name}", texts.column(name).take(pos))
    return pairs


def concat(uris: list[str], storage: StorageConfig) -> pa.Table:
    return pa.concat_tables([read_table(u, storage) for u in uris], promote_options="permissive")


def attach_source(
    src: StoreRef, tgt: StoreRef, file_index: int, uris: list[str], keep: list[str], work_uri: str, storage
) -> list[tuple[int, str]]:
    """Attach source columns to the pairs of one source text file, then route them by target text file."""
    pairs = attach(concat(uris, storage), src, file_index, "src_", keep, storage)
    files = tgt.text_file_of(pairs.column(TGT).to_numpy())
    out = []
    for f in np.unique(files).tolist():
        uri = posixpath.join(work_uri, f"t{f:05d}", f"s{file_index:05d}.parquet")
        write_parquet_atomic(pairs.filter(pa.array(files == f)), resolve(uri, storage))
        out.append((f, uri))
    return out


def attach_target(
    tgt: StoreRef, file_index: int, uris: list[str], keep: list[str], chunk_rows: int, work_uri: str, storage
) -> list[tuple[int, str]]:
    """Attach target columns to the pairs of one target text file, then route them by rank chunk."""
    pairs = attach(concat(uris, storage), tgt, file_index, "tgt_", keep, storage)
    chunks = pairs.column(RANK).to_numpy() // chunk_rows
    out = []
    for c in np.unique(chunks).tolist():
        uri = posixpath.join(work_uri, f"r{c:06d}", f"t{file_index:05d}.parquet")
        write_parquet_atomic(pairs.filter(pa.array(chunks == c)), resolve(uri, storage))
        out.append((c, uri))
    return out


def finalize(
    chunks: list[list[str]],
    src_lang: str,
    tgt_lang: str,
    src_keep: list[str],
    tgt_keep: list[str],
    dedup_pairs: bool,
    partitioned: bool,
    out_dir: str,
    storage: StorageConfig,
    lease: RunLease | None = None,
) -> dict[str, Any]:
    """Write the pairs in rank order as part-NNNNN.parquet; with `dedup_pairs`, drop repeated (src, tgt) texts.

    `lease`: the run's lease in a local output, checked first on the node this task runs on (pipeline.shared_output;
    raises its OutputNotSharedError where that node has a folder of its own at the output's path).

    With `partitioned` (the folder is .../src_lang=S/tgt_lang=T/), the two language columns are dictionary-encoded
    like the Hive partition keys pyarrow/pandas/Spark derive from the path, so reading `pairs/` as one dataset works.
    """
    check_output_is_the_drivers(lease)
    seen: set[bytes] = set()
    written = dropped = 0
    files = []
    directions = pa.array(DIRECTIONS, pa.string())
    for uris in chunks:
        table = concat(uris, storage).sort_by(RANK)
        if dedup_pairs:
            pairs = zip(table["src_text"].to_pylist(), table["tgt_text"].to_pylist())
            digests = text_digests([f"{s}\x00{t}" for s, t in pairs])
            keep = []
            for d in digests.view("V16").tolist():  # 16 bytes per pair written so far
                keep.append(d not in seen)
                seen.add(d)
            mask = pa.array(keep, pa.bool_())
            dropped += table.num_rows - pc.sum(mask).as_py()
            table = table.filter(mask)
        n = table.num_rows
        columns = {
            "src_id": table["src_id"],
            "tgt_id": table["tgt_id"],
            "src_text": table["src_text"],
            "tgt_text": table["tgt_text"],
            "score": table["score"],
            "cosine": table["cosine"],
            "src_lang": pa.array([src_lang] * n, pa.string()),
            "tgt_lang": pa.array([tgt_lang] * n, pa.string()),
            "direction": directions.take(table[DIRECTION].combine_chunks().cast(pa.int32())),
        }
        columns.update({f"src_{c}": table[f"src_{c}"] for c in src_keep})
        columns.update({f"tgt_{c}": table[f"tgt_{c}"] for c in tgt_keep})
        out = pa.table(columns)
        out = out.cast(output_schema(out.schema, partitioned))
        uri = posixpath.join(out_dir, f"part-{len(files):05d}.parquet")
        write_parquet_atomic(out, resolve(uri, storage))
        files.append(uri)
        written += n
    if not files:  # an empty pair still gets a (schema-only) file, so readers find the columns
        empty = pa.table({f.name: pa.array([], f.type) for f in output_schema(PAIRS_SCHEMA, partitioned)})
        uri = posixpath.join(out_dir, "part-00000.parquet")
        write_parquet_atomic(empty, resolve(uri, storage))
        files.append(uri)
    return {"rows": written, "duplicate_pairs_dropped": dropped, "files": files}
