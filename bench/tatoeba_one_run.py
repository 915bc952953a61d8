"""Tatoeba through the mining job: every cached language against English in ONE run, with and without centring.

    python -m bench.tatoeba_one_run --cache-dir out/tatoeba_cache --out bench/results/tatoeba_one_run.md

Builds one multilingual corpus (id, text, lang) from ../shared/data/tatoeba for every language whose embeddings
`python -m bench.tatoeba` cached (`<lang>.npz`), and an embed-job-shaped embeddings dataset from that cache, then
runs `run_mine` once with `source.lang: [all of them]`, `target.lang: eng` and `retrieval: fwd`: every sentence's
best English candidate among ALL English lines of the run (deduplicated, so a sentence competes with the English
sides of every language, unlike bench/tatoeba.py which searches one language's English side). Error = share of
sentences whose mined English text is not the aligned line's. Margin `ratio` vs `absolute` (= cosine top-1), each
with `mining.center` off and on: four runs of the job.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.tatoeba import DEFAULT_DATA, read_pair
from pipeline.bitext.job import run_mine
from pipeline.config import parse_config
from pipeline.mine_config import MineConfig


def build(data_dir: Path, cache_dir: Path, root: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    langs = sorted(p.stem for p in cache_dir.glob("*.npz") if p.stem != "eng")
    rows, vectors, gold = [], [], {}
    for lang in langs:
        xs, en = read_pair(data_dir, lang)
        cached = np.load(cache_dir / f"{lang}.npz")
        assert len(cached["x"]) == len(xs), f"{lang}: cache and data differ"
        gold[lang] = {}
        for i, (x, e) in enumerate(zip(xs, en)):
            rows += [
                {"id": f"{lang}-{i}", "text": x, "lang": lang},
                {"id": f"{lang}-eng-{i}", "text": e, "lang": "eng"},
            ]
            gold[lang][f"{lang}-{i}"] = e
        vectors += [v for pair in zip(cached["x"], cached["en"]) for v in pair]
    (root / "corpus").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "corpus" / "tatoeba.parquet")
    (root / "emb").mkdir()
    flat = pa.array(np.asarray(vectors, np.float32).reshape(-1))
    table = pa.table({"id": [r["id"] for r in rows], "embedding": pa.FixedSizeListArray.from_arrays(flat, 384)})
    pq.write_table(
        table.replace_schema_metadata({"rayembed.model": "multilingual-e5-small"}), root / "emb" / "e.parquet"
    )
    return langs, gold


def run(root: Path, langs: list[str], margin: str, center: bool, backend: str) -> tuple[dict, float]:
    side = {"uri": str(root / "corpus"), "format": "parquet", "id_column": "id", "lang_column": "lang"}
    side["embeddings_uri"] = str(root / "emb")
    out = root / f"out-{margin}-{center}"
    raw = {
        "source": {**side, "lang": langs},
        "target": {**side, "lang": ["eng"]},
        "output": {"uri": str(out)},
        "mining": {"retrieval": "fwd", "margin": margin, "center": center, "backend": backend, "k": 4},
    }
    start = time.perf_counter()
    summary = run_mine(parse_config(MineConfig, raw))
    return summary, time.perf_counter() - start


def errors(root: Path, margin: str, center: bool, gold: dict) -> dict[str, float]:
    out = {}
    for lang, aligned in gold.items():
        t = pq.read_table(root / f"out-{margin}-{center}" / "pairs" / f"src_lang={lang}" / "tgt_lang=eng")
        got = dict(zip(t["src_id"].to_pylist(), t["tgt_text"].to_pylist()))
        out[lang] = float(np.mean([got.get(i) != e for i, e in aligned.items()]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--backend", default="local", choices=["local", "ray"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    results, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        langs, gold = build(args.data, args.cache_dir, root)
        for margin in ("absolute", "ratio"):
            for center in (False, True):
                summary, seconds[(margin, center)] = run(root, langs, margin, center, args.backend)
                results[(margin, center)] = errors(root, margin, center, gold)
                print(margin, center, json.dumps(summary["seconds"]), flush=True)
        english = summary["sides"]["target"]["langs"]["eng"]
    cols = [("absolute", False), ("ratio", False), ("absolute", True), ("ratio", True)]
    lines = [
        "| lang | cosine top-1 | margin | cosine, centred | margin, centred |",
        "|---|---:|---:|---:|---:|",
    ]
    for lang in langs:
        lines.append(f"| {lang} | " + " | ".join(f"{100 * results[c][lang]:.2f}" for c in cols) + " |")
    means = [float(np.mean(list(results[c].values()))) for c in cols]
    lines.append(f"| **mean ({len(langs)})** | " + " | ".join(f"**{100 * m:.2f}**" for m in means) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        head = (
            "# Tatoeba through the mining job, all cached languages against English in one run\n\n"
            f"`python -m bench.tatoeba_one_run {' '.join(argv or sys.argv[1:])}` ({args.backend} backend). "
            f"{len(langs)} languages; English store: {english['rows_mined']} distinct lines "
            f"({english['duplicates_dropped']} duplicates dropped), searched by every language. Error (%) of the "
            "mined English line (retrieval fwd, k = 4, xx→en only). Job seconds per run: "
            + ", ".join(f"{m}{' centred' if c else ''} {s:.0f}" for (m, c), s in seconds.items())
            + ".\n\n"
        )
        args.out.write_text(head + text + "\n")
        args.out.with_suffix(".json").write_text(
            json.dumps({f"{m}{'_centred' if c else ''}": r for (m, c), r in results.items()}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
