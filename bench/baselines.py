"""The two baselines, each at its own defaults: (a) sentence-transformers `encode`, (b) the plain Ray Data recipe.

Both run with SDPA attention, at the dtype the benchmark compares (float32 is what a user gets without asking) and tokenize inside the timed region, as
they do in real use. Texts are given without a prompt, like the documents our pipeline embeds.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from pipeline.pooling import l2_normalize, pool

ST_BATCH = 32  # sentence-transformers' default batch_size
PLAIN_BATCH = 32  # the plain recipe's fixed rows per map_batches call


def load_sentence_transformer(
    model_dir: str, pooling: str, max_tokens: int, device: str = "cpu", dtype: torch.dtype = torch.float32
):
    """The model as sentence-transformers loads it: its own modules when it ships them, else Transformer+Pooling."""
    from sentence_transformers import SentenceTransformer, models

    kwargs = {"dtype": dtype, "attn_implementation": "sdpa"}
    if (Path(model_dir) / "modules.json").is_file():
        st = SentenceTransformer(model_dir, device=device, model_kwargs=kwargs)
    else:
        body = models.Transformer(model_dir, model_kwargs=kwargs, max_seq_length=max_tokens)
        mode = {"last_token": "lasttoken", "mean": "mean", "cls": "cls"}[pooling]
        head = models.Pooling(body.get_embedding_dimension(), pooling_mode=mode)
        st = SentenceTransformer(modules=[body, head, models.Normalize()], device=device)
    st.max_seq_length = max_tokens
    # sentence-transformers >= 6 renders text through the tokenizer's chat template when it has one (SmolLM2 does),
    # adding a system prompt to every text; embed the plain text, as our pipeline and the plain recipe do.
    getattr(st[0], "modality_config", {}).pop("message", None)
    tokenizer = st.tokenizer
    if tokenizer.pad_token_id is None:  # decoder tokenizers: pad with EOS, as pipeline.model_loading does
        tokenizer.pad_token = tokenizer.eos_token
    return st.eval()


def st_padding_efficiency(texts: list[str], lengths: np.ndarray, batch_size: int = ST_BATCH) -> float:
    """Real / computed tokens under sentence-transformers' plan: sort by character length, fixed-size batches."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    sorted_lengths = lengths[order]
    computed = sum(int(b.max()) * len(b) for b in np.split(sorted_lengths, range(batch_size, len(order), batch_size)))
    return float(lengths.sum()) / computed


def fixed_batch_padding_efficiency(lengths: np.ndarray, batch_size: int = PLAIN_BATCH) -> float:
    """Real / computed tokens for consecutive fixed-size batches in corpus order (no sorting)."""
    computed = sum(int(b.max()) * len(b) for b in np.split(lengths, range(batch_size, len(lengths), batch_size)))
    return float(lengths.sum()) / computed


def run_sentence_transformers(st, texts: list[str]) -> tuple[float, float, np.ndarray]:
    """Wall and CPU seconds of one `encode` call at its defaults (tokenization included), and the embeddings."""
    start, start_cpu = time.perf_counter(), time.process_time()
    vectors = st.encode(texts, batch_size=ST_BATCH, convert_to_numpy=True, normalize_embeddings=True)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return wall, cpu, np.asarray(vectors, dtype=np.float32)


class PlainEmbedder:
    """The recipe from Ray's docs: tokenize the batch, pad to its longest row, forward, pool. No sorting."""

    def __init__(self, model_dir: str, pooling: str, max_tokens: int, threads: int, dtype: str = "float32"):
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModel.from_pretrained(
            model_dir, dtype=getattr(torch, dtype), attn_implementation="sdpa"
        ).eval()
        self.pooling, self.max_tokens = pooling, max_tokens

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start, start_cpu = time.perf_counter(), time.process_time()
        enc = self.tokenizer(
            list(batch["text"]), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        with torch.no_grad():
            hidden = self.model(**enc).last_hidden_state
        vectors = l2_normalize(pool(hidden, enc["attention_mask"], self.pooling))
        seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        n = len(batch["text"])
        return {
            "embedding": vectors.numpy(),
            "tokens": enc["attention_mask"].sum(dim=1).numpy(),
            "computed": np.full(n, enc["input_ids"].shape[1]),
            "seconds": np.full(n, seconds / n),
            "cpu_seconds": np.full(n, cpu / n),
        }


def run_plain_ray(
    model_dir: str, texts: list[str], pooling: str, max_tokens: int, threads: int, dtype: str = "float32"
) -> dict[str, float]:
    """(b) on the already-started local Ray: in-actor wall and CPU seconds (the stage), job wall, token counts."""
    import ray

    ds = ray.data.from_items([{"text": t} for t in texts])
    ds = ds.map_batches(
        PlainEmbedder,
        batch_size=PLAIN_BATCH,
        batch_format="numpy",
        fn_constructor_kwargs={
            "model_dir": model_dir,
            "pooling": pooling,
            "max_tokens": max_tokens,
            "threads": threads,
            "dtype": dtype,
        },
        concurrency=1,
        num_cpus=threads,
    )
    start = time.perf_counter()
    out = ds.select_columns(["tokens", "computed", "seconds", "cpu_seconds"]).to_pandas()
    wall = time.perf_counter() - start
    return {
        "seconds": float(out["seconds"].sum()),
        "cpu_seconds": float(out["cpu_seconds"].sum()),
        "wall_seconds": wall,
        "tokens": int(out["tokens"].sum()),
        "computed_tokens": int(out["computed"].sum()),
        "rows": len(out),
    }
