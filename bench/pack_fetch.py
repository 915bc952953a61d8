"""Reading a pack of small files from a store far away: ours (files fetched ahead, pipeline.fetching) against a
baseline commit (one file after the other), in the same run.

A moto S3 server on loopback behind tests/s3_fault_proxy.FaultProxy, which delays every request by --latency-ms (a
store tens of ms away); FILES JSONL objects of 1-3 rows, packed into units as the embed job plans them. Each code
reads every unit with pipeline.units.read_unit in a child process (its own imports), --repeats times, alternating;
reported: wall seconds per read of the corpus (median), rows, the most requests the proxy held at once, and that
both read the same rows in the same order.

    .venv/bin/python bench/pack_fetch.py --baseline-ref main --out bench/results/pack_fetch.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO / "tests"))

from baseline_code import extract, free_port, revisions, run_child
from s3_fault_proxy import FaultProxy

READ_CHILD = """
import hashlib, json, sys, time
from pipeline.config import StorageConfig
from pipeline.reading import ReadSpec
from pipeline.storage import list_inputs
from pipeline.units import plan_units, read_unit
root, listed = list_inputs(sys.argv[1], StorageConfig(endpoint_url=sys.argv[2]))
units = plan_units(root, listed, "jsonl", 256 << 20)
spec = ReadSpec(root=root, format="jsonl", text_column="text", id_column="id", keep_columns=())
start, rows, digest = time.perf_counter(), 0, hashlib.sha1()
for unit in units:
    for block in read_unit(spec, unit):
        rows += block.num_rows
        digest.update("\\n".join(block.column("id").to_pylist()).encode())
wall = time.perf_counter() - start
print("RESULT " + json.dumps({"wall_s": wall, "rows": rows, "units": len(units), "order": digest.hexdigest()}))
"""


def main() -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default="main")
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pack_fetch.md")
    args = parser.parse_args()
    # moto's stand-in keys, for this process's boto3 client and the children's pyarrow S3 client
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="true")

    ref, head, dirty = revisions(args.baseline_ref)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    proxy = FaultProxy(f"http://127.0.0.1:{port}").start()
    try:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
        client.create_bucket(Bucket="bench")
        for f in range(args.files):
            rows = [{"id": f"{f}-{r}", "text": f"word{f} token{r} piece{f % 13} hello world"} for r in range(1 + f % 3)]
            body = "".join(json.dumps(r) + "\n" for r in rows).encode()
            client.put_object(Bucket="bench", Key=f"corpus/d{f % 7}/f{f:05d}.jsonl", Body=body)
        proxy.latency = args.latency_ms / 1000
        results: dict[str, list[dict]] = {"baseline": [], "ours": []}
        with tempfile.TemporaryDirectory() as tmp:
            codes = {"baseline": extract(ref, Path(tmp)), "ours": REPO}
            for _ in range(args.repeats):
                for label, code in codes.items():
                    proxy.max_in_flight = 0
                    result = run_child(code, READ_CHILD, "s3://bench/corpus", proxy.url)
                    result["max_in_flight"] = proxy.max_in_flight
                    results[label].append(result)
                    print(label, result, flush=True)
    finally:
        proxy.stop()
        server.stop()
    same = len({r["order"] for rs in results.values() for r in rs}) == 1
    load = os.getloadavg()
    lines = [
        "# Reading a pack of small files from a store far away",
        "",
        (
            f"`python bench/pack_fetch.py --baseline-ref {args.baseline_ref} --files {args.files} --latency-ms "
            f"{args.latency_ms:g} --repeats {args.repeats}`; baseline {ref[:10]}, ours {head}{'+' if dirty else ''}."
        ),
        (
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average at the end "
            f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (shared with other work). moto S3 on loopback behind "
            f"tests/s3_fault_proxy.py delaying every request by {args.latency_ms:g} ms; {args.files} JSONL objects "
            "of 1-3 rows; every unit read with pipeline.units.read_unit in a child process, codes alternating."
        ),
        "",
        "| code | units | rows | wall s (median) | wall s (each) | most requests in flight | same rows, same order |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, rs in results.items():
        walls = [r["wall_s"] for r in rs]
        lines.append(
            f"| {label} | {rs[0]['units']} | {rs[0]['rows']} | {statistics.median(walls):.2f} | "
            f"{', '.join(f'{w:.2f}' for w in walls)} | {max(r['max_in_flight'] for r in rs)} | {same} |"
        )
    base = statistics.median(r["wall_s"] for r in results["baseline"])
    ours = statistics.median(r["wall_s"] for r in results["ours"])
    lines += ["", f"Speed-up (median baseline / median ours): {base / ours:.1f}x."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
