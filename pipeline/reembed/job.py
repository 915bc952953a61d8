"""The re-embed job: bring a versioned embeddings dataset up to date with the corpus and the configured model.

lease -> fingerprint -> list + plan -> embed only new/changed files into per-run staging (a marker per completed
file) -> manifest -> pointers -> garbage collection -> summary. Killed anywhere, the next run reuses every file
that has a marker and embeds the rest; the previous version stays current until the last pointer write.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import posixpath
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow.fs as pafs
import ray

from pipeline import commit
from pipeline.calibration import output_precision
from pipeline.embed_job import embed_stages, init_ray, init_ray_while, job_prompt, read_spec
from pipeline.etags import ObjectChecks, same_object
from pipeline.file_formats import listing_formats
from pipeline.kept_columns import KeptType
from pipeline.model_defaults import model_dimension, with_model_defaults
from pipeline.model_loading import check_model
from pipeline.objects import delete_files, get_json, list_tree, put_json
from pipeline.quantization import OutputPrecision
from pipeline.reembed import kept
from pipeline.reembed.config import ReembedConfig
from pipeline.reembed.duplicates import DUPLICATES_DIR, IDS_DIR, check_ids, checks_ids, remove_pass
from pipeline.reembed.fingerprint import fingerprint_hash, fingerprint_recipe
from pipeline.reembed.kept import decide_for_run
from pipeline.reembed.layout import LEASE, SUMMARY, VersionLayout
from pipeline.reembed.lease import Lease
from pipeline.reembed.manifest import FileEntry, Manifest, current_manifest, version_manifest
from pipeline.reembed.moves import (
    compressed_name,
    declared_size,
    decompressed_as_listed,
    decompressed_gives_etag,
    decompressed_token,
    move_entries,
    reads_alike,
    recompressed_hashes,
    same_format,
)
from pipeline.reembed.planner import Plan, make_plan
from pipeline.reembed.publish import collect_garbage, publish, repoint_current
from pipeline.reembed.retype import rewrite_entries
from pipeline.reembed.sources import (
    HASH_THREADS,
    InputChangedError,
    SourceFile,
    changed_files_message,
    changed_since_listed,
    content_token,
    content_tokens,
    hash_as_listed,
    hash_as_read,
    listed_source,
    scan_sources,
)
from pipeline.reembed.staging import Progress, StageTarget, read_tagged, write_by_source
from pipeline.reject_guard import TooManyRejectsError, reject_failure
from pipeline.resolution_cache import resolve_remembered
from pipeline.shared_output import run_lease
from pipeline.stages import io_stage
from pipeline.storage import Location, list_inputs, resolve
from pipeline.writing import EMPTY_FILE, embedding_metadata, model_dim_entry, write_empty_output

log = logging.getLogger(__name__)


def load_staged(layout: VersionLayout) -> dict[str, FileEntry]:
    """Completion markers of unpublished work, by file key."""
    staged = {}
    for name in list_tree(layout.staged):
        raw = get_json(layout.staged.join(name))
        if raw is not None:
            entry = FileEntry.from_json(raw)
            staged[entry.key] = entry
    return staged


def older_entries(layout: VersionLayout, previous: Manifest) -> list[FileEntry]:
    """The entries of this version's manifests before `previous` that garbage collection keeps
    (reembed.keep_manifests; their output files are kept with them), oldest first."""
    entries = []
    for name in sorted(list_tree(layout.manifests)):
        raw = get_json(layout.manifests.join(name))
        if raw is not None and (raw["generation"], raw["run_id"]) != (previous.generation, previous.run_id):
            entries += Manifest.from_json(raw).entries
    return entries


def objects_changed(
    cfg: ReembedConfig,
    root: Location,
    listed: dict[str, SourceFile],
    entries: list[FileEntry],
    layout: VersionLayout,
) -> dict[str, str]:
    """{path: how} for the objects of `entries` (staged by this run) whose size or ETag a new listing of the input
    no longer gives as listed (sources.changed_since_listed's words); their markers are deleted, so that a rerun
    embeds them again."""
    _, now = list_inputs(cfg.input.uri, cfg.storage)
    by_path = {f.path: f for f in now}
    changed = {}
    for entry in entries:
        src, f = listed[entry.path], by_path.get(entry.path)
        if f is None:
            changed[entry.path] = f"listed with {src.size} bytes, now gone"
        elif f.size != src.size:
            changed[entry.path] = f"listed with {src.size} bytes, now {f.size} bytes"
        elif (token := listed_source(root, f).token) != src.token and not same_object(
            root, src.path, f.size, src.token
        ):
            changed[entry.path] = f"listed with change token {src.token}, now {token} (same size)"
    for path in changed:
        delete_files(layout.staged, [posixpath.basename(layout.marker(listed[path].key).path)])
    return changed


def with_recorded_contents(root: Location, plan: Plan) -> tuple[Plan, int]:
    """`plan` with the content (sources.content_token) of its unchanged local entries that record none (written
    before entries did: a move of such a file could not be paired, and was embedded again), hashed on HASH_THREADS
    threads while each file has its recorded size and token (sources.hash_as_listed; a file that moves meanwhile
    keeps none); and how many were hashed. The run publishes them in a new manifest, once: later runs read them."""

    def lacking(e: FileEntry) -> bool:
        return not e.unreadable and (e.content is None or (compressed_name(e.path) and e.decompressed is None))

    todo = [e for e in plan.unchanged if lacking(e)]
    if not todo or not isinstance(root.fs, pafs.LocalFileSystem):
        return plan, 0
    log.info("hashing %d input files whose entries an older version recorded without their content, once", len(todo))

    def hashed(e: FileEntry) -> FileEntry:
        src = SourceFile(e.path, e.size, e.token)
        content = e.content or hash_as_listed(root, src)
        # "": tried, none (not readable as its codec, compressed twice): not hashed again each run
        decompressed = e.decompressed or decompressed_as_listed(root, src) or ""
        return dataclasses.replace(e, content=content, decompressed=decompressed if compressed_name(e.path) else None)

    with ThreadPoolExecutor(HASH_THREADS) as pool:
        found = {new.path: new for old, new in zip(todo, pool.map(hashed, todo)) if new != old}
    if not found:
        return plan, 0
    unchanged = [found.get(e.path, e) for e in plan.unchanged]
    return dataclasses.replace(plan, unchanged=unchanged), len(found)


def done_future(value: str) -> Future[str | None]:
    future: Future[str | None] = Future()
    future.set_result(value)
    return future


def embed_files(
    cfg: ReembedConfig,
    layout: VersionLayout,
    root: Location,
    todo: list[SourceFile],
    prompt: str,
    lease: Lease,
    precision: OutputPrecision,
    duplicates: tuple[Location, dict[str, str], dict[str, int]] | None = None,
    published_types: dict[str, KeptType] | None = None,
    reused: list[FileEntry] = (),
    resumed: list[SourceFile] = (),
    object_contents: dict[str, str] | None = None,
    identity: dict[str, str] | None = None,
) -> tuple[list[FileEntry], Progress, dict[str, KeptType], list[FileEntry]]:
    """Run the Ray Data pipeline over `todo` (paths under `root`), writing each file's marker once it is complete.

    `precision`: output.dimensions and output.dtype as the driver checked them (calibration.output_precision).
    `duplicates`: the duplicate-id pass's location, each file's digest and each file's index in the listing
    (pipeline.reembed.duplicates); None when ids are not checked. `published_types`: the kept-column types the
    version stores (pipeline.reembed.kept; None for a new version). `reused`: the entries of the version's files
    this run keeps; their output files are written again with the new type, without the model, when this run's
    files change a kept column's stored type (kept.retyped: its first values, or a lossless widening;
    pipeline.reembed.retype). `resumed`: those of them an interrupted run staged; the kept types are decided from
    them too, as that run decided them. `object_contents`: S3 objects' `sha256:<hex>` as listed, by path, where
    the plan read them (etags.ObjectChecks: an ETag that moved at the same size), recorded as their entries' content
    (the run's end listing fails it if an object moved since). `identity`: the model identity the version's
    fingerprint records, which the workers are held to (pipeline.model_files.held_to). Returns the entries, the progress, the kept-column types to record
    (kept.decide_for_run) and the reused entries rewritten with them ([] when none was).
    """
    run_id = lease.run_id
    # The model's own token limit (pipeline.model_limits): the fingerprint keeps the configured recipe.
    settings, _ = init_ray_while(cfg.compute, lambda: resolve_remembered(cfg.model), cfg)
    settings = dataclasses.replace(settings, identity=identity)
    cfg = cfg.model_copy(update={"model": settings.model})
    typed = sorted({s.path for s in [*todo, *resumed]})
    spec, recorded = decide_for_run(read_spec(cfg, root), typed, published_types, cfg.compute)
    rewritten: list[FileEntry] = []
    if reused and (columns := kept.retyped(published_types, recorded)):
        log.warning(
            "kept column(s) change type in this run: %s; the version's %d other files are written again with the "
            "new type (their vectors reused, no model work), so that every file reads as one table",
            "; ".join(f"{c!r} {why}" for c, why in columns.items()),
            len(reused),
        )
        rewritten = rewrite_entries(layout.root, list(reused), run_id, kept.as_written(recorded), cfg.compute)
        rewritten = [e for e, before in zip(rewritten, reused) if e is not before and e != before]
    target = StageTarget(
        version_root=layout.root,
        run_id=run_id,
        keys={s.path: s.key for s in todo},
        keep_columns=tuple(cfg.output.keep_columns),
        chunked=cfg.model.long_inputs == "chunk",
        metadata={
            **embedding_metadata(cfg, prompt),
            **model_dim_entry(cfg),
            **settings.metadata,
            "fingerprint": layout.fingerprint,
        },
        rows_per_file=cfg.output.rows_per_file,
        token_columns=cfg.output.token_columns,
        lease=run_lease(layout.root),  # a node with a folder of its own there fails its writes (shared_output)
    )
    ids_at, digests, index = duplicates if duplicates is not None else (None, None, {})
    progress = Progress(todo, run_id, digests)
    if not todo:  # only resumed files, whose types fit the version
        return [], progress, recorded, rewritten
    items = [{"file": s.path, "file_index": index.get(s.path, -1), "size": s.size} for s in todo]
    ds = ray.data.from_items(items, override_num_blocks=len(todo))
    ds = io_stage(read_tagged, cfg.compute, {"spec": spec, "duplicates": ids_at}, batch_size=1).apply(ds)
    ds = embed_stages(ds, cfg, prompt, precision, settings)
    ds = io_stage(write_by_source, cfg.compute, {"target": target}).apply(ds)
    entries: list[FileEntry] = []

    # local files' content, recorded so that a file whose times alone move is reused (planner.make_plan); a
    # compressed file's decompressed bytes are hashed by its read task as it reads them (ReadAs.decompressed)
    hashing = ThreadPoolExecutor(HASH_THREADS)
    contents = content_tokens(root, todo, hashing)
    for path, content in (object_contents or {}).items() if not isinstance(root.fs, pafs.LocalFileSystem) else ():
        contents[path] = done_future(content)  # S3 objects the plan read (etags.ObjectChecks)
    # files that changed between the listing and the end of their read: not staged, the run fails naming them
    changed: dict[str, str] = {}
    listed = {s.path: s for s in todo}
    # local files: one stat each as it completes; S3 objects: one listing at the end (ListObjectsV2 gives the ETags,
    # 1,000 objects a request), where a HEAD per object would cost a round trip per file on the driver
    local = isinstance(root.fs, pafs.LocalFileSystem)

    def stage(done: list[FileEntry]) -> None:
        for entry in done:
            content = contents.get(entry.path)
            read = progress.read.pop(entry.path, None)  # the bytes its read task read (pipeline.read_content)
            # a compressed local file: the sha256 of the decompressed bytes its rows hold, so that the file
            # decompressed since is paired with its entry (moves)
            decompressed = read.decompressed if read is not None and compressed_name(entry.path) else None
            entry = dataclasses.replace(entry, content=content.result() if content else None, decompressed=decompressed)
            # a file whose token alone moved (a touch, an rsync of the same bytes) is hashed and compared with it
            if local and (how := changed_since_listed(root, listed[entry.path], entry.content, read)):
                log.warning("%s changed while this run read it (%s): not staged", entry.path, how)
                changed[entry.path] = how
                continue
            if entry.content is None and read is not None and read.size == entry.size:
                # not hashed as listed before its token moved: the content its rows hold, while the file still has it
                entry = dataclasses.replace(entry, content=hash_as_read(root, entry.path, read))
            lease.check()
            put_json(entry.__dict__, layout.marker(entry.key))
            entries.append(entry)
            log.info("staged %s: %d rows", entry.path, entry.rows)

    try:
        for stats in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            stage(progress.add(stats))
        stage(progress.finish())
    finally:
        hashing.shutdown(wait=False, cancel_futures=True)  # a failed run does not wait for the hashes
    if not local and entries:
        changed.update(objects_changed(cfg, root, listed, entries, layout))
    if changed:
        raise InputChangedError(changed_files_message(root, changed))
    return entries, progress, recorded, rewritten


def run_reembed(cfg: ReembedConfig) -> dict[str, Any]:
    """Bring `output.uri` up to date; returns the summary also written to `<output>/_summary.json`."""
    start = time.perf_counter()
    run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    out = resolve(cfg.output.uri, cfg.storage)
    cfg, _ = with_model_defaults(cfg)
    prompt = job_prompt(cfg)
    check_model(cfg.model)  # pooling the model was not trained with, weights missing or cut short: before Ray starts
    precision = output_precision(cfg)  # output.dimensions within the model's (its Dense output, when it has one)
    recipe = fingerprint_recipe(cfg, prompt)
    layout = VersionLayout(out, fingerprint_hash(recipe))
    settings = cfg.reembed
    lease = Lease(
        out.join(LEASE),
        run_id,
        settings.lease_ttl_seconds,
        settings.lease_settle_seconds,
        settings.owner,
        wait=settings.lease_wait_seconds,
        storage=cfg.storage,
        job="reembed",
    )
    with lease:
        root, listed = list_inputs(cfg.input.uri, cfg.storage)
        sources = scan_sources(root, listed)
        local_input = isinstance(root.fs, pafs.LocalFileSystem)
        rel_paths = [f.path for f in listed]
        listing_formats(cfg.input.format, rel_paths)  # a file no format reads (a README.md): before Ray starts
        previous, current = version_manifest(layout), current_manifest(out)
        staged = load_staged(layout)
        content_of = functools.cache(lambda rel: content_token(root, rel))
        alike = functools.partial(reads_alike, cfg.input.format)
        # a file compressed since (a.jsonl -> a.jsonl.gz): its decompressed bytes, hashed only when the plan is no no-op
        recompressed = (
            functools.cache(lambda rel: decompressed_token(root, rel)),
            functools.partial(same_format, cfg.input.format),
        )
        # what a compressed file declares it decompresses to: one that no entry's size matches is not decompressed
        declared = functools.cache(functools.partial(declared_size, root))
        # S3: an object replaced by its gzip / zstd (a.jsonl -> a.jsonl.gz), read once when its declared size is a
        # gone entry's (local files are paired by their sha256: recompressed)
        gzipped = None if local_input else functools.partial(decompressed_gives_etag, root)
        # an S3 object uploaded again with other part sizes (another ETag, the same size): its bytes, read once
        reuploaded = ObjectChecks(root)  # keeps the sha256 of each object it read: recorded below if embedded
        plan = make_plan(sources, previous, staged, content_of=content_of, reads_alike=alike, same_object=reuploaded)
        earlier: list[FileEntry] = []

        def full_plan(digests) -> Plan:
            """The plan with every move check, the duplicate-id digests when the pass ran (else None)."""
            return make_plan(
                sources,
                previous,
                staged,
                digests,
                content_of,
                alike,
                earlier,
                *recompressed,
                same_object=reuploaded,
                declared_size=declared,
                decompressed_etag=gzipped,
            )

        if not plan.is_noop and previous is not None:
            # a file deleted one night and restored the next, an edit reverted: the older manifests' entries
            earlier = older_entries(layout, previous)
            plan = full_plan(None)
        duplicates = None
        if checks_ids(cfg) and not plan.is_noop:
            # which copy of an id is first depends on every listed file: the pass reads the ids of all of them, when
            # the listing changed (an unchanged listing keeps its first copies)
            init_ray(cfg.compute, cfg)
            ids_at = layout.root.join(DUPLICATES_DIR)
            sizes = {s.path: s.size for s in sources}  # a file grown since: its listed rows (listed_prefix)
            keys = {s.path: s.key for s in sources}  # each file's kept id digests are named by its key
            digests = check_ids(cfg, read_spec(cfg, root), rel_paths, ids_at, sizes, keys, layout.root.join(IDS_DIR))
            duplicates = ids_at, digests, {path: i for i, path in enumerate(rel_paths)}
            plan = full_plan(digests)
        log.info("version %s: %s", layout.fingerprint, plan.counts())
        # entries an older rayembed recorded without their content: hashed once while their files are as recorded,
        # so that a later move of one is paired (by then its file is gone) and a touch of one is not embedded again
        plan, hashed = with_recorded_contents(root, plan)
        if plan.moves:
            # renamed or moved files: their vectors are reused, their path-derived ids and reject sources renamed
            moved = move_entries(layout.root, plan.moves, run_id, cfg.input.id_column, cfg.input.format)
            # compressed or decompressed since: the hashes of the file's own bytes and of its decompressed ones
            moved = [new and recompressed_hashes(root, src, old, new) for (src, old), new in zip(plan.moves, moved)]
            plan = plan.with_moved(moved)
            log.info("moved: %s", ", ".join(f"{e.path} -> {s.path}" for s, e in plan.moves))
        embedded: list[FileEntry] = []
        tokens = 0
        kept_types = kept.decode(previous.kept_types) if previous and previous.kept_types else None
        # a resumed file was staged with the kept types its run decided: they count (a new version's, or a column's
        # first values), so they are decided again with it also when nothing else is to embed
        if plan.to_embed or plan.resumed:
            published = None if previous is None else (kept_types or {})
            by_path = {s.path: s for s in sources}
            embedded, progress, kept_types, rewritten = embed_files(
                cfg,
                layout,
                root,
                plan.to_embed,
                prompt,
                lease,
                precision,
                duplicates,
                published,
                plan.reused,
                [by_path[e.path] for e in plan.resumed],
                reuploaded.contents,
                recipe["model_identity"],
            )
            plan = plan.with_rewritten(rewritten)
            tokens = progress.tokens
        failure = version_reject_failure(plan.reused + embedded, layout, cfg.input.max_reject_fraction)
        if failure:
            # Nothing is published: the current version stays, and the staged markers let the same command with a
            # raised input.max_reject_fraction publish without embedding again (as the embed job's guard).
            summary = summarize(plan, embedded, layout, current, None, previous.generation if previous else 0, tokens)
            summary.update(status="failed", failure=failure, wall_seconds=round(time.perf_counter() - start, 3))
            put_json(summary, out.join(SUMMARY))
            raise TooManyRejectsError(failure)
        manifest_rel, generation = None, previous.generation if previous else 0
        # a touched file's new token (its content compared) is recorded, so that the next run does not compare again
        if previous is None or not plan.is_noop or hashed or plan.retokened:
            generation += 1
            entries = sorted(plan.reused + embedded, key=lambda e: e.path)
            if entries and not any(e.files for e in entries):
                written = kept.as_written(kept_types or {})
                entries[0] = with_schema_file(entries[0], cfg, layout, prompt, precision, written)
            manifest = Manifest(
                layout.fingerprint,
                recipe,
                generation,
                run_id,
                cfg.input.uri,
                time.time(),
                entries,
                kept.encode(kept_types) if kept_types else None,
            )
            manifest_rel = publish(layout, manifest, lease)
            collect_garbage(layout, settings.keep_manifests, lease)
        elif current is None or current.fingerprint != layout.fingerprint:
            manifest_rel = get_json(layout.latest)["manifest"]
            repoint_current(layout, manifest_rel, generation, lease)
        if duplicates is not None:
            remove_pass(duplicates[0])
        summary = summarize(plan, embedded, layout, current, manifest_rel, generation, tokens)
        summary["wall_seconds"] = round(time.perf_counter() - start, 3)
        commit.commit(out, "reembed", summary, SUMMARY, fingerprint=layout.fingerprint)
    log.info(
        "files new %(new)d changed %(changed)d unchanged %(unchanged)d deleted %(deleted)d resumed %(resumed)d; "
        "rows embedded %(rows_embedded)d reused %(rows_reused)d",
        {**summary["files"], **summary},
    )
    return summary


def with_schema_file(
    entry: FileEntry,
    cfg: ReembedConfig,
    layout: VersionLayout,
    prompt: str,
    precision: OutputPrecision,
    kept_types: dict[str, KeptType],
) -> FileEntry:
    """`entry` with a schema-only Parquet file (pipeline.writing.EMPTY_FILE) in its run directory, for a version
    that stores no row (empty files only, every row rejected): readers of read_current/open_current then get the
    columns, types and rayembed.* metadata of a version with rows and no row, as from the embed job's output
    (a list of no files failed DuckDB's read_parquet, and open_current gave a table without columns)."""
    dim = model_dimension(cfg.model)
    if dim is None:
        return entry
    folder = VersionLayout.run_dir(entry.key, entry.run_id)
    metadata = {
        **embedding_metadata(cfg, prompt),
        **model_dim_entry(cfg),
        **precision.metadata(),
        "fingerprint": layout.fingerprint,
    }
    types = {c: t.type for c, t in kept_types.items()}
    write_empty_output(layout.root.join(folder), cfg, types, precision.arrow_type(dim), metadata)
    return dataclasses.replace(entry, files=[*entry.files, f"{folder}/{EMPTY_FILE}"])


def version_reject_failure(entries: list[FileEntry], layout: VersionLayout, max_fraction: float) -> str | None:
    """input.max_reject_fraction over the rows of the version about to be published (reused and new files), as the
    embed job applies it over its whole dataset (pipeline.reject_guard); None when it passes."""
    counts = {
        "rows_in": sum(e.rows for e in entries),
        "rows_rejected": sum(e.rejected for e in entries),
        "rejects": f"the _rejects/ folders under {layout.data.uri}",
    }
    return reject_failure(counts, max_fraction)


def summarize(
    plan: Plan,
    embedded: list[FileEntry],
    layout: VersionLayout,
    previous_current: Manifest | None,
    manifest_rel: str | None,
    generation: int,
    tokens: int,
) -> dict[str, Any]:
    reused = plan.reused
    total = reused + embedded
    return {
        "output": layout.out.uri,
        "fingerprint": layout.fingerprint,
        "previous_fingerprint": previous_current.fingerprint if previous_current else None,
        "published": manifest_rel,  # None: nothing changed, the current manifest stays
        "generation": generation,
        "files": {**plan.counts(), "total": len(total)},
        "rows_embedded": sum(e.embedded for e in embedded),
        "rows_reused": sum(e.embedded for e in reused),
        "rows_rejected": sum(e.rejected for e in embedded),
        # the version's count identity: rows_in = rows_total + rows_rejected_total (every input file it covers)
        "rows_in": sum(e.rows for e in total),
        "rows_rejected_total": sum(e.rejected for e in total),
        # corrupt input files, one reject row each (pipeline.units.corrupt_as_reject): this run's, the version's
        "files_rejected": sum(e.unreadable for e in embedded),
        "files_rejected_total": sum(e.unreadable for e in total),
        "rows_dropped": sum(e.embedded for e in plan.dropped),
        "rows_total": sum(e.embedded for e in total),
        "output_rows_total": sum(e.output_rows for e in total),
        "tokens": tokens,
        "status": "ok",
    }
