"""The embed job over big JSONL and text files split into byte ranges (pipeline.line_ranges): the dataset of an
unsplit run (ids, rows, rejects, vectors), a crash redoes only the ranges not committed, and a run an older rayembed
started (one unit per such file) resumes under its own plan. Local disk and the S3 server."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE
from robustness_helpers import make_config, read_run, vectors_by_id

from pipeline.embed_job import run_embed

pytestmark = pytest.mark.slow
RECORDS = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
UNIT_BYTES = 4096  # the big files (16-25 KB) are 5-7 ranges each; the gzipped one (7 KB) is one unit
HUGE = 1 << 30  # every file one unit: the S3 test's unsplit run


def line_file(lines: list[bytes]) -> bytes:
    """A BOM, mixed line ends (\\n, \\r\\n, a lone \\r), blank lines, no final newline."""
    ends = (b"\n", b"\r\n", b"\n", b"\r")
    body = b"".join(line + ends[k % len(ends)] + (b"\n" if k % 9 == 4 else b"") for k, line in enumerate(lines))
    return b"\xef\xbb\xbf" + body.rstrip(b"\r\n")


def jsonl_lines(records: list[dict], keep: bool = True) -> list[bytes]:
    lines = [json.dumps(r if keep else {"text": r["text"]}, ensure_ascii=False).encode() for r in records]
    lines[7] = b'{"text": "broken'  # invalid JSON: a reject with its row
    lines[20] = b'{"text": "\xff\xfe"}'  # invalid UTF-8
    lines[33] = json.dumps([{"text": "first of an array"}, {"text": "second of an array"}]).encode()
    return lines


def write_local(folder: Path) -> Path:
    folder.mkdir()
    (folder / "big.jsonl").write_bytes(line_file(jsonl_lines(RECORDS[:120], keep=False)))
    (folder / "big.txt").write_bytes(line_file([r["text"].encode() for r in RECORDS[120:220]]))
    (folder / "big.jsonl.gz").write_bytes(gzip.compress(line_file(jsonl_lines(RECORDS[220:300], keep=False))))
    (folder / "small.jsonl").write_bytes(
        line_file([json.dumps({"text": r["text"]}).encode() for r in RECORDS[300:306]])
    )
    return folder


def dataset(uri: str, endpoint: str | None = None) -> tuple[dict, list[tuple]]:
    good, rejects = read_run(uri, endpoint)
    assert good.num_rows == len(set(good.column("id").to_pylist())), "an id written twice"
    cols = [c for c in ("id", "source", "row", "reason") if c in rejects.column_names]
    return vectors_by_id(good), sorted(zip(*(rejects.column(c).to_pylist() for c in cols)), key=repr)


def same(got: tuple[dict, list], want: tuple[dict, list]) -> None:
    assert got[1] == want[1]  # rejects: id, file, row, reason
    assert sorted(got[0]) == sorted(want[0])
    for key, vec in got[0].items():
        np.testing.assert_allclose(vec, want[0][key], atol=1e-5, err_msg=key)


def markers(out: Path) -> dict[Path, dict]:
    return {p: json.loads(p.read_text()) for p in sorted((out / "_run" / "units").glob("*.json"))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_local(tmp_path_factory.mktemp("lines") / "corpus")


@pytest.fixture(scope="module")
def unsplit(ray_session, tiny_models, corpus, tmp_path_factory) -> tuple[dict, tuple[dict, list], Path]:
    """The unsplit baseline: a run as an older rayembed, which kept each line file one unit, made it (no
    `input.line_ranges` in its fingerprint), with the split runs' unit_bytes. (summary, dataset, output folder: read,
    or copied by a test that changes it, never changed.)"""
    out = tmp_path_factory.mktemp("unsplit") / "emb"
    cfg = make_config(tiny_models["gemma3"], corpus, out, None, input={"unit_bytes": UNIT_BYTES})
    with pytest.MonkeyPatch.context() as older:
        older.setattr("pipeline.embed_job.plans_line_ranges", lambda recorded: False)
        summary = run_embed(cfg)
    assert summary["units"] == 4  # one unit per file, none split
    return summary, dataset(str(out)), out


def test_split_files_give_the_unsplit_dataset_and_a_crash_redoes_only_open_ranges(
    ray_session, tiny_models, corpus, unsplit, tmp_path, monkeypatch
):
    """A big JSONL or text file was one unit: a crash redid the whole file. Split into byte ranges, the run writes
    the same ids, rows, rejects and vectors; with half of its ranges' markers gone (as if killed), the same command
    reads only those ranges again, with the row counts recorded by the first attempt (no second counting pass)."""
    clean_summary, clean, _ = unsplit
    out = tmp_path / "emb"
    cfg = make_config(tiny_models["gemma3"], corpus, out, None, input={"unit_bytes": UNIT_BYTES})
    summary = run_embed(cfg)
    done = markers(out)
    ranges = {p: r for p, r in done.items() if r.get("bytes")}
    paths = [r["path"] for r in done.values()]
    assert paths.count("big.jsonl") >= 5 and paths.count("big.txt") >= 4
    assert paths.count("big.jsonl.gz") == 1 and not any(
        r.get("bytes") for r in done.values() if r["path"] != "big.jsonl" and r["path"] != "big.txt"
    )
    assert summary["units"] == len(done) == len(ranges) + 2
    for key in ("rows_in", "rows_embedded", "rows_rejected", "output_rows"):
        assert summary[key] == clean_summary[key], key
    assert summary["rows_in"] == summary["rows_embedded"] + summary["rows_rejected"]
    same(dataset(str(out)), clean)
    recorded = json.loads((out / "_run" / "line_rows.json").read_text())["ranges"]
    assert sorted(r[:3] for r in recorded) == sorted([r["path"], *r["bytes"]] for r in ranges.values())

    lost = list(ranges)[1::2]
    for path in (*lost, out / "_SUCCESS", out / "_summary.json"):
        path.unlink()

    def no_recount(*args):
        raise AssertionError("the resumed run counted rows again")

    monkeypatch.setattr("pipeline.embed_job.count_span_rows", no_recount)
    resumed = run_embed(cfg)
    assert resumed["units_skipped"] == len(done) - len(lost)
    assert resumed["rows_read"] == sum(ranges[p]["rows"] for p in lost) > 0
    assert resumed["rows_in"] == clean_summary["rows_in"]
    same(dataset(str(out)), clean)


def test_a_run_an_older_rayembed_started_keeps_one_unit_per_line_file(
    ray_session, tiny_models, corpus, unsplit, tmp_path
):
    """A run started before line files were split has one unit per big file and no `input.line_ranges` in its
    fingerprint: the same command after the upgrade resumes it under that plan instead of refusing it. The run is a
    copy of the module's unsplit one, which such a version made."""
    out = tmp_path / "emb"
    shutil.copytree(unsplit[2], out)
    cfg = make_config(tiny_models["gemma3"], corpus, out, None, input={"unit_bytes": UNIT_BYTES})
    recorded = json.loads((out / "_run" / "fingerprint.json").read_text())["fingerprint"]
    assert "input.line_ranges" not in recorded
    done = markers(out)
    assert len(done) == 4 and not any(r.get("bytes") for r in done.values())
    big = next(p for p, r in done.items() if r["path"] == "big.jsonl")
    for path in (big, out / "_SUCCESS", out / "_summary.json"):
        path.unlink()
    summary = run_embed(cfg)
    assert summary["units"] == 4 and summary["units_skipped"] == 3
    assert json.loads((out / "_run" / "fingerprint.json").read_text())["fingerprint"] == recorded
    same(dataset(str(out)), unsplit[1])


def test_split_files_on_s3_keep_ids_duplicates_and_kept_columns(
    ray_session, tiny_models, tmp_path, s3_bucket, s3_server
):
    """On S3 (ranged GETs): user ids, a repeated id in a later range rejected under keep_first naming the first
    copy's row, a kept column; the same as the unsplit file. The unsplit file is a gzipped copy of it in the same
    run (a compressed file is one unit), its ids prefixed so that they are no repeats of the split file's: it was a
    second run over the same object with every file one unit."""
    client, bucket = s3_bucket
    records = [{**r, "lang": r["id"][-3:]} for r in RECORDS[:150]]
    records[130] = {**records[130], "id": records[3]["id"]}  # a repeat, far from its first copy
    whole = [{**r, "id": f"w-{r['id']}"} for r in records]
    client.put_object(Bucket=bucket, Key="corpus/big.jsonl", Body=line_file(jsonl_lines(records)))
    client.put_object(Bucket=bucket, Key="corpus/whole.jsonl.gz", Body=gzip.compress(line_file(jsonl_lines(whole))))
    uri = f"s3://{bucket}/emb"
    sections = {"input": {"id_column": "id", "unit_bytes": UNIT_BYTES}, "output": {"keep_columns": ["lang"]}}
    cfg = make_config(tiny_models["gemma3"], f"s3://{bucket}/corpus", uri, "jsonl", s3_server, **sections)
    summary = run_embed(cfg)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="emb/_run/units/")["Contents"]]
    done = [json.loads(client.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys if k.endswith(".json")]
    assert summary["units"] == len(done) and [d["path"] for d in done].count("big.jsonl") > 5
    assert [d for d in done if d["path"] == "whole.jsonl.gz" and not d.get("bytes")]  # one unit, not split

    vectors, rejects = dataset(uri, s3_server)
    good = read_run(uri, s3_server)[0]
    kept = dict(zip(*(good.column(c).to_pylist() for c in ("id", "lang"))))

    def of(prefix: str, file: str) -> tuple[dict, list, list]:
        """The split file's rows (prefix "") or the gzipped copy's (prefix "w-"), ids and names as the split one's."""
        plain = lambda i: i[len(prefix) :] if i is not None else None
        rows = {plain(i): v for i, v in vectors.items() if i.startswith("w-") == bool(prefix)}
        rejected = [
            (plain(i), src.replace(file, "big.jsonl"), row, reason.replace(file, "big.jsonl"))
            for i, src, row, reason in rejects
            if src == file
        ]
        langs = sorted((plain(i), lang) for i, lang in kept.items() if i.startswith("w-") == bool(prefix))
        return rows, sorted(rejected, key=repr), langs

    split, unsplit = of("", "big.jsonl"), of("w-", "whole.jsonl.gz")
    same(split[:2], unsplit[:2])
    reasons = [r[-1] for r in split[1]]
    assert any(r.startswith("duplicate id (first at big.jsonl row 3)") for r in reasons), reasons
    assert split[2] == unsplit[2] and len(split[2]) > 100
