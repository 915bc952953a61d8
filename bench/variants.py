"""The benchmark's variants, each run in a child process of its own so that its peak RSS is its own.

Every variant reports wall seconds and CPU seconds. The CPU seconds are the robust number on a shared machine:
other tenants stretch our wall time by a factor that changes minute to minute, but not the CPU time our threads
get. For the Ray variants the CPU time is summed over the whole process tree (driver, raylet, GCS, workers), so
Ray's own overhead is counted against us.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch


def tree() -> list[psutil.Process]:
    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def tree_cpu_seconds() -> float:
    """user + system CPU seconds of this process and every live descendant."""
    total = 0.0
    for p in tree():
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # exited between listing and reading: nothing left to add
            continue
    return total


class PeakRss:
    """Samples the summed RSS of this process and all its descendants (Ray's workers, for the Ray variants)."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _sample() -> int:
        total = 0
        for p in tree():
            try:
                total += p.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._sample())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def run_variant(variant: str, spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    texts = [json.loads(line)["text"] for p in sorted(Path(spec["corpus_dir"]).glob("*.jsonl")) for line in p.open()]
    with PeakRss() as rss:
        result = VARIANTS[variant](spec, texts)
    result["peak_rss_mb"] = rss.peak / 2**20
    return result


def start_ray(threads: int) -> float:
    """Local Ray with 2 logical CPUs more than the model's threads: tokenizer and I/O tasks are light and must not
    wait for the model actor's CPUs. Returns the seconds it took."""
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=threads + 2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    return time.perf_counter() - start


def variant_st(spec: dict, texts: list[str]) -> dict:
    from bench.baselines import load_sentence_transformer, run_sentence_transformers

    dtype = getattr(torch, spec["dtype"])  # the same dtype as ours: a ratio across dtypes measures the dtype
    st = load_sentence_transformer(spec["model_dir"], spec["pooling"], spec["max_tokens"], dtype=dtype)
    run_sentence_transformers(st, texts[:8])  # warm-up: first-call allocations are not throughput
    wall, cpu, vectors = run_sentence_transformers(st, texts)
    np.save(Path(spec["work"]) / "a.npy", vectors)
    return {"seconds": wall, "cpu_seconds": cpu, "dtype": spec["dtype"]}


def variant_plain_ray(spec: dict, texts: list[str]) -> dict:
    import ray

    from bench.baselines import run_plain_ray

    start_ray(spec["threads"])
    out = run_plain_ray(spec["model_dir"], texts, spec["pooling"], spec["max_tokens"], spec["threads"], spec["dtype"])
    ray.shutdown()
    return {**out, "dtype": spec["dtype"]}


def variant_stage(spec: dict, texts: list[str]) -> dict:
    from bench.ours import load_encoder, model_config, tokenize
    from bench.stage import run_stage

    cfg = model_config(spec["model_dir"], spec["pooling"], spec["max_tokens"], spec["dtype"])
    values, offsets, tok_seconds = tokenize(cfg, texts)
    encoder = load_encoder(cfg, spec["budget"], spec["max_batch_size"])
    run_stage(encoder, values, offsets[:9], spec["rows_per_block"])  # warm-up
    wall, cpu, encoded = run_stage(encoder, values, offsets, spec["rows_per_block"])
    np.save(Path(spec["work"]) / "c.npy", encoded.embeddings)
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "tokenize_seconds": tok_seconds,
        "computed_tokens": int(encoded.computed_tokens.sum()),
        "dtype": spec["dtype"],
    }


def variant_job(spec: dict, texts: list[str]) -> dict:
    import ray

    from bench.ours import job_config, model_config
    from pipeline.embed_job import run_embed

    cfg = model_config(spec["model_dir"], spec["pooling"], spec["max_tokens"], spec["dtype"])
    ray_init = start_ray(spec["threads"])
    out_dir = str(Path(spec["work"]) / "job_out")
    job = job_config(cfg, spec["corpus_dir"], out_dir, spec["budget"], spec["rows_per_block"], spec["threads"])
    cpu_before = tree_cpu_seconds()
    summary = run_embed(job)
    cpu = tree_cpu_seconds() - cpu_before  # before shutdown, while the actors still live
    ray.shutdown()
    return {
        "seconds": summary["wall_seconds"],
        "cpu_seconds": cpu,
        "ray_init_seconds": ray_init,
        "embed_seconds": summary["embed_seconds"],
        "tokens": summary["tokens"],
        "computed_tokens": summary["computed_tokens"],
        "dtype": spec["dtype"],
    }


def lever_steps(spec: dict) -> list[dict]:
    """Our stage with each lever on in turn, then toggles of one lever against the last cumulative row.

    Keys: name, dtype, attn, budget (None: fixed 32-row batches in corpus order), and optionally mask_to_model
    (True: the padding mask goes into attention even for a causal model) and compile.
    """
    b, dt = spec["budget"], spec["dtype"]
    steps = [
        {"name": "fixed 32-row batches in corpus order, float32", "dtype": "float32", "budget": None},
        {"name": "+ length-bucketed token-budget batches", "dtype": "float32", "budget": b},
        {"name": f"+ {dt}", "dtype": dt, "budget": b},
        {"name": "  toggle: eager attention instead of SDPA", "dtype": dt, "budget": b, "attn": "eager"},
        {"name": "  toggle: padding mask into attention", "dtype": dt, "budget": b, "mask_to_model": True},
    ]
    steps += [
        {"name": f"  toggle: max_tokens_per_batch {x}", "dtype": dt, "budget": x}
        for x in spec["lever_budgets"]
        if x != b
    ]
    if spec.get("lever_compile"):
        steps.append({"name": "  toggle: torch.compile", "dtype": dt, "budget": b, "compile": True})
    return steps


def variant_levers(spec: dict, texts: list[str]) -> dict:
    """Our stage with each lever on in turn, then single toggles; every row times the same corpus."""
    from bench.ours import load_encoder, model_config, run_fixed_batches, tokenize
    from bench.stage import run_stage

    rows, tokenized = [], None
    for step in lever_steps(spec):
        budget = step["budget"]
        cfg = model_config(
            spec["model_dir"],
            spec["pooling"],
            spec["max_tokens"],
            step["dtype"],
            step.get("attn", "sdpa"),
            step.get("compile", False),
        )
        if tokenized is None:
            tokenized = tokenize(cfg, texts)
        values, offsets, _ = tokenized
        setup = time.perf_counter()
        encoder = load_encoder(cfg, budget or spec["budget"], spec["max_batch_size"])
        if step.get("mask_to_model"):
            if encoder.mask_to_model:  # a bidirectional model gets the mask anyway: nothing to toggle
                continue
            encoder.mask_to_model = True
        run_stage(encoder, values, offsets[:9], spec["rows_per_block"])  # warm-up (and the compile, if any)
        setup = time.perf_counter() - setup
        if budget is None:
            wall, cpu, computed = run_fixed_batches(encoder, values, offsets, 32)
        else:
            wall, cpu, encoded = run_stage(encoder, values, offsets, spec["rows_per_block"])
            computed = int(encoded.computed_tokens.sum())
        rows.append(
            {"lever": step["name"], "seconds": wall, "cpu_seconds": cpu, "computed_tokens": computed, "setup_s": setup}
        )
        del encoder
    return {"levers": rows, "tokenize_seconds": tokenized[2], "seconds": rows[-1]["seconds"]}


VARIANTS = {"a": variant_st, "b": variant_plain_ray, "c": variant_stage, "d": variant_job, "levers": variant_levers}
