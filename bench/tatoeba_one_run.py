"""Tatoeba through the mining job: every language against English in ONE run, with and without centring.

    python -m bench.tatoeba_one_run --out bench/results/tatoeba_one_run.md            # embeds through the job
    python -m bench.tatoeba_one_run --cache-dir out/tatoeba_cache --out /tmp/t.md      # bench.tatoeba's cache

Builds one multilingual corpus (id, text, lang) from ../shared/data/tatoeba (every language, or `--langs`), then runs
`run_mine` with `source.lang: [all of them]`, `target.lang: eng` and `retrieval: fwd`: every sentence's best English
candidate among ALL English lines of the run (deduplicated, so a sentence competes with the English sides of every
language, unlike bench/tatoeba.py which searches one language's English side). Error = share of sentences whose
mined English text is not the aligned line's. Margin `ratio` vs `absolute` (= cosine top-1), each with
`mining.center` off and on: four runs of the job.

Without `--cache-dir` the first run reads and embeds every language itself (multilingual-e5-small, "query: ", mean
pooling, 128 tokens, float32: the job's own embed stage), and the other three reuse the embeddings it wrote
(`embeddings_uri`). With `--cache-dir`, vectors come from `python -m bench.tatoeba`'s per-language `.npz` cache.
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

from bench.tatoeba import DEFAULT_DATA, DEFAULT_MODEL, PREFIX, languages, read_pair
from pipeline.bitext.job import run_mine
from pipeline.config import parse_config
from pipeline.mine_config import MineConfig


def build(data_dir: Path, langs: list[str], root: Path) -> dict[str, dict[str, str]]:
    """Write the multilingual corpus (id, text, lang) to root/corpus; returns {lang: {source id: aligned English}}."""
    rows, gold = [], {}
    for lang in langs:
        xs, en = read_pair(data_dir, lang)
        gold[lang] = {}
        for i, (x, e) in enumerate(zip(xs, en)):
            rows += [
                {"id": f"{lang}-{i}", "text": x, "lang": lang},
                {"id": f"{lang}-eng-{i}", "text": e, "lang": "eng"},
            ]
            gold[lang][f"{lang}-{i}"] = e
    (root / "corpus").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "corpus" / "tatoeba.parquet")
    return gold


def cached_embeddings(cache_dir: Path, gold: dict[str, dict[str, str]], root: Path) -> str:
    """An embed-job-shaped dataset (id, embedding) at root/emb from bench.tatoeba's per-language cache, for the
    corpus `build` wrote (`gold`: its languages and their row counts)."""
    ids, vectors = [], []
    for lang, aligned in gold.items():
        cached = np.load(cache_dir / f"{lang}.npz")
        assert len(cached["x"]) == len(aligned), f"{lang}: cache and data differ"
        for i in range(len(aligned)):
            ids += [f"{lang}-{i}", f"{lang}-eng-{i}"]
        vectors += [v for pair in zip(cached["x"], cached["en"]) for v in pair]
    (root / "emb").mkdir()
    flat = pa.array(np.asarray(vectors, np.float32).reshape(-1))
    table = pa.table({"id": ids, "embedding": pa.FixedSizeListArray.from_arrays(flat, 384)})
    pq.write_table(
        table.replace_schema_metadata({"rayembed.model": "multilingual-e5-small"}), root / "emb" / "e.parquet"
    )
    return str(root / "emb")


def run(
    root: Path,
    langs: list[str],
    margin: str,
    center: bool,
    backend: str,
    embeddings: dict[str, str | None],
    model: Path,
) -> tuple[dict, float]:
    """One run of the job; a side whose embeddings are None is read and embedded by this run."""
    side = {"uri": str(root / "corpus"), "format": "parquet", "id_column": "id", "lang_column": "lang"}
    out = root / f"out-{margin}-{center}"
    raw = {
        "source": {**side, "lang": langs, "embeddings_uri": embeddings["source"]},
        "target": {**side, "lang": ["eng"], "embeddings_uri": embeddings["target"]},
        "model": {"name_or_path": str(model), "pooling": "mean", "prompt": PREFIX, "max_tokens": 128},
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
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--langs", default="", help="comma-separated subset (default: every language in --data)")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="bench.tatoeba's .npz cache (default: embed through the job)"
    )
    parser.add_argument("--backend", default="local", choices=["local", "ray"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--keep", type=Path, default=None, help="write corpus, embeddings and pairs here and keep them (default: temp)"
    )
    args = parser.parse_args(argv)
    if args.cache_dir:
        langs = sorted(p.stem for p in args.cache_dir.glob("*.npz") if p.stem != "eng")
    else:
        langs = [x for x in args.langs.split(",") if x] or languages(args.data)
    results, seconds, sentences, embed_seconds = {}, {}, 0, {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        gold = build(args.data, langs, root)
        if args.cache_dir:
            embeddings = dict.fromkeys(("source", "target"), cached_embeddings(args.cache_dir, gold, root))
        else:
            embeddings = {"source": None, "target": None}
        for margin in ("ratio", "absolute"):
            for center in (False, True):
                summary, seconds[(margin, center)] = run(
                    root, langs, margin, center, args.backend, embeddings, args.model
                )
                results[(margin, center)] = errors(root, margin, center, gold)
                print(margin, center, json.dumps(summary["seconds"]), flush=True)
                if embeddings["source"] is None:  # the first run embedded; the others reuse what it wrote
                    sides = summary["sides"]
                    made = {"source": sides["source"]["langs"][langs[0]], "target": sides["target"]["langs"]["eng"]}
                    embeddings = {s: m["embeddings"]["written"] for s, m in made.items()}
                    embed_seconds = {
                        m["embeddings"]["written"]: m["embeddings"]["embed_seconds"] for m in made.values()
                    }
                    sentences = sum(v["rows_mined"] for s in ("source", "target") for v in sides[s]["langs"].values())
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
            "# Tatoeba through the mining job, every language against English in one run\n\n"
            f"`python -m bench.tatoeba_one_run {' '.join(argv or sys.argv[1:])}` ({args.backend} backend). "
            + (
                f"Vectors from bench.tatoeba's cache ({args.cache_dir}). "
                if args.cache_dir
                else f"The first run (ratio margin) read and embedded {sentences:,} sentences itself (e5-small, float32, "
                f"embed seconds {', '.join(f'{v:.0f}' for v in embed_seconds.values())}); the other runs reuse them. "
            )
            + f"{len(langs)} languages; English store: {english['rows_mined']} distinct lines "
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
