from __future__ import annotations

import pytest

from pipeline.config import StorageConfig
from pipeline.storage import list_files

LOCAL = StorageConfig()


def make_tree(root):
    for rel in ["b/2.jsonl", "a/1.jsonl", "a/0.jsonl", "c.txt", "_SUCCESS", ".hidden/x.jsonl", "_rejects/r.parquet"]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")


def test_directory_listing_is_sorted_and_skips_hidden(tmp_path):
    make_tree(tmp_path)
    root, files = list_files(str(tmp_path), LOCAL)
    assert files == ["a/0.jsonl", "a/1.jsonl", "b/2.jsonl", "c.txt"]
    assert root.path == str(tmp_path)


def test_glob_and_single_file(tmp_path):
    make_tree(tmp_path)
    assert list_files(f"{tmp_path}/a/*.jsonl", LOCAL)[1] == ["0.jsonl", "1.jsonl"]
    assert list_files(f"{tmp_path}/**.jsonl", LOCAL)[1] == ["a/0.jsonl", "a/1.jsonl", "b/2.jsonl"]
    root, files = list_files(f"{tmp_path}/c.txt", LOCAL)
    assert files == ["c.txt"] and root.path == str(tmp_path)


def test_empty_listing_names_the_uri(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no input files found at {tmp_path}/nothing"):
        list_files(f"{tmp_path}/nothing", LOCAL)
    make_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match="no input files found at .*\\*.parquet"):
        list_files(f"{tmp_path}/*.parquet", LOCAL)


def test_s3_prefix_listing(s3_bucket, s3_server):
    client, bucket = s3_bucket
    for key in ["corpus/z.parquet", "corpus/sub/a.parquet", "corpus/_tmp/x.parquet", "other/y.parquet"]:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    storage = StorageConfig(endpoint_url=s3_server)
    root, files = list_files(f"s3://{bucket}/corpus", storage)
    assert files == ["sub/a.parquet", "z.parquet"] and root.path == f"{bucket}/corpus"
    assert list_files(f"s3://{bucket}/corpus/*.parquet", storage)[1] == ["z.parquet"]
    with pytest.raises(FileNotFoundError, match=f"s3://{bucket}/missing"):
        list_files(f"s3://{bucket}/missing", storage)


def test_unknown_scheme():
    with pytest.raises(ValueError, match="unsupported URI scheme"):
        list_files("gs://bucket/x", LOCAL)
