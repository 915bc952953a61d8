"""Which storage errors are transient, the bounded retry, and real S3 failures through the fault proxy."""

from __future__ import annotations

import errno
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from s3_fault_proxy import FaultProxy, FaultRule

from pipeline import transient_errors
from pipeline.config import StorageConfig
from pipeline.file_formats import InputFileError
from pipeline.reading import ReadSpec, read_file
from pipeline.storage import StorageWriteError, resolve, write_parquet_atomic
from pipeline.transient_errors import TransientStorageError, is_transient, retrying

TRANSIENT = [
    # pyarrow's S3 errors as they come out of real runs against the fault proxy
    OSError("AWS Error INTERNAL_FAILURE during GetObject operation: Failed to flush response stream (eof: 0, bad: 1)"),
    OSError("AWS Error SLOW_DOWN during GetObject operation: Please reduce your request rate."),
    OSError("Could not open Parquet input source 'b/x.parquet': AWS Error INTERNAL_FAILURE during GetObject operation"),
    OSError(
        "AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 56, Failure when receiving data from the "
        "peer; Details: Recv failure: Connection reset by peer"
    ),
    OSError(
        "When reading information for key 'k' in bucket 'b': AWS Error UNKNOWN (HTTP status 503) during HeadObject"
    ),
    OSError(
        "When initiating multiple part upload for key 'k': AWS Error SERVICE_UNAVAILABLE during CreateMultipartUpload"
    ),
    OSError("AWS Error THROTTLING during PutObject operation: Rate exceeded"),
    OSError("AWS Error UNKNOWN (HTTP status 429) during GetObject operation"),
    ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    TimeoutError("read timed out"),
    OSError(errno.ETIMEDOUT, "Connection timed out"),
    RuntimeError("upload failed"),  # raised from a transient cause: classified by the cause
    TransientStorageError("cannot read s3://b/c1.jsonl as jsonl: ..."),
]
TRANSIENT[-2].__cause__ = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")

PERMANENT = [
    FileNotFoundError(errno.ENOENT, "Path does not exist 'b/nope'"),
    PermissionError(errno.EACCES, "Permission denied"),
    OSError("AWS Error ACCESS_DENIED during GetObject operation: Access Denied"),
    OSError("AWS Error NO_SUCH_BUCKET during ListObjectsV2 operation: The specified bucket does not exist"),
    OSError("AWS Error UNKNOWN (HTTP status 501) during GetObject operation"),
    OSError("Couldn't deserialize thrift: TProtocolException: Invalid data"),
    pa.ArrowInvalid(
        "Parquet magic bytes not found in footer. Either the file is corrupted or this is not a parquet file."
    ),
    ValueError("line is not valid JSON"),
    InputFileError("cannot read s3://b/c1.jsonl as jsonl: OSError: AWS Error SLOW_DOWN"),  # already classified
    StorageWriteError("cannot write s3://b/part-0.parquet: AWS Error ACCESS_DENIED"),
]


@pytest.mark.parametrize("err", TRANSIENT, ids=lambda e: f"{type(e).__name__}: {e}"[:60])
def test_transient_storage_errors(err):
    assert is_transient(err)


@pytest.mark.parametrize("err", PERMANENT, ids=lambda e: f"{type(e).__name__}: {e}"[:60])
def test_permanent_errors(err):
    assert not is_transient(err)


@pytest.fixture
def no_sleep(monkeypatch):
    slept = []
    monkeypatch.setattr(transient_errors.time, "sleep", slept.append)
    return slept


def failing(errors: list[Exception], result: str = "ok"):
    """A function that raises `errors` one per call, then returns `result`; `calls` counts the calls."""

    def fn() -> str:
        fn.calls += 1
        if errors:
            raise errors.pop(0)
        return result

    fn.calls = 0
    return fn


def test_retrying_retries_transient_errors_with_bounded_jittered_backoff(no_sleep):
    fn = failing([OSError("AWS Error SLOW_DOWN during GetObject"), ConnectionResetError("reset")])
    assert retrying(fn, retries=2)() == "ok"
    assert fn.calls == 3
    assert len(no_sleep) == 2 and 0 <= no_sleep[0] <= 1.0 and 0 <= no_sleep[1] <= 2.0  # caps 1 s, 2 s


def test_retrying_gives_up_after_the_bound_with_the_last_error(no_sleep):
    errors = [TransientStorageError(f"cannot read s3://b/c1.jsonl as jsonl: attempt {i}") for i in range(5)]
    fn = failing(errors)
    with pytest.raises(TransientStorageError, match=r"cannot read s3://b/c1.jsonl as jsonl: attempt 2"):
        retrying(fn, retries=2)()
    assert fn.calls == 3 and len(no_sleep) == 2


def test_retrying_does_not_retry_a_permanent_error(no_sleep):
    fn = failing([InputFileError("cannot read s3://b/bad.parquet as parquet: ArrowInvalid: ...")])
    with pytest.raises(InputFileError, match="bad.parquet"):
        retrying(fn, retries=5)()
    assert fn.calls == 1 and no_sleep == []


@pytest.fixture
def s3_files(s3_bucket):
    """A bucket with a good JSONL file, a good Parquet file and a corrupt one (bytes cut from the middle)."""
    client, bucket = s3_bucket
    client.put_object(
        Bucket=bucket, Key="in/a.jsonl", Body=b"".join(b'{"id": "%d", "text": "t %d"}\n' % (i, i) for i in range(50))
    )
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": [str(i) for i in range(50)], "text": ["x"] * 50}), buf)
    good = buf.getvalue()
    client.put_object(Bucket=bucket, Key="in/b.parquet", Body=good)
    client.put_object(Bucket=bucket, Key="in/corrupt.parquet", Body=good[:8] + good[len(good) // 2 :])
    return client, bucket


def spec_for(uri: str, endpoint: str, max_attempts: int = 1) -> ReadSpec:
    root = resolve(uri, StorageConfig(endpoint_url=endpoint, max_attempts=max_attempts))
    return ReadSpec(root=root, format=None, text_column="text", id_column="id", keep_columns=())


# ("reset" before any reply byte is absent: libcurl itself resends a request whose reused connection was reset.)
@pytest.mark.parametrize("kind", [503, 500, "truncate"])
@pytest.mark.parametrize("rel", ["a.jsonl", "b.parquet"])
def test_real_s3_faults_are_transient_and_name_the_file(s3_server, s3_files, no_sleep, kind, rel):
    """With the S3 client's own retries off, each injected fault reaches us: classified transient, file named, and
    one retry of the whole read gets every row exactly once."""
    _, bucket = s3_files
    proxy = FaultProxy(s3_server, rules=[FaultRule(("GET",), rf"^/{bucket}/in/{rel}", count=1, kinds=(kind,))]).start()
    try:
        spec = spec_for(f"s3://{bucket}/in", proxy.url)
        read_all = lambda: pa.concat_tables(read_file(spec, rel))
        with pytest.raises(TransientStorageError, match=rf"cannot read s3://{bucket}/in/{rel} as "):
            read_all()
        proxy.rules[0].count = 2
        rows = retrying(read_all, retries=1)()
    finally:
        proxy.stop()
    assert proxy.rules[0].injected == 2
    assert sorted(rows.column("id").to_pylist()) == sorted(str(i) for i in range(50))


@pytest.mark.parametrize(
    ("rel", "message"),
    [("corrupt.parquet", r"cannot read s3://{b}/in/corrupt.parquet as parquet"), ("gone.jsonl", r"gone.jsonl")],
)
def test_permanent_read_errors_fail_at_once_naming_the_file(s3_server, s3_files, no_sleep, rel, message):
    """A corrupt object and a missing key: InputFileError naming the file on the first attempt, no retry."""
    _, bucket = s3_files
    proxy = FaultProxy(s3_server).start()
    try:
        spec = spec_for(f"s3://{bucket}/in", proxy.url, max_attempts=6)
        calls = []

        def read_all() -> list[pa.Table]:
            calls.append(rel)
            return list(read_file(spec, rel))

        with pytest.raises(InputFileError, match=message.format(b=bucket)) as caught:
            retrying(read_all, retries=3)()
    finally:
        proxy.stop()
    assert not isinstance(caught.value, TransientStorageError)
    assert calls == [rel] and no_sleep == []
    assert sum(proxy.faults.values()) == 0


def test_write_errors_are_classified_naming_the_object(s3_server, s3_bucket):
    _, bucket = s3_bucket
    table = pa.table({"x": [1, 2, 3]})
    proxy = FaultProxy(s3_server, rules=[FaultRule(("PUT", "POST"), rf"^/{bucket}/", count=10**6)]).start()
    try:
        flaky = resolve(f"s3://{bucket}/out/part-0.parquet", StorageConfig(endpoint_url=proxy.url, max_attempts=2))
        with pytest.raises(TransientStorageError, match=rf"cannot write s3://{bucket}/out/part-0.parquet: .*SLOW_DOWN"):
            write_parquet_atomic(table, flaky)
    finally:
        proxy.stop()
    denied = resolve(f"s3://no-such-bucket-{bucket}/part-0.parquet", StorageConfig(endpoint_url=s3_server))
    with pytest.raises(StorageWriteError, match=rf"cannot write s3://no-such-bucket-{bucket}/part-0.parquet") as caught:
        write_parquet_atomic(table, denied)
    assert not isinstance(caught.value, TransientStorageError)
