"""The mining job on real files: texts + an embed-job-shaped embeddings dataset, joined by id, mined, written."""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bitext_reference import random_unit
from robustness_helpers import embeddings_table, odd_embedding_files, parquet_bytes

from jobs.mine_bitext import main
from pipeline.bitext.job import PAIRS_SCHEMA, run_mine
from pipeline.bitext.sides import SideError
from pipeline.commit import OutputExistsError
from pipeline.config import ConfigError, StorageConfig, parse_config
from pipeline.errors import UserError
from pipeline.mine_config import MineConfig
from pipeline.storage import list_inputs


def write_embeddings(path: Path, ids: list[str], vectors: np.ndarray) -> str:
    """The embed job's layout: id + fixed_size_list<float32> embedding, recipe in the schema metadata."""
    path.mkdir(parents=True, exist_ok=True)
    flat = pa.array(vectors.reshape(-1), pa.float32())
    table = pa.table({"id": pa.array(ids), "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})
    pq.write_table(table.replace_schema_metadata({"rayembed.model": "test-model"}), path / "part-0.parquet")
    (path / "_summary.json").write_text("{}")  # hidden files are not part of the dataset
    return str(path)


@pytest.fixture()
def corpus(tmp_path: Path) -> dict:
    """60 French-ish / 70 English-ish lines; source rows 0..39 translate target rows perm[0..39]; one duplicate."""
    rng = np.random.default_rng(0)
    dim, n_true = 64, 40
    src_vec = random_unit(rng, 60, dim)
    tgt_vec = random_unit(rng, 70, dim)
    perm = rng.permutation(70)
    tgt_vec[perm[:n_true]] = src_vec[:n_true] + 0.05 * rng.standard_normal((n_true, dim)).astype(np.float32)
    src_text = [f"phrase {i}" for i in range(60)]
    src_text[59] = src_text[3]  # exact duplicate: dropped by dedup
    src_vec[59] = src_vec[3]
    tgt_text = [f"sentence {j}" for j in range(70)]
    (tmp_path / "fra.txt").write_text("\n".join(src_text) + "\n")
    (tmp_path / "eng.txt").write_text("\n".join(tgt_text) + "\n")
    src_emb = write_embeddings(tmp_path / "emb_fra", [f"fra.txt#{i}" for i in range(60)], src_vec)
    tgt_emb = write_embeddings(tmp_path / "emb_eng", [f"eng.txt#{j}" for j in range(70)], tgt_vec)
    gold = {(f"fra.txt#{i}", f"eng.txt#{perm[i]}") for i in range(n_true)}
    return {"dir": tmp_path, "src_emb": src_emb, "tgt_emb": tgt_emb, "gold": gold}


def config(corpus: dict, **mining) -> dict:
    d = corpus["dir"]
    return {
        "source": {"uri": str(d / "fra.txt"), "format": "text", "lang": "fra", "embeddings_uri": corpus["src_emb"]},
        "target": {"uri": str(d / "eng.txt"), "format": "text", "lang": "eng", "embeddings_uri": corpus["tgt_emb"]},
        "output": {"uri": str(d / "out")},
        "mining": {"backend": "local", "block_size": 16, **mining},
    }


def test_reused_embeddings_are_mined_to_parquet_summary_and_png(corpus, monkeypatch):
    from pipeline.bitext import job

    leases = []  # the finalize task gets the run's lease of a local output (pipeline.shared_output)
    monkeypatch.setattr(job, "run_lease", lambda out, real=job.run_lease: leases.append(real(out)) or leases[-1])
    summary = run_mine(parse_config(MineConfig, config(corpus, threshold=1.5)))
    out = corpus["dir"] / "out"
    assert [lease.path for lease in leases] == [str(out / "_lease.json")], leases
    table = pq.read_table(out / "pairs" / "part-00000.parquet")
    assert table.schema.equals(PAIRS_SCHEMA)
    pairs = set(zip(table.column("src_id").to_pylist(), table.column("tgt_id").to_pylist()))
    assert pairs == corpus["gold"]  # every true pair above the cut, every distractor below it
    assert len(set(table.column("tgt_id").to_pylist())) == table.num_rows  # 1:1
    row = table.slice(0, 1).to_pylist()[0]
    assert row["src_text"] == f"phrase {row['src_id'].split('#')[1]}" and row["src_lang"] == "fra"
    assert row["tgt_text"] == f"sentence {row['tgt_id'].split('#')[1]}" and row["tgt_lang"] == "eng"
    assert min(table.column("score").to_pylist()) >= 1.5
    written = json.loads((out / "summary.json").read_text())
    assert written["pairs_kept"] == 40 == summary["pairs_kept"]
    assert written["source"]["duplicates_dropped"] == 1 and written["source"]["rows_mined"] == 59
    assert sum(written["score_histogram"]["counts"]) == written["pairs_selected"]
    at_cut = [t for t in written["pairs_per_threshold"] if t["threshold"] == 1.5]
    assert at_cut == [{"threshold": 1.5, "pairs": 40}]
    assert (out / "score_histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_entrypoint_with_overrides(corpus, tmp_path, capsys):
    import yaml

    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config(corpus)))
    assert main(["--config", str(path), "--set", "mining.retrieval=intersect", "--set", "mining.dedup=false"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mining"]["retrieval"] == "intersect" and summary["source"]["rows_mined"] == 60
    assert main(["--config", str(path), "--set", "mining.margin=cosine"]) == 2  # config error: exit 2, no traceback


def test_existing_output_is_not_overwritten_by_default(corpus):
    cfg = config(corpus)
    run_mine(parse_config(MineConfig, cfg))
    with pytest.raises(FileExistsError, match="overwrite"):
        run_mine(parse_config(MineConfig, cfg))


def test_language_with_no_rows_lists_the_languages_present(tmp_path):
    lines = [{"text": f"t{i}", "lang": "fra" if i % 2 else "deu"} for i in range(6)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "multi.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    side = {"uri": str(tmp_path / "in" / "multi.jsonl"), "format": "jsonl", "lang_column": "lang"}
    cfg = {
        "source": {**side, "lang": "fra", "embeddings_uri": str(tmp_path / "in")},
        "target": {**side, "lang": "eng", "embeddings_uri": str(tmp_path / "in")},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local"},
    }
    with pytest.raises(SideError, match=r"target: no rows with lang == 'eng'.*deu \(3\), fra \(3\)"):
        run_mine(parse_config(MineConfig, cfg))


def test_a_language_whose_rows_are_all_rejects_is_named_so_not_as_absent(tmp_path):
    """One of several source languages with only empty texts (under the side's reject guard): the error said 'no
    rows with lang == 'deu'; languages present: eng, fra', which reads as a misspelt code. The error quotes the
    reasons of that language's rejects (it said 'null, empty or unreadable text' whatever they were), not another
    language's."""
    lines = [{"text": ["a list"], "lang": "fra"}] + [{"text": f"fr {i}", "lang": "fra"} for i in range(8)]
    lines += [{"text": "", "lang": "deu"}, {"text": None, "lang": "deu"}, {"text": "", "lang": "deu"}]
    lines += [{"text": f"en {i}", "lang": "eng"} for i in range(8)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "multi.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    side = {"uri": str(tmp_path / "in" / "multi.jsonl"), "format": "jsonl", "lang_column": "lang"}
    cfg = {
        "source": {**side, "lang": ["fra", "deu"], "embeddings_uri": str(tmp_path / "in")},
        "target": {**side, "lang": "eng", "embeddings_uri": str(tmp_path / "in")},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local"},
    }
    with pytest.raises(SideError) as err:
        run_mine(parse_config(MineConfig, cfg))
    said = str(err.value)
    assert re.fullmatch(
        r"source: all 3 rows with lang == 'deu' in .*multi.jsonl were rejected \(e\.g\. '[^']*empty[^']*'; '[^']*null"
        r"[^']*'; reasons in .*_rejects/source\), so 'deu' has no rows to mine: fix those rows, or drop 'deu' from "
        r"source.lang",
        said,
    ), said
    assert "list" not in said, said


def test_a_language_value_that_differs_from_lang_only_in_spaces_or_case_is_shown_and_named(tmp_path):
    """A lang column of 'fra ' (a trailing space, as CSV exports leave) and lang: fra: the error listed
    'fra  (3)', which reads as fra present and refused. Values are now quoted where a plain listing hides a
    difference, and a near miss that is no language code is named with what to do."""
    lines = [{"text": f"t{i}", "lang": "x1 " if i % 2 else "x2"} for i in range(6)] + [{"text": "n", "lang": None}]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "multi.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    side = {"uri": str(tmp_path / "in" / "multi.jsonl"), "format": "jsonl", "lang_column": "lang"}
    cfg = {
        "source": {**side, "lang": "x1", "embeddings_uri": str(tmp_path / "in")},
        "target": {**side, "lang": "x2", "embeddings_uri": str(tmp_path / "in")},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local"},
    }
    with pytest.raises(SideError) as error:
        run_mine(parse_config(MineConfig, cfg))
    assert "source: no rows with lang == 'x1'" in str(error.value)
    assert "languages present: 'x1 ' (3), x2 (3), null (1). 'x1 ' differs from 'x1' only in case, spaces" in str(
        error.value
    )
    assert "set source.lang to the value as written in the data" in str(error.value)


def lang_corpus(tmp_path: Path, langs: list[str], rows: int = 4) -> dict:
    """A Parquet corpus with a lang column holding `langs` (rows each) and its embeddings; the side config."""
    rng = np.random.default_rng(5)
    (tmp_path / "in").mkdir()
    ids = [f"r{i}" for i in range(rows * len(langs))]
    values = [lang for lang in langs for _ in range(rows)]
    pq.write_table(
        pa.table({"id": ids, "text": [f"t{i}" for i in range(len(ids))], "lang": values}), tmp_path / "in" / "a.parquet"
    )
    emb = write_embeddings(tmp_path / "emb", ids, random_unit(rng, len(ids), 16))
    side = {
        "uri": str(tmp_path / "in"),
        "format": "parquet",
        "id_column": "id",
        "lang_column": "lang",
        "embeddings_uri": emb,
    }
    return side


def test_a_language_code_matches_the_datas_code_of_that_language_in_any_standard_form(tmp_path, caplog):
    """lang: de against FLORES-tagged data (deu_Latn), mixed with ISO 639-2/B (ger) and upper case (ENG, 'fra '):
    'no rows with lang == 'de'' before, as if misspelt. The summary says which data values each code took."""
    side = lang_corpus(tmp_path, ["deu_Latn", "ger", "ENG", "eng_Latn", "fra ", "zho_Hans"])
    cfg = {
        "source": {**side, "lang": ["de", "fr"]},
        "target": {**side, "lang": "en"},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local", "k": 2},
    }
    with caplog.at_level("INFO"):
        summary = run_mine(parse_config(MineConfig, cfg))
    source, target = summary["sides"]["source"], summary["sides"]["target"]
    assert source["langs"]["de"]["lang_matched"] == {"deu_Latn": 4, "ger": 4} and source["langs"]["de"]["rows"] == 8
    assert target["langs"]["en"]["lang_matched"] == {"ENG": 4, "eng_Latn": 4}
    assert source["langs"]["fr"]["lang_matched"] == {"fra ": 4}
    assert source["rows_other_lang"] == 3 * 4  # zho_Hans and the target's
    assert {p["pairs_kept"] > 0 for p in summary["pairs"]} == {True}
    assert "source.lang 'de' matched the data's lang: deu_Latn (4 rows), ger (4 rows)" in caplog.text


def test_a_macrolanguage_code_takes_flores_individual_language_and_the_reverse(tmp_path, caplog):
    """lang: [ps, qu] against FLORES-tagged data (pbt_Arab, quy_Latn: individual languages of the macrolanguages ps
    and qu) was 'no rows with lang == 'ps''. Now each takes the data's only language of its macrolanguage, with a
    warning naming it; zh beside cmn and yue takes cmn alone (yue stays another language)."""
    side = lang_corpus(tmp_path, ["pbt_Arab", "quy_Latn", "cmn", "yue", "eng_Latn"])
    cfg = {
        "source": {**side, "lang": ["ps", "qu", "zh"]},
        "target": {**side, "lang": "en"},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local", "k": 2},
    }
    with caplog.at_level("INFO"):
        summary = run_mine(parse_config(MineConfig, cfg))
    langs = summary["sides"]["source"]["langs"]
    assert langs["ps"]["lang_matched"] == {"pbt_Arab": 4} and langs["qu"]["lang_matched"] == {"quy_Latn": 4}
    assert langs["zh"]["lang_matched"] == {"cmn": 4}
    assert summary["sides"]["source"]["rows_other_lang"] == 2 * 4  # yue and eng_Latn
    assert "source.lang 'ps' takes the data's pbt_Arab (pbt): another language of the same macrolanguage" in caplog.text


def test_a_float_lang_column_of_integer_ids_is_mined_by_the_integers(tmp_path, caplog):
    """pandas writes an integer lang column with a missing value as float64: lang: 1 against it was 'no rows with lang
    == 1; languages present: 1.0 (4), 2.0 (4), nan (4)'. Its values follow the id rule now (1.0 is 1, NaN null).
    The rows whose language is null were counted in rows_other_lang without a word: counted on their own and said."""
    caplog.set_level(logging.WARNING, logger="pipeline.bitext.job")
    side = lang_corpus(tmp_path, [1.0, 2.0, float("nan")])
    cfg = {
        "source": {**side, "lang": 1},
        "target": {**side, "lang": 2},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local", "k": 2},
    }
    summary = run_mine(parse_config(MineConfig, cfg))
    assert summary["source"]["lang_matched"] == {"1": 4} and summary["pairs_kept"] > 0
    assert summary["target"]["lang_matched"] == {"2": 4}
    for side_name in ("source", "target"):  # 12 rows: 4 mined on this side, 4 of the other language, 4 null
        assert summary[side_name]["rows_other_lang"] == 8 and summary[side_name]["rows_without_lang"] == 4
    assert "4 rows have a null lang: no language" in caplog.text


def test_a_bare_code_against_data_in_two_scripts_is_refused_as_ambiguous(tmp_path):
    """lang: zh against zho_Hans and zho_Hant rows: a bare code must not merge two scripts, nor pick one."""
    side = lang_corpus(tmp_path, ["zho_Hans", "zho_Hant", "eng_Latn"])
    cfg = {
        "source": {**side, "lang": "zh"},
        "target": {**side, "lang": "en"},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local"},
    }
    with pytest.raises(SideError, match=r"source.lang: 'zh' is ambiguous.*zho_Hans \(4 rows, Hans\), zho_Hant") as e:
        run_mine(parse_config(MineConfig, cfg))
    assert "column 'lang'" in str(e.value)
    cfg["source"]["lang"] = ["zh-Hans", "zh-Hant"]  # each script its own language
    summary = run_mine(parse_config(MineConfig, cfg))
    assert summary["sides"]["source"]["langs"]["zh-Hant"]["lang_matched"] == {"zho_Hant": 4}


def test_vectors_whose_ids_repeat_across_languages_say_so_and_how_to_mine_them(tmp_path):
    """A FLORES/SIB-200 corpus keyed by index_id (one id per sentence in every language) with its own tool's vectors:
    refused as 'the input holds some rows twice (a file copied ...)', advising input.duplicate_ids keep_first, which
    would keep one language's vector of each id. It now also names the ids shared across languages and both ways out
    (ids of their own per language, or no embeddings_uri: the job's own vectors are keyed by row)."""
    rng = np.random.default_rng(2)
    (tmp_path / "in").mkdir()
    ids = [str(i) for i in range(4)] * 2
    langs = ["fra_Latn"] * 4 + ["eng_Latn"] * 4
    pq.write_table(
        pa.table({"id": ids, "text": [f"t{i}" for i in range(8)], "lang": langs}), tmp_path / "in" / "a.parquet"
    )
    emb = write_embeddings(tmp_path / "emb", ids, random_unit(rng, 8, 16))
    side = {"uri": str(tmp_path / "in"), "format": "parquet", "id_column": "id", "lang_column": "lang"}
    cfg = {
        "source": {**side, "lang": "fr", "embeddings_uri": emb},
        "target": {**side, "lang": "en", "embeddings_uri": emb},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local"},
    }
    with pytest.raises(UserError) as refused:
        run_mine(parse_config(MineConfig, cfg))
    said = str(refused.value)
    assert "4 rows repeat an earlier id" in said and "If the ids repeat across the languages of the corpus" in said
    assert "'<lang>-<id>'" in said and "remove source.embeddings_uri so that the job embeds the side's texts" in said


def test_an_input_file_without_a_read_column_names_its_path_and_the_sides_keys(tmp_path):
    """A second file without the lang column said "part-1.parquet: column(s) ['lang'] not found ... (set
    input.text_column / input.id_column / output.keep_columns)": the file without its folder (two sides may read
    two folders holding files of one name) and the embed job's keys, which a mining config refuses as unknown."""
    (tmp_path / "in").mkdir()
    pq.write_table(
        pa.table({"id": ["a", "b"], "text": ["x", "y"], "lang": ["fra", "eng"]}), tmp_path / "in" / "part-0.parquet"
    )
    pq.write_table(pa.table({"id": ["c"], "text": ["z"]}), tmp_path / "in" / "part-1.parquet")
    side = {"uri": str(tmp_path / "in"), "format": "parquet", "id_column": "id", "lang_column": "lang"}
    cfg = {
        "source": {**side, "lang": "fra", "embeddings_uri": str(tmp_path / "in")},
        "target": {**side, "lang": "eng", "embeddings_uri": str(tmp_path / "in")},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local"},
    }
    with pytest.raises(UserError) as refused:
        run_mine(parse_config(MineConfig, cfg))
    said = str(refused.value)
    assert said.startswith(f"{tmp_path / 'in' / 'part-1.parquet'}: column(s) ['lang'] not found"), said
    assert "(set source.text_column / source.id_column / source.lang_column / source.keep_columns)" in said, said


def test_zero_or_nan_vectors_of_rows_the_side_does_not_mine_are_left_and_of_mined_rows_named(tmp_path):
    """Another tool's vectors of a whole corpus: a zero vector for an empty text (a reject here) and NaN vectors of a
    language no side mines refused the run ('embedding of deu-1 is zero or not finite'), as every row of the file
    was made unit length. Such rows are now left; a row the side mines with such a vector fails naming its id, file
    and row."""
    rng = np.random.default_rng(4)
    (tmp_path / "in").mkdir()
    langs = ["fra"] * 6 + ["eng"] * 6 + ["deu"] * 2
    ids = [f"{lang}-{i}" for i, lang in enumerate(langs)]
    texts = [f"t{i}" for i in range(len(ids))]
    texts[5] = ""  # fra-5: an empty text, a reject of the side
    pq.write_table(pa.table({"id": ids, "text": texts, "lang": langs}), tmp_path / "in" / "a.parquet")
    vectors = random_unit(rng, len(ids), 16)
    vectors[5] = 0.0
    vectors[12:, 0] = np.nan
    emb = write_embeddings(tmp_path / "emb", ids, vectors)
    side = {"uri": str(tmp_path / "in"), "format": "parquet", "id_column": "id", "lang_column": "lang"}
    cfg = {
        "source": {**side, "lang": "fra", "embeddings_uri": emb},
        "target": {**side, "lang": "eng", "embeddings_uri": emb},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local", "k": 2},
    }
    summary = run_mine(parse_config(MineConfig, cfg))
    assert summary["source"]["rows_mined"] == 5 and summary["target"]["rows_mined"] == 6
    vectors[2] = 0.0  # fra-2 is mined
    write_embeddings(tmp_path / "emb", ids, vectors)
    cfg["output"]["uri"] = str(tmp_path / "out2")
    with pytest.raises(UserError) as refused:
        run_mine(parse_config(MineConfig, cfg))
    said = str(refused.value)
    assert "1 of the source's rows to mine have a vector that is all zeros or not finite" in said, said
    assert f"id 'fra-2' at {tmp_path / 'emb' / 'part-0.parquet'} row 2" in said, said


def test_an_integer_language_column_matches_lang_by_its_string_form(tmp_path):
    """A lang column of integers (1, 2) and lang: '1': no row matched (1 != '1'), and the error listed '1 (3)' as
    present. A value is now the language its string form names, as the listing shows it."""
    rng = np.random.default_rng(3)
    (tmp_path / "in").mkdir()
    ids = [f"r{i}" for i in range(8)]
    table = pa.table({"id": ids, "text": [f"t{i}" for i in range(8)], "lang": [1, 2] * 4})
    pq.write_table(table, tmp_path / "in" / "a.parquet")
    emb = write_embeddings(tmp_path / "emb", ids, random_unit(rng, 8, 16))
    side = {"uri": str(tmp_path / "in"), "format": "parquet", "id_column": "id", "lang_column": "lang"}
    cfg = {
        "source": {**side, "lang": "1", "embeddings_uri": emb},
        "target": {**side, "lang": "2", "embeddings_uri": emb},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local"},
    }
    summary = run_mine(parse_config(MineConfig, cfg))
    assert (summary["source"]["rows_mined"], summary["target"]["rows_mined"]) == (4, 4) and summary["pairs_kept"] > 0
    pairs = pairs_table(tmp_path / "out")
    assert set(pairs.column("src_lang").to_pylist()) == {"1"} and set(pairs.column("tgt_lang").to_pylist()) == {"2"}
    assert {int(i[1:]) % 2 for i in pairs.column("src_id").to_pylist()} == {0}


def test_empty_side_is_an_error(corpus):
    (corpus["dir"] / "eng.txt").write_text("\n\n  \n")
    with pytest.raises(SideError, match="target: no usable rows"):
        run_mine(parse_config(MineConfig, config(corpus)))


def test_a_side_whose_rows_are_all_rejects_quotes_their_reasons(ray_session, tmp_path):
    """Rows rejected for their ids (another tool's list ids) were called 'null, empty or unreadable text'; the
    error now quotes the rejects' own reasons and where they are written. (A side to embed: the job starts Ray
    before it reads the sides, so this test runs on the session's Ray rather than leaving one of its own up.)"""
    pq.write_table(pa.table({"id": [[i] for i in range(3)], "text": ["a", "b", "c"]}), tmp_path / "src.parquet")
    (tmp_path / "eng.txt").write_text("x\ny\n")
    raw = {
        "source": {"uri": str(tmp_path / "src.parquet"), "format": "parquet", "lang": "fra", "id_column": "id"},
        "target": {"uri": str(tmp_path / "eng.txt"), "format": "text", "lang": "eng"},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local"},
    }
    with pytest.raises(SideError) as err:
        run_mine(parse_config(MineConfig, raw))
    said = str(err.value)
    assert "source: no usable rows in" in said and "(3 rejected, e.g. 'id is list [0], not a string" in said, said
    assert "null, empty or unreadable" not in said and f"reasons in {tmp_path / 'out'}/_rejects/source" in said, said


def test_a_side_smaller_than_k_is_said_in_the_summary_and_a_warning(corpus, caplog):
    """2 English lines against 60 French with k=4: the forward search can find only 2 neighbours, so the margins
    average 2 cosines; the summary said k=4 and nothing else (a 1-row side makes every margin near 1)."""
    (corpus["dir"] / "eng.txt").write_text("sentence 0\nsentence 1\n")
    with caplog.at_level("WARNING", logger="pipeline.bitext.job"):
        summary = run_mine(parse_config(MineConfig, config(corpus, k=4)))
    assert summary["neighbours"] == {"forward": 2, "backward": 4}
    assert "the target (eng) has 2 rows, fewer than mining.k=4" in caplog.text
    assert "lower mining.k" in caplog.text


def test_a_score_window_that_keeps_no_selected_pair_is_a_warning_naming_the_scores(corpus, caplog):
    """The shipped ratio threshold (1.014) left in place with margin: distance, whose margins here lie near 0-0.9:
    pairs are selected but none reaches the threshold. The run ended with an empty pairs folder and no word."""
    with caplog.at_level("WARNING", logger="pipeline.bitext.job"):
        summary = run_mine(parse_config(MineConfig, config(corpus, margin="distance", threshold=1.014)))
    assert summary["pairs_selected"] > 0 and summary["pairs_kept"] == 0
    assert f"fra-eng: none of the {summary['pairs_selected']} selected pairs is in the score window" in caplog.text
    assert "(mining.threshold 1.014): their distance margins lie between" in caplog.text
    assert "pairs_per_threshold" in caplog.text
    caplog.clear()
    raw = config(corpus, margin="distance", threshold=0.2)
    raw["output"]["uri"] = str(corpus["dir"] / "kept")
    with caplog.at_level("WARNING", logger="pipeline.bitext.job"):
        assert run_mine(parse_config(MineConfig, raw))["pairs_kept"] > 0
    assert "score window" not in caplog.text


def test_centring_a_language_of_one_sentence_gives_finite_scores(corpus):
    """mining.center with a source of one line: centred on its own mean it became a zero vector, and the pair was
    written with cosine 0.0 and score NaN."""
    (corpus["dir"] / "fra.txt").write_text("phrase 0\n")
    summary = run_mine(parse_config(MineConfig, config(corpus, center=True)))
    pairs = pq.read_table(corpus["dir"] / "out" / "pairs")
    assert summary["pairs_kept"] == pairs.num_rows == 1
    assert np.isfinite(pairs.column("score").to_numpy()).all() and pairs.column("cosine").to_pylist()[0] != 0.0


def tiny_sides(tmp_path: Path, src: list, tgt: list) -> dict:
    """Sides of the given vectors, reused as embeddings; texts 'p i' / 's j'."""
    (tmp_path / "fra.txt").write_text("".join(f"p {i}\n" for i in range(len(src))))
    (tmp_path / "eng.txt").write_text("".join(f"s {j}\n" for j in range(len(tgt))))
    src_emb = write_embeddings(tmp_path / "emb_fra", [f"fra.txt#{i}" for i in range(len(src))], np.float32(src))
    tgt_emb = write_embeddings(tmp_path / "emb_eng", [f"eng.txt#{j}" for j in range(len(tgt))], np.float32(tgt))
    return {"dir": tmp_path, "src_emb": src_emb, "tgt_emb": tgt_emb}


@pytest.mark.parametrize(
    "src, tgt, retrieval, pair, cosine",
    [
        # orthogonal sides: every cosine and density 0, LASER's ratio 0/0 = NaN was written as the score
        ([[1, 0, 0, 0], [0, 1, 0, 0]], [[0, 0, 1, 0], [0, 0, 0, 1]], "max", ("fra.txt#0", "eng.txt#0"), 0.0),
        # negative densities: the opposite vector (cos -1) scored -1 / -0.9 = 1.11 and was the source's best
        # candidate, not the nearer one (-0.6 / -0.7 = 0.86); now both score 0 and the tie goes to the higher cosine
        ([[1, 0, 0, 0]], [[-1, 0, 0, 0], [-0.6, 0.8, 0, 0]], "fwd", ("fra.txt#0", "eng.txt#1"), -0.6),
    ],
    ids=["orthogonal", "opposite"],
)
def test_ratio_margins_of_unrelated_sides_are_zero_never_nan(tmp_path, src, tgt, retrieval, pair, cosine):
    sides = tiny_sides(tmp_path, src, tgt)
    summary = run_mine(parse_config(MineConfig, config(sides, k=2, retrieval=retrieval)))
    pairs = pq.read_table(tmp_path / "out" / "pairs").to_pylist()
    assert [(p["src_id"], p["tgt_id"], p["score"]) for p in pairs] == [(*pair, 0.0)]
    assert pairs[0]["cosine"] == pytest.approx(cosine)

    def no_constant(name):
        raise AssertionError(f"summary.json holds {name}")

    written = json.loads((tmp_path / "out" / "summary.json").read_text(), parse_constant=no_constant)
    assert written["pairs_kept"] == summary["pairs_kept"] == 1
    assert np.isfinite(written["score_histogram"]["bin_edges"]).all()


def test_k1_mines_the_mutual_nearest_neighbours_scoring_them_one(corpus):
    """mining.k: 1 is mutual-nearest-neighbour mining: threshold 1.0 keeps exactly the pairs that are each other's
    nearest neighbour (by brute force over the deduplicated, normalized sides), each scored 1."""
    summary = run_mine(parse_config(MineConfig, config(corpus, k=1, threshold=1.0)))
    table = pq.read_table(corpus["dir"] / "out" / "pairs")
    src = pq.read_table(corpus["src_emb"]).slice(0, 59)  # row 59 repeats row 3's text: dropped by dedup
    tgt = pq.read_table(corpus["tgt_emb"])
    x = np.stack(src.column("embedding").to_numpy(zero_copy_only=False))
    y = np.stack(tgt.column("embedding").to_numpy(zero_copy_only=False))
    sims = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (y / np.linalg.norm(y, axis=1, keepdims=True)).T
    best_y, best_x = sims.argmax(axis=1), sims.argmax(axis=0)
    mutual = {(src["id"][i].as_py(), tgt["id"][j].as_py()) for i, j in enumerate(best_y) if best_x[j] == i}
    assert set(zip(table.column("src_id").to_pylist(), table.column("tgt_id").to_pylist())) == mutual
    assert table.column("score").to_pylist() == pytest.approx([1.0] * len(mutual))
    assert summary["pairs_kept"] == len(mutual) >= 40


def test_mismatched_dims_are_an_error(corpus):
    rng = np.random.default_rng(1)
    write_embeddings(Path(corpus["tgt_emb"]), [f"eng.txt#{j}" for j in range(70)], random_unit(rng, 70, 8))
    with pytest.raises(SideError, match="dim 64, target 8"):
        run_mine(parse_config(MineConfig, config(corpus)))


def test_reused_vectors_of_another_width_than_output_dimensions_are_refused_naming_the_side(corpus):
    """output.dimensions: 16 with reused 64-dim embeddings: they were mined at 64 and the setting ignored."""
    raw = config(corpus)
    raw["output"]["dimensions"] = 16
    with pytest.raises(
        SideError,
        match=r"source: the vectors of source.embeddings_uri .* have dim 64, not "
        r"output.dimensions=16; .*unset output.dimensions to mine them at 64",
    ):
        run_mine(parse_config(MineConfig, raw))
    raw["output"] = {"uri": str(corpus["dir"] / "out64"), "dimensions": 64}  # their width: mined as before
    assert run_mine(parse_config(MineConfig, raw))["dim"] == 64


def test_texts_without_vectors_are_an_error_unless_the_embed_run_rejected_them(corpus):
    """A row with no vector in reused embeddings fails the run, unless the embed run that wrote them rejected it (its
    id in their _rejects/, as the embed job and a mining run's embed step write it): then it is a reject of the side,
    as for the job's own embed step. Reusing a mining run's embeddings/<side> whose embed step rejected a row failed:
    '1 of 17 rows have no vector ... the embeddings must come from the embed job over this same input'."""
    with open(corpus["dir"] / "eng.txt", "a") as f:
        f.write("a line the embeddings never saw\n")
    with pytest.raises(SideError, match="target: 1 of 71 rows have no vector .* not among the rejects of that"):
        run_mine(parse_config(MineConfig, config(corpus)))
    rejects = Path(corpus["tgt_emb"]) / "_rejects"
    rejects.mkdir()
    reasons = {"id": ["eng.txt#70"], "source": ["eng.txt"], "row": [70], "reason": ["text produced no content tokens"]}
    pq.write_table(pa.table(reasons), rejects / "part-0.parquet")
    summary = run_mine(parse_config(MineConfig, config(corpus)))
    tgt = summary["target"]
    assert (tgt["rows_read"], tgt["rows_rejected"], tgt["rows_rejected_by_embedding"], tgt["rows_mined"]) == (
        71,
        1,
        1,
        70,
    )
    assert tgt["embedding_rejects"] == str(rejects)
    with open(corpus["dir"] / "eng.txt", "a") as f:
        f.write("another line the embeddings never saw\n")
    with pytest.raises(SideError, match="target: 1 of 72 rows have no vector .*'eng.txt#71'"):
        run_mine(parse_config(MineConfig, {**config(corpus), "output": {"uri": str(corpus["dir"] / "again")}}))


def test_different_models_are_an_error(corpus):
    table = pq.read_table(Path(corpus["tgt_emb"]) / "part-0.parquet")
    pq.write_table(
        table.replace_schema_metadata({"rayembed.model": "other"}), Path(corpus["tgt_emb"]) / "part-0.parquet"
    )
    with pytest.raises(SideError, match="different models"):
        run_mine(parse_config(MineConfig, config(corpus)))


def test_another_tools_vectors_against_a_recorded_model_are_a_warning_naming_both(corpus, caplog):
    """One side's vectors from another tool (no rayembed metadata: a sentence-transformers or LASER export), the
    other's from the embed job (a model recorded): nothing can check they are one model, and two models' vectors of
    one width mine meaningless pairs. It was mined without a word; now a warning names the side, both locations,
    the recorded model and what to do."""
    with_recipe(Path(corpus["tgt_emb"]) / "part-0.parquet", model=".models/e5", pooling="mean", prompt="query: ")
    pq.write_table(
        pq.read_table(Path(corpus["src_emb"]) / "part-0.parquet").replace_schema_metadata(None),
        Path(corpus["src_emb"]) / "part-0.parquet",
    )
    with caplog.at_level("WARNING", logger="pipeline.bitext.job"):
        assert run_mine(parse_config(MineConfig, config(corpus, threshold=1.5)))["pairs_kept"] == 40
    said = [r.getMessage() for r in caplog.records if "record no model" in r.getMessage()]
    assert len(said) == 1, caplog.text
    assert said[0].startswith(f"source: the vectors in {corpus['src_emb']} record no model"), said
    assert f"of the target's ({corpus['tgt_emb']}: model .models/e5, pooling mean" in said[0], said
    assert "remove source.embeddings_uri" in said[0], said


@pytest.mark.parametrize(
    "ids, said",
    [
        (pa.array([[i] for i in range(60)]), "the id column (source.embeddings_id_column 'id') has type list<"),
        (
            pa.array([{"doc": i} for i in range(60)]),
            "the id column (source.embeddings_id_column 'id') has type struct<",
        ),
        (pa.array([b"\xff" + bytes([i]) for i in range(60)]), "row 0 (rows from 0 in the file) has an id that is not "),
    ],
)
def test_another_tools_ids_that_are_not_text_are_refused_naming_the_file(corpus, ids, said):
    """An embeddings file's ids of lists, structs or non-UTF-8 bytes (another tool's) failed with Arrow's
    'Unsupported cast from list<element: int64> to utf8' / 'Invalid UTF8 payload', naming no file or key."""
    path = Path(corpus["src_emb"]) / "part-0.parquet"
    table = pq.read_table(path)
    pq.write_table(table.set_column(0, "id", ids), path)
    with pytest.raises(UserError) as err:
        run_mine(parse_config(MineConfig, config(corpus)))
    assert str(err.value).startswith(f"{path}: "), err.value
    assert said in str(err.value), err.value


def with_recipe(path: Path, **recipe: str) -> None:
    """Rewrite an embeddings file with rayembed.<key> metadata (its vectors unchanged)."""
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({f"rayembed.{k}": v for k, v in recipe.items()}), path)


def test_a_side_mixing_runs_of_two_models_or_poolings_is_refused_naming_both_files(corpus):
    """Two runs' files in one embeddings_uri, of one width (e5-small and MiniLM are both 384 wide), were mined
    together without a word (the side's model was the smaller name). Now refused, naming the two files and what
    differs; files of one model at another folder, or of another tool (no metadata), are fine."""
    emb = Path(corpus["src_emb"])
    table = pq.read_table(emb / "part-0.parquet")
    pq.write_table(table.slice(30), emb / "part-1.parquet")
    pq.write_table(table.slice(0, 30), emb / "part-0.parquet")
    with_recipe(emb / "part-0.parquet", model=".models/e5", pooling="mean", prompt="query: ")
    with_recipe(emb / "part-1.parquet", model=".models/minilm", pooling="mean", prompt="query: ")
    with pytest.raises(SideError, match="source: source.embeddings_uri .* mixes embeddings of different recipes") as e:
        run_mine(parse_config(MineConfig, config(corpus)))
    said = str(e.value)
    assert f"{emb}/part-0.parquet has model .models/e5, pooling mean" in said
    assert f"{emb}/part-1.parquet has model .models/minilm" in said and "(model: '.models/e5' vs" in said
    with_recipe(emb / "part-1.parquet", model=".models/e5", pooling="cls", prompt="query: ")
    with pytest.raises(SideError, match=r"different recipes \(pooling: 'mean' vs 'cls'\)"):
        run_mine(parse_config(MineConfig, config(corpus) | {"output": {"uri": str(corpus["dir"] / "o2")}}))
    with_recipe(emb / "part-1.parquet", model="/elsewhere/.models/e5/", pooling="mean", prompt="query: ")
    with_recipe(Path(corpus["tgt_emb"]) / "part-0.parquet")  # another tool's file: nothing to compare
    cfg = config(corpus, threshold=1.5) | {"output": {"uri": str(corpus["dir"] / "o3")}}
    assert run_mine(parse_config(MineConfig, cfg))["pairs_kept"] == 40


def test_sides_of_one_model_in_other_folders_are_mined_and_another_pooling_is_refused(corpus):
    """The sides' models were compared as written: one model loaded from two folders (.models/e5 and its absolute
    path, or its hub name) was 'embedded with different models'; another pooling of one model was not caught."""
    src, tgt = Path(corpus["src_emb"]) / "part-0.parquet", Path(corpus["tgt_emb"]) / "part-0.parquet"
    with_recipe(src, model=".models/multilingual-e5-small", pooling="mean", prompt="query: ")
    with_recipe(tgt, model="intfloat/multilingual-e5-small", pooling="mean", prompt="query: ")
    assert run_mine(parse_config(MineConfig, config(corpus, threshold=1.5)))["pairs_kept"] == 40
    with_recipe(tgt, model="intfloat/multilingual-e5-small", pooling="cls", prompt="query: ")
    with pytest.raises(SideError, match=r"different models or settings \(pooling\): source .* pooling mean.*cls"):
        run_mine(
            parse_config(MineConfig, config(corpus, threshold=1.5) | {"output": {"uri": str(corpus["dir"] / "o2")}})
        )


def pairs_table(out: Path) -> pa.Table:
    return pq.read_table(out / "pairs").sort_by([("src_id", "ascending"), ("tgt_id", "ascending")])


@pytest.mark.parametrize(
    "crash_in, reused",
    [
        ("prepare.dedup_language", []),  # raw parts written, no stage recorded: everything is redone
        ("search_all", ["texts"]),  # after the texts stage: the k-NN is redone
        ("select_stream", ["texts", "knn"]),  # mid-selection, proposals written: selection redone, k-NN kept
        # after work/ was removed: only the reports are written
        ("write_single", ["texts", "knn", "pairs/src_lang=fra/tgt_lang=eng"]),
    ],
)
def test_a_crashed_run_resumes_to_the_same_pairs(corpus, monkeypatch, crash_in, reused):
    """A run cut short at a stage boundary, rerun without overwrite, ends as an uninterrupted run; what a recorded
    stage wrote is not computed again. Fails on code without resume: the rerun is refused."""
    from pipeline.bitext import job, prepare

    raw = config(corpus, threshold=1.0)
    expected = run_mine(parse_config(MineConfig, raw))
    raw["output"] = {"uri": str(corpus["dir"] / "resumed")}
    module, crash_in = (prepare, crash_in.split(".")[1]) if "." in crash_in else (job, crash_in)
    calls = Counter()

    def crash(*args, **kwargs):
        raise RuntimeError("node lost")

    def counted(name):
        fn = getattr(job, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(module, crash_in, crash)
    with pytest.raises(RuntimeError, match="node lost"):
        run_mine(parse_config(MineConfig, raw))
    out = corpus["dir"] / "resumed"
    assert not (out / "_SUCCESS").exists() and (out / "_run" / "fingerprint.json").exists()
    monkeypatch.undo()
    for name in ("prepare_texts", "search_all", "mine_pair"):
        monkeypatch.setattr(job, name, counted(name))
    summary = run_mine(parse_config(MineConfig, raw))
    assert summary["resumed"] is True and summary["stages_reused"] == reused
    assert calls["prepare_texts"] == ("texts" not in reused)
    assert calls["search_all"] == ("knn" not in reused)
    assert calls["mine_pair"] == (len(reused) < 3)
    assert pairs_table(out).equals(pairs_table(corpus["dir"] / "out"))
    for key in ("pairs_kept", "pairs_selected", "pairs_per_threshold", "score_histogram", "source", "target"):
        assert summary[key] == expected[key], key
    assert not (out / "work").exists() and (out / "_SUCCESS").exists()
    assert expected["resumed"] is False and expected["stages_reused"] == []


def test_an_unfinished_run_of_another_configuration_is_refused_naming_the_field(corpus, monkeypatch):
    from pipeline.bitext import job

    raw = config(corpus)

    def crash(*args, **kwargs):
        raise RuntimeError("node lost")

    monkeypatch.setattr(job, "select_stream", crash)
    with pytest.raises(RuntimeError):
        run_mine(parse_config(MineConfig, raw))
    with pytest.raises(FileExistsError, match=r"of another configuration.*mining\.k: 4 -> 3"):
        run_mine(parse_config(MineConfig, {**raw, "mining": {**raw["mining"], "k": 3}}))
    monkeypatch.undo()
    overwrite = {**raw, "output": {**raw["output"], "overwrite": True}, "mining": {**raw["mining"], "k": 3}}
    assert run_mine(parse_config(MineConfig, overwrite))["resumed"] is False  # overwrite still starts over


@pytest.mark.parametrize("crash_in, shards_reported", [("search_all", 2), ("select_stream", 1)])
def test_a_run_that_crashed_resumes_with_smaller_pieces_to_the_same_pairs(
    corpus, monkeypatch, crash_in, shards_reported
):
    """After a crash (say, out of memory in the k-NN) the rerun may cut the work smaller: query blocks, shards of an
    exact search, join buckets, output files. The pairs are those of an uninterrupted run; the summary reports the
    shards the k-NN ran with (an earlier attempt's when its k-NN was recorded). Fails on code whose fingerprint
    holds these settings: the rerun is refused."""
    from pipeline.bitext import job

    raw = config(corpus, threshold=1.0)
    expected = run_mine(parse_config(MineConfig, raw))
    raw["output"] = {"uri": str(corpus["dir"] / "resumed")}

    def crash(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(job, crash_in, crash)
    with pytest.raises(RuntimeError, match="out of memory"):
        run_mine(parse_config(MineConfig, raw))
    monkeypatch.undo()
    smaller = {**raw, "mining": {**raw["mining"], "block_size": 5, "num_shards": 2, "join_bucket_rows": 7}}
    smaller["output"] = {**raw["output"], "rows_per_file": 9}
    summary = run_mine(parse_config(MineConfig, smaller))
    assert summary["resumed"] is True
    out = corpus["dir"] / "resumed"
    assert pairs_table(out).equals(pairs_table(corpus["dir"] / "out"))
    assert summary["pairs_kept"] == expected["pairs_kept"]
    assert summary["shards"]["forward"] == summary["shards"]["backward"] == shards_reported


def messy_jsonl_sides(tmp_path: Path, src_lines: list[bytes]) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    """JSONL sides with ids s0..s9 / t0..t9 and embeddings for them; `src_lines` are appended to the source."""
    rng = np.random.default_rng(1)
    vectors = random_unit(rng, 10, 16)
    (tmp_path / "src.jsonl").write_bytes(
        b"".join(json.dumps({"id": f"s{i}", "text": f"phrase {i}"}).encode() + b"\n" for i in range(10))
        + b"".join(src_lines)
    )
    (tmp_path / "tgt.jsonl").write_text(
        "".join(json.dumps({"id": f"t{i}", "text": f"sentence {i}"}) + "\n" for i in range(10))
    )
    side = {"format": "jsonl", "id_column": "id"}
    return {
        "source": {
            **side,
            "uri": str(tmp_path / "src.jsonl"),
            "lang": "fra",
            "embeddings_uri": write_embeddings(tmp_path / "es", [f"s{i}" for i in range(10)], vectors),
        },
        "target": {
            **side,
            "uri": str(tmp_path / "tgt.jsonl"),
            "lang": "eng",
            "embeddings_uri": write_embeddings(tmp_path / "et", [f"t{i}" for i in range(10)], vectors),
        },
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local", "block_size": 16},
    }


def test_side_rows_that_are_not_mined_are_rejects_with_reasons_as_in_the_embed_job(tmp_path):
    """A repeated id (input.duplicate_ids keep_first) is a reject `duplicate id (first at …)`: it used to be mined
    with the first row's vector under its own text. Every reject's reason is in <output>/_rejects/<side>/ (only a
    count before), and rows_read = rows_rejected + rows_other_lang + duplicates_dropped + rows_mined."""
    raw = messy_jsonl_sides(
        tmp_path, [b'{"id": "s3", "text": "not phrase three"}\n', b'{"id": "s11", "text": null}\n', b"not json\n"]
    )
    summary = run_mine(parse_config(MineConfig, raw))
    src = summary["source"]
    assert (src["rows_read"], src["rows_rejected"], src["duplicate_ids_rejected"], src["rows_mined"]) == (13, 3, 1, 10)
    assert (
        src["rows_read"]
        == src["rows_rejected"] + src["rows_other_lang"] + src["duplicates_dropped"] + src["rows_mined"]
    )
    rejects = pq.read_table(src["rejects"]).to_pylist()
    assert sorted((r["row"], r["id"], r["reason"]) for r in rejects) == [
        (10, "s3", "duplicate id (first at src.jsonl row 3)"),
        (11, "s11", "null text"),
        (12, None, "line is not valid JSON (Expecting value at column 1)"),
    ]
    pairs = pq.read_table(tmp_path / "out" / "pairs").to_pylist()
    assert pairs and all(p["src_text"] == f"phrase {p['src_id'][1:]}" for p in pairs)
    assert "rejects" not in summary["target"]


def test_side_duplicate_ids_error_and_the_reject_guard(tmp_path):
    """duplicate_ids: error fails naming the rows; more rejects than the side's max_reject_fraction fail before
    anything is embedded, naming the side's keys (both were ignored: the run mined on)."""
    raw = messy_jsonl_sides(tmp_path, [b'{"id": "s3", "text": "again"}\n', b'{"id": "s12", "text": ""}\n'])
    raw["source"]["duplicate_ids"] = "error"
    with pytest.raises(
        SideError, match=r"source \(fra\): 1 rows repeat an earlier id: src.jsonl row 10 repeats src.jsonl row 3"
    ):
        run_mine(parse_config(MineConfig, raw))
    raw["source"].update(duplicate_ids="keep_first", max_reject_fraction=0.05)
    raw["output"]["overwrite"] = True
    with pytest.raises(
        UserError, match=r"source \(.*src.jsonl\): 1 of 12 rows rejected .* above source.max_reject_fraction"
    ):
        run_mine(parse_config(MineConfig, raw))
    assert not (tmp_path / "out" / "embeddings").exists()
    raw = messy_jsonl_sides(tmp_path / "dups", [b'{"id": "s3", "text": "again"}\n', b'{"id": "s4", "text": "again"}\n'])
    raw["source"]["max_reject_fraction"] = 0.1  # 2 of 12 rows repeat an id: counted as the embed job counts them
    with pytest.raises(UserError, match=r"2 of 12 rows rejected \(16.7%\), above source.max_reject_fraction"):
        run_mine(parse_config(MineConfig, raw))


def test_the_same_file_as_both_sides_in_two_languages(corpus):
    """One text file as the source (fra) and the target (eng), no lang_column: each side reads all its rows. The
    shared read gave every row to the source, and the run failed 'target: no usable rows in … (0 rejected …)'."""
    raw = config(corpus)
    raw["target"] = {**raw["source"], "lang": "eng"}
    summary = run_mine(parse_config(MineConfig, raw))
    assert summary["source"]["rows_mined"] == summary["target"]["rows_mined"] == 59  # one duplicate text dropped
    assert summary["pairs_kept"] == 59


def test_sides_from_a_corpus_partitioned_by_language(corpus):
    """A Spark partitionBy('lang') corpus (lang=fra/part-0.parquet, lang=eng/…) holds the language in its paths
    only: both sides read it with lang_column 'lang'. The read failed "column(s) ['lang'] not found" on every file."""
    d = corpus["dir"]
    part = d / "parts"
    for lang, name, n in (("fra", "fra.txt", 60), ("eng", "eng.txt", 70)):
        texts = (d / name).read_text().splitlines()
        (part / f"lang={lang}").mkdir(parents=True)
        table = pa.table({"id": [f"{name}#{i}" for i in range(n)], "text": texts})
        pq.write_table(table, part / f"lang={lang}" / "part-0.parquet")
    side = {"uri": str(part), "format": "parquet", "id_column": "id", "lang_column": "lang"}
    raw = config(corpus)
    raw["source"] = {**side, "lang": "fra", "embeddings_uri": corpus["src_emb"]}
    raw["target"] = {**side, "lang": "eng", "embeddings_uri": corpus["tgt_emb"]}
    summary = run_mine(parse_config(MineConfig, raw))
    assert summary["source"]["rows_mined"] == 59 and summary["target"]["rows_mined"] == 70
    pairs = pairs_table(Path(raw["output"]["uri"]))
    found = set(zip(pairs.column("src_id").to_pylist(), pairs.column("tgt_id").to_pylist()))
    assert len(found & corpus["gold"]) >= 35


def test_a_hugging_face_translation_file_mines_its_two_fields_as_source_and_target(tmp_path):
    """One JSONL file in Hugging Face's translation layout, `{"translation": {"en": ..., "fr": ...}}`: source
    `text_column: translation.en`, target `translation.fr`. The read failed "no record has the key
    'translation.en'". Each side reads its own field; row 12 lacks `fr` and row 13's translation is null: rejects of
    the side(s) concerned, with reasons; the aligned rows are mined back as pairs."""
    rng = np.random.default_rng(2)
    n, dim = 30, 32
    src_vec = random_unit(rng, n, dim)
    tgt_vec = src_vec + 0.05 * rng.standard_normal((n, dim)).astype(np.float32)
    rows = [{"translation": {"en": f"hello {i}", "fr": f"bonjour {i}"}} for i in range(n)]
    rows[12]["translation"].pop("fr")
    rows[13]["translation"] = None
    (tmp_path / "wmt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ids = [f"wmt.jsonl#{i}" for i in range(n)]
    side = {"uri": str(tmp_path / "wmt.jsonl"), "format": "jsonl"}
    raw = {
        "source": {**side, "text_column": "translation.en", "lang": "en"},
        "target": {**side, "text_column": "translation.fr", "lang": "fr"},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local", "block_size": 16},
    }
    raw["source"]["embeddings_uri"] = write_embeddings(tmp_path / "emb_en", ids, src_vec)
    raw["target"]["embeddings_uri"] = write_embeddings(tmp_path / "emb_fr", ids, tgt_vec)
    summary = run_mine(parse_config(MineConfig, raw))
    src, tgt = summary["source"], summary["target"]
    assert (src["rows_read"], src["rows_rejected"], src["rows_mined"]) == (30, 1, 29)
    assert (tgt["rows_read"], tgt["rows_rejected"], tgt["rows_mined"]) == (30, 2, 28)
    reasons = {(r["row"], r["reason"]) for r in pq.read_table(tgt["rejects"]).to_pylist()}
    assert reasons == {
        (12, "no text at 'translation.fr': 'translation' has no field 'fr'"),
        (13, "no text at 'translation.fr': 'translation' is null"),
    }
    pairs = pairs_table(tmp_path / "out").to_pylist()
    assert {(p["src_text"], p["tgt_text"]) for p in pairs} >= {
        (f"hello {i}", f"bonjour {i}") for i in range(n) if i not in (12, 13)
    }
    assert all(p["src_id"] == p["tgt_id"] for p in pairs if p["tgt_text"].split()[1] == p["src_text"].split()[1])


def test_two_fields_of_one_file_in_one_language_are_two_sides_not_the_same_rows(tmp_path):
    """Paraphrase mining from one file (`pair.a` / `pair.b`, both eng): refused as "the same rows" before."""
    side = {"uri": str(tmp_path / "p.jsonl"), "format": "jsonl", "lang": "eng"}
    raw = {
        "source": {**side, "text_column": "pair.a"},
        "target": {**side, "text_column": "pair.b"},
        "output": {"uri": str(tmp_path / "out")},
    }
    assert parse_config(MineConfig, raw).pairs() == [("eng", "eng")]
    raw["target"]["text_column"] = "pair.a"
    with pytest.raises(ConfigError, match="source and target select the same rows"):
        parse_config(MineConfig, raw)


def test_sides_with_nested_id_and_language_columns(corpus):
    """One Parquet corpus with `meta: struct<id, text, lang>`: `id_column: meta.id`, `text_column: meta.text`,
    `lang_column: meta.lang` on both sides (each keeps meta.id too). The read failed "column(s) [...] not found"."""
    d = corpus["dir"]
    records = []
    for lang, name in (("fra", "fra.txt"), ("eng", "eng.txt")):
        for i, text in enumerate((d / name).read_text().splitlines()):
            records.append({"meta": {"id": f"{name}#{i}", "text": text, "lang": lang}})
    pq.write_table(pa.Table.from_pylist(records), d / "nested.parquet")
    side = {
        "uri": str(d / "nested.parquet"),
        "format": "parquet",
        "text_column": "meta.text",
        "id_column": "meta.id",
        "lang_column": "meta.lang",
    }
    raw = config(corpus)
    raw["source"] = {**side, "lang": "fra", "embeddings_uri": corpus["src_emb"]}
    raw["target"] = {**side, "lang": "eng", "embeddings_uri": corpus["tgt_emb"], "keep_columns": ["meta.id"]}
    summary = run_mine(parse_config(MineConfig, raw))
    assert summary["source"]["rows_mined"] == 59 and summary["target"]["rows_mined"] == 70
    pairs = pairs_table(Path(raw["output"]["uri"]))
    found = set(zip(pairs.column("src_id").to_pylist(), pairs.column("tgt_id").to_pylist()))
    assert len(found & corpus["gold"]) >= 35
    assert pairs.column("tgt_meta.id").to_pylist() == pairs.column("tgt_id").to_pylist()


def test_sides_with_a_list_of_locations_group_as_one_input(tmp_path):
    """`source.uri: [a, b]` (a list, as the embed job's input.uri): sides are grouped by a hashable key, so two sides
    of one list share one read (a list made `input_key` unhashable)."""
    from pipeline.bitext.job import input_key
    from pipeline.mine_config import MineConfig

    side = {"uri": [str(tmp_path / "a"), str(tmp_path / "b")], "format": "jsonl", "lang_column": "lang"}
    cfg = MineConfig.model_validate(
        {
            "source": {**side, "lang": "fra"},
            "target": {**side, "lang": "eng"},
            "output": {"uri": str(tmp_path / "out")},
        }
    )
    assert {input_key(cfg.source): 1}[input_key(cfg.target)] == 1


def test_a_first_attempt_lists_each_input_once(corpus, s3_bucket, proxy):
    """Every side (uri and embeddings_uri) on S3 through the counting proxy. The fingerprint listed each input, then
    the reads and the join listed them again: two LISTs per input on a first attempt (one per 1,000 objects on a
    large prefix), and a file arriving in between was read without being in the fingerprint."""
    client, bucket = s3_bucket
    d = corpus["dir"]
    for prefix, files in {"src": [d / "fra.txt"], "tgt": [d / "eng.txt"]}.items():
        for f in files:
            client.upload_file(str(f), bucket, f"{prefix}/{f.name}")
    for prefix, local in {"emb_src": corpus["src_emb"], "emb_tgt": corpus["tgt_emb"]}.items():
        client.upload_file(f"{local}/part-0.parquet", bucket, f"{prefix}/part-0.parquet")
    raw = config(corpus)
    raw["source"] |= {"uri": f"s3://{bucket}/src/", "embeddings_uri": f"s3://{bucket}/emb_src/"}
    raw["target"] |= {"uri": f"s3://{bucket}/tgt/", "embeddings_uri": f"s3://{bucket}/emb_tgt/"}
    raw["storage"] = {"endpoint_url": proxy.url}
    summary = run_mine(parse_config(MineConfig, raw))
    assert summary["pairs_kept"] > 30  # the listing reused is the right one: the run mines the planted pairs
    # a LIST is a GET of the bucket itself (the prefix is in the query, which the proxy does not key on)
    job_lists = proxy.forwarded[("GET", f"/{bucket}")]
    proxy.forwarded.clear()
    for side in ("source", "target"):  # one listing of each input, as the job should do it
        list_inputs(raw[side]["uri"], StorageConfig(endpoint_url=proxy.url))
        list_inputs(raw[side]["embeddings_uri"], StorageConfig(endpoint_url=proxy.url))
    once = proxy.forwarded[("GET", f"/{bucket}")]
    assert once >= 4 and job_lists == once, (job_lists, once)  # it was 2 * once


@pytest.mark.parametrize("odd", ["cut", "garbled", "width", "nulls", "empty_vector", "empty", "npy", "bf16"])
def test_an_odd_file_in_a_sides_embeddings_fails_naming_it(corpus, odd):
    """A cut, garbled or non-Parquet file in an embeddings_uri crashed the job with pyarrow's ArrowInvalid/OSError
    traceback; a file of another width failed with `several dims [32, 64]` naming no file; a null vector named its
    row but not its file; an empty file written with a list<float> column (a user's writer) had dim 0 and failed
    as `several dims [0, 64]`. Now each odd file is one error naming it and what to do; an empty file is fine.
    An empty vector (another tool's row it did not embed) first in a file made the file's width 0 and blamed the
    next row: "the vector of 'fra.txt#61' has 64 values, row 0's has 0 ... different models"; it is named as the
    missing vector it is."""
    emb = Path(corpus["src_emb"])
    ids = [f"fra.txt#{i}" for i in range(60, 65)]  # rows the texts do not have: only the file is odd
    data = parquet_bytes(embeddings_table([], 64, fixed=False)) if odd == "empty" else odd_embedding_files(ids, 64)[odd]
    (emb / "part-1.parquet").write_bytes(data)
    if odd == "empty":
        assert run_mine(parse_config(MineConfig, config(corpus, threshold=1.5)))["pairs_kept"] == 40
        return
    with pytest.raises(UserError) as err:
        run_mine(parse_config(MineConfig, config(corpus, threshold=1.5)))
    message = str(err.value)
    assert str(emb / "part-1.parquet") in message, message
    says = {
        "cut": "Its rows are vectors, so the job does not skip it: copy it again",
        "garbled": "Its rows are vectors, so the job does not skip it",
        "width": "dim 32 in 1 files (",
        "nulls": "has 1 null vectors (the first: 'fra.txt#60'): drop those rows or embed them again",
        "empty_vector": "has 1 empty vectors (no values; the first: 'fra.txt#60'), which another tool writes for a "
        "text it did not embed: drop those rows or embed them again",
        "npy": "looks like a NumPy .npy array; the cluster and mining jobs read Parquet files",
        "bf16": "holds uint16 values, expected float16/32/64. If they are bfloat16 bit patterns",
    }
    assert says[odd] in message, message


def test_an_id_repeated_in_a_sides_embeddings_is_refused_naming_the_repeats(corpus):
    """An embeddings_uri holding some rows twice (a file copied) failed with one id and no file or row, and the
    advice to embed with long_inputs=truncate. Now, as the cluster job (clustering.duplicates.duplicate_error over
    the embed job's duplicate pass): the count, the first five repeats with file and row of the repeat and of its
    first copy, and what to do. Ids the texts do not have are not checked (only mined rows join)."""
    emb = Path(corpus["src_emb"])
    table = pq.read_table(emb / "part-0.parquet")
    pq.write_table(table.slice(0, 60), emb / "part-1-copy.parquet")
    other = embeddings_table(["not-mined"] * 2, 64)
    pq.write_table(other.replace_schema_metadata({"rayembed.model": "test-model"}), emb / "part-2.parquet")
    with pytest.raises(UserError) as err:
        run_mine(parse_config(MineConfig, config(corpus, threshold=1.5)))
    message = str(err.value)
    # 59: the text of row 59 repeats row 3's, so dedup drops it and its id is not mined
    assert message.startswith(
        f"source.embeddings_uri {emb}: 59 rows repeat an earlier id (source.embeddings_id_column 'id')"
    ), message
    assert "id 'fra.txt#0' at part-1-copy.parquet row 0 repeats part-0.parquet row 0; " in message, message
    assert "id 'fra.txt#4' at part-1-copy.parquet row 4 repeats part-0.parquet row 4 and 54 more" in message
    assert "remove the copies from source.embeddings_uri" in message


def test_a_resume_goes_on_after_a_touch_of_the_inputs_and_refuses_an_edit(tmp_path):
    """A `touch` of a side's text file and of an embeddings file (or a chmod, a copy with new times) between a crash
    and its rerun moves their change tokens: the resume was refused. The run records each local input file's sha256
    (pipeline.input_contents), so the rerun resumes; an edit of the same size is refused naming the file."""
    rng = np.random.default_rng(3)
    n, dim = 20, 16
    vectors = random_unit(rng, n, dim)
    (tmp_path / "src.txt").write_text("".join(f"phrase {i}\n" for i in range(n)))
    (tmp_path / "tgt.txt").write_text("".join(f"phrase {i}\n" for i in range(n)))
    raw = {
        "source": {"uri": str(tmp_path / "src.txt"), "format": "text", "lang": "fra"},
        "target": {"uri": str(tmp_path / "tgt.txt"), "format": "text", "lang": "eng"},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local", "block_size": 16},
    }
    raw["source"]["embeddings_uri"] = write_embeddings(
        tmp_path / "emb_src", [f"src.txt#{i}" for i in range(n)], vectors
    )
    raw["target"]["embeddings_uri"] = write_embeddings(
        tmp_path / "emb_tgt", [f"tgt.txt#{i}" for i in range(n)], vectors
    )
    cfg = parse_config(MineConfig, raw)
    first = run_mine(cfg)

    def unfinish() -> None:  # as if killed after its last pair, before its summary
        for done in ("_SUCCESS", "summary.json"):
            (tmp_path / "out" / done).unlink()

    unfinish()
    for touched in (tmp_path / "src.txt", *Path(raw["target"]["embeddings_uri"]).rglob("*.parquet")):
        stat = touched.stat()
        os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = run_mine(cfg)
    assert again["resumed"] is True and again["pairs_kept"] == first["pairs_kept"]
    unfinish()
    (tmp_path / "src.txt").write_text("".join(f"phrase {(i + 1) % n}\n" for i in range(n)))  # same size
    with pytest.raises(OutputExistsError, match=r"source\.listing: 1 files -> 1 files \(changed src\.txt \(modified"):
        run_mine(cfg)


def test_a_resume_across_a_change_of_the_codes_rules_is_refused_naming_the_rule(tmp_path, monkeypatch):
    """The ratio margin's rule changed in e7a1871 (LASER's cos / mean became max(cos, 0) / max(mean, 1e-4)) with no
    configuration key changing: a run started by the older code and resumed by the newer kept its recorded stages
    (k-NN lists, the pairs of the language pairs already selected) and selected the rest under the new rule, a mix
    of both. The run now records the code's rules (resume.mine_rules: each rule's version and constants), and a
    resume under other rules is refused naming each rule: a run recorded before rules were (all absent), and a
    changed rule constant."""
    from pipeline.bitext import margin

    rng = np.random.default_rng(8)
    n, dim = 12, 8
    vectors = random_unit(rng, n, dim)
    (tmp_path / "src.txt").write_text("".join(f"phrase {i}\n" for i in range(n)))
    (tmp_path / "tgt.txt").write_text("".join(f"phrase {i}\n" for i in range(n)))
    raw = {
        "source": {"uri": str(tmp_path / "src.txt"), "format": "text", "lang": "fra"},
        "target": {"uri": str(tmp_path / "tgt.txt"), "format": "text", "lang": "eng"},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local", "block_size": 16},
    }
    raw["source"]["embeddings_uri"] = write_embeddings(tmp_path / "es", [f"src.txt#{i}" for i in range(n)], vectors)
    raw["target"]["embeddings_uri"] = write_embeddings(tmp_path / "et", [f"tgt.txt#{i}" for i in range(n)], vectors)
    cfg = parse_config(MineConfig, raw)
    first = run_mine(cfg)
    for done in ("_SUCCESS", "summary.json"):  # as if killed after its last pair, before its summary
        (tmp_path / "out" / done).unlink()
    recorded_at = tmp_path / "out" / "_run" / "fingerprint.json"
    recorded = json.loads(recorded_at.read_text())
    assert recorded["fingerprint"]["rules.margin"].startswith("2: ratio max(cos, 0) / max((d(x) + d(y)) / 2, 0.0001)")

    monkeypatch.setattr(margin, "RATIO_FLOOR", 1e-3)  # a rule's constant changed by a later version
    with pytest.raises(
        OutputExistsError, match=r"another version of rayembed.*rules\.margin: 2: ratio .*0\.0001.* -> "
    ):
        run_mine(cfg)
    monkeypatch.undo()

    older = {k: v for k, v in recorded["fingerprint"].items() if not k.startswith("rules.")}  # recorded before rules
    recorded_at.write_text(json.dumps({**recorded, "fingerprint": older}))
    with pytest.raises(OutputExistsError) as refused:
        run_mine(cfg)
    message = str(refused.value)
    assert "rules.margin: (absent) -> 2: ratio" in message and "rules.knn: (absent) -> 2: " in message, message
    assert "set output.overwrite=true to start over with this version" in message
    recorded_at.write_text(json.dumps(recorded))
    assert run_mine(cfg)["pairs_kept"] == first["pairs_kept"]  # the same rules: resumed


def test_a_resume_across_a_change_of_a_rule_the_run_does_not_use_goes_on(tmp_path):
    """824ef6c added rules.languages (the lang_column matching): an unfinished run recorded before it, of a config
    with no lang_column, was refused 'rules.languages: (absent) -> 1: ...' and had to start over, though the rule
    decides nothing without a lang_column; so with rules.center and rules.dedup changed and center / dedup off. A
    rule the run uses still refuses (rules.knn here; with a lang_column, rules.languages)."""
    from pipeline.bitext import resume

    rng = np.random.default_rng(9)
    n = 10
    vectors = random_unit(rng, n, 8)
    (tmp_path / "src.txt").write_text("".join(f"phrase {i}\n" for i in range(n)))
    (tmp_path / "tgt.txt").write_text("".join(f"phrase {i}\n" for i in range(n)))
    raw = {
        "source": {"uri": str(tmp_path / "src.txt"), "format": "text", "lang": "fra"},
        "target": {"uri": str(tmp_path / "tgt.txt"), "format": "text", "lang": "eng"},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local", "block_size": 16, "dedup": False},
    }
    raw["source"]["embeddings_uri"] = write_embeddings(tmp_path / "es", [f"src.txt#{i}" for i in range(n)], vectors)
    raw["target"]["embeddings_uri"] = write_embeddings(tmp_path / "et", [f"tgt.txt#{i}" for i in range(n)], vectors)
    cfg = parse_config(MineConfig, raw)
    first = run_mine(cfg)
    recorded_at = tmp_path / "out" / "_run" / "fingerprint.json"
    recorded = json.loads(recorded_at.read_text())

    def unfinished(**rules):
        for done in ("_SUCCESS", "summary.json"):  # as if killed after its last pair, before its summary
            (tmp_path / "out" / done).unlink(missing_ok=True)
        fingerprint = {k: v for k, v in recorded["fingerprint"].items() if k != "rules.languages"}
        fingerprint |= {f"rules.{name}": text for name, text in rules.items()}
        recorded_at.write_text(json.dumps({**recorded, "fingerprint": fingerprint}))

    unfinished(center="1: an older centring", dedup="0: an older dedup")  # recorded before rules.languages
    again = run_mine(cfg)
    assert (again["resumed"], again["pairs_kept"]) == (True, first["pairs_kept"])
    unfinished(knn="1: an older neighbour search")
    with pytest.raises(OutputExistsError, match=r"rules\.knn: 1: an older neighbour search -> 2: "):
        run_mine(cfg)
    assert "rules.languages" not in str(pytest.raises(OutputExistsError, run_mine, cfg).value)
    with_lang = parse_config(MineConfig, {**raw, "source": {**raw["source"], "format": "jsonl", "lang_column": "l"}})
    older = {"fingerprint": {k: v for k, v in recorded["fingerprint"].items() if k != "rules.languages"}}
    assert "languages" in resume.applied_mine_rules(with_lang, older)  # compared: refused as (absent)
    assert "languages" not in resume.applied_mine_rules(cfg, older)


def test_an_embeddings_file_of_another_tool_is_refused_naming_the_columns_to_give(tmp_path):
    """Vectors written by another tool (sentence-transformers' or TEI's, saved as a 'vector' column) were refused
    with 'embedding column 'embedding' not found ... (set input.embedding_column)', a key the mining config does not
    have (its sides refuse it as unknown). The refusal now names the file, its columns, the layout the side needs and
    what to do."""
    n = 6
    (tmp_path / "src.txt").write_text("".join(f"phrase {i}\n" for i in range(n)))
    (tmp_path / "tgt.txt").write_text("".join(f"phrase {i}\n" for i in range(n)))
    vectors = random_unit(np.random.default_rng(11), n, 8)
    (tmp_path / "es").mkdir()
    pq.write_table(
        pa.table({"doc": [f"src.txt#{i}" for i in range(n)], "vector": pa.array(vectors.tolist())}),
        tmp_path / "es" / "part-0.parquet",
    )
    raw = {
        "source": {"uri": str(tmp_path / "src.txt"), "format": "text", "lang": "fra"},
        "target": {"uri": str(tmp_path / "tgt.txt"), "format": "text", "lang": "eng"},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local"},
    }
    raw["source"]["embeddings_uri"] = str(tmp_path / "es")
    raw["target"]["embeddings_uri"] = write_embeddings(tmp_path / "et", [f"tgt.txt#{i}" for i in range(n)], vectors)
    with pytest.raises(SideError) as refused:
        run_mine(parse_config(MineConfig, raw))
    message = str(refused.value)
    assert f"{tmp_path}/es/part-0.parquet: no 'id' or 'embedding' column (columns: ['doc', 'vector'])" in message, (
        message
    )
    assert "('vector' looks like the vectors)" in message and "input.embedding_column" not in message
    assert "Set source.embeddings_id_column / source.embedding_column to the file's columns" in message
    # the side names the columns: a LanceDB export (vector) with its own id column is mined as it is
    raw["source"] |= {"embedding_column": "vector", "embeddings_id_column": "doc"}
    raw["output"] = {"uri": str(tmp_path / "out2")}
    summary = run_mine(parse_config(MineConfig, raw))
    assert summary["pairs_kept"] == n and summary["source"]["rows_mined"] == n
    raw["target"] |= {"embedding_column": "vector"}
    del raw["target"]["embeddings_uri"]
    with pytest.raises(ConfigError, match="embedding_column name columns of embeddings_uri files; without"):
        parse_config(MineConfig, raw)


def test_another_tools_embeddings_with_a_repeated_or_missing_id_are_refused_naming_its_id_column(tmp_path):
    """With source.embeddings_id_column: doc, an id held in two of the side's embeddings files crashed with
    KeyError 'Field "id" does not exist' (the repeat was read back by the embed job's 'id'); now the repeat is
    refused naming the column 'doc', both files and rows. An id the files lack names embeddings_id_column too."""
    n = 4
    (tmp_path / "src.txt").write_text("".join(f"phrase {i}\n" for i in range(n)))
    (tmp_path / "tgt.txt").write_text("".join(f"phrase {i}\n" for i in range(n)))
    vectors = random_unit(np.random.default_rng(12), n, 8)
    es = tmp_path / "es"
    es.mkdir()
    for name, rows in (("a", range(n)), ("b", [0])):  # src.txt#0 in both files
        table = pa.table({"doc": [f"src.txt#{i}" for i in rows], "vector": pa.array(vectors[list(rows)].tolist())})
        pq.write_table(table, es / f"part-{name}.parquet")
    raw = {
        "source": {
            "uri": str(tmp_path / "src.txt"),
            "format": "text",
            "lang": "fra",
            "embeddings_uri": str(es),
            "embedding_column": "vector",
            "embeddings_id_column": "doc",
        },
        "target": {"uri": str(tmp_path / "tgt.txt"), "format": "text", "lang": "eng"},
        "output": {"uri": str(tmp_path / "out")},
        "mining": {"backend": "local"},
    }
    raw["target"]["embeddings_uri"] = write_embeddings(tmp_path / "et", [f"tgt.txt#{i}" for i in range(n)], vectors)
    with pytest.raises(UserError) as refused:
        run_mine(parse_config(MineConfig, raw))
    message = str(refused.value)
    assert f"source.embeddings_uri {es}: 1 rows repeat an earlier id (source.embeddings_id_column 'doc')" in message
    assert "id 'src.txt#0' at part-b.parquet row 0 repeats part-a.parquet row 0" in message, message
    (es / "part-b.parquet").unlink()  # and one id the files lack
    pq.write_table(pq.read_table(es / "part-a.parquet").slice(1), es / "part-a.parquet")
    raw["output"] = {"uri": str(tmp_path / "out2")}
    with pytest.raises(SideError, match=r"1 of 4 rows have no vector .* source.embeddings_id_column 'doc'"):
        run_mine(parse_config(MineConfig, raw))


def test_a_run_recorded_before_the_embeddings_column_keys_resumes(tmp_path):
    """source.embedding_column / embeddings_id_column at their defaults are left out of the fingerprint, so an
    unfinished run recorded before the keys existed is not refused as another configuration; a set one counts."""
    from pipeline.bitext import resume

    (tmp_path / "s.txt").write_text("a\n")
    (tmp_path / "t.txt").write_text("b\n")
    emb = write_embeddings(tmp_path / "es", ["s.txt#0"], np.ones((1, 4), np.float32))
    raw = {
        "source": {"uri": str(tmp_path / "s.txt"), "format": "text", "lang": "fra", "embeddings_uri": emb},
        "target": {"uri": str(tmp_path / "t.txt"), "format": "text", "lang": "eng"},
        "output": {"uri": str(tmp_path / "out")},
    }
    fields = resume.mine_fingerprint(parse_config(MineConfig, raw))
    assert "source.lang" in fields and not any("embedding_column" in k or "embeddings_id_column" in k for k in fields)
    raw["source"]["embedding_column"] = "vector"
    assert resume.mine_fingerprint(parse_config(MineConfig, raw))["source.embedding_column"] == "vector"
