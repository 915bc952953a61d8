"""From corpora to side stores without a driver holding rows: read -> dedup -> embed -> join vectors by id.

    input files --read_input_file (task per file)--> work/raw/<side>/lang=<L>/fNNNNNN.parquet   (lang filter)
    raw parts --dedup_language (task per language)--> texts/<side>/lang=<L>/part-NNNNN.parquet  (row numbers)
                                                      work/ids/<side>/b=<h>/<L>.parquet          (id, row by hash)
    texts/<side> --run_embed (the embed job)--> embeddings/<side>   (or the side's embeddings_uri)
    embeddings --bucket_embeddings (task per file)--> work/emb/<side>/b=<h>/fNNNNNN.parquet
    ids + emb buckets --join_bucket (task per bucket)--> work/vectors/<side>/lang=<L>/bNNNNN.parquet

Every step is a plain function of URIs run as a Ray task (or in-process with the local backend); what returns to
the driver is counts and file lists. One task's memory is one input file, one language's 16-byte text digests
(dedup), or one join bucket (`mining.join_bucket_rows` vectors).
"""

from __future__ import annotations

import hashlib
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.bitext.languages import candidates, lang_key
from pipeline.bitext.sides import EMBED_JOB_COLUMNS, SideError, embedding_file
from pipeline.bitext.store import EMBEDDING, ROW, fixed_list, text_dir
from pipeline.columns import REJECT_COLUMNS, REJECTS_DIR, SOURCE
from pipeline.columns import ROW as ROW_IN
from pipeline.config import StorageConfig
from pipeline.duplicate_ids import FILE_INDEX, SHOWN, bucket_duplicates, digest_table
from pipeline.duplicate_ids import REASON as DUPLICATE_REASON
from pipeline.embedding_recipe import file_recipe
from pipeline.file_formats import InputFileError
from pipeline.objects import list_tree
from pipeline.reading import REJECT, TEXT, ReadSpec, read_file
from pipeline.storage import Location, list_files, resolve, write_parquet_atomic

ID, TEXT_OUT = "id", "text"


@dataclass(frozen=True)
class ReadJob:
    """What a read task needs: where to read, which languages to keep and what to carry."""

    spec: ReadSpec
    lang_column: str | None
    owners: dict[str, str]  # lang -> side that owns its store
    default_lang: str | None  # the one language of an input without lang_column
    keep_columns: tuple[str, ...]
    work_uri: str
    storage: StorageConfig
    rejects_uri: str | None = None  # <output>/_rejects/<input>: reject rows with reasons, as the embed job's
    side: str = "source"  # whose keys an error names (the first side reading the input)


@dataclass
class ReadCounts:
    rows_read: int = 0
    rows_rejected: int = 0
    per_lang: Counter = field(default_factory=Counter)  # rows of each kept language
    present: Counter = field(default_factory=Counter)  # rows of every language value seen (lang_column only)
    rejected_present: Counter = field(default_factory=Counter)  # rejected rows of each language value seen (same)
    parts: dict[str, list[str]] = field(default_factory=dict)  # lang -> raw part uris, in file order
    # lang_column only, until the driver resolves them (take): rows and raw parts per (listed code, data value)
    matched: Counter = field(default_factory=Counter)
    value_parts: dict[tuple[str, str], list[tuple[int, str]]] = field(default_factory=dict)  # -> (file index, uri)
    taken: dict[str, dict[str, int]] = field(default_factory=dict)  # lang -> data value -> rows, once resolved
    # the first REJECT_EXAMPLES distinct reasons, which errors and warnings quote (they said "null, empty or
    # unreadable text" whatever the reason: a list id, a repeated id, a line that is not JSON)
    reject_examples: list[str] = field(default_factory=list)
    # the same per language value (lang_column only): a language whose rows are all rejects quotes its own reasons
    value_reject_examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, other: ReadCounts) -> None:
        self.rows_read += other.rows_read
        self.rows_rejected += other.rows_rejected
        self.note_rejects(other.reject_examples)
        self.per_lang.update(other.per_lang)
        self.present.update(other.present)
        self.rejected_present.update(other.rejected_present)
        for value, reasons in other.value_reject_examples.items():
            self.note_value_rejects(value, reasons)
        for lang, uris in other.parts.items():
            self.parts.setdefault(lang, []).extend(uris)
        self.matched.update(other.matched)
        for key, uris in other.value_parts.items():
            self.value_parts.setdefault(key, []).extend(uris)

    def note_rejects(self, reasons: list[str]) -> None:
        """Keep `reasons` as examples, up to REJECT_EXAMPLES distinct ones."""
        for reason in reasons:
            if len(self.reject_examples) >= REJECT_EXAMPLES:
                return
            if reason not in self.reject_examples:
                self.reject_examples.append(reason)

    def note_value_rejects(self, value: str | None, reasons: list[str]) -> None:
        """Keep `reasons` as examples of the rejected rows of the language value `value`, up to REJECT_EXAMPLES."""
        kept = self.value_reject_examples.setdefault(value, [])
        for reason in reasons:
            if len(kept) >= REJECT_EXAMPLES:
                return
            if reason not in kept:
                kept.append(reason)

    def rejects_said(self, values: list[str] | None = None) -> str:
        """'e.g. 'reason'; 'reason'' for errors and warnings: what the rejected rows were (of the language `values`
        only, when given)."""
        examples = self.reject_examples
        if values is not None:
            examples = list(dict.fromkeys(r for v in values for r in self.value_reject_examples.get(v, [])))
            examples = examples[:REJECT_EXAMPLES]
        return "e.g. " + "; ".join(repr(r) for r in examples) if examples else "no reason"

    def take(self, values: dict[str, list[str]]) -> None:
        """Keep, for each listed code, the rows and raw parts of the data values it takes (languages.values_taken), in
        file order; rows of the other values count as other languages."""
        for lang, taken in values.items():
            self.per_lang[lang] = sum(self.matched[(lang, v)] for v in taken)
            parts = sorted((i, v, uri) for v in taken for i, uri in self.value_parts.get((lang, v), []))
            self.parts[lang] = [uri for _, _, uri in parts]
            self.taken[lang] = {v: self.matched[(lang, v)] for v in taken}


REJECT_EXAMPLES = 3


def raw_part_uri(work_uri: str, side: str, lang: str, file_index: int, piece: int = 0) -> str:
    """An input file's rows of one language (`piece`: of its second, third, ... data value naming `lang`)."""
    name = f"f{file_index:06d}.parquet" if piece == 0 else f"f{file_index:06d}-{piece}.parquet"
    return posixpath.join(work_uri, "raw", side, f"lang={lang}", name)


def read_input_file(job: ReadJob, rel: str, file_index: int) -> ReadCounts:
    """Read one input file, drop rejects, keep the listed languages, write one raw part per language."""
    counts = ReadCounts()
    pieces: dict[str, list[pa.Table]] = {}
    rejects: list[pa.Table] = []
    columns = [ID, TEXT, *job.keep_columns, SOURCE, ROW_IN]  # where each row came from: duplicate-id reasons name it
    try:
        read_blocks(job, rel, counts, pieces, rejects, columns)
    except InputFileError as err:
        raise in_mining_terms(err, job, rel) from err
    if rejects and job.rejects_uri:
        uri = posixpath.join(job.rejects_uri, f"f{file_index:06d}.parquet")
        write_parquet_atomic(pa.concat_tables(rejects), resolve(uri, job.storage))
    for key, tables in sorted(pieces.items(), key=lambda item: item[0]):
        table = pa.concat_tables(tables).rename_columns([ID, TEXT_OUT, *job.keep_columns, SOURCE, ROW_IN])
        if table.num_rows == 0:
            continue
        if job.lang_column is None:
            lang, piece = key, 0
        else:  # one raw part per data value a code may take: the driver keeps those it takes
            lang, value = key
            piece = sum(1 for other in counts.value_parts if other[0] == lang)
        uri = raw_part_uri(job.work_uri, job.owners[lang], lang, file_index, piece)
        write_parquet_atomic(table, resolve(uri, job.storage))
        if job.lang_column is None:
            counts.per_lang[lang] += table.num_rows
            counts.parts[lang] = [uri]
        else:
            counts.matched[(lang, value)] += table.num_rows
            counts.value_parts[(lang, value)] = [(file_index, uri)]
    return counts


def read_blocks(
    job: ReadJob, rel: str, counts: ReadCounts, pieces: dict, rejects: list[pa.Table], columns: list[str]
) -> None:
    """read_input_file's read: each block's rejects and rows of the listed languages, into `counts`, `pieces` and
    `rejects`."""
    for block in read_file(job.spec, rel):
        counts.rows_read += block.num_rows
        good = block.filter(pc.is_null(block.column(REJECT)))
        counts.rows_rejected += block.num_rows - good.num_rows
        if good.num_rows < block.num_rows:
            rejected = block.filter(pc.is_valid(block.column(REJECT)))
            rejects.append(reject_table(rejected))
            counts.note_rejects(rejected.column(REJECT).slice(0, 64).to_pylist())
            if job.lang_column is not None:  # a language whose rows are all rejects is named so, not as absent
                values = [lang_key(v) for v in rejected.column(job.lang_column).to_pylist()]
                counts.rejected_present.update(values)
                for value, reason in zip(values, rejected.column(REJECT).to_pylist(), strict=True):
                    if len(counts.value_reject_examples.get(value, ())) < REJECT_EXAMPLES:
                        counts.note_value_rejects(value, [reason])
        if job.lang_column is None:
            pieces.setdefault(job.default_lang, []).append(good.select(columns))
            continue
        langs = [lang_key(v) for v in good.column(job.lang_column).to_pylist()]  # str, None for null
        counts.present.update(langs)
        codes = tuple(job.owners)
        for value in set(langs) - {None}:
            for lang in candidates(value, codes):  # loosely: the driver decides which values a code takes
                mask = pa.array([v == value for v in langs], pa.bool_())
                pieces.setdefault((lang, value), []).append(good.filter(mask).select(columns))


# The embed job's keys, which reading's errors name; a mining side has its own (ReadJob.side)
EMBED_KEYS = "(set input.text_column / input.id_column / output.keep_columns)"


def in_mining_terms(err: InputFileError, job: ReadJob, rel: str) -> InputFileError:
    """A read error of one input file as the mining config says it: the file with its input's location (two sides
    may read two folders with files of one name) and the side's keys, not the embed job's."""
    side = job.side
    said = str(err).replace(
        EMBED_KEYS, f"(set {side}.text_column / {side}.id_column / {side}.lang_column / {side}.keep_columns)"
    )
    if said.startswith(f"{rel}:"):
        said = posixpath.join(job.spec.root.uri, rel) + said[len(rel) :]
    return type(err)(said)


def reject_table(rejects: pa.Table) -> pa.Table:
    """Reject rows in the embed job's `_rejects/` columns (id, source, row, reason)."""
    return rejects.select([ID, SOURCE, ROW_IN, REJECT]).rename_columns(list(REJECT_COLUMNS))


def text_digests(texts: list[str]) -> np.ndarray:
    """(n,) structured 128-bit BLAKE2b digests of the UTF-8 texts: equal texts, equal digests."""
    raw = b"".join(hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts)
    return np.frombuffer(raw, dtype=[("hi", "<u8"), ("lo", "<u8")])


def id_buckets(ids: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """(n,) bucket of each id: a stable 64-bit hash (pandas' SipHash with a fixed key) modulo `buckets`."""
    hashes = pd.util.hash_array(np.asarray(ids.to_pylist(), dtype=object), categorize=False)
    return (hashes % np.uint64(buckets)).astype(np.int64)


def dedup_language(
    side: str,
    lang: str,
    raw_uris: list[str],
    dedup: bool,
    rows_per_file: int,
    output_uri: str,
    work_uri: str,
    buckets: int,
    storage: StorageConfig,
    duplicate_ids: str | None = None,
    rejects_uri: str | None = None,
) -> dict[str, Any]:
    """Number a language's rows (first occurrence of each exact text when `dedup`) into row-contiguous text files.

    Also writes the (id, row) map bucketed by id hash for the vector join. Memory: 16 bytes per row of the language
    (the digests) plus one raw part and one output file.

    `duplicate_ids`: the side's input.duplicate_ids when it has an id column, else None (derived ids are unique).
    As in the embed job, 'keep_first' makes later rows of an id rejects `duplicate id (first at <file> row <n>)`,
    written to `rejects_uri`, before the text dedup; 'error' raises SideError naming them; 'unchecked' keeps them
    (every text row needs its own vector: a repeated id would get the first row's vector). Returns their count as
    `duplicate_ids`.

    Raises:
        SideError: duplicate_ids is 'error' and an id repeats.
    """
    repeats = 0
    keep = None
    if duplicate_ids in ("keep_first", "error"):
        keep, repeats = reject_repeated_ids(side, lang, raw_uris, duplicate_ids, rejects_uri, storage)
    if dedup:
        digests = [text_digests(read_column(uri, TEXT_OUT, storage)) for uri in raw_uris]
        all_digests = np.concatenate(digests) if digests else np.zeros(0, dtype=[("hi", "<u8"), ("lo", "<u8")])
        candidates = np.arange(len(all_digests)) if keep is None else np.flatnonzero(keep)
        _, first = np.unique(all_digests[candidates], return_index=True)
        keep = np.zeros(len(all_digests), dtype=bool)
        keep[candidates[first]] = True
        del all_digests, digests
    out_dir = text_dir(output_uri, side, lang)
    files: list[tuple[str, int, int]] = []
    buffer: list[pa.Table] = []
    buffered = offset = row = 0
    id_parts: dict[int, list[pa.Table]] = {}

    def flush() -> None:
        nonlocal buffer, buffered
        table = pa.concat_tables(buffer)
        uri = posixpath.join(out_dir, f"part-{len(files):05d}.parquet")
        write_parquet_atomic(table, resolve(uri, storage))
        files.append((uri, int(table.column(ROW)[0].as_py()), int(table.column(ROW)[-1].as_py()) + 1))
        bucket = id_buckets(table.column(ID), buckets)
        for b in np.unique(bucket).tolist():
            id_parts.setdefault(b, []).append(table.select([ID, ROW]).filter(pa.array(bucket == b)))
        buffer, buffered = [], 0

    for uri in raw_uris:
        loc = resolve(uri, storage)
        table = pq.read_table(loc.path, filesystem=loc.fs)
        table = table.drop_columns([c for c in (SOURCE, ROW_IN) if c in table.column_names])
        offset += table.num_rows
        if keep is not None:
            table = table.filter(pa.array(keep[offset - table.num_rows : offset]))
        table = table.add_column(0, ROW, pa.array(np.arange(row, row + table.num_rows, dtype=np.int64)))
        row += table.num_rows
        while table.num_rows:
            take = min(rows_per_file - buffered, table.num_rows)
            buffer.append(table.slice(0, take))
            buffered += take
            table = table.slice(take)
            if buffered == rows_per_file:
                flush()
    if buffered:
        flush()
    id_files = []
    for b, parts in sorted(id_parts.items()):
        uri = posixpath.join(work_uri, "ids", side, f"b={b:05d}", f"{lang}.parquet")
        write_parquet_atomic(pa.concat_tables(parts), resolve(uri, storage))
        id_files.append((b, uri))
    return {
        "files": files,
        "rows": row,
        "duplicates": offset - repeats - row,
        "duplicate_ids": repeats,
        "id_files": id_files,
    }


def reject_repeated_ids(
    side: str, lang: str, raw_uris: list[str], policy: str, rejects_uri: str | None, storage: StorageConfig
) -> tuple[np.ndarray, int]:
    """(rows to keep, how many repeat an earlier id) over a language's raw parts in file order; the repeats' reasons
    go to `rejects_uri`. Memory: 16 bytes per row (the id digests), plus the (file, row) of the repeats."""
    digests = [text_digests(read_column(uri, ID, storage)) for uri in raw_uris]
    all_digests = np.concatenate(digests) if digests else np.zeros(0, dtype=[("hi", "<u8"), ("lo", "<u8")])
    _, first, inverse = np.unique(all_digests, return_index=True, return_inverse=True)
    first_of = first[inverse.reshape(-1)]
    repeated = first_of != np.arange(len(all_digests))
    count = int(repeated.sum())
    if not count:
        return np.ones(len(all_digests), dtype=bool), 0
    where = pa.concat_tables([read_table(uri, storage).select([ID, SOURCE, ROW_IN]) for uri in raw_uris])
    dup, firsts = np.flatnonzero(repeated), first_of[repeated]
    sources, rows = where.column(SOURCE), where.column(ROW_IN)
    reasons = [f"{DUPLICATE_REASON} (first at {sources[int(f)].as_py()} row {rows[int(f)].as_py()})" for f in firsts]
    if policy == "error":
        shown = "; ".join(
            f"{sources[int(d)].as_py()} row {rows[int(d)].as_py()} repeats {r.split('first at ', 1)[1][:-1]}"
            for d, r in list(zip(dup, reasons))[:5]
        )
        raise SideError(
            f"{side} ({lang}): {count} rows repeat an earlier id: {shown}"
            + (" ..." if count > 5 else "")
            + f" (set {side}.duplicate_ids=keep_first to mine the first and reject the rest)"
        )
    if rejects_uri:
        table = where.take(pa.array(dup)).append_column(REJECT, pa.array(reasons, pa.string()))
        uri = posixpath.join(rejects_uri, f"duplicate-ids-{lang}.parquet")
        write_parquet_atomic(reject_table(table), resolve(uri, storage))
    return ~repeated, count


def read_column(uri: str, column: str, storage: StorageConfig) -> list:
    loc = resolve(uri, storage)
    return pq.read_table(loc.path, filesystem=loc.fs, columns=[column]).column(column).to_pylist()


FILE_ROW = "file_row"  # an embeddings row's place in its file (from 0), kept through the join buckets
BAD = "bad_vector"  # an embeddings row whose vector is all zeros or not finite


def emb_part_uri(work_uri: str, side: str, bucket: int, file_index: int) -> str:
    return posixpath.join(work_uri, "emb", side, f"b={bucket:05d}", f"f{file_index:06d}.parquet")


def bucket_embeddings(
    side: str,
    uri: str,
    file_index: int,
    buckets: int,
    work_uri: str,
    storage: StorageConfig,
    named: tuple[str, str] = EMBED_JOB_COLUMNS,
) -> dict[str, Any]:
    """Split one embeddings file by id hash into the join buckets (vectors made unit length on the way); `named`:
    the file's (id, vector) columns."""
    ids, vectors, metadata, bad = embedding_file(uri, storage, named, side)
    bucket = id_buckets(ids, buckets)
    written = []
    for b in np.unique(bucket).tolist():
        mask = bucket == b
        table = pa.table(
            {
                ID: ids.filter(pa.array(mask)),
                EMBEDDING: fixed_list(vectors[mask]),
                FILE_INDEX: pa.array(np.full(int(mask.sum()), file_index, np.int32)),
                FILE_ROW: pa.array(np.flatnonzero(mask), pa.int64()),  # where a repeated id is, for the message
                BAD: pa.array(bad[mask]),  # a zero or non-finite vector: an error if the side mines its row
            }
        )
        part = emb_part_uri(work_uri, side, b, file_index)
        write_parquet_atomic(table, resolve(part, storage))
        written.append((b, part))
    return {
        "parts": written,
        "rows": len(ids),
        "dim": int(vectors.shape[1]),
        "model": metadata.get("rayembed.model"),
        "recipe": file_recipe(metadata),  # compared across the side's files by the driver (job.join_vectors)
    }


def join_bucket(
    side: str,
    bucket: int,
    id_uris: list[str],
    emb_uris: list[str],
    dim: int,
    work_uri: str,
    storage: StorageConfig,
    rows_without_vector: bool = False,
    emb_files: list[str] | None = None,
    rejected: list[str] | None = None,
) -> dict[str, Any]:
    """Join one bucket's (id, row, lang) to its (id, embedding); write (row, embedding) per language.

    Returns the vector files per language, and for messages: rows repeating an id (`repeats`, the first few
    `repeated`, wanted_repeats; `emb_files`: the embeddings files by file index), rows with no vector that the embed
    step rejected (`rejected`, counts per language, and `rejected_examples`) and rows with no vector otherwise
    (`missing`, `missing_examples`: the embeddings are not of this input). Rejected rows are left out of the vector
    files (only the prompt and the unknown token, nothing left to pool, ...); a language with a missing row writes
    none. `rows_without_vector`: every row with no vector is a reject (the job's own embed step embedded exactly these
    rows); else those whose id is in `rejected` (the ids in a reused embed run's _rejects/, `rejected_ids`).
    """
    id_tables = []
    for uri in id_uris:
        loc = resolve(uri, storage)
        lang = posixpath.basename(uri).removesuffix(".parquet")
        t = pq.read_table(loc.path, filesystem=loc.fs)
        id_tables.append(t.append_column("lang", pa.array([lang] * t.num_rows, pa.string())))
    ids = pa.concat_tables(id_tables) if id_tables else pa.table({ID: [], ROW: [], "lang": []})
    emb_tables = [read_table(uri, storage) for uri in emb_uris]
    if emb_tables:
        emb = pa.concat_tables(emb_tables)
    else:
        emb = pa.table({ID: pa.array([], pa.string()), EMBEDDING: fixed_list(np.zeros((0, dim), np.float32))})
    result: dict[str, Any] = {"files": {}, "bad": 0, "bad_examples": []}
    result |= {"missing": {}, "missing_examples": {}, "rejected": {}, "rejected_examples": {}}
    result["repeats"], result["repeated"] = wanted_repeats(emb, ids.column(ID), emb_files)
    if result["repeats"]:
        return result
    positions = pa.table({ID: emb.column(ID), "_pos": pa.array(np.arange(emb.num_rows, dtype=np.int64))})
    joined = ids.join(positions, ID, join_type="left outer")
    if BAD in emb.column_names:  # the rows to mine whose vector is zero or not finite: the first few, for the error
        pos = joined.column("_pos").drop_null().to_numpy()
        hit = pos[emb.column(BAD).to_numpy(zero_copy_only=False)[pos]]
        result["bad"] = len(hit)
        result["bad_examples"] = [
            (
                emb.column(FILE_INDEX)[int(i)].as_py(),
                emb.column(FILE_ROW)[int(i)].as_py(),
                emb.column(ID)[int(i)].as_py(),
            )
            for i in np.sort(hit)[:SHOWN]
        ]
        if len(hit):
            return result
    for lang in sorted(set(joined.column("lang").to_pylist())):
        part = joined.filter(pc.equal(joined.column("lang"), lang))
        has = pc.is_valid(part.column("_pos"))
        missing = part.filter(pc.invert(has))
        if missing.num_rows:
            if rows_without_vector:
                was_rejected = pa.array(np.ones(missing.num_rows, bool))
            else:
                was_rejected = pc.is_in(missing.column(ID), pa.array(rejected or [], pa.string()))
            for name, rows in (
                ("rejected", missing.filter(was_rejected)),
                ("missing", missing.filter(pc.invert(was_rejected))),
            ):
                if rows.num_rows:
                    result[name][lang] = rows.num_rows
                    result[f"{name}_examples"][lang] = rows.column(ID).to_pylist()[:3]
            if lang in result["missing"]:
                continue
            part = part.filter(has)
            if not part.num_rows:
                continue
        part = part.sort_by(ROW)
        take = part.column("_pos").to_numpy()
        vectors = pa.table({ROW: part.column(ROW), EMBEDDING: emb.column(EMBEDDING).take(pa.array(take))})
        uri = posixpath.join(work_uri, "vectors", side, f"lang={lang}", f"b{bucket:05d}.parquet")
        write_parquet_atomic(vectors, resolve(uri, storage))
        result["files"][lang] = (uri, vectors.num_rows)
    return result


def rejected_ids(emb_uri: str, storage: StorageConfig) -> list[str]:
    """The ids of the rows an embed run rejected: the `id` column of the Parquet files in its `_rejects/` folder
    (REJECT_COLUMNS: id, source, row, reason; nulls, rows rejected before they had an id, left out). Empty when the
    folder is not there (another tool's embeddings, a run that rejected nothing)."""
    folder = resolve(posixpath.join(emb_uri.rstrip("/"), REJECTS_DIR), storage)
    ids: list[str] = []
    for rel in list_tree(folder):
        if rel.endswith(".parquet"):
            reasons = pq.ParquetFile(folder.join(rel).path, filesystem=folder.fs)
            if ID in reasons.schema_arrow.names:
                ids += reasons.read(columns=[ID]).column(ID).drop_null().cast(pa.string()).to_pylist()
    return ids


def wanted_repeats(emb: pa.Table, wanted: pa.ChunkedArray, emb_files: list[str]) -> tuple[int, list[dict]]:
    """The rows of one bucket's vectors `emb` that repeat an earlier copy (by file index, then row) of an id the
    texts have (`wanted`): their count and the first SHOWN, as DUPLICATES_SCHEMA rows. The embed job's duplicate
    pass finds them (pipeline.duplicate_ids: every copy of an id is in one bucket here too)."""
    if not emb.num_rows or FILE_INDEX not in emb.column_names:
        return 0, []
    emb = emb.filter(pc.is_in(emb.column(ID), wanted))
    digests = digest_table(
        emb.column(FILE_INDEX).to_pylist(), emb.column(FILE_ROW).to_pylist(), emb.column(ID).to_pylist(), 1
    )
    repeats = bucket_duplicates(digests, emb_files)
    return repeats.num_rows, repeats.sort_by([(FILE_INDEX, "ascending"), ("row", "ascending")]).slice(
        0, SHOWN
    ).to_pylist()


def read_table(uri: str, storage: StorageConfig) -> pa.Table:
    loc = resolve(uri, storage)
    return pq.read_table(loc.path, filesystem=loc.fs)


def parquet_paths(files: list[str]) -> list[str]:
    """The Parquet files of an embeddings dataset's listing (relative paths, in listing order): its index in this
    list is a file's file index; _summary.json and other files are left out."""
    return [f for f in files if f.endswith(".parquet")]


def embedding_files(uri: str, storage: StorageConfig, listed: tuple[Location, list[str]] | None = None) -> list[str]:
    """URIs of the parquet files of an embeddings dataset (hidden files such as _summary.json left out).

    `listed`: the dataset's listing (root, relative paths) when the caller has it (pipeline.bitext.listings)."""
    root, files = listed or list_files(uri, storage)
    files = parquet_paths(files)
    if not files:
        raise FileNotFoundError(f"no parquet files in the embeddings dataset {uri}")
    return [root.join(f).uri for f in files]
