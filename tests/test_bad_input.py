"""Bad input: every case gets a clear error (naming the file, column or key) or a reject row with its reason.

Extends tests/test_embed_job.py, which already covers null/empty/whitespace/int/list text, invalid UTF-8 and
non-JSON lines in JSONL, a missing text column and a non-Parquet file. Here: duplicate ids within and across
files (both policies), NUL and control characters, invalid UTF-8 in text files, non-string Parquet columns,
corrupt files (truncated or garbled Parquet, cut gzip: one reject each), a missing id column or key, empty input
listings, bad configs on the command line, and model directories that cannot serve. Each run checks the count identity: rows in = embedded + rejected.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE
from robustness_helpers import check_counts, make_config, read_run, record_figure

from jobs.embed import main as embed_main
from pipeline.duplicate_ids import DuplicateIdError
from pipeline.embed_job import run_embed
from pipeline.model_loading import ModelLoadError
from pipeline.reading import InputFileError
from pipeline.run_summary import human_summary

pytestmark = pytest.mark.slow
RECORDS = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
NO_GUARD = {"max_reject_fraction": 1.0}  # corpora made mostly of bad rows on purpose


def jsonl(rows: list) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def reasons_by_id(rejects: pa.Table) -> dict[str, str]:
    return dict(zip(rejects.column("id").to_pylist(), rejects.column("reason").to_pylist()))


def reasons_by_row(rejects: pa.Table) -> dict[tuple[str, int], str]:
    return {(r["source"], r["row"]): r["reason"] for r in rejects.to_pylist()}


def test_jsonl_text_and_parquet_rows_that_cannot_be_embedded_are_rejects_with_their_reasons(
    ray_session, tiny_models, tmp_path
):
    """One run over a folder of JSONL, text and Parquet files (input.format from each file's extension), each kind
    with its bad rows; rows in = embedded + rejected, every reject with its reason. (It was three runs, one per kind;
    the reject-rate guard is off for the folder: the text and Parquet files are mostly bad rows by design.)

    JSONL: keep_first across two files; NUL/control characters; ids that look like paths stay data, never file
    names. Text: invalid UTF-8 (with a hint when it looks like a single-byte encoding), NUL, control-only and
    whitespace-only lines, a Windows line end. Parquet: null, empty, whitespace-only, NUL and control-only strings,
    an int and a list text column.

    Beside them, a directory nobody cleaned, as the odd-input tryout found it (it was
    test_an_uncleaned_directory_overnight, a run of its own): every file is read or every odd row is a reject with its
    reason, the output opens in any reader, and the ids follow one rule across files. Each of these used to fail the
    job, lose rows unseen, embed repeats or write an output readers cannot open."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # JSONL
    good = [{"id": r["id"], "text": r["text"]} for r in RECORDS[:24]]
    a = [
        *good[:12],
        {"id": good[3]["id"], "text": "a later copy in the same file"},  # duplicate id (first at a.jsonl row 3)
        {"id": "nul-inside", "text": "before\u0000after"},  # kept verbatim: the tokenizer sees the NUL
        {"id": "controls-inside", "text": "bell\u0007 tab\t form\u000c text"},
        {"id": "controls-only", "text": "\u0000\u0001\u0007\u001b"},  # nothing to embed
        b'{"id": "raw-nul", "text": "a\x00b"}',  # a raw control byte inside a JSON string is invalid JSON
        {"id": 7, "text": "an integer id becomes the string '7'"},
        {"id": "../../escaped", "text": "a path-like id"},
        {"id": "/tmp/absolute", "text": "an absolute-path id"},
    ]
    b = [
        {"id": good[0]["id"], "text": "a copy in the second file"},  # duplicate id (first at a.jsonl row 0)
        {"id": "controls-only", "text": "the first embeddable row of this id wins"},
        *good[12:],
        {"id": "7", "text": "same id as the integer 7 in a.jsonl"},
    ]
    (corpus / "a.jsonl").write_bytes(jsonl(a))
    (corpus / "b.jsonl").write_bytes(jsonl(b))
    # text (derived ids: file#row)
    lines = [
        b"a plain line",
        b"caf\xc3\x28 invalid UTF-8",  # reject: invalid UTF-8 at byte 3, 'Ã' in Latin-1 (a guess, said as one)
        b"nul\x00inside the line",  # kept
        b"\x01\x02\x1b",  # reject: only control characters
        b"   \t",  # reject: whitespace only
        b"windows line ending\r",  # the \r is stripped
        b"\xff\xfe",  # reject: invalid UTF-8 at byte 0
    ]
    (corpus / "t.txt").write_bytes(b"\n".join(lines) + b"\n")
    # Parquet
    strings = ["fine text", None, "", " \n ", "nul\x00inside", "\x00\x00"]
    pq.write_table(pa.table({"id": [f"s{i}" for i in range(6)], "text": strings}), corpus / "strings.parquet")
    pq.write_table(pa.table({"id": ["i0", "i1"], "text": pa.array([1, 2], pa.int64())}), corpus / "ints.parquet")
    lists = pa.array([["a", "b"], None], pa.list_(pa.string()))
    pq.write_table(pa.table({"id": ["l0", "l1"], "text": lists}), corpus / "lists.parquet")

    # an uncleaned directory (its own records and ids: none of them repeats one of the files above)
    crawl = [{"id": r["id"], "text": r["text"]} for r in RECORDS[100:112]]
    (corpus / "lang=fr").mkdir()
    (corpus / "_temporary" / "0").mkdir(parents=True)
    meta = {"_source": {"site": "x"}, "_row": "r", "meta": {}}
    mac = [json.dumps({**g, **meta}).encode() for g in crawl[:4]]
    mac += [
        b'{"id": "deep", "text": "deep", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"id": "huge", "text": "huge number", "n": ' + b"9" * 5000 + b"}",
        json.dumps([{**g, **meta} for g in crawl[4:6]]).encode(),  # one line, an array of records
        json.dumps({"id": crawl[0]["id"], "text": "a repeat", **meta}).encode(),
        json.dumps({"id": ["not", "an", "id"], "text": "list id", **meta}).encode(),
    ]
    (corpus / "old-mac.jsonl").write_bytes(b"\r".join(mac) + b"\r")  # lone CR line ends
    (corpus / "empty.jsonl").write_bytes(b"")
    (corpus / "_temporary" / "0" / "part-0.jsonl").write_bytes(jsonl([{"id": "tmp", "text": "never read"}]))
    (corpus / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    title = pa.array([b"fine", b"bad \xff"], pa.binary()).view(pa.string())
    floats = pa.array([17.0, 18.0])  # pandas writes an int column with a gap as float64
    table = pa.table({"id": floats, "text": [g["text"] for g in crawl[6:8]], "title": title})
    pq.write_table(table, corpus / "p.parquet")
    frame = pa.table({"id": pa.array([19, 20], pa.int32()), "text": [g["text"] for g in crawl[8:10]]})
    pq.write_table(frame, corpus / "lang=fr" / "q.parquet", compression="zstd")  # no kept columns at all
    pq.ParquetWriter(corpus / "zero-row-groups.parquet", frame.schema).close()
    (corpus / "part-00001.parquet").write_bytes(b"")  # a writer that crashed before its first byte

    out = tmp_path / "deep" / "emb"
    keep = ["_source", "_row", "meta", "title"]
    sections = {"input": {"id_column": "id", **NO_GUARD}, "output": {"keep_columns": keep}}
    cfg = make_config(tiny_models["gemma3"], corpus, out, None, **sections)
    summary = run_embed(cfg)
    rows_in = len(a) + len(b) + len(lines) + 10 + (10 + 2 + 2)
    emitted, rejects = check_counts(summary, str(out), rows_in, case="jsonl, text and parquet: bad rows")
    ids = set(emitted.column("id").to_pylist())
    by_id = reasons_by_id(rejects)

    reasons = reasons_by_row(rejects)
    dup_reasons = sorted(r for (f, _), r in reasons.items() if f in ("a.jsonl", "b.jsonl") and r.startswith("duplic"))
    assert dup_reasons == sorted(f"duplicate id (first at a.jsonl row {r})" for r in (0, 3, 17))
    assert reasons[("a.jsonl", 15)] == "text has only control characters"
    assert reasons[("a.jsonl", 16)].startswith("line is not valid JSON (Invalid control character")
    assert reasons[("b.jsonl", 0)] == "duplicate id (first at a.jsonl row 0)"
    assert reasons[("b.jsonl", len(b) - 1)] == "duplicate id (first at a.jsonl row 17)"
    assert {"nul-inside", "controls-inside", "controls-only", "7", "../../escaped", "/tmp/absolute"} <= ids
    assert {g["id"] for g in good} <= ids
    assert sum(source in ("a.jsonl", "b.jsonl") for source, _ in reasons) == 5

    assert {k: v for k, v in by_id.items() if k and k.startswith("t.txt#")} == {
        "t.txt#1": "invalid UTF-8 at byte 3 (0xC3, 'Ã' in Latin-1/cp1252): the text looks like a single-byte encoding, "
        "not UTF-8; re-encode the file as UTF-8 (e.g. iconv -f CP1252 -t UTF-8, or the encoding of its language)",
        "t.txt#3": "text has only control characters",
        "t.txt#4": "empty or whitespace-only text",
        "t.txt#6": "invalid UTF-8 at byte 0",
    }
    assert sorted(i for i in ids if i.startswith("t.txt#")) == ["t.txt#0", "t.txt#2", "t.txt#5"]

    assert {k: v for k, v in by_id.items() if k and k[0] in "sil" and k[1:].isdigit()} == {
        "s1": "null text",
        "s2": "empty or whitespace-only text",
        "s3": "empty or whitespace-only text",
        "s5": "text has only control characters",
        "i0": "text is int, not a string",
        "i1": "text is int, not a string",
        "l0": "text is list, not a string",
        "l1": "null text",
    }
    assert sorted(i for i in ids if i[0] in "sil" and i[1:].isdigit()) == ["s0", "s4"]

    assert summary["status"] == "ok"
    assert {k: v for k, v in reasons.items() if k[0] in ("old-mac.jsonl", "p.parquet", "lang=fr/q.parquet")} == {
        ("old-mac.jsonl", 4): "JSON nested too deeply to parse (over 1000 levels)",
        ("old-mac.jsonl", 5): "JSON value cannot be read: Exceeds the limit (4300 digits) for integer string "
        "conversion: value has 5000 digits",
        ("old-mac.jsonl", 8): "duplicate id (first at old-mac.jsonl row 0)",
        ("old-mac.jsonl", 9): 'id is list ["not", "an", "id"], not a string or a number',
        ("p.parquet", 1): "invalid UTF-8 in kept column 'title'",
    }
    for part in out.glob("part-*.parquet"):
        pq.read_table(part).validate(full=True)
    table = pq.read_table(out)  # the directory as any reader takes it: hidden files and _rejects/ skipped
    rows_by_id = {r["id"]: r for r in table.drop(["embedding"]).to_pylist()}
    crawled = [g["id"] for g in crawl[:6]] + ["17", "19", "20"]
    assert sorted(i for i in rows_by_id if i in set(crawled) or i in ("deep", "huge", "tmp", "18")) == sorted(crawled)
    assert rows_by_id[crawl[5]["id"]]["_source"] == {"site": "x"} and rows_by_id[crawl[5]["id"]]["_row"] == "r"
    assert (
        rows_by_id[crawl[5]["id"]]["meta"] == "{}"
        and rows_by_id["19"]["meta"] is None
        and rows_by_id["17"]["title"] == "fine"
    )
    assert table.schema.field("embedding").type.list_size > 0

    # nothing was written outside the output prefix, whatever the ids look like
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {"corpus", "deep"}
    assert {p.name.split("-")[0] for p in out.iterdir() if p.is_file()} == {"part", "_summary.json", "_SUCCESS"}
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"_rejects", "_run"}


def test_duplicate_ids_error_policy_names_both_rows(ray_session, tiny_models, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_bytes(jsonl([{"id": "x", "text": "one"}, {"id": "y", "text": "two"}]))
    (corpus / "b.jsonl").write_bytes(jsonl([{"id": "z", "text": "three"}, {"id": "x", "text": "again"}]))
    out = tmp_path / "emb"
    cfg = make_config(tiny_models["qwen3"], corpus, out, "jsonl", input={"id_column": "id", "duplicate_ids": "error"})
    with pytest.raises(DuplicateIdError, match=r"1 rows repeat an earlier id: b.jsonl row 1 repeats a.jsonl row 0"):
        run_embed(cfg)
    assert not (out / "_summary.json").exists()
    record_figure("duplicate ids, policy error", error="DuplicateIdError before embedding")


def truncated_parquet() -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["one", "two"]}), buf)
    return buf.getvalue()[: len(buf.getvalue()) // 2]  # footer gone, as after an interrupted copy


@pytest.mark.parametrize(
    "name, data, fmt, message",
    [
        (
            "noid.parquet",
            None,
            "parquet",
            r"noid.parquet: column\(s\) \['id'\] not found; the file has columns \['key', 'text'\]",
        ),
        (
            "noid.jsonl",
            jsonl([{"key": "a", "text": "t"}]),
            "jsonl",
            r"noid.jsonl: no record has the key 'id'; keys found: \['key', 'text'\]",
        ),
    ],
)
def test_unreadable_files_fail_naming_the_file(ray_session, tiny_models, tmp_path, name, data, fmt, message):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    if data is None:
        pq.write_table(pa.table({"key": ["a"], "text": ["t"]}), corpus / name)
    else:
        (corpus / name).write_bytes(data)
    out = tmp_path / "emb"
    with pytest.raises(Exception, match=message) as err:
        run_embed(make_config(tiny_models["qwen3"], corpus, out, fmt, input={"id_column": "id"}))
    assert isinstance(err.value, InputFileError)  # Ray's task error keeps the type users catch
    assert not (out / "_summary.json").exists()  # a failed job is never marked complete
    record_figure(f"unreadable {name}", error=next(line for line in str(err.value).splitlines() if name in line))


def corrupt_files() -> dict[str, bytes]:
    """Files an interrupted copy or a stray writer leaves, by what is wrong with them."""
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ["p0", "p1"], "text": ["one", "two"]}), buf)
    data = buf.getvalue()
    return {
        "cut.parquet": truncated_parquet(),
        "garbled.parquet": data[:4] + b"\x00" * (len(data) - 12) + data[-8:],
        "named.parquet": jsonl([{"id": "n", "text": "JSON Lines named .parquet"}]),
        "zero.parquet": b"",  # no rows: no reject
        "cut.jsonl.gz": gzip.compress(jsonl([{"id": f"z{i}", "text": "t" * 50} for i in range(200)]))[:300],
    }


@pytest.mark.parametrize("where", ["local", "s3"])
def test_corrupt_files_anywhere_in_the_listing_are_rejects_and_the_rest_is_embedded(
    ray_session, tiny_models, tmp_path, s3_bucket, s3_server, where
):
    """A corrupt file failed the job when its read task reached it, maybe hours into a run, with the units before it
    committed: the rerun failed at the same file, and was refused (input changed) once the file was copied again.
    Now each corrupt file, first, in the middle or last in the listing, is one reject row naming it and what to do,
    the other files are embedded and the job succeeds; the pre-passes (ids, kept types) let it through too."""
    client, bucket = s3_bucket
    files = {}
    for k, (name, data) in enumerate(corrupt_files().items()):
        files[f"{k}a-{name}"] = data
        files[f"{k}b-good.jsonl"] = jsonl(
            [{"id": f"{k}-{r}", "text": f"good row {r} of {k}", "m": k} for r in range(3)]
        )
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, data in files.items():
        if where == "local":
            (corpus / name).write_bytes(data)
        else:
            client.put_object(Bucket=bucket, Key=f"corpus/{name}", Body=data)
    uri, out = (corpus, tmp_path / "emb") if where == "local" else (f"s3://{bucket}/corpus", f"s3://{bucket}/emb")
    endpoint = s3_server if where == "s3" else None
    cfg = make_config(
        tiny_models["qwen3"], uri, out, None, endpoint, input={"id_column": "id"}, output={"keep_columns": ["m"]}
    )
    summary = run_embed(cfg)
    good, rejects = check_counts(summary, str(out), 15 + 4, endpoint, f"corrupt files ({where})")
    assert sorted(good.column("id").to_pylist()) == sorted(f"{k}-{r}" for k in range(5) for r in range(3))
    assert summary["status"] == "ok" and summary["files_rejected"] == 4
    assert "19 rows in: 15 embedded, 4 rejected (of them 4 unreadable files, one row each)" in human_summary(summary)
    by_source = {r["source"]: r["reason"] for r in rejects.to_pylist()}
    assert sorted(by_source) == ["0a-cut.parquet", "1a-garbled.parquet", "2a-named.parquet", "4a-cut.jsonl.gz"]
    for name, reason in by_source.items():
        assert reason.startswith(
            (
                f"unreadable file: cannot read {uri}/{name} as ",
                f"unreadable file: {uri}/{name} is read as parquet but looks like JSON text",
            )
        ), reason
        assert "named" in name or reason.endswith("embed it on its own (input.uri: the file, another output.uri)")


def test_empty_input_listings_name_the_uri(tiny_models, tmp_path, s3_bucket, s3_server):
    _, bucket = s3_bucket
    (tmp_path / "empty").mkdir()
    (tmp_path / "hidden").mkdir()
    (tmp_path / "hidden" / "_SUCCESS").write_text("")  # hidden files are never input
    uris = [
        str(tmp_path / "empty"),
        str(tmp_path / "hidden"),
        str(tmp_path / "missing"),
        str(tmp_path / "empty" / "*.jsonl"),
        f"s3://{bucket}/nothing-here",
    ]
    for uri in uris:
        cfg = make_config(tiny_models["qwen3"], uri, tmp_path / "emb", "jsonl", s3_server)
        with pytest.raises(FileNotFoundError, match=re.escape(f"no input files found at {uri}")):
            run_embed(cfg)
    record_figure("empty input listings", cases=len(uris), error="FileNotFoundError naming the URI")


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.max_tokenz=5", "model.max_tokenz: Extra inputs are not permitted"),
        ("input.duplicate_ids=drop", "input.duplicate_ids: Input should be 'error', 'keep_first' or 'unchecked'"),
        ("batching.max_batch_size=many", "batching.max_batch_size: Input should be a valid integer"),
        ("model.max_tokens=0", "model.max_tokens: Input should be greater than 0"),
        ("compute.max_restarts=-1", "compute.max_restarts: Input should be greater than or equal to 0"),
    ],
)
def test_bad_config_exits_2_naming_the_key(tmp_path, capsys, override, message):
    path = tmp_path / "embed.yaml"
    path.write_text(f"input: {{uri: '{tmp_path / 'in'}', format: jsonl}}\noutput: {{uri: '{tmp_path / 'emb'}'}}\n")
    assert embed_main(["--config", str(path), "--set", override]) == 2
    assert message in capsys.readouterr().err


def model_copy(tmp_path, source, without_weights: bool):
    target = tmp_path / "model"
    shutil.copytree(source, target)
    if without_weights:
        for f in target.glob("*.safetensors"):
            f.unlink()
    return target


@pytest.mark.parametrize(
    "pooling_file, configured, message",
    [
        (
            None,
            "mean",
            r"has no \*.safetensors weights \(pickle .bin weights load only with model.allow_pickle_weights\)",
        ),
        (
            {"pooling_mode_mean_tokens": True},
            "last_token",
            r"trained with pooling_mode_mean_tokens pooling .* set model.pooling: mean",
        ),
        (
            {"pooling_mode_max_tokens": True},
            "mean",
            r"trained with pooling_mode_max_tokens pooling .* model.pooling: max",
        ),
        (  # sentence-transformers concatenates several modes into one wider vector
            {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True},
            "mean",
            r"declares pooling \['pooling_mode_mean_tokens', 'pooling_mode_max_tokens'\] .* cannot serve",
        ),
    ],
)
def test_model_that_cannot_serve_fails_before_ray(tiny_models, tmp_path, pooling_file, configured, message):
    """Checked on the driver: without it every embedding actor would fail its constructor, restart after restart."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(jsonl([{"text": "hello"}]))
    model = model_copy(tmp_path, tiny_models["bert"], without_weights=pooling_file is None)
    if pooling_file is not None:
        (model / "1_Pooling").mkdir()
        (model / "1_Pooling" / "config.json").write_text(json.dumps(pooling_file))
    out = tmp_path / "emb"
    with pytest.raises(ModelLoadError, match=message):
        run_embed(make_config(model, corpus, out, "jsonl", model={"pooling": configured}))
    assert not out.exists()


@pytest.mark.parametrize(
    "name, content",
    [
        ("tokenizer.json", '{"version": "1.0", "trunc'),  # cut short: JSONDecodeError
        ("tokenizer.json", '{"version": "1.0"}'),  # valid JSON, not a tokenizer: KeyError
        ("tokenizer_config.json", "{"),
        ("config.json", '{"hidden'),
    ],
)
def test_broken_model_files_fail_naming_the_model(tiny_models, tmp_path, name, content):
    """A model directory whose tokenizer or config files do not load: one ModelLoadError naming the model, not the
    loader's traceback (the driver resolves the model while Ray starts, pipeline.model_loading)."""
    from pipeline.config import ModelConfig
    from pipeline.model_loading import resolve_model_settings

    model = model_copy(tmp_path, tiny_models["bert"], without_weights=False)
    (model / name).write_text(content)
    with pytest.raises(ModelLoadError, match=rf"cannot load the tokenizer of model {model}: \w+"):
        resolve_model_settings(ModelConfig(name_or_path=str(model)))


# --- issue 15: real corpora never kill a run ------------------------------------------------------------------------


def xlmr_reference(model_dir, texts: list[str], max_tokens: int) -> list:
    """One text at a time, unpadded, the plain forward pass: mean pooling + L2 norm (the vectors to match)."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    out = []
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([tokenizer(text, truncation=True, max_length=max_tokens)["input_ids"]])
            v = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0].mean(0)
            out.append((v / v.norm()).numpy().astype(np.float32))
    return out


def test_odd_rows_and_files_become_rejects_while_the_rest_embeds(ray_session, tiny_models, tmp_path):
    """Many kinds in one small run: BOMs (plain, inside gzip, UTF-16), lone surrogates in text/id/kept column,
    invisible-only text, kept-column types that differ between files, a directory with brackets, input.format
    inferred per file, a file whose every row is undecodable, a document longer than the model's 513 positions,
    an XLM-R encoder with left padding. Vectors match a one-text-at-a-time reference."""
    import gzip as gz

    import numpy as np

    good = [{"id": r["id"], "text": r["text"]} for r in RECORDS[:30]]
    long_doc = " ".join(r["text"] for r in RECORDS[30:90])  # thousands of tokens: past max_position_embeddings
    a = [
        *({**g, "year": 2021} for g in good[:20]),
        {"id": "bad-1", "text": "cut in the middle of an emoji \ud83d here.", "year": 2020},
        {"id": "bad-\udc00", "text": "fine text, broken id"},
        {"id": "kept-bad", "text": "fine text, broken kept column", "year": "\ud800"},
        {"id": "zwsp", "text": "\u200b\u200b\u2060"},
        {"id": "marks", "text": "\u200e\u200f\u00ad\ufeff"},
        {"id": "long", "text": long_doc},
    ]
    b = [{**g, "year": "2021" if i % 2 else "unknown"} for i, g in enumerate(good[20:])]
    corpus = tmp_path / "export[2024-11]"
    corpus.mkdir()
    a_bytes = b"\xef\xbb\xbf" + b"".join(json.dumps(r).encode() + b"\r\n" for r in a)
    (corpus / "a.jsonl").write_bytes(a_bytes)
    (corpus / "b.jsonl.gz").write_bytes(gz.compress(b"\xef\xbb\xbf" + jsonl(b)))
    text_lines = ["une ligne de texte", "zweite Zeile", "третья строка"]
    (corpus / "c.txt").write_bytes("\ufeff".encode("utf-16-le") + "\r\n".join(text_lines).encode("utf-16-le"))
    (corpus / "d.jsonl").write_bytes(b'{"id": "u1", "text": "\xff"}\n{"id": "u2", "text": "\xc3("}\n')
    out = tmp_path / "emb"
    cfg = make_config(
        tiny_models["xlmr"],
        corpus,
        out,
        None,
        input={"id_column": "id"},
        output={"keep_columns": ["year"]},
        model={"pooling": "mean", "padding_side": "left", "max_tokens": 32768},  # cut to XLM-R's 513 positions
    )
    summary = run_embed(cfg)
    rows_in = len(a) + len(b) + len(text_lines) + 2
    emitted, rejects = check_counts(summary, str(out), rows_in, case="issue 15: odd rows and files")
    assert summary["status"] == "ok" and summary["max_tokens"] == 513
    by_row = reasons_by_row(rejects)
    assert [by_row.pop(("d.jsonl", row)) for row in (0, 1)] == ["invalid UTF-8 at byte 22"] * 2  # no good row at all
    assert {k: v for k, v in reasons_by_id(rejects).items() if k} == {
        "bad-1": "invalid Unicode in text: lone surrogate U+D83D at character 30",
        "bad-\\udc00": "invalid Unicode in id column 'id': lone surrogate U+DC00 at character 4",
        "kept-bad": "invalid Unicode in kept column 'year': lone surrogate U+D800 at character 0",
        "zwsp": "text has no visible characters (only invisible format characters such as zero-width spaces or marks)",
        "marks": "text has no visible characters (only invisible format characters such as zero-width spaces or marks)",
    }
    assert rejects.num_rows == 7
    meta = pq.read_schema(next(out.glob("part-*.parquet"))).metadata
    assert meta[b"rayembed.max_tokens"] == b"513" and b"rayembed.max_tokens_limits" in meta
    by_id = {r["id"]: r for r in emitted.to_pylist()}
    assert by_id[good[0]["id"]]["year"] == "2021" and by_id[good[21]["id"]]["year"] == '"2021"'
    assert by_id[good[20]["id"]]["year"] == '"unknown"' and by_id["c.txt#0"]["year"] is None
    texts = {**{g["id"]: g["text"] for g in good}, "long": long_doc}
    texts.update({f"c.txt#{i}": t for i, t in enumerate(text_lines)})
    ids = [good[0]["id"], good[1]["id"], good[25]["id"], "long", "c.txt#0", "c.txt#2"]
    want = xlmr_reference(tiny_models["xlmr"], [texts[i] for i in ids], 513)
    for key, vector in zip(ids, want):
        assert float(np.dot(by_id[key]["embedding"], vector)) >= 0.9999, key


def test_too_many_rejects_fail_the_job_after_writing_rejects_and_a_failed_summary(ray_session, tiny_models, tmp_path):
    """A corrupt file is one reject row (corrupt_files_anywhere above), so it counts against the guard: a corpus of
    one corrupt Parquet file and nothing else failed it '1 of 1 rows rejected' in a run of its own
    (test_embed_job); here it is one of the rejects."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = [{"id": "ok", "text": "one good row"}] + [{"id": f"n{i}", "text": None} for i in range(3)]
    (corpus / "mostly-bad.jsonl").write_bytes(jsonl(rows))
    (corpus / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    out = tmp_path / "emb"
    config = tmp_path / "embed.yaml"
    config.write_text(
        json.dumps(
            {
                "input": {"uri": str(corpus), "id_column": "id"},
                "output": {"uri": str(out)},
                "model": {"name_or_path": str(tiny_models["qwen3"]), "max_tokens": 64},
                "compute": {"max_restarts": 1, "max_task_retries": 1},
            }
        )
    )
    assert embed_main(["--config", str(config)]) == 1
    summary = json.loads((out / "_summary.json").read_text())
    assert (summary["status"], summary["rows_in"], summary["rows_embedded"], summary["rows_rejected"]) == (
        "failed",
        5,
        1,
        4,
    )
    assert summary["failure"].startswith("4 of 5 rows rejected (80.0%), above input.max_reject_fraction (0.5)")
    _, rejects = read_run(str(out))
    *nulls, unreadable = sorted(rejects.column("reason").to_pylist())
    assert nulls == ["null text"] * 3
    assert unreadable.startswith(f"unreadable file: cannot read {corpus}/broken.parquet as parquet"), unreadable
    # A failed run is no finished dataset: no _SUCCESS (it used to be written, and then the natural next step,
    # the same command with a raised fraction, was refused unless output.overwrite re-embedded everything).
    assert not (out / "_SUCCESS").exists()
    assert embed_main(["--config", str(config), "--set", "input.max_reject_fraction=0.8"]) == 0
    summary = json.loads((out / "_summary.json").read_text())
    assert (summary["status"], summary["rows_embedded"], summary["rows_reused"], summary["rows_rejected"]) == (
        "ok",
        0,
        1,
        4,
    )
    assert (out / "_SUCCESS").exists()


NO_ROW_SECTIONS = {
    "input": {"id_column": "id", "max_reject_fraction": 1.0},
    "model": {"long_inputs": "chunk", "chunk_overlap_tokens": 8},
    "output": {"token_columns": True, "dtype": "ubinary", "dimensions": 16},
}


@pytest.fixture(scope="module")
def stored_schema(ray_session, tiny_models, tmp_path_factory) -> pa.Schema:
    """The schema (with metadata) of a run of NO_ROW_SECTIONS keeping `lang` that stored a row: the reference of
    both no-row cases (one run for the two; without `lang` its schema is the one without keep_columns)."""
    full = tmp_path_factory.mktemp("full")
    (full / "a.jsonl").write_bytes(jsonl([{"id": "x", "text": "hello there", "lang": "en"}]))
    sections = {**NO_ROW_SECTIONS, "output": {**NO_ROW_SECTIONS["output"], "keep_columns": ["lang"]}}
    out = tmp_path_factory.mktemp("full-out") / "emb"
    run_embed(make_config(tiny_models["bert"], full, out, "jsonl", **sections))
    [stored] = out.glob("part-*.parquet")
    return pq.read_schema(stored)


@pytest.mark.parametrize("case", ["only empty files", "every row rejected"])
def test_a_run_that_stores_no_row_still_writes_the_output_schema(
    ray_session, tiny_models, tmp_path, case, stored_schema
):
    """A day whose files are empty, or whose rows are all rejected, ends as a dataset readers open: one Parquet file
    with the columns, types and metadata of a run that stored rows, and no row (DuckDB's read_parquet and Polars
    fail with 'no files' on a directory without one). Fails on code that wrote no file."""
    sections = {**NO_ROW_SECTIONS, "output": dict(NO_ROW_SECTIONS["output"])}
    want_schema = stored_schema
    if case == "every row rejected":  # an empty file has no column to keep (a kept column no file has is an error)
        sections["output"]["keep_columns"] = ["lang"]
    else:
        want_schema = stored_schema.remove(stored_schema.get_field_index("lang"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    if case == "only empty files":
        (corpus / "a.jsonl").write_bytes(b"")
        (corpus / "b.jsonl").write_bytes(b"\n\n")
    else:
        (corpus / "a.jsonl").write_bytes(jsonl([{"id": "y", "text": "  ", "lang": "fr"}, {"id": "z", "lang": "de"}]))
    out = tmp_path / "emb"
    summary = run_embed(make_config(tiny_models["bert"], corpus, out, "jsonl", **sections))
    rows_in = 0 if case == "only empty files" else 2
    check_counts(summary, str(out), rows_in, case=f"no row stored: {case}")
    assert summary["status"] == "ok" and summary["output_rows"] == 0 and summary["output_files"] == 1
    [empty] = out.glob("part-*.parquet")
    assert pq.read_table(empty).num_rows == 0
    assert pq.read_schema(empty).equals(want_schema, check_metadata=False)
    meta, want = pq.read_schema(empty).metadata, want_schema.metadata
    assert {k: meta[k] for k in (b"rayembed.dim", b"rayembed.precision", b"rayembed.model")} == {
        k: want[k] for k in (b"rayembed.dim", b"rayembed.precision", b"rayembed.model")
    }
    duckdb = pytest.importorskip("duckdb")
    assert duckdb.sql(f"select count(*) from read_parquet('{out}/*.parquet')").fetchall() == [(0,)]
