"""Approximate top-k by inner product with a FAISS inverted-file index (IVF-Flat or IVF-PQ). No Ray.

CCMatrix mined billions of pairs this way: a coarse k-means quantizer (`nlist` centroids) trained on a sample
assigns each key to a list; a query scans only the `nprobe` lists nearest to it. Recall against exact search is
measured in bench/bitext_ivf.py; `IvfSearcher` returns the same shapes and global row numbers as `ShardSearcher`.
"""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)

MIN_POINTS_PER_LIST = 39  # FAISS warns below 39 training points per centroid
PQ_CODES = 256  # centroids per 8-bit PQ sub-quantizer: FAISS refuses to train one on fewer points
MIN_NPROBE = 32
PROBED_SHARE = 8  # default nprobe visits at least 1/8 of the lists


def default_nlist(rows: int) -> int:
    """4 * sqrt(rows) lists (FAISS's guideline), but no more than rows / 39 so each list is trainable."""
    return max(1, min(int(4 * math.sqrt(rows)), rows // MIN_POINTS_PER_LIST))


def default_nprobe(nlist: int) -> int:
    """Lists a query visits by default: max(32, ceil(nlist / 8)), at most nlist.

    Recall against exact search depends on the share of lists visited, and a larger index needs a larger share
    for the same recall on e5 vectors: recall@4 was 0.959 at 32 of 153 lists (6 k keys), but 0.907 at 32 of 648
    lists per shard (52 k keys, 2 shards) and 0.967 at 81 (docs/bitext.md, bench/results/bitext_ivf_tatoeba*.md).
    Every measured layout reached recall@4 >= 0.95 with this rule.
    """
    return min(nlist, max(MIN_NPROBE, math.ceil(nlist / PROBED_SHARE)))


def gpu_faiss(device: str) -> bool:
    """Whether an index for `device` can live on a GPU: a CUDA device and a FAISS built with GPU support."""
    import faiss

    return device.startswith("cuda") and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def gpu_number(device: str) -> int:
    """The GPU ordinal of a torch device string: "cuda" -> 0, "cuda:1" -> 1."""
    return int(device.split(":", 1)[1]) if ":" in device else 0


class IvfSearcher:
    """A FAISS IVF index over one shard's keys, answering top-k with global row numbers.

    Args:
        keys: (m, d) float32 unit vectors.
        rows: (m,) int64 global row number of each key.
        nlist: inverted lists (None: `default_nlist`).
        nprobe: lists scanned per query (None: `default_nprobe` of the index's nlist).
        pq_m: None for IVF-Flat; else PQ sub-quantizers of 8 bits (d % pq_m == 0), scores then approximate.
        train_rows: keys sampled (seeded) to train the quantizer.
        seed: sample and k-means seed.
        threads: OpenMP threads FAISS may use (the actor's CPU reservation).
        device: "cpu", or the actor's torch device ("cuda", "cuda:1"): the index is trained and filled on the CPU,
            then copied to that GPU when FAISS was built with GPU support (faiss-gpu), else it stays on the CPU.
    """

    def __init__(
        self,
        keys: np.ndarray,
        rows: np.ndarray,
        nlist: int | None,
        nprobe: int | None,
        pq_m: int | None,
        train_rows: int,
        seed: int = 0,
        threads: int = 1,
        device: str = "cpu",
    ):
        import faiss

        faiss.omp_set_num_threads(max(threads, 1))
        m, d = keys.shape
        if pq_m is not None and d % pq_m:
            raise ValueError(f"mining.ivf.pq_m ({pq_m}) must divide the embedding dim ({d})")
        trained = min(m, train_rows)  # the training sample's rows
        nlist = min(nlist or default_nlist(m), trained)  # k-means needs a training point per list
        if pq_m is not None and trained < PQ_CODES:
            # A small store (a language with few sentences) cannot train 8-bit codes; its flat lists cost at most
            # 256 x dim floats, so it is kept exact rather than failing the run in FAISS.
            log.warning(
                "mining.ivf.pq_m: a shard of %d keys cannot train PQ codes (FAISS needs %d training points); its "
                "keys are kept as IVF-Flat (exact vectors, at most %d x dim floats)",
                m,
                PQ_CODES,
                PQ_CODES,
            )
            pq_m = None
        quantizer = faiss.IndexFlatIP(d)
        if pq_m is None:
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        rng = np.random.default_rng(seed)
        sample = keys if m <= train_rows else keys[np.sort(rng.choice(m, train_rows, replace=False))]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        index.add(np.ascontiguousarray(keys, dtype=np.float32))
        index.nprobe = min(nprobe or default_nprobe(nlist), nlist)
        self.gpu_resources = None
        if gpu_faiss(device):
            self.gpu_resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self.gpu_resources, gpu_number(device), index)  # copies nprobe too
        self.index, self.quantizer = index, quantizer  # the index does not own the quantizer: keep it alive
        self.rows = np.asarray(rows, dtype=np.int64)
        self.nlist = nlist

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, k') scores and global rows, best first; lists too short to fill k give score -inf and row -1."""
        k = min(k, len(self.rows))
        scores, pos = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)  # (B, k)
        found = pos >= 0
        rows = np.where(found, self.rows[np.where(found, pos, 0)], -1)
        return np.where(found, scores, -np.inf).astype(np.float32), rows.astype(np.int64)
