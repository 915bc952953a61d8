"""Exact k-NN with ties at the k-th place through many duplicate keys: the tie resolution of this tree against a
baseline commit's, same inputs, same process layout, wall clock.

The case: a shard of `--keys` float32 unit vectors (dim `--dim`) of which `--copies` are one vector (texts that embed
alike: boilerplate lines, texts cut at the same prefix by max_tokens), `--queries` queries that are that vector (each
one's k-th place is a tie through every copy), k `--k`, one FAISS thread. Each version runs in its own child process
(`knn.faiss_scan` of that version's pipeline/bitext/knn.py, taken from git for the baseline), which reports its wall
time and peak RSS (VmHWM); the neighbours of both are compared.

    python -m bench.bitext_knn_ties --baseline 2606bd0 --out bench/results/bitext_knn_ties
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import importlib.util, json, sys, time
import faiss, numpy as np
faiss.omp_set_num_threads(1)
spec = importlib.util.spec_from_file_location("knn_under_test", sys.argv[1])
knn = importlib.util.module_from_spec(spec); spec.loader.exec_module(knn)
keys_n, copies, queries_n, dim, k = map(int, sys.argv[2:7])
rng = np.random.default_rng(0)
keys = rng.standard_normal((keys_n, dim)).astype(np.float32)
keys /= np.linalg.norm(keys, axis=1, keepdims=True)
keys[keys_n - copies + 1 :] = keys[7]  # row 7 and the last copies - 1 rows: one vector
queries = np.repeat(keys[7:8], queries_n, axis=0)
start = time.perf_counter()
scores, idx = knn.faiss_scan(queries, keys, k)
wall = time.perf_counter() - start
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
np.save(sys.argv[7], idx)
print("RESULT " + json.dumps({"wall_s": round(wall, 2), "peak_rss_mb": int(status["VmHWM"].split()[0]) // 1024}))
"""


def run(knn_file: Path, args: argparse.Namespace, out_idx: Path) -> dict:
    cmd = [
        sys.executable,
        "-c",
        CHILD,
        str(knn_file),
        *map(str, (args.keys, args.copies, args.queries, args.dim, args.k)),
    ]
    done = subprocess.run([*cmd, str(out_idx)], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(done.stdout.split("RESULT ", 1)[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="commit whose pipeline/bitext/knn.py is the baseline")
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--copies", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--out", type=Path, help="writes OUT.json and OUT.md")
    args = ap.parse_args()
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "knn_baseline.py"
        base.write_text(
            subprocess.run(
                ["git", "show", f"{args.baseline}:pipeline/bitext/knn.py"],
                capture_output=True,
                text=True,
                check=True,
                cwd=REPO,
            ).stdout
        )
        now = run(REPO / "pipeline/bitext/knn.py", args, Path(tmp) / "now.npy")
        before = run(base, args, Path(tmp) / "before.npy")
        same = bool(np.array_equal(np.load(Path(tmp) / "now.npy"), np.load(Path(tmp) / "before.npy")))
    load = Path("/proc/loadavg").read_text().split()[:3]
    result = {
        **{k: v for k, v in vars(args).items() if k != "out"},
        "before": before,
        "now": now,
        "speedup": round(before["wall_s"] / max(now["wall_s"], 1e-9), 1),
        "same_neighbours": same,
        "load_average_after": load,
    }
    print(json.dumps(result))
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
