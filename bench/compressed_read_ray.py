"""Worker memory while the embed job's read stage (embed_job.read_dataset) reads one .jsonl.gz in Ray, as it grows.

One size per process: a `.jsonl.gz` of about MB megabytes of JSON text (the sib200 sample repeated, unique ids) in
FOLDER (written once, reused), read through read_dataset on a local Ray (2 CPUs) with id_column and one kept
column, its blocks consumed by the driver. The workers below this process are sampled every 0.2 s: peak anonymous
memory (smaps_rollup `Anonymous`, the worker's own heap and Arrow buffers) and peak RSS (which also counts the
object store's shared pages the worker has touched). Compare with bench/compressed_read.py (the reader alone).

    .venv/bin/python bench/compressed_read_ray.py 512 /tmp/rr512
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
import time
from pathlib import Path

import psutil
import ray

from pipeline.config import EmbedConfig, StorageConfig
from pipeline.embed_job import read_dataset
from pipeline.reading import ReadSpec
from pipeline.storage import list_inputs
from pipeline.units import plan_units


def main() -> None:
    mb = int(sys.argv[1])
    folder = Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "sib200_sample.jsonl"
    recs = [json.loads(l) for l in SAMPLE.read_text().splitlines()]
    path = folder / "big.jsonl.gz"
    if not path.exists():
        written, c = 0, 0
        with gzip.open(path, "wb", compresslevel=1) as f:
            while written < mb * 10**6:
                d = "".join(json.dumps({**r, "id": f"{c}-{r['id']}"}, ensure_ascii=False) + "\n" for r in recs).encode()
                f.write(d)
                written += len(d)
                c += 1
    cfg = EmbedConfig.model_validate(
        {
            "input": {"uri": str(folder), "format": "jsonl", "id_column": "id"},
            "output": {"uri": str(folder.parent / f"{folder.name}-out"), "keep_columns": ["lang"]},
        }
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    root, listed = list_inputs(str(folder), StorageConfig())
    units = plan_units(root, listed, "jsonl", cfg.input.unit_bytes)
    spec = ReadSpec(root, "jsonl", "text", "id", ("lang",))
    peak, rpeak, stop = {}, {}, False
    me = psutil.Process()

    def sample() -> None:
        while not stop:
            for p in me.children(recursive=True):
                try:
                    cmd = p.cmdline()
                    if any(("default_worker.py" in a or a.startswith("ray::")) for a in cmd):
                        roll = dict(
                            l.split(":", 1) for l in Path(f"/proc/{p.pid}/smaps_rollup").read_text().splitlines()[1:]
                        )
                        anon = int(roll["Anonymous"].split()[0]) * 1024
                        peak[p.pid] = max(peak.get(p.pid, 0), anon)
                        rpeak[p.pid] = max(rpeak.get(p.pid, 0), int(roll["Rss"].split()[0]) * 1024)
                except (psutil.Error, OSError, KeyError):
                    pass
            time.sleep(0.2)

    t = threading.Thread(target=sample)
    t.start()
    start = time.time()
    rows = sum(b.num_rows for b in read_dataset(cfg, spec, units).iter_batches(batch_size=None, batch_format="pyarrow"))
    stop = True
    t.join()
    print(
        "RESULT",
        json.dumps(
            {
                "mb": mb,
                "gz_mb": round(path.stat().st_size / 1e6),
                "rows": rows,
                "wall_s": round(time.time() - start, 1),
                "max_worker_anon_mb": round(max(peak.values()) / 2**20),
                "max_worker_rss_mb": round(max(rpeak.values()) / 2**20),
                "workers": len(peak),
                "driver_rss_mb": round(me.memory_info().rss / 2**20),
            }
        ),
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
