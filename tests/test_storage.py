from __future__ import annotations

import logging
import re

import pytest
from robustness_helpers import run_without_root_powers
from s3_round_trip import listed_and_read

from pipeline.config import StorageConfig
from pipeline.special_entries import UnreadableEntryError
from pipeline.storage import InvalidGlobError, list_files

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
    # a Windows disk synced to S3 keeps its system folders: skipped as on a mounted disk
    for key in ["corpus/System Volume Information/IndexerVolumeGuid", "corpus/$Recycle.Bin/S-1/$R1.parquet"]:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert list_files(f"s3://{bucket}/corpus", storage)[1] == ["sub/a.parquet", "z.parquet"]


def test_an_s3a_uri_lists_and_reads_the_s3_objects(s3_bucket, s3_server):
    """`s3a://` (Spark's Hadoop connector) given to the storage functions directly (not through a config): the same
    objects as s3://; it raised 'unsupported URI scheme'."""
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="corpus/a.jsonl", Body=b"x")
    storage = StorageConfig(endpoint_url=s3_server)
    root, files = list_files(f"s3a://{bucket}/corpus", storage)
    assert (root.uri, files) == (f"s3://{bucket}/corpus", ["a.jsonl"])
    with root.fs.open_input_stream(root.join("a.jsonl").path) as f:
        assert f.read() == b"x"


def test_unknown_scheme():
    """A user error (the job's one `error:` line), not a bare ValueError's traceback."""
    from pipeline.errors import UserError

    with pytest.raises(UserError, match="unsupported URI scheme in 'gs://bucket/x': use a local path"):
        list_files("gs://bucket/x", LOCAL)


# --- issue 15: brackets and other glob characters in real paths ----------------------------------------------------


def bracket_tree(root):
    for rel in ["export[2024-11]/part[0].jsonl", "export[2024-11]/part[1].jsonl", "run[v1]/a.jsonl", "run[v1]/b.txt"]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")


def test_a_path_that_exists_is_taken_literally(tmp_path):
    bracket_tree(tmp_path)
    root, files = list_files(f"{tmp_path}/export[2024-11]/part[0].jsonl", LOCAL)
    assert files == ["part[0].jsonl"] and root.path == f"{tmp_path}/export[2024-11]"
    assert list_files(f"{tmp_path}/run[v1]", LOCAL)[1] == ["a.jsonl", "b.txt"]
    assert list_files(f"{tmp_path}/run[v1]/", LOCAL)[1] == ["a.jsonl", "b.txt"]
    # an existing directory with brackets, then a real pattern below it
    assert list_files(f"{tmp_path}/run[v1]/*.jsonl", LOCAL)[1] == ["a.jsonl"]
    assert list_files(f"{tmp_path}/export[2024-11]/part[[][01][]].jsonl", LOCAL)[1] == [
        "part[0].jsonl",
        "part[1].jsonl",
    ]


def test_escaped_glob_characters_match_literally(tmp_path):
    import glob

    bracket_tree(tmp_path)
    escaped = glob.escape(f"{tmp_path}/export[2024-11]") + "/part*.jsonl"
    assert list_files(escaped, LOCAL)[1] == ["export[2024-11]/part[0].jsonl", "export[2024-11]/part[1].jsonl"]
    assert list_files(f"{tmp_path}/export[[]2024-11[]]/part[[]1[]].jsonl", LOCAL)[1] == [
        "export[2024-11]/part[1].jsonl"
    ]
    assert list_files(f"{tmp_path}/*/part[[][!0]*", LOCAL)[1] == ["export[2024-11]/part[1].jsonl"]


def test_brace_alternatives_match_either_part_and_a_brace_without_a_comma_is_literal(tmp_path):
    """`data/*.{jsonl,parquet}` (bash, Spark's Hadoop globs, DuckDB) said 'no input files found': `{` was a literal
    character. Each part matches now, nested and across folders; `{x}` without a comma and an existing path with
    braces stay literal."""
    for rel in ["a.jsonl", "b.parquet", "c.txt", "sub/d.jsonl", "sub/e.txt", "v{1}/f.jsonl", "{x}.jsonl"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x\n")
    assert list_files(f"{tmp_path}/*.{{jsonl,parquet}}", LOCAL)[1] == ["a.jsonl", "b.parquet", "{x}.jsonl"]
    assert list_files(f"{tmp_path}/**/*.{{jsonl,t{{x,y}}t}}", LOCAL)[1] == [
        "a.jsonl",
        "c.txt",
        "sub/d.jsonl",
        "sub/e.txt",
        "v{1}/f.jsonl",
        "{x}.jsonl",
    ]
    assert list_files(f"{tmp_path}/{{sub,v{{1}}}}/*.jsonl", LOCAL)[1] == ["sub/d.jsonl", "v{1}/f.jsonl"]
    assert list_files(f"{tmp_path}/v{{1}}/*.jsonl", LOCAL)[1] == ["f.jsonl"]  # an existing folder, literal
    assert list_files(f"{tmp_path}/{{x}}*", LOCAL)[1] == ["{x}.jsonl"]


def test_a_folder_a_glob_names_is_read_whole(tmp_path, s3_bucket, s3_server):
    """`corpus/{2023,2024}` or `corpus/*` naming folders said 'no input files found' (a glob matched files alone),
    and `corpus/{2023,top.jsonl}` read top.jsonl and left 2023/'s files out without a word. A folder the glob names is
    now read whole, as a folder given as input is and as Spark's Hadoop globs read one; a trailing '/' too. Local
    and S3."""
    rels = ["2023/a.jsonl", "2023/deep/b.jsonl", "2024/c.jsonl", "2025/d.jsonl", "top.jsonl", ".cache/x.jsonl"]
    for rel in rels:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x\n")
    client, bucket = s3_bucket
    for rel in rels:
        client.put_object(Bucket=bucket, Key=f"globbed/{rel}", Body=b"x\n")
    storage = StorageConfig(endpoint_url=s3_server)
    for base, store in ((str(tmp_path), LOCAL), (f"s3://{bucket}/globbed", storage)):
        years = ["2023/a.jsonl", "2023/deep/b.jsonl", "2024/c.jsonl"]
        assert list_files(f"{base}/{{2023,2024}}", store)[1] == years
        assert list_files(f"{base}/{{2023,2024}}/", store)[1] == years
        assert list_files(f"{base}/202[34]", store)[1] == years
        assert list_files(f"{base}/{{2023,top.jsonl}}", store)[1] == ["2023/a.jsonl", "2023/deep/b.jsonl", "top.jsonl"]
        assert list_files(f"{base}/*", store)[1] == [*years, "2025/d.jsonl", "top.jsonl"]  # .cache hidden
        assert list_files(f"{base}/*.jsonl", store)[1] == ["top.jsonl"]
        assert list_files(f"{base}/*/*.jsonl", store)[1] == ["2023/a.jsonl", "2024/c.jsonl", "2025/d.jsonl"]


@pytest.mark.parametrize("pattern", ["part[0.jsonl", "part[z-a].jsonl"])
def test_an_invalid_pattern_is_a_config_error_naming_the_key(tmp_path, pattern):
    bracket_tree(tmp_path)
    with pytest.raises(InvalidGlobError, match=r"input.uri: invalid glob pattern .*escape"):
        list_files(f"{tmp_path}/missing/{pattern}", LOCAL)
    with pytest.raises(InvalidGlobError, match=r"sides.src.uri: invalid glob pattern"):
        list_files(f"{tmp_path}/missing/{pattern}", LOCAL, key="sides.src.uri")


def test_brackets_in_s3_keys(s3_bucket, s3_server):
    client, bucket = s3_bucket
    for key in ["export[2024-11]/part[0].jsonl", "export[2024-11]/part[1].jsonl", "other/x.jsonl"]:
        client.put_object(Bucket=bucket, Key=key, Body=b"{}\n")
    storage = StorageConfig(endpoint_url=s3_server)
    root, files = list_files(f"s3://{bucket}/export[2024-11]/part[0].jsonl", storage)
    assert files == ["part[0].jsonl"] and root.path == f"{bucket}/export[2024-11]"
    assert list_files(f"s3://{bucket}/export[2024-11]", storage)[1] == ["part[0].jsonl", "part[1].jsonl"]
    assert list_files(f"s3://{bucket}/export[[]2024-11[]]/*.jsonl", storage)[1] == [
        "export[2024-11]/part[0].jsonl",
        "export[2024-11]/part[1].jsonl",
    ]


def test_double_star_slash_matches_zero_or_more_directories(tmp_path):
    """`corpus/**/*.jsonl` skipped the top-level files (the regex needed at least one directory): their rows were
    silently left out of the run. bash globstar, Python's glob and fsspec match zero directories too."""
    for rel in ["top.jsonl", "a/one.jsonl", "a/b/two.jsonl", "a/skip.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}\n")
    want = ["a/b/two.jsonl", "a/one.jsonl", "top.jsonl"]
    assert list_files(f"{tmp_path}/**/*.jsonl", LOCAL)[1] == want
    assert list_files(f"{tmp_path}/a/**/two.jsonl", LOCAL)[1] == ["b/two.jsonl"]
    assert list_files(f"{tmp_path}/**", LOCAL)[1] == [*want[:2], "a/skip.txt", "top.jsonl"]


def test_a_file_name_that_is_not_utf8_fails_naming_it(tmp_path):
    """A Latin-1 name (`café.txt` copied from an old system) raised a bare UnicodeDecodeError out of the listing."""
    import os

    from pipeline.storage import InputNameError

    (tmp_path / "good.txt").write_text("x\n")
    with open(os.fsencode(str(tmp_path)) + b"/caf\xe9.txt", "wb") as f:
        f.write(b"x\n")
    with pytest.raises(InputNameError, match=r"input.uri: the file name '.*caf\\\\xe9.txt' is not valid UTF-8"):
        list_files(str(tmp_path), LOCAL)
    # outside the input (another pattern, a hidden directory) it does not matter
    assert list_files(f"{tmp_path}/good*", LOCAL)[1] == ["good.txt"]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.txt").write_text("x\n")
    with open(os.fsencode(str(tmp_path)) + b"/sub/.caf\xe9", "wb") as f:
        f.write(b"hidden")
    assert list_files(str(tmp_path / "sub"), LOCAL)[1] == ["x.txt"]


def test_a_local_path_starting_with_tilde_is_the_home_directory(tmp_path, monkeypatch):
    """`input.uri: ~/corpus` listed a directory named `~` in the working directory (nothing found), and an output
    `~/emb` would have been written into such a directory."""
    from pipeline.storage import resolve

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.jsonl").write_text("{}\n")
    root, files = list_files("~/corpus", LOCAL)
    assert (root.path, files) == (str(tmp_path / "corpus"), ["a.jsonl"])
    assert resolve("~/emb", LOCAL).path == str(tmp_path / "emb")


def test_s3_keys_with_an_empty_segment_fail_the_listing_naming_them(s3_bucket, s3_server):
    """`corpus//a.jsonl` (a prefix ending in '/' joined with '/name') was listed as `a.jsonl` and then not found
    when read: `FileNotFoundError: Path does not exist 'bkt/corpus/a.jsonl'` in a read task, after the pre-passes."""
    from pipeline.storage import InputNameError

    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="corpus/ok.jsonl", Body=b'{"text": "x"}\n')
    client.put_object(Bucket=bucket, Key="corpus//a.jsonl", Body=b'{"text": "y"}\n')
    storage = StorageConfig(endpoint_url=s3_server)
    with pytest.raises(InputNameError, match=rf"the object 's3://{bucket}/corpus//a.jsonl' has an empty, '\.' or"):
        list_files(f"s3://{bucket}/corpus", storage)
    # what to do, as a command (pyarrow cannot address the key: tried on moto, 'Empty path component')
    hint = rf"copy it to a key without one \(e\.g\. aws s3 mv 's3://{bucket}/corpus//a\.jsonl' 's3://{bucket}/corpus/a\.jsonl'"
    with pytest.raises(InputNameError, match=hint):
        list_files(f"s3://{bucket}/corpus", storage)
    assert list_files(f"s3://{bucket}/corpus/ok*", storage)[1] == ["ok.jsonl"]
    client.put_object(Bucket=bucket, Key="corpus//b.jsonl", Body=b'{"text": "z"}\n')
    with pytest.raises(InputNameError, match=r"\(2 objects below the input have such keys\); pyarrow's S3 client"):
        list_files(f"s3://{bucket}/corpus", storage)


def test_s3_keys_with_a_dot_dot_segment_fail_the_listing_naming_them(s3_bucket, s3_server):
    """`corpus/../b.jsonl` was listed as `../b.jsonl` and then not found when read (pyarrow's request path is
    normalized on the way), failing the job in a read task."""
    from pipeline.storage import InputNameError

    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="corpus/ok.jsonl", Body=b'{"text": "x"}\n')
    client.put_object(Bucket=bucket, Key="corpus/../b.jsonl", Body=b'{"text": "y"}\n')
    with pytest.raises(InputNameError, match=rf"the object 's3://{bucket}/corpus/\.\./b.jsonl' has an empty, '\.' or"):
        list_files(f"s3://{bucket}/corpus", StorageConfig(endpoint_url=s3_server))


def test_a_reembed_dataset_lists_the_files_of_its_current_version(tmp_path):
    """`python -m jobs.reembed` output as another job's input (cluster input.uri, a mining side's embeddings_uri):
    the files the current manifest names, not the staged files of unfinished runs beside them. It was 'no input
    files found' (every file is under the hidden _versions/)."""
    import json

    from pipeline.reembed.manifest import FileEntry, Manifest
    from pipeline.storage import list_inputs

    version = tmp_path / "emb" / "_versions" / "fp1"
    for run in ("r1", "r-killed"):
        (version / "data" / "k1" / run).mkdir(parents=True)
        (version / "data" / "k1" / run / "part-0.parquet").write_bytes(b"x" * (3 if run == "r1" else 5))
    (version / "_manifests").mkdir()
    entry = FileEntry("a.jsonl", 1, "t", "k1", "r1", 1, 1, 0, 1, files=["data/k1/r1/part-0.parquet"])
    manifest = Manifest("fp1", {}, 1, "r1", "in/", 0.0, [entry])
    (version / "_manifests" / "00000001-r1.json").write_text(json.dumps(manifest.to_json()))
    (tmp_path / "emb" / "_current.json").write_text(
        json.dumps({"manifest": "_versions/fp1/_manifests/00000001-r1.json"})
    )
    root, listed = list_inputs(str(tmp_path / "emb"), StorageConfig())
    assert [(f.path, f.size) for f in listed] == [("_versions/fp1/data/k1/r1/part-0.parquet", 3)]
    assert root.join(listed[0].path).path == str(version / "data" / "k1" / "r1" / "part-0.parquet")
    (tmp_path / "other" / "_hidden").mkdir(parents=True)
    (tmp_path / "other" / "_hidden" / "x.parquet").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="no input files found"):
        list_inputs(str(tmp_path / "other"), StorageConfig())


def test_each_local_file_is_listed_once_whatever_links_reach_it(tmp_path, caplog):
    """The listing follows links to directories: a link to an ancestor listed each file below it again at every
    depth until the OS gave up (41 copies of every row), and `latest -> 2024-11` read that directory twice."""
    corpus = tmp_path / "corpus"
    make_tree(corpus)
    (corpus / "a" / "up").symlink_to("..")  # a loop
    (corpus / "latest").symlink_to("b")  # a link beside its target
    (corpus / "z.jsonl").symlink_to("c.txt")  # a file under two names
    (corpus / "y_2.jsonl").symlink_to("b/2.jsonl")  # the link sorts first: the path without links is kept
    (tmp_path / "outside.jsonl").write_text("{}\n")
    (corpus / "outside.jsonl").symlink_to(tmp_path / "outside.jsonl")  # reached only through a link: kept
    with caplog.at_level("WARNING", logger="pipeline.storage"):
        _, files = list_files(str(corpus), LOCAL)
    assert files == ["a/0.jsonl", "a/1.jsonl", "b/2.jsonl", "c.txt", "outside.jsonl"]
    assert "paths reach files already listed under another path through symbolic links" in caplog.text
    assert list_files(f"{corpus}/a", LOCAL)[1] == ["0.jsonl", "1.jsonl", "up/b/2.jsonl", "up/c.txt", "up/outside.jsonl"]
    caplog.clear()
    assert list_files(f"{corpus}/b", LOCAL)[1] == ["2.jsonl"] and not caplog.text  # no link: no warning


def test_a_list_of_locations_is_one_corpus_with_unique_paths(tmp_path, caplog):
    """input.uri as a list (Ray Data's paths=[...], HF data_files=[...]): folders, files and globs together. Paths are
    relative to the deepest folder holding them all, so two folders' `part-0.jsonl` stay two files (and two derived
    ids); a file two locations reach is listed once."""
    for rel in ["2024/a/part-0.jsonl", "2024/b/part-0.jsonl", "2024/b/_tmp/x.jsonl", "2025/c.jsonl", "2025/d.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text('{"text": "x"}\n')
    uris = [f"{tmp_path}/2024/a", f"{tmp_path}/2024/b", f"{tmp_path}/2025/*.jsonl", f"{tmp_path}/2024/b/part-0.jsonl"]
    root, files = list_files(uris, LOCAL)
    assert root.path == str(tmp_path)
    assert files == ["2024/a/part-0.jsonl", "2024/b/part-0.jsonl", "2025/c.jsonl"]
    assert "1 files are matched by more than one location" in caplog.text
    # the same list again (another order) lists the same paths: derived ids are stable across runs
    assert list_files(uris[::-1], LOCAL) == (root, files)
    # a list of one location lists as that location alone (a string config's run resumes under the list)
    assert list_files([f"{tmp_path}/2024/b"], LOCAL) == list_files(f"{tmp_path}/2024/b", LOCAL)
    assert list_files([f"{tmp_path}/2024/a", f"{tmp_path}/2024/b"], LOCAL)[1] == ["a/part-0.jsonl", "b/part-0.jsonl"]


def test_a_list_location_that_matches_nothing_is_named(tmp_path):
    from pipeline.storage import InputLocationsError

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jsonl").write_text("{}\n")
    with pytest.raises(FileNotFoundError, match=rf"no input files found at {tmp_path}/b \(check input.uri\[1\]"):
        list_files([f"{tmp_path}/a", f"{tmp_path}/b"], LOCAL)
    with pytest.raises(InputLocationsError, match="input.uri is an empty list"):
        list_files([], LOCAL)
    with pytest.raises(InputLocationsError, match="mixes local paths"):
        list_files([f"{tmp_path}/a", "s3://bucket/x"], LOCAL)


def test_a_list_of_s3_locations_in_two_buckets(s3_bucket, s3_server):
    """Prefixes of two buckets: paths are `bucket/key` (the store is the only common folder), each readable."""
    import boto3

    client, bucket = s3_bucket
    other = bucket + "-2"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=other)
    client.put_object(Bucket=bucket, Key="corpus/part-0.jsonl", Body=b"1")
    client.put_object(Bucket=other, Key="corpus/part-0.jsonl", Body=b"22")
    client.put_object(Bucket=bucket, Key="more/x.jsonl", Body=b"333")
    storage = StorageConfig(endpoint_url=s3_server)
    root, files = list_files([f"s3://{bucket}/corpus/", f"s3://{other}/corpus", f"s3://{bucket}/more/*"], storage)
    assert root.uri == "s3://" and files == sorted(
        [f"{bucket}/corpus/part-0.jsonl", f"{other}/corpus/part-0.jsonl", f"{bucket}/more/x.jsonl"]
    )
    sizes = {f: root.fs.get_file_info(root.join(f).path).size for f in files}
    assert sizes == {f"{bucket}/corpus/part-0.jsonl": 1, f"{other}/corpus/part-0.jsonl": 2, f"{bucket}/more/x.jsonl": 3}
    assert root.join(files[0]).uri == f"s3://{files[0]}"
    root, files = list_files([f"s3://{bucket}/corpus", f"s3://{bucket}/more"], storage)
    assert (root.uri, files) == (f"s3://{bucket}", ["corpus/part-0.jsonl", "more/x.jsonl"])


def test_list_items_with_tilde_and_links_between_locations(tmp_path, monkeypatch, caplog):
    """`~/…` items are the home directory, as a string input; a location that is a symbolic link to another listed
    one (`latest -> 2024-11`) reads each file once, under its path without links."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "c" / "2024-11").mkdir(parents=True)
    (tmp_path / "c" / "2024-11" / "a.jsonl").write_text("{}\n")
    (tmp_path / "c" / "latest").symlink_to(tmp_path / "c" / "2024-11")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl").write_text("{}\n")
    root, files = list_files(["~/c/2024-11", "~/c/latest", "~/d"], LOCAL)
    assert (root.path, files) == (str(tmp_path), ["c/2024-11/a.jsonl", "d/a.jsonl"])
    assert "reach files already listed under another path through symbolic links" in caplog.text


def test_entries_listed_that_cannot_be_read_as_files_fail_the_listing_naming_them(tmp_path):
    """A symbolic link to a missing file (or a loop of links) was left out of the listing by pyarrow, a named pipe
    skipped like a directory: their rows were missing from the run and nothing said so. The listing now fails
    naming the first one, what it is, how many there are and what to do; hidden names are still skipped, and a glob
    looks only at the entries it matches."""
    import os

    make_tree(tmp_path)
    os.symlink("gone.jsonl", tmp_path / "a" / "dangling.jsonl")
    os.symlink("/nonexistent/dir", tmp_path / "b" / "old-month")
    os.symlink("loop.jsonl", tmp_path / "loop.jsonl")
    os.symlink("missing", tmp_path / "_hidden-link")
    os.symlink("missing", tmp_path / ".hidden" / "link.jsonl")
    os.mkfifo(tmp_path / "b" / "pipe.jsonl")
    with pytest.raises(
        UnreadableEntryError,
        match=r"input.uri: '.*/a/dangling.jsonl' is a symbolic link to 'gone.jsonl', which does not exist .*: "
        r"restore its target, or move it out of the input, and run again \(3 more entries below the input cannot",
    ):
        list_files(str(tmp_path), LOCAL)
    with pytest.raises(UnreadableEntryError, match=r"'.*/b/pipe.jsonl' is a named pipe \(FIFO\), not a regular file"):
        list_files(f"{tmp_path}/b/*.jsonl", LOCAL, key="input.uri[1]")
    with pytest.raises(
        UnreadableEntryError, match=r"'.*/loop.jsonl' is a symbolic link to 'loop.jsonl'.*loop of links"
    ):
        list_files(f"{tmp_path}/loop.jsonl", LOCAL)
    with pytest.raises(UnreadableEntryError, match=r"input.uri: '.*/b/pipe.jsonl' is a named pipe"):
        list_files(f"{tmp_path}/b/pipe.jsonl", LOCAL)
    assert list_files(f"{tmp_path}/a/[0-9].jsonl", LOCAL)[1] == ["0.jsonl", "1.jsonl"]
    for rel in ("a/dangling.jsonl", "b/old-month", "loop.jsonl", "b/pipe.jsonl"):
        os.unlink(tmp_path / rel)
    assert list_files(str(tmp_path), LOCAL)[1] == ["a/0.jsonl", "a/1.jsonl", "b/2.jsonl", "c.txt"]


def test_an_entry_reached_again_through_a_link_to_an_ancestor_is_named_once_by_its_shortest_path(tmp_path):
    """A link to an ancestor folder (`sub/up -> ..`) reaches each entry below it again at every depth until the OS
    gives up: a loop of links beside it was named as 'sub/up/sub/up/.../x' (40 levels deep, first in sort order)
    and one named pipe counted as 41 bad entries. Each entry is named by its shortest path and counted once."""
    import os

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.jsonl").write_text('{"id": "1", "text": "a"}\n')
    os.symlink("..", tmp_path / "sub" / "up")
    os.symlink("y", tmp_path / "x")
    os.symlink("x", tmp_path / "y")
    with pytest.raises(UnreadableEntryError) as caught:
        list_files(str(tmp_path), LOCAL)
    assert "sub/up" not in str(caught.value)
    assert f"'{tmp_path}/x' is a symbolic link to 'y'" in str(caught.value)
    assert "(1 more entries below the input cannot be read as files)" in str(caught.value)
    os.unlink(tmp_path / "x")
    os.unlink(tmp_path / "y")
    os.mkfifo(tmp_path / "p.jsonl")
    with pytest.raises(UnreadableEntryError) as caught:
        list_files(str(tmp_path), LOCAL)
    assert f"'{tmp_path}/p.jsonl' is a named pipe (FIFO)" in str(caught.value)
    assert "more entries" not in str(caught.value)


def test_an_input_below_a_link_to_nothing_names_the_link(tmp_path):
    """A glob or a file path whose folder is a link to a missing folder (`gone/*.jsonl`, `gone -> /mnt/old`) said
    'no input files found', as for a misspelt path: the link is named, what it points at and what to do. A path that
    is merely missing still says 'no input files found'."""
    import os
    import re

    os.symlink("/nonexistent/dir", tmp_path / "gone")
    for uri in (f"{tmp_path}/gone/*.jsonl", f"{tmp_path}/gone/2024/*.jsonl", f"{tmp_path}/gone/2024/a.jsonl"):
        with pytest.raises(
            UnreadableEntryError, match=re.escape(f"'{tmp_path}/gone' is a symbolic link to '/nonexistent/dir'")
        ):
            list_files(uri, LOCAL)
    for uri in (f"{tmp_path}/missing/*.jsonl", f"{tmp_path}/missing/a.jsonl"):
        with pytest.raises(FileNotFoundError, match="no input files found"):
            list_files(uri, LOCAL)


def test_a_file_or_folder_the_user_may_not_read_fails_the_listing_naming_it(tmp_path):
    """A file the job's user may not read failed the job only when its read task reached it (maybe hours in); a
    folder it may not list failed the listing with a bare PermissionError traceback. Both are named now, before
    anything runs, with what to do."""

    make_tree(tmp_path)
    (tmp_path / "a" / "0.jsonl").chmod(0o000)
    locked = tmp_path / "b"
    listing = (
        "from pipeline.storage import list_files; from pipeline.config import StorageConfig\n"
        f"try: list_files({str(tmp_path)!r}, StorageConfig())\n"
        "except Exception as e: print(type(e).__name__, e)"
    )

    def listed() -> str:
        return run_without_root_powers(listing).stdout

    try:
        out = listed()
        assert "UnreadableEntryError input.uri: " in out and "/a/0.jsonl' is a file the job's user may not read" in out
        assert "give it read access (chmod a+r), or move it out of the input" in out
        (tmp_path / "a" / "0.jsonl").chmod(0o644)
        locked.chmod(0o000)
        out = listed()
        assert (
            f"UnreadableEntryError input.uri: '{tmp_path}' is a folder holding one the job's user may not list" in out
        )
        assert f"{locked}" in out and "(chmod a+rx)" in out
    finally:
        locked.chmod(0o755)
        (tmp_path / "a" / "0.jsonl").chmod(0o644)


def test_a_hidden_folder_the_user_may_not_list_is_skipped_as_hidden(tmp_path):
    """A hidden folder below the input that the job's user may not list (`.snapshot`, another user's `.cache`) failed
    the listing, for a glob too (pyarrow's recursive listing stops there), though the hidden-name rule skips it: the
    files are listed without it. A folder that is not hidden still fails naming it, except for a pattern without '/'
    or '**' (`*.txt`), which matches names of the base folder only and no longer lists its subfolders."""

    make_tree(tmp_path)
    hidden, locked = tmp_path / "a" / ".snapshot", tmp_path / "b" / "locked"
    hidden.mkdir()
    listing = (
        "from pipeline.storage import list_files; from pipeline.config import StorageConfig\n"
        f"for uri in ({str(tmp_path)!r}, {str(tmp_path / 'a' / '*.jsonl')!r}, {str(tmp_path / '*.txt')!r}):\n"
        "    try: print(list_files(uri, StorageConfig())[1])\n"
        "    except Exception as e: print(type(e).__name__, e)"
    )

    def listed() -> str:
        return run_without_root_powers(listing).stdout

    try:
        hidden.chmod(0o000)
        assert listed().splitlines() == [
            str(["a/0.jsonl", "a/1.jsonl", "b/2.jsonl", "c.txt"]),
            "['0.jsonl', '1.jsonl']",
            "['c.txt']",
        ]
        locked.mkdir()
        locked.chmod(0o000)
        out = listed()
        assert out.splitlines()[2] == "['c.txt']"  # a pattern without '/' does not list subfolders: it failed there
        assert (
            f"UnreadableEntryError input.uri: '{tmp_path}' is a folder holding one the job's user may not list" in out
        )
        assert f"{locked}" in out
    finally:
        hidden.chmod(0o755)
        if locked.exists():
            locked.chmod(0o755)


def test_an_input_matching_only_files_in_system_folders_says_they_were_skipped(tmp_path):
    """`corpus/*/*.jsonl` whose matches all lie in `@eaDir/` or `lost+found/` failed 'no input files found ... (check
    input.uri and storage settings)', the skipped folders named only in an INFO line. The error now names them and
    how to read one."""
    for folder in ("@eaDir", "lost+found"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(FileNotFoundError, match="no input files found") as err:
        list_files(str(tmp_path / "*" / "*.jsonl"), StorageConfig())
    assert f"skipped {str(tmp_path / '@eaDir')!r}, {str(tmp_path / 'lost+found')!r}" in str(err.value)
    assert "give its path as the input" in str(err.value)
    assert list_files(str(tmp_path / "@eaDir" / "*.jsonl"), StorageConfig())[1] == ["a.jsonl"]


def test_folders_an_os_or_filesystem_keeps_are_skipped_and_a_users_locked_folder_still_fails(tmp_path):
    """A mounted volume's root holds `lost+found` (root's, mode 700); a Windows disk or share `System Volume
    Information` and `$RECYCLE.BIN`: folders no user data lives in, that the job's user may not list. One of them
    failed the whole listing (UnreadableEntryError: pyarrow's recursive listing stops there). They are skipped,
    readable or not, with one log line naming them; a locked folder of the user's still fails naming it."""
    import subprocess

    make_tree(tmp_path)
    lost, windows, recycle = tmp_path / "lost+found", tmp_path / "System Volume Information", tmp_path / "$RECYCLE.BIN"
    for folder in (lost, windows, recycle / "S-1-5-21"):
        folder.mkdir(parents=True)
    (recycle / "S-1-5-21" / "$R0AB.jsonl").write_text("{}\n")  # a deleted file: readable, still not input
    locked = tmp_path / "b" / "locked"
    listing = (
        "import logging; logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "from pipeline.storage import list_files; from pipeline.config import StorageConfig\n"
        f"for uri in ({str(tmp_path)!r}, {str(tmp_path / '**.jsonl')!r}):\n"
        "    try: print(list_files(uri, StorageConfig())[1])\n"
        "    except Exception as e: print(type(e).__name__, e)"
    )

    def listed() -> subprocess.CompletedProcess:
        return run_without_root_powers(listing)

    try:
        lost.chmod(0o000)  # 700 and root's: the job's user (no root powers here) may not list it
        windows.chmod(0o000)
        out = listed()
        assert out.stdout.splitlines() == [
            str(["a/0.jsonl", "a/1.jsonl", "b/2.jsonl", "c.txt"]),
            str(["a/0.jsonl", "a/1.jsonl", "b/2.jsonl"]),
        ]
        skipped = [line for line in out.stderr.splitlines() if "skipped" in line]
        assert len(skipped) == 2  # one line per listing
        for name in (lost, windows, recycle):
            assert repr(str(name)) in skipped[0]
        assert "a folder the filesystem or OS keeps" in skipped[0]
        locked.mkdir()
        locked.chmod(0o000)
        out = listed()
        assert out.stdout.count("is a folder holding one the job's user may not list") == 2
        assert str(locked) in out.stdout
    finally:
        for folder in (lost, windows, locked):
            if folder.exists():
                folder.chmod(0o755)


def test_an_iceberg_tables_folder_is_refused_saying_how_to_read_its_current_snapshot(tmp_path):
    """An Apache Iceberg table's folder was listed whole, and the job failed on its first `.avro` manifest: 'cannot
    infer the format ... set input.format to parquet, jsonl or text', which would read the manifests as Parquet. The
    listing names the table and how to write its current snapshot out now, also from a folder above it."""
    from pipeline.delta_tables import DeltaTableError

    for rel in ["t/data/a.parquet", "t/metadata/v1.metadata.json", "t/metadata/snap-1.avro", "other.jsonl"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x\n")
    for uri in (str(tmp_path / "t"), str(tmp_path)):
        with pytest.raises(DeltaTableError, match=r"is an Apache Iceberg table .* Write its current snapshot out"):
            list_files(uri, LOCAL)
    assert list_files(str(tmp_path / "t" / "data"), LOCAL)[1] == ["a.parquet"]  # the data folder alone: as before


# --- S3 endpoints configured the AWS tools' way -----------------------------------------------------------------


@pytest.mark.parametrize("where", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "profile", "profile services"])
def test_an_endpoint_set_for_the_aws_tools_is_used_for_listing_and_reading(
    s3_bucket, s3_server, tmp_path, monkeypatch, where
):
    """MinIO/Ceph/R2 users set AWS_ENDPOINT_URL(_S3) or a profile's endpoint_url, not storage.endpoint_url. boto3
    (the listing) honoured them and pyarrow (every read) did not: `Could not resolve host:
    <bucket>.s3.us-east-1.amazonaws.com`. The config now carries the endpoint, so the workers get it too."""
    import boto3

    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="corpus/a.jsonl", Body=b'{"text": "x"}\n')
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # boto3's default session caches the profile it read
    if where.startswith("AWS_"):
        monkeypatch.setenv(where, s3_server)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent"))
    else:
        config = tmp_path / "config"
        if where == "profile":
            config.write_text(f"[profile store]\nendpoint_url = {s3_server}\n")
        else:
            config.write_text(f"[profile store]\nservices = st\n[services st]\ns3 =\n  endpoint_url = {s3_server}\n")
        monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
        monkeypatch.setenv("AWS_PROFILE", "store")
    storage = StorageConfig().as_the_aws_tools_find_it()
    assert storage.endpoint_url == s3_server
    assert listed_and_read(storage, f"s3://{bucket}/corpus", write=False) == {"a.jsonl": b'{"text": "x"}\n'}
    # the config's own endpoint wins; AWS_IGNORE_CONFIGURED_ENDPOINT_URLS turns the lookup off, as for boto3
    assert StorageConfig(endpoint_url="http://127.0.0.1:1").as_the_aws_tools_find_it().endpoint_url == (
        "http://127.0.0.1:1"
    )
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert StorageConfig().as_the_aws_tools_find_it().endpoint_url is None


def job_configs(tmp_path, on_s3: str) -> dict[str, object]:
    """Each job's config, reading and writing local paths except the one location named by `on_s3`."""
    from pipeline.cluster_config import ClusterConfig
    from pipeline.config import EmbedConfig
    from pipeline.mine_config import MineConfig
    from pipeline.reembed.config import ReembedConfig

    def where(name: str) -> str:
        return f"s3://bucket/{name}" if name == on_s3 else str(tmp_path / name)

    side = {"format": "jsonl", "lang_column": "lang"}
    return {
        "embed": lambda: EmbedConfig.model_validate({"input": {"uri": where("a")}, "output": {"uri": where("out")}}),
        "reembed": lambda: ReembedConfig.model_validate(
            {"input": {"uri": where("a")}, "output": {"uri": where("out")}}
        ),
        "mine": lambda: MineConfig.model_validate(
            {
                "source": {**side, "uri": where("a"), "lang": "fra"},
                "target": {**side, "uri": where("b"), "lang": "eng"},
                "output": {"uri": where("out")},
            }
        ),
        "cluster": lambda: ClusterConfig.model_validate(
            {"input": {"uri": where("a")}, "output": {"uri": where("out")}, "clustering": {"k": 2}}
        ),
    }


@pytest.mark.parametrize("on_s3", ["a", "b", "out"])
def test_a_job_that_uses_s3_takes_the_aws_tools_endpoint_and_one_that_does_not_never_reads_their_configuration(
    tmp_path, monkeypatch, on_s3
):
    """The AWS configuration is read for a job with any location on S3 (an input, the mining job's second side, the output), on
    the driver, into the config its workers get. A job on local paths only does not read it: a stale AWS_PROFILE
    (a profile the files lack) refused such a job, and botocore was imported for it."""
    from pydantic import ValidationError

    (tmp_path / "config").write_text("[profile store]\nendpoint_url = http://127.0.0.1:9\nregion = garage\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_PROFILE", "store")
    for job, make in job_configs(tmp_path, on_s3).items():
        if job == "mine" or on_s3 != "b":  # the other jobs have one input
            storage = make().storage
            assert (storage.endpoint_url, storage.region) == ("http://127.0.0.1:9", "garage"), job
    monkeypatch.setenv("AWS_PROFILE", "typo")
    for job, make in job_configs(tmp_path, on_s3).items():
        if job == "mine" or on_s3 != "b":
            with pytest.raises(
                ValidationError, match=r"cannot read the AWS configuration .* profile 'typo'.*fix AWS_PROFILE"
            ):
                make()
    for job, make in job_configs(tmp_path, on_s3="none").items():
        storage = make().storage
        assert (storage.endpoint_url, storage.region) == (None, None), job


def test_a_local_job_does_not_import_botocore_for_its_config(tmp_path):
    """Reading the AWS configuration imports botocore (0.2 s on 2 cores): only jobs that use S3 pay it."""
    import subprocess
    import sys

    (tmp_path / "config").write_text("[profile store]\nendpoint_url = http://127.0.0.1:9\n")
    code = (
        "import sys\n"
        "from pipeline.config import EmbedConfig\n"
        f"EmbedConfig.model_validate({{'input': {{'uri': {str(tmp_path / 'a')!r}}}, 'output': {{'uri': {str(tmp_path / 'o')!r}}}}})\n"
        "print(sorted(m for m in ('botocore', 'boto3') if m in sys.modules))\n"
    )
    env = {**__import__("os").environ, "AWS_CONFIG_FILE": str(tmp_path / "config"), "AWS_PROFILE": "store"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_an_s3_object_beside_a_prefix_of_the_same_name(s3_bucket, s3_server, caplog):
    """An object `corpus` beside objects under `corpus/` (a marker some tools write without its `/`, or a file
    uploaded by mistake): pyarrow took the object, so `s3://b/corpus` and even `s3://b/corpus/` read it alone and
    the folder's rows were left out unseen (0 rows from an empty marker)."""
    from pipeline.storage import InputNameError

    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="corpus/a.jsonl", Body=b"x")
    client.put_object(Bucket=bucket, Key="corpus/sub/b.jsonl", Body=b"y")
    client.put_object(Bucket=bucket, Key="corpus", Body=b"")
    storage = StorageConfig(endpoint_url=s3_server)
    for uri in (f"s3://{bucket}/corpus", f"s3://{bucket}/corpus/"):
        with caplog.at_level(logging.INFO, logger="pipeline.storage"):
            root, files = list_files(uri, storage)
        assert (root.path, files) == (f"{bucket}/corpus", ["a.jsonl", "sub/b.jsonl"]), uri
    assert "is an empty object beside the prefix" in caplog.text
    client.put_object(Bucket=bucket, Key="corpus", Body=b'{"text": "t"}\n')
    with pytest.raises(InputNameError, match=rf"s3://{bucket}/corpus is an object \(14 bytes\) and also a prefix"):
        list_files(f"s3://{bucket}/corpus", storage)
    assert list_files(f"s3://{bucket}/corpus/", storage)[1] == ["a.jsonl", "sub/b.jsonl"]
    # an object with nothing below its name is read as before; with a '/' it names a prefix, which holds nothing
    client.put_object(Bucket=bucket, Key="one.jsonl", Body=b"z")
    assert list_files(f"s3://{bucket}/one.jsonl", storage)[1] == ["one.jsonl"]
    with pytest.raises(FileNotFoundError, match=rf"no input files found at s3://{bucket}/one.jsonl/"):
        list_files(f"s3://{bucket}/one.jsonl/", storage)


@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:9"])
def test_both_s3_clients_sign_for_the_region_the_aws_tools_would(tmp_path, monkeypatch, endpoint):
    """`AWS_REGION` alone: pyarrow signed for it and boto3 for us-east-1 (it reads AWS_DEFAULT_REGION only); with an
    endpoint both signed for us-east-1, whatever AWS_REGION or the profile said (MinIO or Garage set to another
    region refuse that). Now the region is the one the AWS CLI v2 finds, in the config that the workers get."""
    import boto3

    from pipeline.s3_listing import s3_client
    from pipeline.storage import make_filesystem

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # boto3's default session caches the profile it read
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-2")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent"))
    storage = StorageConfig(endpoint_url=endpoint).as_the_aws_tools_find_it()
    fs, _ = make_filesystem("s3://b/k", storage)
    assert fs.region == s3_client(storage).meta.region_name == "eu-west-2"
    monkeypatch.delenv("AWS_REGION")
    (tmp_path / "config").write_text("[profile garage]\nregion = garage\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "garage")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    storage = StorageConfig(endpoint_url=endpoint).as_the_aws_tools_find_it()
    assert make_filesystem("s3://b/k", storage)[0].region == s3_client(storage).meta.region_name == "garage"


def test_a_location_spelled_in_the_other_unicode_normalization_is_named(tmp_path, s3_bucket, s3_server):
    """macOS and some sync tools write `café` decomposed (NFD: e + U+0301), configs are mostly typed composed (NFC):
    the bytes differ, so the location matched nothing and the error said only 'no input files found'. It now names
    the spelling that exists (local and S3, both ways)."""
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    (tmp_path / nfd).mkdir()
    (tmp_path / nfd / "a.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(FileNotFoundError, match=r"exists: the same name with its accented letters decomposed \(NFD"):
        list_files(str(tmp_path / nfc), LOCAL)
    with pytest.raises(FileNotFoundError, match=r"exists: .* decomposed \(NFD"):
        list_files(str(tmp_path / nfc / "*.jsonl"), LOCAL)
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key=f"{nfc}/a.jsonl", Body=b"x")
    storage = StorageConfig(endpoint_url=s3_server)
    with pytest.raises(FileNotFoundError, match=rf"'s3://{bucket}/{nfc}' exists: .* composed \(NFC\)"):
        list_files(f"s3://{bucket}/{nfd}", storage)
    assert list_files(f"s3://{bucket}/{nfc}", storage)[1] == ["a.jsonl"]
    with pytest.raises(FileNotFoundError, match=r"no input files found at .*\(check input.uri and storage settings\)$"):
        list_files(f"s3://{bucket}/na\u00efve", storage)  # neither spelling exists: the message as before


def test_names_of_several_unicode_spellings_in_one_path_or_under_a_glob_are_named(tmp_path, s3_bucket, s3_server):
    """Only whole-path NFC / NFD forms were tried, so a path whose accented folders were written in different forms
    (`Müller/` composed, `café/` decomposed) and a non-ASCII glob in an ASCII folder (`corpus/café-*.jsonl`, files
    stored decomposed) still ended in a bare 'no input files found'. The path is now resolved one segment at a
    time and a pattern matched after normalizing the listed names (local and S3)."""
    mu_nfc, mu_nfd, cafe_nfc, cafe_nfd = "M\u00fcller", "Mu\u0308ller", "caf\u00e9", "cafe\u0301"
    (tmp_path / mu_nfc / cafe_nfd).mkdir(parents=True)
    (tmp_path / mu_nfc / cafe_nfd / "a.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "corpus").mkdir()
    for i in range(4):
        (tmp_path / "corpus" / f"{cafe_nfd}-{i}.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "corpus" / "other.jsonl").write_text('{"text": "x"}\n')
    stored = str(tmp_path / mu_nfc / cafe_nfd)
    for typed in (f"{mu_nfc}/{cafe_nfc}", f"{mu_nfd}/{cafe_nfc}", f"{mu_nfd}/{cafe_nfd}"):
        with pytest.raises(FileNotFoundError) as refused:
            list_files(str(tmp_path / typed), LOCAL)
        said = str(refused.value)
        assert f"; {stored!r} exists: the same name with its folders spelled in different forms (" in said, said
        assert f"{cafe_nfd!r} decomposed (NFD)" in said and "copied from a listing" in said
    with pytest.raises(FileNotFoundError, match=re.escape(f"({stored + '/*.jsonl'!r})")):
        list_files(str(tmp_path / mu_nfc / cafe_nfc / "*.jsonl"), LOCAL)
    with pytest.raises(FileNotFoundError) as refused:
        list_files(str(tmp_path / "corpus" / f"{cafe_nfc}-*.jsonl"), LOCAL)
    said = str(refused.value)
    fixed = str(tmp_path / "corpus" / f"{cafe_nfd}-*.jsonl")
    assert f"; 4 files below {str(tmp_path / 'corpus')!r} match the pattern {cafe_nfc + '-*.jsonl'!r} once " in said
    assert f"({cafe_nfd + '-0.jsonl'!r}, " in said and "and 1 more)" in said and f"write {fixed!r}" in said, said
    assert list_files(fixed, LOCAL)[1] == [f"{cafe_nfd}-{i}.jsonl" for i in range(4)]
    with pytest.raises(FileNotFoundError, match=r"\(check input.uri and storage settings\)$"):
        list_files(str(tmp_path / "corpus" / "na\u00efve-*.jsonl"), LOCAL)  # matches nothing either way
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key=f"{mu_nfd}/{cafe_nfc}/a.jsonl", Body=b"x")
    client.put_object(Bucket=bucket, Key=f"flat/{cafe_nfd}-1.jsonl", Body=b"x")
    storage = StorageConfig(endpoint_url=s3_server)
    with pytest.raises(FileNotFoundError, match=rf"'s3://{bucket}/{mu_nfd}/{cafe_nfc}' exists: .*{mu_nfd!r} decomp"):
        list_files(f"s3://{bucket}/{mu_nfc}/{cafe_nfd}", storage)
    with pytest.raises(FileNotFoundError, match=rf"1 files below 's3://{bucket}/flat' match .*write 's3://"):
        list_files(f"s3://{bucket}/flat/{cafe_nfc}-*.jsonl", storage)


def test_no_credentials_is_one_clear_error_and_a_public_bucket_reads_with_anon(s3_bucket, s3_server, monkeypatch):
    """A public bucket read without `storage.anon` on a machine with no AWS credentials: the job died with botocore's
    NoCredentialsError traceback (at the output's lease or the input's listing). Now one error saying where
    credentials were looked for and that a public bucket takes storage.anon: true, with which it is read."""
    import boto3

    from pipeline.errors import UserError

    client, bucket = s3_bucket
    client.put_bucket_acl(Bucket=bucket, ACL="public-read")
    client.put_object(Bucket=bucket, Key="open/a.jsonl", Body=b'{"text": "x"}\n', ACL="public-read")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    with pytest.raises(UserError, match=r"^no AWS credentials found .* storage.anon: true"):
        list_files(f"s3://{bucket}/open", StorageConfig(endpoint_url=s3_server))
    anon = StorageConfig(endpoint_url=s3_server, anon=True)
    assert listed_and_read(anon, f"s3://{bucket}/open", write=False) == {"a.jsonl": b'{"text": "x"}\n'}


@pytest.mark.parametrize(
    "env, files, says",
    [
        (
            {"AWS_PROFILE": "typo"},
            {},
            (
                r"^the AWS profile 'typo' \(from AWS_PROFILE\) is in none of the AWS files .*"
                r"config \(absent\) / .*credentials \(absent\)\): fix or unset AWS_PROFILE"
            ),
        ),
        (
            {"AWS_PROFILE": "typo"},
            {"credentials": "[work]\naws_access_key_id = a\naws_secret_access_key = b\n"},
            r"^the AWS profile 'typo' .*credentials\): fix or unset AWS_PROFILE",
        ),
        (
            {"AWS_ACCESS_KEY_ID": "a"},
            {},
            (
                r"^AWS credentials in the environment are incomplete: AWS_SECRET_ACCESS_KEY "
                r"is not set. Set both"
            ),
        ),
        (
            {"AWS_SECRET_ACCESS_KEY": "b"},
            {},
            (
                r"^no AWS credentials found .* sets AWS_SECRET_ACCESS_KEY but not "
                r"AWS_ACCESS_KEY_ID: set both$"
            ),
        ),
        (
            {},
            {"credentials": "[default]\naws_access_key_id = a\n"},
            (
                r"^AWS credentials are incomplete: the profile 'default' lacks aws_secret_access_key \(botocore's "
                r"shared-credentials-file credentials, "
            ),
        ),
        (
            {"AWS_PROFILE": "r"},
            {"config": "[profile r]\nrole_arn = arn:aws:iam::1:role/x\n"},
            r"^AWS credentials are incomplete: the profile 'r' lacks source_profile or credential_source",
        ),
        (
            {"AWS_PROFILE": "p"},
            {"config": "[profile p]\ncredential_process = false\n"},
            r"^the AWS credentials cannot be resolved \(CredentialRetrievalError: .*\); fix the profile 'p' in ",
        ),
    ],
)
def test_an_unusable_aws_configuration_is_one_clear_error(tmp_path, monkeypatch, env, files, says):
    """AWS_PROFILE naming no profile (no ~/.aws/config at all, or not in the credentials file), half a key pair
    in the environment or in a profile, a role without its source: botocore's ProfileNotFound /
    PartialCredentialsError traceback (at the output's lease, via s3_client). Now S3CredentialsError, a UserError
    naming the cause and what to do; a bad region likewise."""
    import boto3

    from pipeline.errors import UserError
    from pipeline.s3_listing import s3_client

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name in ("config", "credentials"):
        if name in files:
            (tmp_path / name).write_text(files[name])
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    storage = StorageConfig(endpoint_url="http://127.0.0.1:9", region="us-east-1")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    with pytest.raises(UserError, match=says):
        s3_client(storage)


def test_an_invalid_region_is_one_clear_error(monkeypatch):
    """A region botocore refuses (a typo with spaces) was its InvalidRegionError traceback at client creation."""
    import boto3

    from pipeline.s3_listing import S3CredentialsError, s3_client

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    with pytest.raises(S3CredentialsError, match=r"region_name 'us east 1' .*: fix storage.region, AWS_REGION"):
        s3_client(StorageConfig(region="us east 1", anon=True))
