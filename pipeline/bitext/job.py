"""The mining job: read both sides -> embed (or reuse vectors) -> k-NN both ways -> margin -> 1:1 pairs -> Parquet.

    texts (driver) --run_embed--> <output>/embeddings/{source,target} --read back--> vectors
    vectors --shard actors (mining_actor) or in-process (knn)--> fwd/bwd top-k --selection--> pairs

Outputs under `output.uri`: `pairs/part-00000.parquet`, `summary.json` and `score_histogram.png`; when embedding,
also `texts/<side>/` (the filtered, deduplicated input that was embedded) and `embeddings/<side>/`.
"""

from __future__ import annotations

import logging
import resource
import time
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import commit
from pipeline.bitext.knn import KnnResult, knn_search
from pipeline.bitext.mining_actor import ShardResources, ray_knn_search, shard_count
from pipeline.bitext.report import histogram, histogram_png, kept_per_threshold, threshold_grid
from pipeline.bitext.selection import Pairs, select_pairs
from pipeline.bitext.sides import Side, SideError, attach_vectors, dedup_side, read_embeddings, read_side
from pipeline.config import EmbedConfig, InputConfig, OutputConfig
from pipeline.embed_job import init_ray, run_embed
from pipeline.mine_config import MineConfig, SideConfig
from pipeline.storage import Location, resolve, write_bytes, write_parquet_atomic

log = logging.getLogger(__name__)

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
    ]
)
PAIRS_FILE = "pairs/part-00000.parquet"
SUMMARY_FILE = "summary.json"
HISTOGRAM_FILE = "score_histogram.png"


def embed_side(cfg: MineConfig, side: Side, side_cfg: SideConfig, out: Location) -> tuple[str, dict[str, Any]]:
    """Embed exactly the rows that will be mined (filtered, deduplicated) with the embed job; returns its uri."""
    texts_at = out.join("texts", side.name)
    table = pa.table({"id": pa.array(side.ids, pa.string()), "text": pa.array(side.texts, pa.string())})
    write_parquet_atomic(table, texts_at.join("part-00000.parquet"))
    embeddings_at = out.join("embeddings", side.name)
    embed_cfg = EmbedConfig(
        input=InputConfig(
            uri=texts_at.uri,
            format="parquet",
            text_column="text",
            id_column="id",
            kind=side_cfg.kind,
        ),
        output=OutputConfig(uri=embeddings_at.uri, dtype=cfg.output.dtype, overwrite=cfg.output.overwrite),
        storage=cfg.storage,
        model=cfg.model,
        batching=cfg.batching,
        compute=cfg.compute,
    )
    return embeddings_at.uri, run_embed(embed_cfg)


def read_texts(cfg: MineConfig, name: str, side_cfg: SideConfig) -> Side:
    side = read_side(name, side_cfg, cfg.storage)
    return dedup_side(side) if cfg.mining.dedup else side


def add_vectors(cfg: MineConfig, side: Side, side_cfg: SideConfig, out: Location) -> tuple[Side, dict[str, Any]]:
    """Reuse the side's embeddings dataset or embed its rows now; then join the vectors to the texts by id."""
    info: dict[str, Any] = {"lang": side.lang, **side.counts, "rows_mined": len(side)}
    if side_cfg.embeddings_uri:
        uri = side_cfg.embeddings_uri
        info["embeddings"] = {"reused": uri}
    else:
        uri, embed_summary = embed_side(cfg, side, side_cfg, out)
        info["embeddings"] = {"written": uri, "embed_seconds": embed_summary.get("wall_seconds")}
    ids, vectors, metadata = read_embeddings(uri, cfg.storage)
    info["embeddings"]["model"] = metadata.get("rayembed.model", "unknown")
    return attach_vectors(side, ids, vectors, uri), info


def check_same_model(info: dict[str, dict[str, Any]]) -> None:
    models = {name: i["embeddings"]["model"] for name, i in info.items()}
    if len(set(models.values()) - {"unknown"}) > 1:
        raise SideError(f"the sides were embedded with different models {models}; their vectors are not comparable")


def search(cfg: MineConfig, queries: np.ndarray, keys: np.ndarray, stats: dict) -> KnnResult:
    m = cfg.mining
    if m.backend == "local":
        return knn_search(queries, keys, m.k, m.block_size, shard_count(len(keys), m.num_shards, m.max_rows_per_shard))
    resources = ShardResources(
        m.cpus_per_shard, m.gpus_per_shard, cfg.compute.max_restarts, cfg.compute.max_task_retries
    )
    return ray_knn_search(
        queries, keys, m.k, m.block_size, m.num_shards, m.max_rows_per_shard, resources, m.max_in_flight, stats
    )


def pairs_table(pairs: Pairs, src: Side, tgt: Side) -> pa.Table:
    s, t = pairs.src.tolist(), pairs.tgt.tolist()
    columns = [
        [src.ids[i] for i in s],
        [tgt.ids[j] for j in t],
        [src.texts[i] for i in s],
        [tgt.texts[j] for j in t],
        pairs.score,
        pairs.cosine,
        [src.lang] * len(s),
        [tgt.lang] * len(t),
    ]
    return pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(columns, PAIRS_SCHEMA)], schema=PAIRS_SCHEMA)


def actor_memory_bytes(cfg: MineConfig, rows: int, dim: int) -> int:
    """Upper bound of one shard actor's arrays: its keys, one query block, one tile and the running top-k."""
    m = cfg.mining
    shard_rows = -(-rows // shard_count(rows, m.num_shards, m.max_rows_per_shard))
    block = m.block_size
    return 4 * (shard_rows * dim + block * dim + block * min(block, shard_rows)) + 12 * block * 2 * m.k


def run_mine(cfg: MineConfig) -> dict[str, Any]:
    """Mine translation pairs between cfg.source and cfg.target; returns the summary also written to summary.json."""
    start = time.perf_counter()
    out = resolve(cfg.output.uri, cfg.storage)
    commit.begin(out, "mine_bitext", cfg.output.overwrite)
    needs_ray = cfg.mining.backend == "ray" or not (cfg.source.embeddings_uri and cfg.target.embeddings_uri)
    if needs_ray:
        init_ray(cfg.compute)
    side_cfgs = {"source": cfg.source, "target": cfg.target}
    texts = {name: read_texts(cfg, name, c) for name, c in side_cfgs.items()}  # both sides fail fast, before embedding
    sides, info = {}, {}
    for name, side_cfg in side_cfgs.items():
        sides[name], info[name] = add_vectors(cfg, texts[name], side_cfg, out)
    check_same_model(info)
    src, tgt = sides["source"], sides["target"]
    if src.vectors.shape[1] != tgt.vectors.shape[1]:
        raise SideError(
            f"source vectors have dim {src.vectors.shape[1]}, target {tgt.vectors.shape[1]}; embed both sides with "
            "the same model"
        )
    embedded = time.perf_counter()
    fwd_stats: dict[str, Any] = {}
    bwd_stats: dict[str, Any] = {}
    fwd = search(cfg, src.vectors, tgt.vectors, fwd_stats)
    bwd = search(cfg, tgt.vectors, src.vectors, bwd_stats)
    searched = time.perf_counter()
    m = cfg.mining
    selected = select_pairs(fwd, bwd, m.margin, m.retrieval)
    kept = selected.above(m.threshold)
    write_parquet_atomic(pairs_table(kept, src, tgt), out.join(PAIRS_FILE))
    title = f"{src.lang}-{tgt.lang}: {m.margin} margin, {m.retrieval} retrieval, {len(selected)} candidate pairs"
    png = histogram_png(selected.score, m.histogram_bins, m.threshold, title, f"{m.margin} margin score")
    write_bytes(png, out.join(HISTOGRAM_FILE))
    dim = int(src.vectors.shape[1])
    summary = {
        "source": info["source"],
        "target": info["target"],
        "mining": m.model_dump(),
        "dim": dim,
        "pairs_selected": len(selected),
        "pairs_kept": len(kept),
        "pairs_per_threshold": kept_per_threshold(selected.score, threshold_grid(selected.score, m.threshold)),
        "score_histogram": histogram(selected.score, m.histogram_bins),
        "shards": {
            "forward": shard_count(len(tgt), m.num_shards, m.max_rows_per_shard),
            "backward": shard_count(len(src), m.num_shards, m.max_rows_per_shard),
            "actor_peak_rss_mb": max(fwd_stats.get("actor_peak_rss_mb", 0), bwd_stats.get("actor_peak_rss_mb", 0)),
            "max_actor_array_bytes": max(
                actor_memory_bytes(cfg, len(tgt), dim), actor_memory_bytes(cfg, len(src), dim)
            ),
        },
        "seconds": {
            "read_and_embed": round(embedded - start, 3),
            "knn": round(searched - embedded, 3),
            "total": round(time.perf_counter() - start, 3),
        },
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "output": {"pairs": out.join(PAIRS_FILE).uri, "histogram": out.join(HISTOGRAM_FILE).uri},
    }
    commit.commit(out, "mine_bitext", summary, SUMMARY_FILE)  # summary.json, then the _SUCCESS marker
    log.info("kept %d of %d pairs (threshold %s) -> %s", len(kept), len(selected), m.threshold, out.uri)
    return summary
