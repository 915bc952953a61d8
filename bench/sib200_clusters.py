"""Topic clustering quality and semantic dedup precision/recall on SIB-200 with multilingual-e5-small.

1. Topics: k = 7 spherical k-means (the pipeline's kmeans module) on English alone and on several languages mixed;
   V-measure and ARI against the 7 SIB-200 categories (mean and spread over seeds), plus the V-measure against the
   language, which shows whether mixed-language clusters follow topic or language; mixed sets are also clustered
   after removing each language's mean embedding (a per-language centering, then back to unit length).
2. Dedup: plant near-duplicates of English sentences (small edits, and translations taken from the parallel rows
   of other languages), cluster, dedup within clusters, and score the removed rows at several eps.

    python bench/sib200_clusters.py --out bench/results/sib200_clusters.md
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sib200_data as data
from sklearn.metrics import adjusted_rand_score, v_measure_score

from pipeline.clustering import dedup, kmeans

MIXED_SETS = {
    "6 languages (eng fra deu rus zho arb)": ["eng_Latn", "fra_Latn", "deu_Latn", "rus_Cyrl", "zho_Hans", "arb_Arab"],
    "all 20 languages": None,
}
TRANSLATION_LANGS = ["fra_Latn", "deu_Latn", "rus_Cyrl", "zho_Hans", "arb_Arab", "hin_Deva"]


def cluster(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, kmeans.FitResult]:
    fit = kmeans.fit_blocks(np.array_split(x, 8), k, max_iter=100, tol=1e-6, seed=seed)
    return kmeans.assign(x, fit.centroids)[0], fit


def topics(seeds: int) -> list[str]:
    rows = [
        "| data | rows | V-measure (topic) | ARI (topic) | V-measure (language) | mean cos | s/iteration |",
        "|---|---|---|---|---|---|---|",
    ]
    sets = [("English", ["eng_Latn"], False)]
    for name, langs in MIXED_SETS.items():
        sets += [(name, langs, False), (f"{name}, language mean removed", langs, True)]
    for name, langs, center in sets:
        langs = langs or data.languages()
        xs, topic, lang = [], [], []
        for lg in langs:
            _, cats, texts = data.load_sib200(lg)
            x_lang = data.embed(texts)
            if center:  # the language's own mean direction dominates e5's geometry; remove it, back to the sphere
                x_lang = x_lang - x_lang.mean(axis=0)
                x_lang /= np.linalg.norm(x_lang, axis=1, keepdims=True)
            xs.append(x_lang.astype(np.float32))
            topic += cats
            lang += [lg] * len(cats)
        x = np.concatenate(xs)
        vm, ari, vl, obj, secs = [], [], [], [], []
        for seed in range(seeds):
            labels, fit = cluster(x, 7, seed)
            vm.append(v_measure_score(topic, labels))
            ari.append(adjusted_rand_score(topic, labels))
            vl.append(v_measure_score(lang, labels) if len(langs) > 1 else float("nan"))
            obj.append(fit.objective)
            secs += [h.seconds for h in fit.history[1:]]
        rows.append(
            f"| {name} | {len(x)} | {np.mean(vm):.3f} ± {np.std(vm):.3f} | {np.mean(ari):.3f} ± {np.std(ari):.3f} | "
            + ("n/a" if len(langs) == 1 else f"{np.mean(vl):.3f}")
            + f" | {np.mean(obj):.4f} | {np.mean(secs):.4f} |"
        )
        print(rows[-1], flush=True)
    return rows


def planted_corpus(n_edits: int, n_translations: int, seed: int):
    """English SIB-200 plus planted copies; returns ids, source index of every row, kind, texts and embeddings."""
    rng = random.Random(seed)
    index_ids, _, eng = data.load_sib200("eng_Latn")
    ids = [f"eng#{i}" for i in index_ids]
    source = list(index_ids)
    kind = ["original"] * len(ids)
    texts = list(eng)
    for n, pick in enumerate(rng.sample(range(len(eng)), n_edits)):
        ids.append(f"edit#{n}")
        source.append(index_ids[pick])
        kind.append("edit")
        texts.append(data.small_edit(eng[pick], rng))
    translated = {lg: data.load_sib200(lg) for lg in TRANSLATION_LANGS}
    for n, pick in enumerate(rng.sample(range(len(eng)), n_translations)):
        lg = TRANSLATION_LANGS[n % len(TRANSLATION_LANGS)]
        lang_ids, _, lang_texts = translated[lg]
        assert lang_ids[pick] == index_ids[pick]  # rows are parallel across languages
        ids.append(f"tr-{lg}#{n}")
        source.append(index_ids[pick])
        kind.append("translation")
        texts.append(lang_texts[pick])
    return ids, np.array(source), np.array(kind), texts, data.embed(texts)


def dedup_scores(eps_grid: list[float], k: int, n_edits: int, n_translations: int, seed: int) -> list[str]:
    ids, source, kind, _texts, x = planted_corpus(n_edits, n_translations, seed)
    labels, _ = cluster(x, k, seed)
    original_of = {s: i for i, s in enumerate(source) if kind[i] == "original"}
    planted = np.flatnonzero(kind != "original")
    partner = np.array([original_of[source[i]] for i in planted])  # the original each planted copy duplicates
    rows = [
        (
            f"Corpus: {int((kind == 'original').sum())} English SIB-200 sentences + {n_edits} small edits of random ones "
            f"(1-2 of: word dropped, words swapped, a typo, case, punctuation) + {n_translations} translations of random "
            f"ones ({', '.join(TRANSLATION_LANGS)}, the parallel SIB-200 rows); {len(ids)} rows. k = {k} clusters, "
            "dedup within clusters, keep = first. Precision: share of removed rows whose kept row comes from the same "
            "source sentence. Recall: share of planted (copy, original) pairs that end in the same duplicate group. "
            "Same cluster: share of planted copies assigned to their original's cluster (the ceiling on recall)."
        ),
        "",
        (
            "| eps (cosine >=) | removed | precision | recall all | recall edits | recall translations "
            "| same cluster edits / translations |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    same_cluster = labels[planted] == labels[partner]
    for eps in eps_grid:
        kept = np.arange(len(ids))  # global index of the row kept for each row
        for c in range(k):
            rows_c = np.flatnonzero(labels == c)
            res = dedup.dedup_cluster(x[rows_c], [ids[r] for r in rows_c], eps, "first", seed)
            kept[rows_c] = rows_c[res.kept]
        removed = kept != np.arange(len(ids))
        precision = (source[removed] == source[kept[removed]]).mean() if removed.any() else float("nan")
        found = kept[planted] == kept[partner]
        by_kind = {kd: found[kind[planted] == kd].mean() for kd in ("edit", "translation")}
        rows.append(
            f"| {eps} ({1 - eps:.2f}) | {int(removed.sum())} | {precision:.3f} | {found.mean():.3f} | "
            f"{by_kind['edit']:.3f} | {by_kind['translation']:.3f} | "
            f"{same_cluster[kind[planted] == 'edit'].mean():.3f} / {same_cluster[kind[planted] == 'translation'].mean():.3f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--eps", default="0.02,0.04,0.06,0.08,0.1,0.12,0.15")
    ap.add_argument("--dedup-k", type=int, default=7)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if reason := data.available():
        sys.exit(f"skipped: {reason}")
    t0 = time.perf_counter()
    text = ["# SIB-200 topic clustering and planted-duplicate dedup (multilingual-e5-small, `query: ` prefix)", ""]
    text += ["## Topics, k = 7", "", f"Mean ± std over {args.seeds} seeds (k-means++ init, all rows fit)."]
    text += [""] + topics(args.seeds)
    text += ["", "## Dedup of planted near-duplicates", ""]
    text += dedup_scores([float(e) for e in args.eps.split(",")], args.dedup_k, 200, 300, seed=0)
    text += ["", f"Total bench time {time.perf_counter() - t0:.0f} s (2-CPU machine, embeddings cached)."]
    print("\n".join(text))
    if args.out:
        Path(args.out).write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
