"""pipeline.file_formats: which format each listed file is read as, checked before any file is read."""

from __future__ import annotations

import gzip
import json

import pytest

from pipeline.embed_job import run_embed
from pipeline.file_formats import InputFileError, listing_formats
from pipeline.reembed.config import ReembedConfig
from pipeline.reembed.job import run_reembed
from tests.robustness_helpers import make_config

KNOWN = r"\(known: \.json, \.jsonl, \.ndjson, \.parquet, \.txt, optionally \.gz/\.zst/\.bz2\)"


def test_files_no_format_reads_are_named_together_with_the_glob_of_the_corpus_files():
    """A README.md or a checksum beside the parts failed the job naming the first alone, and said to set
    input.format, which reads it (and every file) as that format."""
    rels = ["a.jsonl", "README.md", "b.jsonl", "a.jsonl.crc"]
    with pytest.raises(InputFileError) as err:
        listing_formats(None, rels)
    assert str(err.value) == (
        "input.uri: 2 of 4 listed files have an extension that names no format (known: .json, .jsonl, .ndjson, "
        ".parquet, .txt, optionally .gz/.zst/.bz2): README.md, a.jsonl.crc. Are they not part of the corpus (a "
        "README, checksums, temporary files)? Move them out of the input, or list only the corpus files with a glob: "
        "input.uri: <input>/*.jsonl (input.format would read every file, those too, as that format)"
    )
    strays = [f"d/x{k}.tmp" for k in range(12)]
    with pytest.raises(
        InputFileError, match=r"source\.uri: 12 of 14 .* d/x9\.tmp and 2 more\. .*/\*\*/\*\{\.TXT\.gz,\.jsonl\} "
    ):
        listing_formats(None, ["d/a.jsonl", "e/b.TXT.gz", *strays], key="source.uri")


def test_the_format_of_each_file_and_the_refusals_by_name_are_kept():
    assert listing_formats(None, ["a.jsonl.gz", "b.parquet", "c.txt", "d.ndjson"]) == {
        "a.jsonl.gz": "jsonl",
        "b.parquet": "parquet",
        "c.txt": "text",
        "d.ndjson": "jsonl",
    }
    assert listing_formats("text", ["part-00000", "a.jsonl"]) == {"part-00000": "text", "a.jsonl": "text"}
    with pytest.raises(InputFileError, match=rf"^README\.md: cannot infer the format from the extension {KNOWN}; set"):
        listing_formats(None, ["README.md"])  # no file names a format: input.format is the fix
    for stray, says in [("t.csv", "t.csv: a CSV table is not read"), ("x.jsonl.xz", "x.jsonl.xz: xz-compressed")]:
        with pytest.raises(InputFileError, match=rf"^{says}"):
            listing_formats(None, ["a.jsonl", "README.md", stray])


def test_the_embed_and_reembed_jobs_name_every_stray_file_before_reading_any(tiny_models, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text(json.dumps({"id": "a", "text": "hello"}) + "\n")
    (corpus / "b.jsonl.gz").write_bytes(gzip.compress(b'{"id": "b", "text": "world"}\n'))
    (corpus / "README.md").write_text("# corpus\n")
    (corpus / "a.jsonl.crc").write_bytes(b"\x00\x01")
    said = r"input\.uri: 2 of 4 listed files .*: README\.md, a\.jsonl\.crc\. .*<input>/\*\{\.jsonl,\.jsonl\.gz\} "
    with pytest.raises(InputFileError, match=said):
        run_embed(make_config(tiny_models["bert"], corpus, tmp_path / "emb", None))
    reembed = ReembedConfig.model_validate(
        {
            "input": {"uri": str(corpus), "id_column": "id"},
            "output": {"uri": str(tmp_path / "re")},
            "model": {"name_or_path": str(tiny_models["bert"]), "max_tokens": 96},
            "reembed": {"lease_settle_seconds": 0.2},
        }
    )
    with pytest.raises(InputFileError, match=said):
        run_reembed(reembed)
