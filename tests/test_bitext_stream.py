"""The streaming, multi-pair mining job on real files: exact against the brute-force reference, independent of
sharding and blocking, many pairs in one run equal to each pair alone, outputs as miners expect them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bitext_reference import brute_mine, random_unit

from pipeline.bitext.job import run_mine
from pipeline.bitext.output import PAIRS_SCHEMA
from pipeline.bitext.sides import SideError
from pipeline.config import parse_config
from pipeline.mine_config import MineConfig

LANGS = ("fra", "deu", "spa")
DIM = 24


def write_embeddings(path: Path, ids: list[str], vectors: np.ndarray, model: str = "test-model") -> str:
    path.mkdir(parents=True, exist_ok=True)
    flat = pa.array(vectors.reshape(-1), pa.float32())
    table = pa.table({"id": pa.array(ids), "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})
    half = len(ids) // 2  # two files, so the join sees several inputs
    for i, part in enumerate((table.slice(0, half), table.slice(half))):
        pq.write_table(part.replace_schema_metadata({"rayembed.model": model}), path / f"part-{i}.parquet")
    return str(path)


@pytest.fixture()
def corpus(tmp_path: Path) -> dict:
    """One multilingual Parquet corpus: 40 English rows, 25-35 rows per other language, 15 translations each."""
    rng = np.random.default_rng(7)
    eng = random_unit(rng, 40, DIM)
    rows, vecs = [], []
    for j in range(40):
        rows.append({"id": f"eng-{j}", "text": f"english {j}", "lang": "eng", "url": f"u/eng/{j}"})
    vecs.append(eng)
    gold = {}
    for n, lang in zip((25, 30, 35), LANGS):
        v = random_unit(rng, n, DIM)
        perm = rng.permutation(40)[:15]
        v[:15] = eng[perm] + 0.1 * rng.standard_normal((15, DIM)).astype(np.float32)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        gold[lang] = {(f"{lang}-{i}", f"eng-{perm[i]}") for i in range(15)}
        rows += [{"id": f"{lang}-{i}", "text": f"{lang} {i}", "lang": lang, "url": f"u/{lang}/{i}"} for i in range(n)]
        vecs.append(v)
    rows.append({"id": "ita-0", "text": "ciao", "lang": "ita", "url": "u/ita/0"})  # a language nobody mines
    vecs.append(random_unit(rng, 1, DIM))
    order = rng.permutation(len(rows))  # languages interleaved across the files
    table = pa.Table.from_pylist([rows[i] for i in order])
    (tmp_path / "corpus").mkdir()
    pq.write_table(table.slice(0, 60), tmp_path / "corpus" / "a.parquet")
    pq.write_table(table.slice(60), tmp_path / "corpus" / "b.parquet")
    allv = np.concatenate(vecs)[order]
    emb = write_embeddings(tmp_path / "emb", [rows[i]["id"] for i in order], allv)
    by_id = {rows[i]["id"]: allv[k] for k, i in enumerate(order)}
    return {"dir": tmp_path, "emb": emb, "gold": gold, "vectors": by_id}


def config(corpus: dict, src, tgt, out: str = "out", **mining) -> dict:
    side = {"uri": str(corpus["dir"] / "corpus"), "format": "parquet", "id_column": "id", "lang_column": "lang"}
    side["embeddings_uri"] = corpus["emb"]
    return {
        "source": {**side, "lang": src},
        "target": {**side, "lang": tgt},
        "output": {"uri": str(corpus["dir"] / out)},
        "mining": {"backend": "local", "block_size": 8, **mining},
    }


def read_pairs(path: Path) -> pa.Table:
    return pq.read_table(path)


def key(table: pa.Table) -> list[tuple]:
    """Pairs in output order; scores rounded to 5 decimals (a matmul tiled differently may move the last bits)."""
    cols = [table.column(c).to_pylist() for c in ("src_id", "tgt_id", "direction")]
    return list(zip(*cols, np.round(table.column("score").to_numpy(), 5).tolist()))


def test_many_pairs_in_one_run_equal_each_pair_alone(corpus):
    summary = run_mine(parse_config(MineConfig, config(corpus, list(LANGS), ["eng"], "multi", num_shards=2)))
    multi = corpus["dir"] / "multi"
    assert [(p["src_lang"], p["tgt_lang"]) for p in summary["pairs"]] == [(lang, "eng") for lang in LANGS]
    for lang in LANGS:
        run_mine(parse_config(MineConfig, config(corpus, lang, "eng", f"single-{lang}")))
        alone = read_pairs(corpus["dir"] / f"single-{lang}" / "pairs")
        together = read_pairs(multi / "pairs" / f"src_lang={lang}" / "tgt_lang=eng")
        assert key(together) == key(alone) and len(alone) > 0
        assert set(zip(alone["src_id"].to_pylist(), alone["tgt_id"].to_pylist())) >= corpus["gold"][lang]
        report = json.loads((multi / "reports" / f"src_lang={lang}" / "tgt_lang=eng" / "summary.json").read_text())
        assert report["pairs_kept"] == len(together)
        assert (multi / "reports" / f"src_lang={lang}" / "tgt_lang=eng" / "score_histogram.png").stat().st_size > 0
    # each language read and embedded once: one store per language, English shared by all three pairs
    assert sorted(summary["sides"]["source"]["langs"]) == sorted(LANGS)
    assert list(summary["sides"]["target"]["langs"]) == ["eng"]
    overview = (multi / "overview.csv").read_text().splitlines()
    assert overview[0].startswith("src_lang,tgt_lang,pairs_selected,pairs_kept") and len(overview) == 4
    assert (multi / "overview.png").read_bytes()[:4] == b"\x89PNG"
    assert not (multi / "work").exists()


def test_a_many_pair_run_cut_short_after_its_first_pair_resumes_to_the_same_outputs(corpus, monkeypatch):
    """Pair one written, pair two dies: the same command keeps pair one, redoes the others from the recorded k-NN
    (the partial pair deleted first) and writes what an uninterrupted run writes."""
    from pipeline.bitext import job

    raw = config(corpus, list(LANGS), ["eng"], "whole")
    run_mine(parse_config(MineConfig, raw))
    real, calls = job.mine_pair, []

    def dies_on_the_second_pair(*args):
        calls.append(args[1])
        if len(calls) == 2:
            raise RuntimeError("node lost")
        return real(*args)

    monkeypatch.setattr(job, "mine_pair", dies_on_the_second_pair)
    cut = {**raw, "output": {"uri": str(corpus["dir"] / "cut")}}
    with pytest.raises(RuntimeError, match="node lost"):
        run_mine(parse_config(MineConfig, cut))
    assert (corpus["dir"] / "cut" / "pairs" / "src_lang=fra").exists()
    summary = run_mine(parse_config(MineConfig, cut))
    assert calls == ["fra", "deu", "deu", "spa"]
    assert summary["stages_reused"] == ["texts", "knn", "pairs/src_lang=fra/tgt_lang=eng"] and summary["resumed"]
    for lang in LANGS:
        part = f"pairs/src_lang={lang}/tgt_lang=eng"
        assert read_pairs(corpus["dir"] / "cut" / part).equals(read_pairs(corpus["dir"] / "whole" / part))
    assert (corpus["dir"] / "cut" / "overview.csv").read_text() == (
        corpus["dir"] / "whole" / "overview.csv"
    ).read_text()


@pytest.mark.parametrize(
    "block_size,num_shards,max_rows,rows_per_file,retrieval",
    [
        (4096, 1, 2_000_000, 100_000, "max"),
        (3, 3, 2_000_000, 7, "max"),
        (5, 1, 6, 4, "max"),
        (1, 2, 9, 1000, "max"),
        (5, 1, 6, 4, "intersect"),
        (3, 3, 2_000_000, 7, "fwd"),
        (1, 2, 9, 1000, "bwd"),
    ],
)
def test_exact_results_equal_the_reference_for_any_sharding(
    corpus, block_size, num_shards, max_rows, rows_per_file, retrieval
):
    """max_rows below the side's rows: no shard holds a side; rows_per_file small: pairs span many text files."""
    raw = config(
        corpus,
        "deu",
        "eng",
        block_size=block_size,
        num_shards=num_shards,
        max_rows_per_shard=max_rows,
        retrieval=retrieval,
    )
    raw["output"]["rows_per_file"] = rows_per_file
    summary = run_mine(parse_config(MineConfig, raw))
    got = read_pairs(corpus["dir"] / "out" / "pairs")
    # the reference, on the same rows in corpus order (file a then b, row order): ids sorted by that order
    src_ids = [i for i in ids_in_corpus_order(corpus) if i.startswith("deu")]
    tgt_ids = [i for i in ids_in_corpus_order(corpus) if i.startswith("eng")]
    x = np.stack([corpus["vectors"][i] for i in src_ids])
    y = np.stack([corpus["vectors"][i] for i in tgt_ids])
    ref = brute_mine(x, y, 4, "ratio", retrieval)
    assert [(src_ids[i], tgt_ids[j]) for i, j, _ in ref] == list(
        zip(got["src_id"].to_pylist(), got["tgt_id"].to_pylist())
    )
    np.testing.assert_allclose(got["score"].to_numpy(), [s for _, _, s in ref], rtol=1e-5)
    assert summary["pairs_selected"] == len(ref) == summary["pairs_kept"]
    if max_rows < 30:
        assert summary["shards"]["forward"] > 1 and summary["shards"]["backward"] > 1


def ids_in_corpus_order(corpus: dict) -> list[str]:
    return [r for f in ("a", "b") for r in pq.read_table(corpus["dir"] / "corpus" / f"{f}.parquet")["id"].to_pylist()]


def test_outputs_carry_direction_window_and_kept_columns(corpus):
    raw = config(corpus, ["fra"], ["eng"], threshold=1.0)
    raw["source"]["keep_columns"] = ["url"]
    raw["target"]["keep_columns"] = ["url"]
    run_mine(parse_config(MineConfig, raw))
    table = read_pairs(corpus["dir"] / "out" / "pairs" / "src_lang=fra" / "tgt_lang=eng")
    assert table.schema.names[: len(PAIRS_SCHEMA)] == PAIRS_SCHEMA.names
    assert table.schema.names[len(PAIRS_SCHEMA) :] == ["src_url", "tgt_url"]
    rows = table.to_pylist()
    assert all(r["src_url"] == f"u/fra/{r['src_id'].split('-')[1]}" for r in rows)
    assert all(r["tgt_url"] == f"u/eng/{r['tgt_id'].split('-')[1]}" for r in rows)
    assert set(table["direction"].to_pylist()) <= {"forward", "backward", "both"}
    gold = [r for r in rows if (r["src_id"], r["tgt_id"]) in corpus["gold"]["fra"]]
    assert len(gold) == 15 and {r["direction"] for r in gold} == {"both"}  # planted pairs: mutual best
    # a window below the planted pairs' scores: they are dropped as "too similar", the rest is kept in order
    cut = float(np.median([r["score"] for r in gold]))
    raw["mining"]["score_max"] = cut
    raw["output"]["overwrite"] = True
    summary = run_mine(parse_config(MineConfig, raw))
    windowed = read_pairs(corpus["dir"] / "out" / "pairs" / "src_lang=fra" / "tgt_lang=eng")
    scores = windowed["score"].to_numpy()
    assert (np.diff(scores) <= 0).all() and scores.min() >= 1.0 and scores.max() <= cut
    assert len(windowed) == len(table) - int((table["score"].to_numpy() > cut).sum())
    report = corpus["dir"] / "out" / "reports" / "src_lang=fra" / "tgt_lang=eng" / "summary.json"
    full = json.loads(report.read_text())
    assert full["pairs_above_score_max"] >= 7 and summary["pairs"][0]["pairs_kept"] == len(windowed)
    assert sum(full["score_histogram"]["counts"]) == full["pairs_selected"]


def test_identical_text_pairs_are_written_once(tmp_path):
    """Without side dedup, repeated sentences give repeated text pairs: only the best-scoring one is kept."""
    rng = np.random.default_rng(3)
    x, y = random_unit(rng, 6, 8), random_unit(rng, 6, 8)
    x[3], y[3] = x[0], y[0]  # rows 3 repeat rows 0 on both sides: same texts, same vectors
    (tmp_path / "fra.txt").write_text("a\nb\nc\na\nd\ne\n")
    (tmp_path / "eng.txt").write_text("A\nB\nC\nA\nD\nE\n")
    src = write_embeddings(tmp_path / "ef", [f"fra.txt#{i}" for i in range(6)], x)
    tgt = write_embeddings(tmp_path / "ee", [f"eng.txt#{i}" for i in range(6)], y)
    raw = {
        "source": {"uri": str(tmp_path / "fra.txt"), "format": "text", "lang": "fra", "embeddings_uri": src},
        "target": {"uri": str(tmp_path / "eng.txt"), "format": "text", "lang": "eng", "embeddings_uri": tgt},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local", "dedup": False, "retrieval": "fwd"},
    }
    summary = run_mine(parse_config(MineConfig, raw))
    table = pq.read_table(tmp_path / "out" / "pairs")
    texts = list(zip(table["src_text"].to_pylist(), table["tgt_text"].to_pylist()))
    assert len(texts) == len(set(texts)) == 6 - summary["duplicate_pairs_dropped"]
    assert summary["duplicate_pairs_dropped"] >= 1


def test_listed_language_with_no_rows_names_the_languages_present(corpus):
    with pytest.raises(SideError, match=r"source: no rows with lang == 'xho'.*eng \(40\), spa \(35\), deu \(30\)"):
        run_mine(parse_config(MineConfig, config(corpus, ["fra", "xho"], ["eng"])))


def test_sides_from_different_models_are_refused(corpus):
    raw = config(corpus, ["fra", "deu"], ["eng"])
    vectors = corpus["vectors"]
    ids = sorted(i for i in vectors if i.startswith("eng"))
    raw["target"]["embeddings_uri"] = write_embeddings(
        corpus["dir"] / "emb-other", ids, np.stack([vectors[i] for i in ids]), model="another-model"
    )
    raw["target"]["uri"] = raw["source"]["uri"]
    with pytest.raises(SideError, match="different models"):
        run_mine(parse_config(MineConfig, raw))


@pytest.mark.slow
def test_ray_shard_actors_give_the_local_result(ray_session, corpus):
    """The same two pairs on Ray (2 shard actors, blocks streamed, tasks for every step) and in-process."""
    run_mine(parse_config(MineConfig, config(corpus, ["fra", "spa"], ["eng"], "local")))
    raw = config(corpus, ["fra", "spa"], ["eng"], "ray", num_shards=2, cpus_per_shard=0.25, block_size=16)
    raw["mining"]["backend"] = "ray"
    summary = run_mine(parse_config(MineConfig, raw))
    for lang in ("fra", "spa"):
        part = Path("pairs") / f"src_lang={lang}" / "tgt_lang=eng"
        assert key(read_pairs(corpus["dir"] / "ray" / part)) == key(read_pairs(corpus["dir"] / "local" / part))
    assert summary["shards"]["forward"] == 2 and summary["shards"]["actor_peak_rss_mb"] > 0


@pytest.mark.slow
def test_shard_actors_that_would_take_every_cpu_are_refused(ray_session, corpus):
    """4 shards x 1 CPU on the 4-CPU session: nothing left for the block tasks; an error, not a hang."""
    from pipeline.bitext.job import ResourceError

    raw = config(corpus, "fra", "eng", num_shards=4, cpus_per_shard=1.0)
    raw["mining"]["backend"] = "ray"
    with pytest.raises(ResourceError, match=r"need 4.25 CPUs; the cluster has 4"):
        run_mine(parse_config(MineConfig, raw))
