"""pipeline.etags: an S3 object uploaded again with other part sizes (another ETag, the same bytes) is the same
object for both jobs' checks; other bytes are not."""

from __future__ import annotations

import functools

import pytest

from pipeline.config import EmbedConfig, StorageConfig
from pipeline.etags import MIB, bytes_give_etag, part_sizes, same_object
from pipeline.input_contents import changed_objects
from pipeline.reembed.job import objects_changed
from pipeline.reembed.layout import VersionLayout
from pipeline.reembed.manifest import FileEntry, Manifest
from pipeline.reembed.planner import make_plan
from pipeline.reembed.sources import scan_sources
from pipeline.storage import list_inputs, resolve

SIZE = 6 * MIB + 100  # two parts of the S3 minimum (5 MiB)


def upload(client, bucket: str, key: str, data: bytes, part: int | None = None) -> str:
    """Put `data` at `key`, in one part or in parts of `part` bytes (a multipart upload); returns its ETag."""
    if part is None:
        return client.put_object(Bucket=bucket, Key=key, Body=data)["ETag"].strip('"')
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for n, start in enumerate(range(0, len(data), part), 1):
        tag = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=data[start : start + part]
        )
        parts.append({"PartNumber": n, "ETag": tag["ETag"]})
    done = client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    return done["ETag"].strip('"')


def test_part_sizes_cut_the_object_into_the_etags_parts():
    assert part_sizes(SIZE, 2) == [5 * MIB, 4 * MIB]  # the S3 minimum, and the smallest whole MiB
    assert part_sizes(20 * MIB, 3) == [8 * MIB, 7 * MIB]  # aws cli's 8 MiB, and the smallest whole MiB
    assert part_sizes(10, 1) == [10]


def test_an_object_uploaded_again_with_other_part_sizes_is_the_same_object(s3_bucket, s3_server):
    """The same bytes uploaded in one part, then in parts of 5 MiB (a sync tool, another client), then in one part
    again: each upload gives another ETag at the same size. The re-embed job's plan took the object for changed
    (embedded again), the end-of-run checks of both jobs for one changed during the run (InputChangedError). Its
    bytes, read once, are now compared with the earlier ETag: the same bytes are the same object; other bytes of
    the same size are still a change."""
    client, bucket = s3_bucket
    data = bytes(range(256)) * (SIZE // 256) + b"x" * (SIZE % 256)
    plain = upload(client, bucket, "in/a.jsonl", data)
    storage = StorageConfig(endpoint_url=s3_server)
    root, files = list_inputs(f"s3://{bucket}/in", storage)
    [before] = scan_sources(root, files)
    parted = upload(client, bucket, "in/a.jsonl", data, part=5 * MIB)
    assert parted.endswith("-2") and parted != plain
    assert bytes_give_etag(root, "a.jsonl", SIZE, before.token)  # multipart now, single-part listed
    assert bytes_give_etag(root, "a.jsonl", SIZE, parted)
    upload(client, bucket, "in/a.jsonl", data)
    assert bytes_give_etag(root, "a.jsonl", SIZE, f'"{parted}"')  # single-part now, multipart listed

    # re-embed's plan: the entry of the single-part upload against the object as it is (re-uploaded twice)
    upload(client, bucket, "in/a.jsonl", data, part=5 * MIB)
    _, files_now = list_inputs(f"s3://{bucket}/in", storage)
    [src] = scan_sources(root, files_now)
    entry = FileEntry("a.jsonl", SIZE, before.token, before.key, "r1", 1, 1, 0, 1, ["data/x/r1/p.parquet"])
    previous = Manifest("fp", {}, 1, "r1", "in", 0.0, [entry])
    reuploaded = functools.partial(same_object, root)
    plan = make_plan([src], previous, {}, same_object=reuploaded)
    assert [e.path for e in plan.unchanged] == ["a.jsonl"] and plan.is_noop  # old code: changed, embedded again
    assert plan.unchanged[0].token == src.token and plan.unchanged[0].key == entry.key
    assert plan.retokened == 1  # published with the new ETag: the next run reads the object no more
    assert make_plan([src], previous, {}).changed == [src]  # without it: as before

    # the end-of-run checks of both jobs, against the listing taken before the re-uploads
    by_path = {f.path: f for f in files}
    assert changed_objects(files_now, by_path, {"a.jsonl"}, reuploaded) == {}  # old code: '... (same size)'
    cfg = EmbedConfig.model_validate(
        {"input": {"uri": f"s3://{bucket}/in"}, "output": {"uri": "/tmp/unused"}, "model": {"name_or_path": "m"}}
    ).model_copy(update={"storage": storage})
    layout = VersionLayout(resolve(f"s3://{bucket}/out", storage), "fp")
    assert objects_changed(cfg, root, {"a.jsonl": before}, [entry], layout) == {}

    # other bytes of the same size: a change everywhere
    upload(client, bucket, "in/a.jsonl", b"y" + data[1:], part=5 * MIB)
    _, edited = list_inputs(f"s3://{bucket}/in", storage)
    [src] = scan_sources(root, edited)
    assert make_plan([src], previous, {}, same_object=reuploaded).changed == [src]
    assert "same size" in changed_objects(edited, by_path, {"a.jsonl"}, reuploaded)["a.jsonl"]
    assert "same size" in objects_changed(cfg, root, {"a.jsonl": before}, [entry], layout)["a.jsonl"]
    assert not bytes_give_etag(root, "a.jsonl", SIZE, "etag:not-an-md5")


@pytest.mark.parametrize("size", [1, 5 * MIB, 5 * MIB + 1, 13 * MIB])
def test_the_etag_of_parts_is_computed_as_s3_does(s3_bucket, s3_server, size):
    """The multipart ETag of each part size, against the server's, at the part boundaries."""
    client, bucket = s3_bucket
    data = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    root = resolve(f"s3://{bucket}", StorageConfig(endpoint_url=s3_server))
    etag = upload(client, bucket, "o", data, part=5 * MIB)
    assert bytes_give_etag(root, "o", size, etag)
    assert not bytes_give_etag(root, "o", size + 1, etag)


def test_an_object_moved_to_another_key_in_other_parts_is_a_move(s3_bucket, s3_server):
    """An S3 object copied to a new key by a client that uploads in other parts (the corpus reorganized by a sync
    tool) has another ETag: the re-embed plan paired moves by equal ETags only, so it was embedded again. Its bytes
    are now compared with the entry's ETag of its size (one read): a move, its vectors reused. Two single-part
    ETags that differ are other bytes: no read."""
    client, bucket = s3_bucket
    data = b"z" * SIZE
    storage = StorageConfig(endpoint_url=s3_server)
    upload(client, bucket, "in/a.jsonl", data)
    root, files = list_inputs(f"s3://{bucket}/in", storage)
    [before] = scan_sources(root, files)
    entry = FileEntry("a.jsonl", SIZE, before.token, before.key, "r1", 1, 1, 0, 1, ["data/x/r1/p.parquet"])
    previous = Manifest("fp", {}, 1, "r1", "in", 0.0, [entry])
    client.delete_object(Bucket=bucket, Key="in/a.jsonl")
    upload(client, bucket, "in/2026/a.jsonl", data, part=5 * MIB)
    upload(client, bucket, "in/2026/b.jsonl", b"w" * SIZE)  # same size, other bytes, single part
    _, now = list_inputs(f"s3://{bucket}/in", storage)
    sources = scan_sources(root, now)
    asked = []

    def reuploaded(rel, size, etag):
        asked.append(rel)
        return same_object(root, rel, size, etag)

    plan = make_plan(sources, previous, {}, reads_alike=lambda a, b: True, same_object=reuploaded)
    assert [(s.path, e.path) for s, e in plan.moves] == [("2026/a.jsonl", "a.jsonl")]  # old code: []
    assert asked == ["2026/a.jsonl"]  # b.jsonl: two MD5s that differ, not read
    assert make_plan(sources, previous, {}, reads_alike=lambda a, b: True).moves == []


def test_a_resume_goes_on_after_an_object_was_uploaded_again_in_other_parts(s3_bucket, s3_server, tmp_path):
    """The embed job's resume compares its recorded listing's ETags: an object uploaded again with other part sizes
    (the same bytes) was a changed file and the resume was refused. Its bytes are now compared with the recorded
    ETag (input_contents.same_content, one read of it): the resume goes on; other bytes are still refused."""
    from pipeline import commit
    from pipeline.fingerprint import listing_digest
    from pipeline.input_contents import same_content

    client, bucket = s3_bucket
    data = b"q" * SIZE
    upload(client, bucket, "in/a.jsonl", data)
    storage = StorageConfig(endpoint_url=s3_server)
    root, files = list_inputs(f"s3://{bucket}/in", storage)
    out = resolve(str(tmp_path / "out"), StorageConfig())
    commit.begin(out, "embed", overwrite=False, fingerprint={"m": "x", "input.listing": listing_digest(files)})
    commit.mark_unit(out, "k1", {"rows": 1})  # a unit committed: there is something to resume
    upload(client, bucket, "in/a.jsonl", data, part=5 * MIB)
    now = {"m": "x", "input.listing": listing_digest(list_inputs(f"s3://{bucket}/in", storage)[1])}
    with pytest.raises(commit.OutputExistsError, match=r"a\.jsonl"):
        commit.begin(out, "embed", overwrite=False, fingerprint=now)  # old code: refused, also with same_content
    assert commit.begin(
        out, "embed", overwrite=False, fingerprint=now, same_content=same_content({"input.listing": root}, out)
    )
    upload(client, bucket, "in/a.jsonl", b"r" + data[1:])
    edited = {"m": "x", "input.listing": listing_digest(list_inputs(f"s3://{bucket}/in", storage)[1])}
    with pytest.raises(commit.OutputExistsError, match=r"a\.jsonl"):
        commit.begin(
            out, "embed", overwrite=False, fingerprint=edited, same_content=same_content({"input.listing": root}, out)
        )


def test_an_object_replaced_by_its_gzip_is_a_move(s3_bucket, s3_server):
    """`a.jsonl` replaced on S3 by `a.jsonl.gz` (or zstd): other bytes, another ETag, so it was a new file embedded
    again through the model and a deleted one (local files were paired by their sha256, S3 objects not). A new
    compressed object whose declared size (gzip ISIZE, zstd content size: a ranged read) is that of an entry whose
    path is gone is now read once, and its decompressed bytes compared with the entry's ETag (single-part MD5 or
    multipart part MD5s): a move. Not read: an object of another declared size; not a move: other bytes of that
    size."""
    import gzip

    import pyarrow as pa

    from pipeline.reembed.moves import declared_size, decompressed_gives_etag, reads_alike, same_format

    client, bucket = s3_bucket
    storage = StorageConfig(endpoint_url=s3_server)
    small = b'{"text": "one"}\n{"text": "two"}\n'
    big = (b'{"text": "row"}\n' * (SIZE // 16 + 1))[:SIZE]
    upload(client, bucket, "in/a.jsonl", small)
    upload(client, bucket, "in/b.jsonl", big, part=5 * MIB)
    upload(client, bucket, "in/c.jsonl", small.replace(b"one", b"uno"))
    root, files = list_inputs(f"s3://{bucket}/in", storage)
    entries = [
        FileEntry(s.path, s.size, s.token, s.key, "r1", 2, 2, 0, 2, [f"data/{s.key}/r1/p.parquet"])
        for s in scan_sources(root, files)
    ]
    previous = Manifest("fp", {}, 1, "r1", "in", 0.0, entries)
    for key in ("in/a.jsonl", "in/b.jsonl", "in/c.jsonl"):
        client.delete_object(Bucket=bucket, Key=key)
    upload(client, bucket, "in/a.jsonl.gz", gzip.compress(small))
    upload(client, bucket, "in/b.jsonl.zst", pa.compress(big, "zstd", asbytes=True))
    upload(client, bucket, "in/other.jsonl.gz", gzip.compress(small.replace(b"one", b"ONE")))  # c's size, not c
    upload(client, bucket, "in/new.jsonl.gz", gzip.compress(b'{"text": "a new file"}\n'))
    _, now = list_inputs(f"s3://{bucket}/in", storage)
    sources = scan_sources(root, now)
    asked = []

    def gzipped(rel, size, etag):
        asked.append(rel)
        return decompressed_gives_etag(root, rel, size, etag)

    plan = make_plan(
        sources, previous, {}, None, None, lambda o, n: reads_alike(None, o, n), (), lambda rel: None,
        lambda o, n: same_format(None, o, n), declared_size=lambda rel: declared_size(root, rel),
        decompressed_etag=gzipped,
    )  # fmt: skip
    # old code: no decompressed_etag (no moves: both embedded again)
    assert sorted((s.path, e.path) for s, e in plan.moves) == [("a.jsonl.gz", "a.jsonl"), ("b.jsonl.zst", "b.jsonl")]
    assert "new.jsonl.gz" not in asked and "other.jsonl.gz" in asked  # read only at a gone entry's size
    assert [s.path for s in plan.to_embed] == ["new.jsonl.gz", "other.jsonl.gz"]
