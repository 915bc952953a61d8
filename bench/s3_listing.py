"""The S3 input listing with ETags (pipeline.s3_listing, boto3) against the baseline's pyarrow listing, same run.

A moto S3 server on loopback holding --objects tiny JSONL objects under one prefix (in 10 folders). Each code runs
`pipeline.storage.list_inputs` on the prefix in a child process (its own imports, timed after them), --repeats
times, codes alternating; reported: wall seconds per listing (median and each), the child's CPU seconds (the
client's share: the server runs in this process), files listed, and how many carry an ETag.

    .venv/bin/python bench/s3_listing.py --baseline-ref main --objects 10000 --out bench/results/s3_listing.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_code import extract, free_port, revisions, run_child

LIST_CHILD = """
import json, sys, time
from pipeline.config import StorageConfig
from pipeline.storage import list_inputs
start, cpu = time.perf_counter(), time.process_time()
root, listed = list_inputs(sys.argv[1], StorageConfig(endpoint_url=sys.argv[2]))
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
etags = sum(1 for f in listed if getattr(f, "etag", None))
print("RESULT " + json.dumps({"wall_s": wall, "cpu_s": cpu, "files": len(listed), "etags": etags}))
"""


def main() -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default="main")
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "s3_listing.md")
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="true")

    ref, head, dirty = revisions(args.baseline_ref)
    load_start = os.getloadavg()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket="bench")
        body = b'{"id": "x", "text": "hello world"}\n'
        with ThreadPoolExecutor(16) as pool:
            keys = [f"corpus/d{i % 10}/f{i:06d}.jsonl" for i in range(args.objects)]
            list(pool.map(lambda k: client.put_object(Bucket="bench", Key=k, Body=body), keys))
        results: dict[str, list[dict]] = {"baseline": [], "ours": []}
        with tempfile.TemporaryDirectory() as tmp:
            codes = {"baseline": extract(ref, Path(tmp)), "ours": REPO}
            for _ in range(args.repeats):
                for label, code in codes.items():
                    result = run_child(code, LIST_CHILD, "s3://bench/corpus", endpoint)
                    results[label].append(result)
                    print(label, result, flush=True)
    finally:
        server.stop()
    load = os.getloadavg()
    lines = [
        "# The S3 input listing with ETags (boto3) against pyarrow's listing",
        "",
        (
            f"`python bench/s3_listing.py --baseline-ref {args.baseline_ref} --objects {args.objects} --repeats "
            f"{args.repeats}`; baseline {ref[:10]} (pyarrow's S3FileSystem listing), ours {head}{'+' if dirty else ''} "
            "(pipeline.s3_listing: boto3 ListObjectsV2)."
        ),
        (
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average at the start "
            f"{load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}, at the end {load[0]:.2f} / "
            f"{load[1]:.2f} / {load[2]:.2f} (shared with other work). moto S3 on loopback (in this process), "
            f"{args.objects} objects under one prefix in 10 folders; `list_inputs` in a child process per listing, "
            "timed after its imports, codes alternating."
        ),
        "",
        "| code | files | with ETag | wall s (median) | wall s (each) | client CPU s (median) |",
        "|---|---|---|---|---|---|",
    ]
    for label, rs in results.items():
        walls = [r["wall_s"] for r in rs]
        lines.append(
            f"| {label} | {rs[0]['files']} | {rs[0]['etags']} | {statistics.median(walls):.2f} | "
            f"{', '.join(f'{w:.2f}' for w in walls)} | {statistics.median(r['cpu_s'] for r in rs):.2f} |"
        )
    base = statistics.median(r["wall_s"] for r in results["baseline"])
    ours = statistics.median(r["wall_s"] for r in results["ours"])
    lines += ["", f"Ratio (median ours / median baseline): {ours / base:.2f}x."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
