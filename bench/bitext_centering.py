"""Does subtracting each language's mean vector (`mining.center`) help bitext retrieval? Tatoeba, with and without.

    python -m bench.bitext_centering --cache-dir out/tatoeba_cache --out bench/results/bitext_centering.md

Reads the per-language multilingual-e5-small embeddings that `python -m bench.tatoeba` caches (`<lang>.npz`, arrays
x and en, line-aligned), so nothing is embedded here. For each language: the retrieval error of cosine top-1 and of
the ratio margin (k = 4, both directions averaged, as bench/tatoeba.py), on the vectors as they are and after
centring each side on its own mean (the side's mean vector subtracted, rows back to unit length), which is what
`mining.center: true` does per language store. Also the best F1 of the BUCC-style noisy mix (bench/tatoeba.py) both
ways, where the languages have enough lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.tatoeba import noisy_mix
from pipeline.bitext.evaluation import retrieval_errors


def center(x: np.ndarray) -> np.ndarray:
    c = x - x.mean(axis=0, dtype=np.float64)
    return (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--langs", default="", help="comma-separated (default: every cached language)")
    parser.add_argument("--true-pairs", type=int, default=400)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    langs = [x for x in args.langs.split(",") if x] or sorted(p.stem for p in args.cache_dir.glob("*.npz"))
    rows, lines = [], []
    for lang in langs:
        data = np.load(args.cache_dir / f"{lang}.npz")
        x, en = data["x"], data["en"]
        plain, centred = retrieval_errors(x, en, k=4), retrieval_errors(center(x), center(en), k=4)
        row = {
            "lang": lang,
            "pairs": len(x),
            "cosine": plain.cosine,
            "margin": plain.margin,
            "cosine_centred": centred.cosine,
            "margin_centred": centred.margin,
        }
        if len(x) > args.true_pairs + 2:
            row["noisy_best_f1"] = noisy_mix(lang, x, en, args.true_pairs, 0.0, 0).best.f1
            row["noisy_best_f1_centred"] = noisy_mix(lang, center(x), center(en), args.true_pairs, 0.0, 0).best.f1
        rows.append(row)
        print(json.dumps(row), flush=True)

    def pct(v: float | None) -> str:
        return "" if v is None else f"{100 * v:.2f}"

    lines = [
        "| lang | pairs | cosine | margin | cosine, centred | margin, centred | noisy F1 | noisy F1, centred |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['lang']} | {r['pairs']} | {pct(r['cosine'])} | {pct(r['margin'])} | {pct(r['cosine_centred'])} | "
            f"{pct(r['margin_centred'])} | {pct(r.get('noisy_best_f1'))} | {pct(r.get('noisy_best_f1_centred'))} |"
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("cosine", "margin", "cosine_centred", "margin_centred")}
    noisy = [r for r in rows if "noisy_best_f1" in r]
    lines.append(
        f"| **mean ({len(rows)})** | | **{pct(mean['cosine'])}** | **{pct(mean['margin'])}** | "
        f"**{pct(mean['cosine_centred'])}** | **{pct(mean['margin_centred'])}** | "
        f"{pct(np.mean([r['noisy_best_f1'] for r in noisy]) if noisy else None)} | "
        f"{pct(np.mean([r['noisy_best_f1_centred'] for r in noisy]) if noisy else None)} |"
    )
    text = "\n".join(lines)
    print(text)
    if args.out:
        head = (
            "# Language centring for bitext retrieval (Tatoeba, multilingual-e5-small)\n\n"
            f"`python -m bench.bitext_centering {' '.join(argv or sys.argv[1:])}`. Error rates (%) of cosine top-1 and "
            "ratio margin (k = 4), both directions averaged; noisy F1 = best F1 (%) of the noisy mix.\n\n"
        )
        args.out.write_text(head + text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "mean": mean}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
