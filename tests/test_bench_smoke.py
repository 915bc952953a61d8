"""The throughput benchmarks at tiny size on CPU, so that they keep running; plus their pure helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_bitext_job import write_embeddings

from bench.baselines import fixed_batch_padding_efficiency, st_padding_efficiency
from bench.corpus import DATA, build_corpus
from bench.flops import ModelShape, forward_flops

REPO = Path(__file__).resolve().parents[1]


def test_synthetic_corpus_is_skewed_multiscript_and_reproducible():
    corpus = build_corpus(400, seed=3, data=None)
    assert corpus.source == "synthetic" and len(corpus.texts) == 400
    chars = corpus.chars()
    assert chars.mean() > 1.5 * np.median(chars)  # lognormal: the tail pulls the mean above the median
    assert chars.max() > 15 * np.median(chars)
    assert len(set(corpus.langs)) >= 5
    assert build_corpus(400, seed=3, data=None).texts == corpus.texts
    assert build_corpus(400, seed=4, data=None).texts != corpus.texts


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")
def test_corpus_from_shared_data_mixes_languages():
    corpus = build_corpus(300, seed=0)
    assert corpus.source == "shared"
    assert len(set(corpus.langs)) >= 30
    assert all(corpus.texts)


def test_forward_flops_by_hand():
    # 2 x 100 params x 3 tokens + 4 x 2 layers x width 8 x (1^2 + 2^2)
    assert forward_flops(ModelShape(100, 2, 8), np.array([1, 2])) == 600 + 320


def test_baseline_padding_plans_by_hand():
    lengths = np.array([1, 4, 2, 3])
    # fixed batches of 2 in corpus order: [1, 4] -> 8, [2, 3] -> 6 computed; 10 real
    assert fixed_batch_padding_efficiency(lengths, batch_size=2) == pytest.approx(10 / 14)
    # sentence-transformers sorts by characters: 4, 3 | 2, 1 -> 8 + 4 computed
    texts = ["a", "dddd", "bb", "ccc"]
    assert st_padding_efficiency(texts, lengths, batch_size=2) == pytest.approx(10 / 12)


def children_here(throughput, monkeypatch) -> list[str]:
    """Runs bench.throughput's children in this process: the same `--child` command line, variant code and JSON
    hand-off, without a Python + torch start-up each. The Ray variants (b, d) run on the session's Ray instead of
    starting and stopping one of their own (two Ray starts; what start_ray does is ray.init). Returns the variants
    run."""
    import ray
    import torch

    from bench import variants

    launched = []
    monkeypatch.setattr(variants, "start_ray", lambda threads: 0.0)  # the session's Ray is up
    monkeypatch.setattr(ray, "shutdown", lambda: None)  # and stays up for the tests after this one

    def run(cmd, **kwargs):
        child = cmd[cmd.index("--child") :]
        launched.append(child[1])
        threads = torch.get_num_threads()
        try:
            throughput.main(child)
        finally:
            torch.set_num_threads(threads)  # the variant sets the benchmark's thread count
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(throughput, "subprocess", SimpleNamespace(run=run))
    return launched


@pytest.mark.slow
def test_throughput_benchmark_runs_all_four_variants(ray_session, tiny_models, tmp_path, monkeypatch):
    pytest.importorskip("sentence_transformers", reason="baseline (a) needs the bench extra: pip install -e .[bench]")
    from bench import throughput
    from bench.throughput import main

    launched = children_here(throughput, monkeypatch)
    out = tmp_path / "report.md"
    raw = main(
        [
            "--model",
            str(tiny_models["bert"]),
            "--docs",
            "16",
            "--max-tokens",
            "96",
            "--budget",
            "1024",
            "--threads",
            "1",
            "--levers",
            "--lever-docs",
            "8",
            "--out",
            str(out),
        ]
    )
    summary = raw["summary"]
    assert launched == ["a", "b", "c", "d", "levers"]
    assert set(summary["rows"]) == {"a", "b", "c", "d"}
    assert set(summary["ratios"]) == {"c/a", "c/b", "d/a", "d/c"}
    rows = summary["rows"]
    assert rows["c"]["padding_efficiency"] > rows["b"]["padding_efficiency"]  # sorted buckets beat corpus order
    assert all(r["tokens_per_cpu_s"] > 0 and r["peak_rss_mb"] > 0 and 0 < r["mfu"] < 1.5 for r in rows.values())
    assert len(raw["levers"]["levers"]) >= 4
    report = out.read_text()
    assert "c/a" in report and "Cosine of (c) to (a)" in report
    cos_min = float(report.split("min ")[1].split(",")[0])
    assert cos_min >= 0.999  # our stage vs sentence-transformers at the same dtype


# The GPU machine has torch, transformers and sentence-transformers but neither Ray nor pydantic: a module that
# bench/gpu_throughput.py imports, at start or later in its run, must not pull them in (pipeline.pooling once imported
# the config). Python imports sitecustomize from its path as it starts.
NO_RAY_NOR_PYDANTIC = """import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('pydantic', 'ray'):
            raise ImportError(f'{name} is not on the GPU machine')
sys.meta_path.insert(0, Block())
"""


@pytest.mark.slow
def test_gpu_script_runs_small_on_cpu_without_ray_or_pydantic(tmp_path):
    """bench/gpu.sh end to end on the CPU, as the GPU machine has it: no Ray, no pydantic (that check was a Python
    and torch start of its own). The levers that only differ on a GPU (the bucket floor, cuDNN attention) run once
    on 8 rows, as the others do: their figures are not read here, but their code (the Encoder's batch floor, torch's
    sdpa_kernel context) runs nowhere else off the GPU machine. The float32 baseline (the bf16 one's code at another
    dtype) is left out."""
    pytest.importorskip("sentence_transformers", reason="the baseline needs the bench extra: pip install -e .[bench]")
    out = tmp_path / "gpu.json"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_RAY_NOR_PYDANTIC)
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHON": sys.executable,  # the interpreter running the tests
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
    }
    cmd = [
        "bash",
        "bench/gpu.sh",
        "--device",
        "cpu",
        "--docs",
        "8",
        "--max-tokens",
        "64",
        "--repeats",
        "1",
        "--model-dir",
        str(tmp_path / "harrier"),
        "--variants",  # the compiled ones are left out: their compile takes longer than the rest (test_compiling)
        "ours,ours_eager,ours_mask_to_model,ours_kv_cache,ours_small_batches,ours_no_cudnn_attention",
        "--skip-st-fp32",
        "--profile",
        "--out",
        str(out),
    ]
    subprocess.run(cmd, cwd=REPO, env=env, check=True, timeout=900)
    result = json.loads(out.read_text())
    assert result["layers"] == 2 and result["ours"]["tokens_per_s"] > 0
    assert 0 < result["ours"]["padding_efficiency"] <= 1
    assert result["ours_mask_to_model"]["mask_to_model"] and not result["ours"]["mask_to_model"]
    assert result["ours_mask_to_model"]["cosine_vs_ours_min"] > 0.999  # the mask changes nothing for causal models
    assert result["ours_kv_cache"]["cosine_vs_ours_min"] > 0.999  # nor does the KV cache
    assert result["ours"]["compiled"] is False and result["ours_eager"]["compiled"] is False  # auto: off on a CPU
    for lever in ("ours_small_batches", "ours_no_cudnn_attention"):  # the same vectors under either lever
        assert result[lever]["tokens_per_s"] > 0 and result[lever]["cosine_vs_ours_min"] > 0.999, result[lever]
    profile = result["profile_ours"]
    assert profile["wall_s"] > 0 and profile["top_host"] and len(profile["top_host"][0]) == len(profile["columns"])
    assert result["st_bf16"]["cosine_vs_ours_mean"] > 0.99  # same model, same pooling: the same embeddings


def test_wallclock_report_states_the_ratio_machine_and_regenerates_marked_sections(tmp_path):
    from bench.wallclock import render, replace_marked, run_timed

    wall, cpu = run_timed([sys.executable, "-c", "sum(range(10**6))"], tmp_path / "log")
    assert wall > 0 and cpu >= 0
    case = {
        "model": "m", "pooling": "mean", "dtype": "float32", "tokens": 1000, "ratio_wall": 2.0,
        "st": {"encode_seconds": 20.0, "process_seconds": 30.0, "encode_cpu_seconds": 35.0, "torch_threads": 2},
        "job": {"process_seconds": 10.0, "cpu_seconds": 15.0, "fixed_seconds": 4.0, "padding_efficiency": 0.96},
        "cosine": {"min": 0.99999}, "load_average": [1.0, 9.0],
    }  # fmt: skip
    raw = {"machine": {"cpu": "X", "cores": 2, "avx512_bf16": False, "torch": "t"}, "command": "c", "date": "d",
           "cases": [case], "quickstart": None}  # fmt: skip
    text = render(raw)
    assert "**2.00**" in text and "busy, shared machine" in text and "float32" in text
    doc = tmp_path / "doc.md"
    doc.write_text("a\n<!-- wallclock:start -->\nold\n<!-- wallclock:end -->\nb\n")
    replace_marked(doc, "new\n")
    assert doc.read_text() == "a\n<!-- wallclock:start -->\nnew\n<!-- wallclock:end -->\nb\n"


def test_wallclock_keeps_the_cases_a_run_does_not_measure_again_with_their_date():
    from bench.wallclock import kept_cases, render

    def case(model, dtype, date=None):
        return {
            "model": model, "pooling": "mean", "dtype": dtype, "tokens": 1000, "ratio_wall": 2.0,
            "st": {"encode_seconds": 20.0, "process_seconds": 30.0, "encode_cpu_seconds": 35.0, "torch_threads": 2},
            "job": {"process_seconds": 10.0, "cpu_seconds": 15.0, "fixed_seconds": 4.0, "padding_efficiency": 0.96},
            "cosine": {"min": 0.99999}, "load_average": [1.0, 1.0], **({"date": date} if date else {}),
        }  # fmt: skip

    old = {"date": "then", "cases": [case("e5", "float32"), case("smol", "float32"), case("smol", "bfloat16", "once")]}
    kept = kept_cases(old, [case("e5", "float32", "now")])
    assert [(c["model"], c["dtype"], c["date"]) for c in kept] == [
        ("smol", "float32", "then"),
        ("smol", "bfloat16", "once"),
    ]
    raw = {"machine": {"cpu": "X", "cores": 2, "avx512_bf16": False, "torch": "t"}, "command": "c", "date": "now",
           "cases": [case("e5", "float32", "now"), *kept], "quickstart": None}  # fmt: skip
    rows = [line for line in render(raw).splitlines() if line.startswith(("| e5", "| smol"))]
    assert "measured" not in rows[0] and "(measured then)" in rows[1] and "(measured once)" in rows[2]


@pytest.mark.slow
def test_omp_wait_benchmark_runs_both_policies(tiny_models, capsys):
    """bench.omp_wait at tiny size: each policy in its own process, one table with both and their ratio."""
    from bench.omp_wait import main

    main(["--docs", "12", "--model", str(tiny_models["bert"])])
    out = capsys.readouterr().out
    assert "| PASSIVE |" in out and "| default |" in out and "default / PASSIVE wall:" in out


def write_unit_dataset(path: Path, rows: int, dim: int, seed: int) -> None:
    """An embed-job-shaped dataset (id, embedding) of random unit vectors."""
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    write_embeddings(path, [f"r{i}" for i in range(rows)], x / np.linalg.norm(x, axis=1, keepdims=True))


def test_ivf_benchmark_reads_embedding_datasets_and_evaluates_the_job_layout(tmp_path):
    from bench import bitext_ivf

    write_unit_dataset(tmp_path / "keys", 3000, 16, seed=0)
    write_unit_dataset(tmp_path / "queries", 500, 16, seed=1)
    out = tmp_path / "ivf.md"
    args = ["--keys-uri", str(tmp_path / "keys"), "--queries-uri", str(tmp_path / "queries"), "--queries", "100"]
    assert bitext_ivf.main([*args, "--shards", "1,2", "--threads", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "(default)" in text and "| 2 | IVF-Flat |" in text and "| 1 | IVF-Flat |" in text


TATOEBA = REPO.parent / "shared" / "data" / "tatoeba"


@pytest.mark.skipif(not TATOEBA.is_dir(), reason=f"Tatoeba data not found at {TATOEBA}")
def test_tatoeba_one_run_mines_every_cached_language_in_one_job(tmp_path):
    """Random vectors in the bench.tatoeba cache format: the four variants run and the table has every language."""
    from bench import tatoeba_one_run
    from bench.tatoeba import read_pair

    cache = tmp_path / "cache"
    cache.mkdir()
    rng = np.random.default_rng(0)
    for lang in ("afr", "deu"):
        xs, _ = read_pair(TATOEBA, lang)
        x, en = (rng.standard_normal((len(xs), 384)).astype(np.float32) for _ in range(2))
        np.savez(cache / f"{lang}.npz", x=x, en=en)
    out = tmp_path / "t.md"
    assert tatoeba_one_run.main(["--cache-dir", str(cache), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| afr |" in text and "| deu |" in text and "**mean (2)**" in text
    assert set(json.loads(out.with_suffix(".json").read_text())) == {
        "ratio",
        "ratio_centred",
        "absolute",
        "absolute_centred",
    }
