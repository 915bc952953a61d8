"""The mining job: every listed source language against every listed target language, no side on the driver.

    input files --read tasks--> texts/<side>/lang=<L>/  (filtered, deduplicated, numbered rows)
    texts --run_embed (or embeddings_uri)--> embeddings/<side>/ --hash join--> work/vectors/<side>/lang=<L>/
    per key store: shard actors load their slices; query blocks stream through them --> work/knn/<pair>/{fwd,bwd}/
    knn files --densities, proposals (tasks)--> select_stream (1:1 max, bounded state) --> attach texts --> pairs

Outputs under `output.uri`. One-pair form (`lang: fra`): `pairs/part-NNNNN.parquet`, `summary.json`,
`score_histogram.png`, as before. List form (`lang: [fra, deu]`): `pairs/src_lang=<S>/tgt_lang=<T>/part-NNNNN.parquet`,
`reports/src_lang=<S>/tgt_lang=<T>/{summary.json,score_histogram.png}`, `overview.csv`, `overview.png` and a
`summary.json` over all pairs. Both write `texts/` and (when embedding) `embeddings/`; `work/` is removed at the end.
The same command after a crash resumes from the last recorded stage (pipeline.bitext.resume).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import posixpath
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from pipeline import commit
from pipeline.bitext import prepare, resume
from pipeline.bitext.executor import LocalExecutor, RayExecutor
from pipeline.bitext.languages import (
    LanguageMatchError,
    by_macrolanguage,
    candidates,
    languages_present,
    parse,
    shown,
    values_taken,
)
from pipeline.bitext.listings import Listings
from pipeline.bitext.mining_actor import ShardResources, shard_count, start_store_shards
from pipeline.bitext.output import PAIRS_SCHEMA, attach_source, attach_target, finalize
from pipeline.bitext.report import counts_png, overview_png, threshold_grid
from pipeline.bitext.shard_memory import peak_rss_mb, shard_array_parts
from pipeline.bitext.sides import EMBED_JOB_COLUMNS, SideError
from pipeline.bitext.store import StoreRef, store_mean
from pipeline.bitext.stream_search import SearchJob, SearchSpec, StoreShard, peak_rss, run_search
from pipeline.bitext.stream_select import Route, Window, best_of, densities, propose, select_stream
from pipeline.clustering.duplicates import duplicate_error
from pipeline.columns import REJECTS_DIR
from pipeline.config import EmbedConfig, InputConfig, OutputConfig
from pipeline.duplicate_ids import FILE_INDEX, SHOWN
from pipeline.embed_job import init_ray, run_embed
from pipeline.embedding_files import EmbeddingFileError
from pipeline.embedding_recipe import describe, differences, first_conflict, known
from pipeline.errors import UserError
from pipeline.file_formats import listing_formats
from pipeline.input_contents import ContentRecorder, same_content
from pipeline.mine_config import UNITS_HINT, MineConfig, MiningConfig, SideConfig
from pipeline.reading import ReadSpec
from pipeline.reject_guard import TooManyRejectsError, reject_failure
from pipeline.rules import check_rules
from pipeline.shared_output import run_lease
from pipeline.storage import Location, resolve, write_bytes

log = logging.getLogger(__name__)

__all__ = ["PAIRS_SCHEMA", "run_mine"]
SUMMARY_FILE = "summary.json"
HISTOGRAM_FILE = "score_histogram.png"
SIDES = ("source", "target")


@dataclass
class InputGroup:
    """One distinct input read once for every side and language that uses it."""

    cfg: SideConfig
    owners: dict[str, str] = field(default_factory=dict)  # lang -> side whose store holds it
    sides: dict[str, list[str]] = field(default_factory=dict)  # side -> its languages from this input
    keep_columns: list[str] = field(default_factory=list)


def input_key(side: SideConfig) -> tuple:
    """Sides with equal keys share one read of their input. Without lang_column every row of the input is in the
    side's one language, so the same file as both sides in two languages is two inputs (one read gave all its rows
    to the source and the target failed: 'no usable rows')."""
    langs = tuple(side.langs) if side.lang_column is None else None
    return (
        tuple(side.uri) if isinstance(side.uri, list) else side.uri,  # a list of locations: hashable
        side.format,
        side.text_column,
        side.id_column,
        side.lang_column,
        side.kind,
        side.embeddings_uri,
        langs,
    )


def plan_inputs(cfg: MineConfig) -> list[InputGroup]:
    groups: dict[tuple, InputGroup] = {}
    for name in SIDES:
        side = getattr(cfg, name)
        group = groups.setdefault(input_key(side), InputGroup(side))
        group.sides[name] = side.langs
        for lang in side.langs:
            group.owners.setdefault(lang, name)
        group.keep_columns += [c for c in side.keep_columns if c not in group.keep_columns]
    return list(groups.values())


def make_executor(cfg: MineConfig, out: Location) -> LocalExecutor | RayExecutor:
    """`out`: the run's output, whose lease (a local output's) every Ray task checks first (pipeline.shared_output)."""
    if cfg.mining.backend == "local":
        return LocalExecutor()
    return RayExecutor(cfg.compute.cpus_per_io_task, cfg.compute.max_task_retries, run_lease(out))


def read_group(cfg: MineConfig, group: InputGroup, work_uri: str, ex, listings: Listings) -> prepare.ReadCounts:
    root, files = listings.paths(group.cfg.uri, key=f"{next(iter(group.sides))}.uri")
    listing_formats(group.cfg.format, files, key=f"{next(iter(group.sides))}.uri")  # a README.md: named here
    keep = tuple(dict.fromkeys(([group.cfg.lang_column] if group.cfg.lang_column else []) + group.keep_columns))
    spec = ReadSpec(root, group.cfg.format, group.cfg.text_column, group.cfg.id_column, keep)
    default = next(iter(group.owners)) if group.cfg.lang_column is None else None
    job = prepare.ReadJob(
        spec,
        group.cfg.lang_column,
        group.owners,
        default,
        tuple(group.keep_columns),
        work_uri,
        cfg.storage,
        rejects_uri(cfg, next(iter(group.sides))),
        next(iter(group.sides)),
    )
    counts = prepare.ReadCounts()
    for result in ex.get([ex.submit(prepare.read_input_file, job, rel, i) for i, rel in enumerate(files)]):
        counts.add(result)
    if group.cfg.lang_column:
        take_languages(group, counts)
    codes = tuple(group.owners)
    for side, langs in group.sides.items():
        for lang in langs:
            if counts.per_lang[lang]:
                continue
            values = [v for v in counts.rejected_present if lang in candidates(v, codes)]
            rejected = sum(counts.rejected_present[v] for v in values)
            if group.cfg.lang_column and rejected:
                raise SideError(
                    f"{side}: all {rejected} rows with {group.cfg.lang_column} == {lang!r} in {group.cfg.uri} were "
                    f"rejected ({counts.rejects_said(values)}; reasons in {rejects_uri(cfg, next(iter(group.sides)))}),"
                    f" so {lang!r} has no rows to mine: fix those rows, or drop {lang!r} from {side}.lang"
                )
            if group.cfg.lang_column and counts.present:
                present = languages_present(counts.present, lang, f"{side}.lang")
                raise SideError(
                    f"{side}: no rows with {group.cfg.lang_column} == {lang!r} in {group.cfg.uri}; {present}. "
                    f"Fix {side}.lang or {side}.lang_column"
                )
            raise SideError(
                f"{side}: no usable rows in {group.cfg.uri} ({counts.rows_rejected} rejected, "
                f"{counts.rejects_said()}; reasons in {rejects_uri(cfg, next(iter(group.sides)))})"
            )
    if counts.present.get(None):  # a null language value names no language: counted, and said
        log.warning(
            "%s: %d rows have a null %s: no language, so no side mines them (rows_without_lang, part of "
            "rows_other_lang); give them a language value to mine them",
            group.cfg.uri,
            counts.present[None],
            group.cfg.lang_column,
        )
    if counts.rows_rejected:
        log.warning(
            "%s: skipped %d rejected rows, %s (reasons in %s)",
            group.cfg.uri,
            counts.rows_rejected,
            counts.rejects_said(),
            rejects_uri(cfg, next(iter(group.sides))),
        )
    check_rejects(cfg, group, counts.rows_read, counts.rows_rejected)  # fails fast, before the dedup
    return counts


def take_languages(group: InputGroup, counts: prepare.ReadCounts) -> None:
    """Decide which lang_column values each listed code takes (languages.values_taken) and say it: an INFO line per code
    whose values are not the code as written, a warning where a code takes several regions of its language or another
    language of its macrolanguage (ps taking pbt_Arab)."""
    keys = {lang: f"{side}.lang" for lang, side in group.owners.items()}
    try:
        taken = values_taken(counts.matched, keys)
    except LanguageMatchError as error:
        raise SideError(f"{error} ({group.cfg.uri}, column {group.cfg.lang_column!r})") from None
    counts.take(taken)
    for lang, values in counts.taken.items():
        if list(values) != [lang]:
            listed = ", ".join(f"{shown(v)} ({n} rows)" for v, n in values.items())
            log.info("%s %r matched the data's %s: %s", keys[lang], lang, group.cfg.lang_column, listed)
        related = [v for v in values if by_macrolanguage(lang, v)]
        if related:
            log.warning(
                "%s %r takes the data's %s: another language of the same macrolanguage (ISO 639-3), the closest the "
                "data holds; set %s to it as written to mine it so without this warning",
                keys[lang],
                lang,
                ", ".join(f"{shown(v)} ({parse(v).individual})" for v in related),
                keys[lang],
            )
        regions = {parse(v).territory for v in values if parse(v)}
        if len(regions) > 1:
            log.warning(
                "%s %r takes several regions of its language, mined as one language: %s; set it to one of them to "
                "mine that one alone",
                keys[lang],
                lang,
                ", ".join(shown(v) for v in values),
            )


def check_rejects(cfg: MineConfig, group: InputGroup, rows_read: int, rejected: int) -> None:
    """The input's max_reject_fraction, as the embed job's guard (pipeline.reject_guard), before anything is
    embedded: an input rejected that much was read wrong (format, column, encoding).

    Raises:
        TooManyRejectsError: naming the side's keys (`source.max_reject_fraction`, ...).
    """
    key = next(iter(group.sides))  # the section the keys of this input are set in
    guard = {"rows_in": rows_read, "rows_rejected": rejected, "rejects": rejects_uri(cfg, key)}
    failure = reject_failure(guard, group.cfg.max_reject_fraction)
    if failure:
        raise TooManyRejectsError(f"{key} ({group.cfg.uri}): {failure.replace('input.', f'{key}.')}")


def rejects_uri(cfg: MineConfig, side: str) -> str:
    """Where the rows of a side's input that are not mined go, with their reasons (the embed job's _rejects/
    columns: id, source, row, reason): `<output>/_rejects/<side>/`. An input serving both sides uses the first."""
    return posixpath.join(cfg.output.uri.rstrip("/"), REJECTS_DIR, side)


EMBED_OUTPUT_KEYS = ("dimensions", "token_columns")  # output keys of the run's embed step (dtype: always passed)


def embed_texts(cfg: MineConfig, side: str, side_cfg: SideConfig, texts_uri: str, out) -> tuple[str, dict]:
    """Embed exactly the rows that will be mined (all of a side's languages in one embed run).

    The embed run resumes itself after a crash, and one that finished in an earlier attempt is reused (its
    fingerprint checked) rather than refused: see pipeline.bitext.resume.
    """
    embeddings_at = out.join("embeddings", side)
    # the output settings of the embedding itself, only those the run sets (dimensions: null too; unset, the
    # model's own truncate_dim applies)
    dims = {key: getattr(cfg.output, key) for key in EMBED_OUTPUT_KEYS if key in cfg.output.model_fields_set}
    embed_cfg = EmbedConfig(
        input=InputConfig(uri=texts_uri, format="parquet", text_column="text", id_column="id", kind=side_cfg.kind),
        output=OutputConfig(uri=embeddings_at.uri, dtype=cfg.output.dtype, overwrite=cfg.output.overwrite, **dims),
        storage=cfg.storage,
        model=cfg.model,
        batching=cfg.batching,
        compute=cfg.compute,
    )
    # Its settings are the mining run's own keys (model.*, batching.*, output.dtype and EMBED_OUTPUT_KEYS), and
    # output.overwrite of the mining run replaces it: no other output.uri can be chosen for it.
    naming = commit.Naming(hint=f"set output.overwrite=true to mine again from the start (it embeds the {side} again)")
    return embeddings_at.uri, run_embed(embed_cfg, reuse_finished=True, naming=naming)


def owned_langs(groups: list[InputGroup]) -> dict[str, list[tuple[str, InputGroup]]]:
    """side -> the (language, input) pairs whose store it holds."""
    owned: dict[str, list[tuple[str, InputGroup]]] = defaultdict(list)
    for group in groups:
        for lang, side in group.owners.items():
            owned[side].append((lang, group))
    return owned


def prepare_texts(
    cfg: MineConfig, groups: list[InputGroup], work_uri: str, ex, listings: Listings | None = None
) -> dict[str, Any]:
    """Read every input once and number each side's rows (deduplicated) into texts/<side>/: the `texts` stage.

    Returns its record (pipeline.bitext.resume): per input its read counts; per side the join's bucket count and,
    per language, the numbered text files and the id files of the join (prepare.dedup_language).
    """
    listings = listings or Listings(cfg.storage)
    reads = [read_group(cfg, g, work_uri, ex, listings) for g in groups]  # every input fails fast, before embedding
    log.info("read %d inputs: %s rows per language", len(groups), dict(sum((r.per_lang for r in reads), Counter())))
    sides: dict[str, dict[str, Any]] = {}
    for side, items in owned_langs(groups).items():
        counts = reads[groups.index(items[0][1])]
        buckets = max(1, -(-sum(counts.per_lang[lang] for lang, _ in items) // cfg.mining.join_bucket_rows))
        refs = [
            ex.submit(
                prepare.dedup_language,
                side,
                lang,
                counts.parts[lang],
                cfg.mining.dedup,
                cfg.output.rows_per_file,
                cfg.output.uri,
                work_uri,
                buckets,
                cfg.storage,
                group.cfg.duplicate_ids if group.cfg.id_column else None,
                rejects_uri(cfg, next(iter(group.sides))),  # the input's, as its read rejects
            )
            for lang, group in items
        ]
        sides[side] = {"buckets": buckets, "langs": dict(zip([lang for lang, _ in items], ex.get(refs)))}
    for group, counts in zip(groups, reads):  # again with the later rows of repeated ids, which the embed job counts
        repeats = sum(
            sides[side]["langs"][lang].get("duplicate_ids", 0)
            for lang, side in group.owners.items()
            if lang in sides.get(side, {}).get("langs", {})
        )
        check_rejects(cfg, group, counts.rows_read, counts.rows_rejected + repeats)
    read_counts = [
        {
            "rows_read": c.rows_read,
            "rows_rejected": c.rows_rejected,
            "per_lang": dict(c.per_lang),
            "taken": c.taken,
            "rows_without_lang": c.present.get(None, 0),  # a null lang_column value (not rejected: no language)
        }
        for c in reads
    ]
    return resume.as_json({"reads": read_counts, "sides": sides})


def embed_sides(cfg: MineConfig, out) -> tuple[dict[str, tuple[str, dict]], list[str]]:
    """Each store-holding side's embeddings (uri, facts for the summary), and the sides whose finished embed run of
    an earlier attempt was reused."""
    embedded: dict[str, tuple[str, dict]] = {}
    reused = []
    for side, items in owned_langs(plan_inputs(cfg)).items():
        side_cfg = items[0][1].cfg
        if side_cfg.embeddings_uri:
            embedded[side] = side_cfg.embeddings_uri, {"reused": side_cfg.embeddings_uri}
            continue
        texts_uri = posixpath.join(cfg.output.uri.rstrip("/"), "texts", side)
        emb_uri, summary = embed_texts(cfg, side, side_cfg, texts_uri, out)
        facts = {"written": emb_uri, "embed_seconds": summary.get("wall_seconds")}
        if summary.get("reused_finished_run"):
            reused.append(side)
            facts["embedded_in_earlier_attempt"] = True  # embed_seconds are that attempt's, not this one's
        embedded[side] = emb_uri, facts
    return embedded, reused


def build_stores(
    cfg: MineConfig,
    texts: dict[str, Any],
    embedded: dict[str, tuple[str, dict]],
    work_uri: str,
    ex,
    listings: Listings | None = None,
) -> tuple[dict[tuple[str, str], StoreRef], dict]:
    """Join every side's numbered texts to its vectors; returns stores by (side, lang) and per-side facts for the
    summary. `texts`: prepare_texts' record; `embedded`: embed_sides' result."""
    stores: dict[tuple[str, str], StoreRef] = {}
    info: dict[str, dict[str, Any]] = {}
    groups = plan_inputs(cfg)
    reads = texts["reads"]
    for group, counts in zip(groups, reads):
        for side, langs in group.sides.items():
            mined = sum(counts["per_lang"].get(lang, 0) for lang in langs)
            info[side] = {
                "rows_read": counts["rows_read"],
                "rows_rejected": counts["rows_rejected"],
                "rejects": rejects_uri(cfg, next(iter(group.sides))),
                "rows_other_lang": counts["rows_read"] - counts["rows_rejected"] - mined,
                "rows_without_lang": counts.get("rows_without_lang"),  # None: a record of an older version
                "langs": {},
            }
    recipes: dict[str, tuple[str, dict[str, str] | None]] = {}
    for side, items in owned_langs(groups).items():
        group = items[0][1]
        counts = reads[groups.index(group)]
        deduped, buckets = texts["sides"][side]["langs"], texts["sides"][side]["buckets"]
        emb_uri, emb_info = embedded[side][0], dict(embedded[side][1])
        log.info("%s: %d languages numbered; joining vectors from %s", side, len(items), emb_uri)
        vectors, dim, recipe, unembedded = join_vectors(
            cfg, side, group.cfg, emb_uri, deduped, buckets, work_uri, ex, listings or Listings(cfg.storage)
        )
        recipes[side] = (emb_uri, recipe)
        model = recipe["model"] if recipe else None
        emb_info["model"] = model or "unknown"
        for lang, _ in items:
            d = deduped[lang]
            store = StoreRef(
                side,
                lang,
                d["rows"],
                tuple(tuple(f) for f in d["files"]),
                tuple(vectors.get(lang, ())),
                dim,
                model or "unknown",
            )
            if store.rows and not store.vector_rows:
                raise SideError(
                    f"{side} ({lang}): the embed step rejected all {store.rows} rows to mine; reasons in "
                    f"{posixpath.join(emb_uri, REJECTS_DIR)}"
                )
            for user, langs in group.sides.items():
                if lang in langs:
                    stores[(user, lang)] = store
                    # later rows of a repeated id, and rows the embed step rejected (reasons in its _rejects/)
                    info[user]["rows_rejected"] += d.get("duplicate_ids", 0) + unembedded.get(lang, 0)
                    info[user]["langs"][lang] = {
                        "rows": counts["per_lang"][lang],
                        "lang_matched": counts.get("taken", {}).get(lang),
                        "duplicate_ids_rejected": d.get("duplicate_ids", 0),
                        "duplicates_dropped": d["duplicates"],
                        "rows_mined": d["rows"] - unembedded.get(lang, 0),
                        "rows_rejected_by_embedding": unembedded.get(lang, 0),
                        "embeddings": emb_info,
                    }
    check_models(stores)
    check_recipes(recipes)
    return stores, info


def join_vectors(
    cfg, side, side_cfg, emb_uri, deduped, buckets, work_uri, ex, listings: Listings
) -> tuple[dict, int, dict[str, str] | None, dict]:
    """Vector files per language, the dim, the recipe (pipeline.embedding_recipe; None for another tool's files) and,
    per language, the rows the embed step rejected (left out of the vector files, so never mined): every row without
    a vector for the job's own embed step; with the side's embeddings_uri, the rows without a vector that the reused
    embed run rejected (their ids are in its _rejects/, prepare.rejected_ids). Any other row without a vector fails
    the job: those embeddings do not come from this input.

    Raises:
        SideError: files of several widths, or of several recipes (another model, pooling or prompt), naming them.
    """
    own = not side_cfg.embeddings_uri
    key = "output.uri" if own else f"{side}.embeddings_uri"
    listed = listings.paths(emb_uri, key=key)
    files = prepare.embedding_files(emb_uri, cfg.storage, listed)
    named = EMBED_JOB_COLUMNS if own else (side_cfg.embeddings_id_column, side_cfg.embedding_column)
    parts = ex.get(
        [
            ex.submit(prepare.bucket_embeddings, side, f, i, buckets, work_uri, cfg.storage, named)
            for i, f in enumerate(files)
        ]
    )
    dims = {p["dim"] for p in parts if p["rows"]}  # a file without rows has no dim (an empty part)
    if len(dims) > 1:
        raise mixed_dims_error(side, key, emb_uri, files, [p["dim"] if p["rows"] else None for p in parts])
    conflict = first_conflict((f, p["recipe"]) for f, p in zip(files, parts) if p["rows"])
    if conflict:
        raise SideError(
            conflict.message(
                f"{side}: {key} {emb_uri}",
                "Point it at the embeddings of one run (move the odd files out), or embed their input again with the "
                f"recipe of the rest{'' if own else f'; or remove {key} and the job embeds the {side} itself'}",
            )
        )
    recipe = known(p["recipe"] for p in parts if p["rows"]) or known(p["recipe"] for p in parts)
    by_bucket_emb: dict[int, list[str]] = defaultdict(list)
    for p in parts:
        for b, uri in p["parts"]:
            by_bucket_emb[b].append(uri)
    by_bucket_ids: dict[int, list[str]] = defaultdict(list)
    for d in deduped.values():
        for b, uri in d["id_files"]:
            by_bucket_ids[b].append(uri)
    has_rows = bool(dims)
    dim = dims.pop() if dims else max(p["dim"] for p in parts)  # no file has a row: the schema's width, or 0
    wanted = cfg.output.dimensions
    if not own and wanted is not None and has_rows and dim != wanted:
        raise SideError(
            f"{side}: the vectors of {key} {emb_uri} have dim {dim}, not output.dimensions={wanted}; reused vectors "
            f"are mined as they are stored: unset output.dimensions to mine them at {dim}, or embed that input again "
            f"with output.dimensions={wanted} (or leave {key} unset, and the job embeds the {side} itself)"
        )

    def join(bucket_ids: list[int], rejected: list[str] | None = None) -> list[dict]:
        tasks = [
            ex.submit(
                prepare.join_bucket,
                side,
                b,
                by_bucket_ids[b],
                by_bucket_emb.get(b, []),
                dim,
                work_uri,
                cfg.storage,
                own,
                files,
                rejected,
            )
            for b in bucket_ids
        ]
        return ex.get(tasks)

    joined = sorted(by_bucket_ids)
    results = join(joined)
    unjoined = [b for b, r in zip(joined, results) if r["missing"]]
    if unjoined:  # reused embeddings (own ones have no missing rows): the rows their embed run rejected, if any
        rejected = prepare.rejected_ids(emb_uri, cfg.storage)  # listed only now: most runs reject nothing
        if rejected:
            again = dict(zip(unjoined, join(unjoined, rejected)))
            results = [again.get(b, r) for b, r in zip(joined, results)]
    bad = sum(r.get("bad", 0) for r in results)
    if bad:
        rels = prepare.parquet_paths(listed[1])
        first = sorted(e for r in results for e in r["bad_examples"])[:SHOWN]
        shown = "; ".join(f"id {i!r} at {posixpath.join(emb_uri, rels[f])} row {row}" for f, row, i in first)
        raise EmbeddingFileError(
            f"{key} {emb_uri}: {bad} of the {side}'s rows to mine have a vector that is all zeros or not finite "
            f"(NaN, inf), which has no direction to compare: {shown}{' and more' if bad > len(first) else ''}. "
            f"Embed those rows again, or drop them from {side}.uri (rows the side does not mine may keep such vectors)"
        )
    vectors: dict[str, list[tuple[str, int]]] = defaultdict(list)
    missing: dict[str, int] = defaultdict(int)
    examples: dict[str, list[str]] = defaultdict(list)
    unembedded: dict[str, int] = defaultdict(int)
    unembedded_examples: dict[str, list[str]] = defaultdict(list)
    repeats = sum(r["repeats"] for r in results)
    if repeats:
        first = sorted((d for r in results for d in r["repeated"]), key=lambda d: (d[FILE_INDEX], d["row"]))
        rels = prepare.parquet_paths(listed[1])  # the files of `files`, by file index
        id_column = named[0]  # the embed job's 'id', or the side's embeddings_id_column for another tool's files
        error = duplicate_error(
            listed[0],
            rels,
            id_column,
            (id_column,),
            False,
            repeats,
            first[:SHOWN],
            key=key,
            consequence=REPEATS_IN_MINING,
            column="column" if own else f"{side}.embeddings_id_column",
        )
        if side_cfg.lang_column and not own:  # one id per sentence in every language: FLORES' / SIB-200's index_id
            raise type(error)(f"{error}. {ACROSS_LANGUAGES.format(side=side)}") from None
        raise error
    for r in results:
        for lang, n in r["missing"].items():
            missing[lang] += n
            examples[lang] += r["missing_examples"][lang]
        for lang, n in r["rejected"].items():
            unembedded[lang] += n
            unembedded_examples[lang] += r["rejected_examples"][lang]
        for lang, entry in r["files"].items():
            vectors[lang].append(tuple(entry))
    for lang, n in missing.items():
        raise SideError(
            f"{side}: {n} of {deduped[lang]['rows']} rows have no vector in {emb_uri} (e.g. {examples[lang][:3]}) and "
            f"are not among the rejects of that embed run ({posixpath.join(emb_uri, REJECTS_DIR)}); "
            f"the embeddings must come from the embed job over this same input ({side}.uri and id_column), "
            f"or, for another tool's files, hold each row's id ({side}.id_column, or the text file's '<file>#<line>') "
            f"in their {side}.embeddings_id_column {named[0]!r}"
        )
    for lang, n in unembedded.items():
        log.warning(
            "%s (%s): %d rows rejected by the embed step (e.g. %s), not mined; reasons in %s",
            side,
            lang,
            n,
            unembedded_examples[lang][:3],
            posixpath.join(emb_uri, REJECTS_DIR),
        )
    return vectors, dim, recipe, dict(unembedded)


# Why mining cannot use an embeddings dataset that holds an id twice (clustering.duplicates.duplicate_error)
REPEATS_IN_MINING = (
    "so a sentence would have two vectors and its pairs could take either (a model.long_inputs: chunk output has "
    "one row per chunk: mining needs model.long_inputs=truncate)"
)


# A corpus with a lang_column whose ids name a sentence in every language (FLORES' and SIB-200's index_id): its vectors
# cannot be joined by id, and dropping the repeats (duplicate_ids: keep_first) would drop languages
ACROSS_LANGUAGES = (
    "If the ids repeat across the languages of the corpus (an id naming a sentence in every language, as FLORES' "
    "and SIB-200's index_id), the vectors cannot be told apart by id, and keeping the first of each id would drop "
    "the other languages: give each language's rows their own ids in the input and its embeddings (e.g. "
    "'<lang>-<id>'), or remove {side}.embeddings_uri so that the job embeds the side's texts itself (its own vectors "
    "are keyed by row, so such ids are fine there)"
)


def mixed_dims_error(side: str, key: str, emb_uri: str, files: list[str], dims: list[int | None]) -> SideError:
    """The error for an embeddings dataset whose files hold vectors of several lengths: each length with the files
    that have it (the first 3), so the odd file is found without reading any."""
    by_dim: dict[int, list[str]] = defaultdict(list)
    for uri, dim in zip(files, dims):
        if dim is not None:
            by_dim[dim].append(uri)
    shown = "; ".join(
        f"dim {d} in {len(f)} files ({', '.join(f[:3])}{', ...' if len(f) > 3 else ''})"
        for d, f in sorted(by_dim.items())
    )
    return SideError(
        f"{side}: the embeddings in {emb_uri} ({key}) have vectors of several lengths: {shown}. They come from "
        "different models or output.dimensions and are not comparable: point it at one embeddings dataset (move the "
        "odd files out, or embed their input again with the model of the rest)"
    )


def check_models(stores: dict[tuple[str, str], StoreRef]) -> None:
    """The sides' vectors have one width (their recipes: check_recipes)."""
    dims = {s.side: s.dim for s in stores.values()}
    if len(set(dims.values())) > 1:
        raise SideError(
            f"source vectors have dim {dims.get('source')}, target {dims.get('target')}; embed both sides with the "
            "same model"
        )


def check_recipes(recipes: dict[str, tuple[str, dict[str, str] | None]]) -> None:
    """The sides' vectors must come from one model, revision and pooling (pipeline.embedding_recipe); another prompt
    on each side is a warning (an asymmetric model's query and passage prompts map into one space, but LASER-style
    mining compares like with like). `recipes`: side -> (its embeddings' location, its recipe or None).

    Raises:
        SideError: naming both sides, their locations and recipes.
    """
    known_sides = [(side, uri, r) for side, (uri, r) in sorted(recipes.items()) if r is not None]
    unknown = [(side, uri) for side, (uri, r) in sorted(recipes.items()) if r is None]
    if known_sides and unknown:  # another tool's vectors against the job's model: nothing says they are one model
        (side, uri), (known, known_uri, recipe) = unknown[0], known_sides[0]
        log.warning(
            "%s: the vectors in %s record no model (another tool's files, without rayembed metadata), so nothing "
            "checks that they come from the model of the %s's (%s: %s); mining compares them as they are, and "
            "vectors of two models give meaningless pairs: embed both sides with one model (remove %s.embeddings_uri "
            "and the job embeds it with model.name_or_path)",
            side,
            uri,
            known,
            known_uri,
            describe(recipe),
            side,
        )
    if len(known_sides) < 2:
        return
    (a, a_uri, ra), (b, b_uri, rb) = known_sides[:2]
    keys = differences(ra, rb, ("model", "revision", "pooling"))
    if keys:
        raise SideError(
            f"the sides were embedded with different models or settings ({', '.join(keys)}): {a} ({a_uri}) has "
            f"{describe(ra)}, "
            f"{b} ({b_uri}) has {describe(rb)}; their vectors are not comparable: embed both sides with one model "
            "(remove a side's embeddings_uri and the job embeds it with the configured model)"
        )
    if differences(ra, rb, ("prompt",)):
        log.warning(
            "the sides were embedded with different prompts: %s %r, %s %r; mining compares them as they are",
            a,
            ra.get("prompt"),
            b,
            rb.get("prompt"),
        )


def pair_name(s: str, t: str) -> str:
    return f"src_lang={s}/tgt_lang={t}"


def search_all(cfg, stores, pairs, means, work_uri, ex) -> dict[str, Any]:
    """Forward (keys: each target store) and backward (keys: each source store) searches, each key store loaded once."""
    m = cfg.mining
    spec = SearchSpec(m.index, m.ivf, m.block_size, max(int(m.cpus_per_shard), 1))
    jobs: dict[str, SearchJob] = {}
    where: dict[tuple[str, str, str], tuple[str, str]] = {}  # (keys, direction, queries) -> (pair, direction)
    for s, t in pairs:
        src, tgt = stores[("source", s)], stores[("target", t)]
        for keys, queries, direction in ((tgt, src, "fwd"), (src, tgt, "bwd")):
            job = jobs.setdefault(f"{direction}:{keys.name}", SearchJob(keys, means.get(keys.name), []))
            out_dir = posixpath.join(work_uri, "knn", pair_name(s, t), direction)
            job.queries.append((queries, means.get(queries.name), out_dir))
            where[(job.keys.name, direction, queries.name)] = (pair_name(s, t), direction)
    counts = {name: shard_count(job.keys.rows, m.num_shards, m.max_rows_per_shard) for name, job in jobs.items()}
    if isinstance(ex, LocalExecutor):
        shards = [StoreShard() for _ in range(max(counts.values()))]
    else:
        check_cpus(max(counts.values()), m.cpus_per_shard, cfg.compute.cpus_per_io_task)
        res = ShardResources(m.cpus_per_shard, m.gpus_per_shard, cfg.compute.max_restarts, cfg.compute.max_task_retries)
        shards = start_store_shards(max(counts.values()), res)
    files: dict[tuple[str, str], list[str]] = {}
    try:
        for name, job in jobs.items():
            log.info(
                "k-NN %s: %d keys in %d shards, %d query stores", name, job.keys.rows, counts[name], len(job.queries)
            )
            result = run_search(job, m.k, counts[name], spec, cfg.storage, ex, shards, m.max_in_flight)
            direction = name.split(":")[0]
            for store, _, _ in job.queries:
                files[where[(job.keys.name, direction, store.name)]] = result["files"][store.name]
        peak, base, over = peak_rss(shards, ex)
    finally:
        if not isinstance(ex, LocalExecutor):
            import ray

            for actor in shards:
                ray.kill(actor)
    return {
        "files": files,
        "shards": counts,
        "actor_peak_rss_mb": peak,
        "actor_base_rss_mb": base,
        "actor_rss_over_base_mb": over,
    }


class ResourceError(UserError, RuntimeError):
    """The shard actors would take every CPU, leaving none for the tasks that feed them: the run would hang."""


def check_cpus(shards: int, cpus_per_shard: float, cpus_per_io_task: float) -> None:
    """Refuse a plan whose shard actors reserve the CPUs that the block-reading and merging tasks need."""
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    need = shards * cpus_per_shard + cpus_per_io_task
    if total < need:
        raise ResourceError(
            f"{shards} shard actors x mining.cpus_per_shard={cpus_per_shard} plus one task of "
            f"compute.cpus_per_io_task={cpus_per_io_task} need {need:g} CPUs; the cluster has {total:g}. Lower "
            "mining.cpus_per_shard or mining.num_shards (or raise max_rows_per_shard), or add CPUs"
        )


def actor_memory_parts(cfg: MineConfig, rows: int, dim: int) -> dict[str, int]:
    """Bytes per part of one shard actor's arrays for a key store of `rows` rows (see `shard_memory`)."""
    m = cfg.mining
    shard_rows = -(-rows // shard_count(rows, m.num_shards, m.max_rows_per_shard))
    return shard_array_parts(
        m.index,
        shard_rows,
        dim,
        m.block_size,
        m.k,
        m.ivf.nlist,
        m.ivf.pq_m,
        m.ivf.train_rows if m.index == "ivf" else 0,
        m.max_in_flight,
    )


def neighbours_used(k: int, s: str, t: str, src: StoreRef, tgt: StoreRef) -> dict[str, int]:
    """The neighbours each direction's search found per sentence: mining.k, or fewer when the other side has fewer
    rows with a vector. The densities and so the margins then average fewer cosines than the threshold was chosen
    for (a side of 1 row: every margin is near 1); said in the summary and as a warning, which used to say k only.
    """
    used = {"forward": min(k, tgt.vector_rows or tgt.rows), "backward": min(k, src.vector_rows or src.rows)}
    for direction, n in used.items():
        if n < k:
            other = f"target ({t})" if direction == "forward" else f"source ({s})"
            log.warning(
                f"{s}-{t}: the {other} has {n} rows, fewer than mining.k={k}: the {direction} search finds {n} "
                f"neighbours per sentence, so its margins average {n} cosines, not {k}, and a threshold chosen at "
                f"k={k} does not carry over (lower mining.k, or mine a larger side)"
            )
    return used


def mine_pair(cfg, s, t, src: StoreRef, tgt: StoreRef, knn: dict, work_uri: str, pairs_dir: str, ex) -> dict[str, Any]:
    """Score, select and write one language pair from its stored knn files."""
    m, st = cfg.mining, cfg.storage
    name = pair_name(s, t)
    fwd_files, bwd_files = knn[(name, "fwd")], knn[(name, "bwd")]
    d_src = ex.submit(densities, fwd_files, src.rows, m.margin, st)
    d_tgt = ex.submit(densities, bwd_files, tgt.rows, m.margin, st)
    prop_dir = posixpath.join(work_uri, "proposals", name)
    fwd_props = [
        ex.submit(propose, u, d_tgt, m.margin, True, f"{prop_dir}/fwd/{i:06d}.parquet", st)
        for i, u in enumerate(fwd_files)
    ]
    bwd_props = [
        ex.submit(propose, u, d_src, m.margin, False, f"{prop_dir}/bwd/{i:06d}.parquet", st)
        for i, u in enumerate(bwd_files)
    ]
    fwd_props, bwd_props = ex.get(fwd_props), ex.get(bwd_props)
    used = fwd_props * (m.retrieval != "bwd") + bwd_props * (m.retrieval in ("bwd", "max"))
    lows = [p["min"] for p in used if p["min"] is not None]
    highs = [p["max"] for p in used if p["max"] is not None]
    lo, hi = (min(lows), max(highs)) if lows else (0.0, 1.0)
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, m.histogram_bins + 1).tolist()
    grid = threshold_grid(np.asarray([lo, hi]), m.threshold)
    fwd_uris, bwd_uris = [p["uri"] for p in fwd_props], [p["uri"] for p in bwd_props]
    fwd_best = ex.submit(best_of, fwd_uris, src.rows, True, st)
    bwd_best = ex.submit(best_of, bwd_uris, tgt.rows, False, st)
    route = Route(src, posixpath.join(work_uri, "attach", name, "src"), cfg.output.rows_per_file)
    window = Window(m.threshold, m.score_max, edges, grid)
    sel = ex.get(ex.submit(select_stream, fwd_uris, bwd_uris, m.retrieval, fwd_best, bwd_best, window, route, st))
    warn_empty_window(m, s, t, sel, lo, hi)
    # attach source columns per source text file, then target columns per target text file, then write in order
    by_src: dict[int, list[str]] = defaultdict(list)
    for f, uri in sel["routed"]:
        by_src[f].append(uri)
    att = posixpath.join(work_uri, "attach", name)
    refs = [
        ex.submit(attach_source, src, tgt, f, uris, cfg.source.keep_columns, f"{att}/tgt", st)
        for f, uris in sorted(by_src.items())
    ]
    by_tgt: dict[int, list[str]] = defaultdict(list)
    for routed in ex.get(refs):
        for f, uri in routed:
            by_tgt[f].append(uri)
    refs = [
        ex.submit(attach_target, tgt, f, uris, cfg.target.keep_columns, cfg.output.rows_per_file, f"{att}/rank", st)
        for f, uris in sorted(by_tgt.items())
    ]
    by_chunk: dict[int, list[str]] = defaultdict(list)
    for routed in ex.get(refs):
        for c, uri in routed:
            by_chunk[c].append(uri)
    chunks = [by_chunk[c] for c in sorted(by_chunk)]
    dedup_pairs = m.dedup_pairs and not m.dedup
    written = ex.get(
        ex.submit(
            finalize,
            chunks,
            s,
            t,
            cfg.source.keep_columns,
            cfg.target.keep_columns,
            dedup_pairs,
            cfg.multi_pair,
            pairs_dir,
            st,
            run_lease(resolve(pairs_dir, st)),  # a node with a folder of its own there fails (shared_output)
        )
    )
    hist = {"bin_edges": [round(e, 6) for e in edges], "counts": sel["histogram"]}
    return {
        "src_lang": s,
        "tgt_lang": t,
        "rows": {"source": src.rows, "target": tgt.rows},
        "neighbours": neighbours_used(m.k, s, t, src, tgt),
        "pairs_selected": sel["pairs_selected"],
        "pairs_kept": written["rows"],
        "pairs_above_score_max": sel["pairs_above_score_max"],
        "duplicate_pairs_dropped": written["duplicate_pairs_dropped"],
        "pairs_per_threshold": [{"threshold": g, "pairs": int(n)} for g, n in zip(grid, sel["per_threshold"])],
        "score_histogram": hist,
        "files": written["files"],
    }


def warn_empty_window(m: MiningConfig, s: str, t: str, sel: dict, lo: float, hi: float) -> None:
    """Warn when pairs were selected but the score window kept none of them (a threshold above every score, e.g.
    a ratio threshold left in place after mining.margin changed to distance): the run would end with no pairs and
    no word. `lo`, `hi`: the lowest and highest score among the candidates the selection walked."""
    if not sel["pairs_selected"] or sel["pairs_in_window"]:
        return
    window = ", ".join(
        f"mining.{key} {value:g}"
        for key, value in (("threshold", m.threshold), ("score_max", m.score_max))
        if value is not None
    )
    log.warning(
        f"{s}-{t}: none of the {sel['pairs_selected']} selected pairs is in the score window ({window}): their "
        f"{m.margin} margins lie between {lo:.4g} and {hi:.4g}; {UNITS_HINT}. summary.json's pairs_per_threshold "
        "gives the pairs each threshold keeps"
    )


def write_pair_report(cfg: MineConfig, pair: dict, at) -> dict[str, str]:
    m = cfg.mining
    title = f"{pair['src_lang']}-{pair['tgt_lang']}: {m.margin} margin, {m.retrieval} retrieval, {pair['pairs_selected']} pairs"
    png = counts_png(pair["score_histogram"], m.threshold, pair["pairs_kept"], title, f"{m.margin} margin score")
    write_bytes(png, at.join(HISTOGRAM_FILE))
    return {"histogram": at.join(HISTOGRAM_FILE).uri}


def knn_stage(
    cfg: MineConfig, texts: dict, embedded: dict, pairs: list, work_uri: str, ex, listings: Listings | None = None
) -> tuple[dict, float]:
    """Join the vectors to the texts, then the k-NN of every pair: the `knn` stage's record, and when the join ended
    (the summary counts the join with reading and embedding)."""
    stores, sides = build_stores(cfg, texts, embedded, work_uri, ex, listings)
    joined = time.perf_counter()
    means = {}
    if cfg.mining.center:
        for store in {s.name: s for s in stores.values()}.values():
            means[store.name] = ex.submit(store_mean, store, cfg.storage)
        means = dict(zip(means, ex.get(list(means.values()))))  # (dim,) each
    knn = search_all(cfg, stores, pairs, means, work_uri, ex)
    knn |= planned_memory(cfg, stores)  # as the search ran: a resumed run may have other layout settings
    return resume.knn_record(stores, sides, knn), joined


def pair_stage(cfg: MineConfig, s: str, t: str, stores: dict, knn: dict, out, work_uri: str, ex) -> dict:
    """Score, select and write one pair: its stage's record (mine_pair's result)."""
    src, tgt = stores[("source", s)], stores[("target", t)]
    pairs_dir = out.join("pairs", pair_name(s, t)).uri if cfg.multi_pair else out.join("pairs").uri
    result = mine_pair(cfg, s, t, src, tgt, knn["files"], work_uri, pairs_dir, ex)
    log.info("%s-%s: %d pairs kept of %d selected", s, t, result["pairs_kept"], result["pairs_selected"])
    return resume.as_json(result)


@commit.holds_output("mine_bitext")
def run_mine(cfg: MineConfig) -> dict[str, Any]:
    """Mine translation pairs for every (source lang, target lang), or resume an unfinished run of the same
    configuration in `output.uri` from its last recorded stage (pipeline.bitext.resume); returns the summary
    written to summary.json.

    Raises:
        OutputExistsError: the output holds a finished run, another configuration's run (the message names each
            differing field) or foreign files, and output.overwrite is false.
    """
    start = time.perf_counter()
    out = resolve(cfg.output.uri, cfg.storage)
    recorded = commit.check_available(out, cfg.output.overwrite, resumable=True)  # before listing the inputs
    rules = resume.applied_mine_rules(cfg, recorded)  # those this config does not use as recorded
    check_rules(out, recorded, rules, "mine_bitext")  # a run of another version's rules
    listings = Listings(cfg.storage)  # each input listed once: for the fingerprint, then reused by the reads
    fingerprint = resume.mine_fingerprint(cfg, listings, rules)
    inputs = resume.input_listings(cfg, listings)
    # an input file touched since the run began (token moved, size not) is hashed and compared with its content
    same = same_content({key: root for key, (root, _) in inputs.items()}, out)
    resumed = commit.begin(out, "mine_bitext", cfg.output.overwrite, fingerprint, same_content=same)
    with ContentRecorder(out, inputs):  # what that compares: hashed while we mine
        stages = commit.committed_units(out) if resumed else {}
        if resumed:
            dropped = commit.drop_except(out, resume.kept_paths(stages, cfg.multi_pair))
            log.info("resuming: stages recorded %s; %d files of later stages dropped", sorted(stages), dropped)
        needs_embed = not (cfg.source.embeddings_uri and cfg.target.embeddings_uri)
        if cfg.mining.backend == "ray" or needs_embed:
            init_ray(cfg.compute, cfg)
        ex = make_executor(cfg, out)
        work_uri = out.join("work").uri
        reused = [stage for stage in (resume.TEXTS, resume.KNN) if stage in stages]
        texts = stages.get(resume.TEXTS)
        if texts is None:
            texts = prepare_texts(cfg, plan_inputs(cfg), work_uri, ex, listings)
            commit.mark_unit(out, resume.TEXTS, texts)
        embedded, embeddings_reused = embed_sides(cfg, out)
        reused += [f"embeddings/{side}" for side in embeddings_reused]
        pairs = cfg.pairs()
        embedded_at = time.perf_counter()
        if resume.KNN not in stages:
            stages[resume.KNN], embedded_at = knn_stage(cfg, texts, embedded, pairs, work_uri, ex, listings)
            commit.mark_unit(out, resume.KNN, stages[resume.KNN])
        stores, sides, knn = resume.from_knn_record(stages[resume.KNN])  # the same values, first attempt or not
        searched = time.perf_counter()
        results = []
        for s, t in pairs:
            stage = resume.pair_stage(s, t)
            if stage in stages:
                reused.append(stage)
            else:
                stages[stage] = pair_stage(cfg, s, t, stores, knn, out, work_uri, ex)
                commit.mark_unit(out, stage, stages[stage])
            results.append(stages[stage])
        mined = time.perf_counter()
        dim = next(iter(stores.values())).dim
        seconds = {
            "read_and_embed": round(embedded_at - start, 3),
            "knn": round(searched - embedded_at, 3),
            "select_and_write": round(mined - searched, 3),
        }
        shards = {  # as the k-NN ran, which an earlier attempt may have run with other layout settings
            "forward": max(n for name, n in knn["shards"].items() if name.startswith("fwd:")),
            "backward": max(n for name, n in knn["shards"].items() if name.startswith("bwd:")),
            "actor_peak_rss_mb": knn["actor_peak_rss_mb"],
            "actor_base_rss_mb": knn["actor_base_rss_mb"],
            **memory_plan(cfg, knn, stores),
            "actor_rss_over_base_mb": knn["actor_rss_over_base_mb"],
        }
        remove_work(out)
        if cfg.multi_pair:
            summary = write_multi(cfg, out, results, sides, stores, dim, shards, seconds)
        else:
            summary = write_single(cfg, out, results[0], sides, dim, shards, seconds)
        summary["seconds"]["total"] = round(time.perf_counter() - start, 3)
        summary["driver_peak_rss_mb"] = round(peak_rss_mb(), 1)
        summary["resumed"], summary["stages_reused"] = resumed, reused
        commit.commit(out, "mine_bitext", summary, SUMMARY_FILE)  # summary.json, then the _SUCCESS marker
        log.info("mined %d pairs of languages -> %s", len(results), out.uri)
        return summary


def planned_memory(cfg: MineConfig, stores: dict) -> dict[str, Any]:
    """The shard actors' planned array bytes for the largest key store: the upper bound of one actor's arrays (host
    memory, over its process base) in total and by part."""
    largest, dim = max(s.rows for s in stores.values()), next(iter(stores.values())).dim
    parts = actor_memory_parts(cfg, largest, dim)
    return {"max_actor_array_bytes": sum(parts.values()), "actor_array_bytes_by_part": parts}


def memory_plan(cfg: MineConfig, knn: dict, stores: dict) -> dict[str, Any]:
    """The shard actors' planned array bytes, as recorded by the k-NN stage (computed from `cfg` for a k-NN stage
    recorded before the plan was part of its record)."""
    if "max_actor_array_bytes" in knn:
        return {k: knn[k] for k in ("max_actor_array_bytes", "actor_array_bytes_by_part")}
    return planned_memory(cfg, stores)


def embedded_at(embeddings: dict) -> str | None:
    """Where a side's vectors are: the embed step's output (`written`), or the side's embeddings_uri (`reused`)."""
    return embeddings.get("written") or embeddings.get("reused")


def side_summary(info: dict, lang: str) -> dict:
    per = info["langs"][lang]
    return {
        "lang": lang,
        # the lang_column values this code took, with their rows ({"deu_Latn": 1004} for lang: de)
        **({"lang_matched": per["lang_matched"]} if per.get("lang_matched") else {}),
        "rows_read": info["rows_read"],
        "rows_rejected": info["rows_rejected"],
        **({"rejects": info["rejects"]} if info["rows_rejected"] > per.get("rows_rejected_by_embedding", 0) else {}),
        "rows_other_lang": info["rows_other_lang"],
        # of rows_other_lang: rows whose lang_column is null (a resumed run's record of an older version: absent)
        **({"rows_without_lang": info["rows_without_lang"]} if info.get("rows_without_lang") is not None else {}),
        "duplicates_dropped": per["duplicates_dropped"],
        "rows_mined": per["rows_mined"],
        # of rows_rejected: later rows of a repeated id, rows the embed step rejected (older records: 0)
        "duplicate_ids_rejected": per.get("duplicate_ids_rejected", 0),
        "rows_rejected_by_embedding": per.get("rows_rejected_by_embedding", 0),
        **(
            {"embedding_rejects": posixpath.join(embedded_at(per["embeddings"]), REJECTS_DIR)}
            if per.get("rows_rejected_by_embedding") and embedded_at(per["embeddings"])
            else {}
        ),
        "embeddings": per["embeddings"],
    }


def write_single(cfg, out, pair, sides, dim, shards, seconds) -> dict:
    report = write_pair_report(cfg, pair, out)
    return {
        "source": side_summary(sides["source"], pair["src_lang"]),
        "target": side_summary(sides["target"], pair["tgt_lang"]),
        "mining": cfg.mining.model_dump(),
        "dim": dim,
        **{k: v for k, v in pair.items() if k not in ("files", "src_lang", "tgt_lang", "rows")},
        "shards": shards,
        "seconds": seconds,
        "output": {"pairs": out.join("pairs").uri, "files": pair["files"], **report},
    }


def write_multi(cfg, out, results, sides, stores, dim, shards, seconds) -> dict:
    overview = []
    for pair in results:
        at = out.join("reports", pair_name(pair["src_lang"], pair["tgt_lang"]))
        report = write_pair_report(cfg, pair, at)
        per = {
            **pair,
            "output": {"pairs": out.join("pairs", pair_name(pair["src_lang"], pair["tgt_lang"])).uri, **report},
        }
        write_bytes(json.dumps(per, indent=2).encode(), at.join(SUMMARY_FILE))
        overview.append(
            {k: pair[k] for k in ("src_lang", "tgt_lang", "pairs_selected", "pairs_kept")}
            | {"source_rows": pair["rows"]["source"], "target_rows": pair["rows"]["target"]}
        )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(overview[0]))
    writer.writeheader()
    writer.writerows(overview)
    write_bytes(buf.getvalue().encode(), out.join("overview.csv"))
    write_bytes(overview_png(overview, cfg.mining.threshold), out.join("overview.png"))
    return {
        "sides": {
            name: {k: v for k, v in info.items() if k != "langs"} | {"langs": info["langs"]}
            for name, info in sides.items()
        },
        "mining": cfg.mining.model_dump(),
        "dim": dim,
        "pairs": overview,
        "shards": shards,
        "seconds": seconds,
        "output": {"pairs": out.join("pairs").uri, "overview": out.join("overview.csv").uri},
    }


def remove_work(out) -> None:
    """The intermediate files (raw parts, buckets, knn, proposals) are not outputs."""
    work = out.join("work")
    if work.fs.get_file_info(work.path).type != pafs.FileType.NotFound:
        work.fs.delete_dir(work.path)
