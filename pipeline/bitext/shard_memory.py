"""What one shard actor's arrays may take in host memory, part by part: the bound the summary checks RSS against.

Pure arithmetic on config and side sizes (no Ray, no FAISS), so the bound is computed on the driver before any actor
starts. It counts what the actor holds at its peak, from the code in `store.read_piece`, `knn.ShardSearcher` /
`ivf.IvfSearcher` and `stream_search.StoreShard`; the process's own base (Python, torch, FAISS, Ray) is measured at
actor start and reported separately. Memory an allocator keeps after freeing is not counted: measured RSS over base
(bench/results/bitext_scale.jsonl) shows how close the two are.
"""

from __future__ import annotations

import resource

from pipeline.bitext.ivf import default_nlist
from pipeline.bitext.knn import TIE_BYTES
from pipeline.bitext.store import READ_BUFFER_BYTES, read_batch_rows

F32, I64 = 4, 8
# Copies of one decoded batch alive at the read's peak: Parquet's decoded values, the Arrow array, the float32 view's
# copy into the shard, and the blocks the allocator keeps between batches. Measured ~7 batches of transient memory
# (86 MB at 8,192 x 384), counted 8.
READ_BATCH_COPIES = 8
# IVF add: FAISS appends each key's code to its list's std::vector, which grows by doubling; the freed smaller buffers
# stay with the allocator. Measured 12 % of the codes over the counted arrays at 500k x 384 (2,828 lists), counted 25 %.
IVF_LIST_SLACK = 0.25
BLAS_TILE_BYTES = F32 * 4096 * 1024  # FAISS's exhaustive-search BLAS tile (query block x key block) while assigning
# Working memory that is not an array of ours: Parquet page and decompression buffers, FAISS's and OpenMP's per-thread
# state, malloc arenas. Measured at ~30 MB over the arrays for a 200k x 64 shard (tests/test_bitext_shard_memory.py
# checks the whole bound), allowed 1.5x; a constant, not a share of the arrays: none of it grows with rows or blocks.
RUNTIME_BYTES = 48 * 2**20
# knn.distinct_rows, at its peak while it groups a shard's rows: the hashes, their sort order, the sorted copy and the
# group of each row (int64 / uint64 each); it keeps three of them (rows by group, first rows, group offsets).
DISTINCT_INDEX_SLOTS = 4


def shard_array_parts(
    index: str,
    shard_rows: int,
    dim: int,
    block_size: int,
    k: int,
    nlist: int | None = None,
    pq_m: int | None = None,
    train_rows: int = 0,
    in_flight: int = 1,
) -> dict[str, int]:
    """Bytes per part of one shard actor's arrays at its peak (host memory, CPU search).

    Args:
        index: "exact" or "ivf".
        shard_rows: keys the actor holds (the largest shard of the run).
        dim: embedding dimension.
        block_size: query rows per block (`mining.block_size`).
        k: neighbours per query.
        nlist, pq_m, train_rows: `mining.ivf` (nlist None: the default for shard_rows).
        in_flight: query blocks outstanding at once (`mining.max_in_flight`): Ray maps each queued call's block from
            the object store into the actor, and those shared pages count in its RSS.
    Returns:
        keys: the shard's float32 vectors; key_rows: their int64 row numbers, twice while the per-piece lists are
        joined; read: the copies of one decoded Parquet batch (READ_BATCH_BYTES of vectors) and the read buffer;
        query_block: in_flight + 1 blocks mapped from the object store; topk: the block's (k+1)-wide results, their
        sort order and the returned copy; ties (exact only): `knn.distinct_rows`' index of the shard's rows and
        TIE_BYTES of widened results or distinct rows copied out, once a query's k-th place is a tie; runtime: RUNTIME_BYTES of readers', FAISS's and the allocator's own
        working memory;
        ivf_index / ivf_train / ivf_probe (ivf only): the index (vectors or PQ codes plus int64 ids, centroids), the
        training sample copied out of the keys, the block's coarse distances to every list; ivf_add: the keys' list
        assignments, FAISS's BLAS tile and the lists' growth slack while the keys are added.
    """
    batch_rows = read_batch_rows(dim)
    parts = {
        "keys": F32 * shard_rows * dim,
        "key_rows": 2 * I64 * shard_rows,
        "read": READ_BATCH_COPIES * F32 * batch_rows * dim + I64 * batch_rows + READ_BUFFER_BYTES,
        "query_block": (in_flight + 1) * F32 * block_size * dim,
        "topk": 3 * (F32 + I64) * block_size * (k + 1),
        "runtime": RUNTIME_BYTES,
    }
    if index == "exact":  # ties at the k-th place: the distinct-row index and TIE_BYTES of results or copied rows
        parts["ties"] = DISTINCT_INDEX_SLOTS * I64 * shard_rows + TIE_BYTES
    if index == "ivf":
        lists = min(nlist or default_nlist(shard_rows), shard_rows)
        per_key = (pq_m or F32 * dim) + I64
        parts["ivf_index"] = shard_rows * per_key + F32 * lists * dim
        parts["ivf_train"] = F32 * min(train_rows, shard_rows) * dim
        parts["ivf_probe"] = F32 * block_size * lists
        codes = shard_rows * (pq_m or F32 * dim)
        parts["ivf_add"] = (I64 + F32) * shard_rows + BLAS_TILE_BYTES + int(IVF_LIST_SLACK * codes)
    return parts


def peak_rss_mb() -> float:
    """Peak resident memory of this process since its exec, MB: Linux VmHWM, else getrusage's ru_maxrss.

    Not ru_maxrss on Linux: it survives exec, so a process started by a big one (pytest, a driver) would report its
    parent's size at fork as its own peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
