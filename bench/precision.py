"""What output.dimensions and output.dtype cost in retrieval quality: Tatoeba bitext retrieval, multilingual-e5-small.

    python -m bench.precision [--langs deu,fra,rus,ara,cmn,hin] [--dims 384,256,128,64]

For each language XXX: embed the XXX and English sides with the project's encoder (bench.tatoeba.E5: "query: "
prefix, mean pooling, float32; cached per language in --cache-dir), then store them as the embed job would
(pipeline.quantization.OutputPrecision: truncate + re-normalize, then quantize) and find every sentence's translation
among all lines of the other side, both directions. Reported: the top-1 error rate, averaged over directions and
languages, and its difference to float32 at the model's full dimension (the baseline, computed in the same run).

Similarity on the stored form, as a consumer would compute it: floats: dot product; int8/uint8: dot product of the
dequantized vectors (ranges in the file metadata, calibrated here as in the job on the first --calibration-rows
sentences of the benchmark corpus); binary/ubinary: Hamming distance on the packed bits.

multilingual-e5-small is not a Matryoshka-trained model: truncating it shows what `dimensions` costs a model that
was not trained for it (a Matryoshka model loses less).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.tatoeba import DEFAULT_DATA, DEFAULT_MODEL, E5, ROOT, embeddings
from pipeline.quantization import BINARY, PRECISIONS, SCALAR, OutputPrecision, dequantize

BYTES = {"float32": 4, "float16": 2, "int8": 1, "uint8": 1}


def similarity(a: np.ndarray, b: np.ndarray, out: OutputPrecision, dim: int) -> np.ndarray:
    """(Na, Nb) similarity of two stored matrices (higher = closer)."""
    if out.precision in BINARY:
        # -Hamming distance: D - 2 * hamming = dot product of the +-1 bit vectors, same ranking
        pa, pb = dequantize(a, out.precision, dim=dim), dequantize(b, out.precision, dim=dim)
        return pa @ pb.T
    fa = dequantize(a, out.precision, out.ranges_array())
    fb = dequantize(b, out.precision, out.ranges_array())
    return fa @ fb.T


def top1_error(x: np.ndarray, y: np.ndarray, out: OutputPrecision, dim: int) -> float:
    sim = similarity(out.encode(x), out.encode(y), out, dim)
    gold = np.arange(len(x))
    return float((np.mean(sim.argmax(1) != gold) + np.mean(sim.argmax(0) != gold)) / 2)


def stored_bytes(precision: str, dim: int) -> int:
    return -(-dim // 8) if precision in BINARY else dim * BYTES[precision]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--langs", default="deu,fra,rus,ara,cmn,hin")
    parser.add_argument("--dims", default="384,256,128,64")
    parser.add_argument("--calibration-rows", type=int, default=10_000)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "out" / "tatoeba_cache")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "precision_tatoeba.md")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"Tatoeba data not found at {args.data}; nothing to measure", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    langs = [lang for lang in args.langs.split(",") if lang]
    dims = [int(d) for d in args.dims.split(",")]
    start = time.perf_counter()
    model = None if all((args.cache_dir / f"{lang}.npz").exists() for lang in langs) else E5(args.model)
    pairs = {lang: embeddings(lang, args.data, args.cache_dir, model) for lang in langs}
    embed_seconds = time.perf_counter() - start
    corpus = np.concatenate([m for x, en in pairs.values() for m in (x, en)])
    rows = []
    for dim in dims:
        for precision in PRECISIONS:
            out = OutputPrecision(precision, None if dim == corpus.shape[1] else dim, normalize=True)
            if precision in SCALAR:  # as the job: ranges from the first calibration_rows (truncated) vectors
                out = out.calibrated(out.unquantized().encode(corpus[: args.calibration_rows]))
            per_lang = {lang: top1_error(x, en, out, dim) for lang, (x, en) in pairs.items()}
            rows.append(
                {
                    "dimensions": dim,
                    "precision": precision,
                    "bytes": stored_bytes(precision, dim),
                    "error": float(np.mean(list(per_lang.values()))),
                    "per_lang": per_lang,
                }
            )
            print(f"{dim:4d} {precision:8s} error {100 * rows[-1]['error']:.2f}%", flush=True)
    # Diagnostic, not an output.dtype: sign bits after subtracting the calibration sample's mean. e5's vectors share a
    # large common component, so most raw sign bits are the same for every sentence; centering shows that cost.
    mean = corpus[: args.calibration_rows].mean(axis=0)
    for dim in dims:
        out = OutputPrecision("ubinary", None if dim == corpus.shape[1] else dim, normalize=True)
        per_lang = {lang: top1_error(x - mean, en - mean, out, dim) for lang, (x, en) in pairs.items()}
        rows.append(
            {
                "dimensions": dim,
                "precision": "ubinary, centered (diagnostic)",
                "bytes": stored_bytes("ubinary", dim),
                "error": float(np.mean(list(per_lang.values()))),
                "per_lang": per_lang,
            }
        )
    base = next(r["error"] for r in rows if r["dimensions"] == corpus.shape[1] and r["precision"] == "float32")
    meta = {
        "model": str(args.model.name),
        "langs": langs,
        "sentences": len(corpus),
        "calibration_rows": min(args.calibration_rows, len(corpus)),
        "embed_seconds": round(embed_seconds, 1),
        "threads": args.threads,
        "command": "python -m bench.precision " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    args.out.write_text(markdown(rows, base, meta))
    print(args.out.read_text())
    return 0


def markdown(rows: list[dict], base: float, meta: dict) -> str:
    out = [
        f"# Output precision and dimensions vs Tatoeba retrieval error — {meta['model']}",
        "",
        (
            f"Languages {', '.join(meta['langs'])} (each to and from English, {meta['sentences']:,} sentences); top-1 "
            f"cosine retrieval error averaged over both directions and the languages; int8/uint8 ranges calibrated on "
            f"{meta['calibration_rows']:,} sentences of the same corpus. Baseline float32 at full dimension = "
            f"{100 * base:.2f} %. `{meta['command']}`."
        ),
        "",
        "| dimensions | precision | bytes / vector | error % | vs float32 full (pp) |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['dimensions']} | {r['precision']} | {r['bytes']} | {100 * r['error']:.2f} | "
            f"{100 * (r['error'] - base):+.2f} |"
        )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
