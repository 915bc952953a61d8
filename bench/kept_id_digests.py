"""The re-embed job's duplicate-id pass on a night when one file changed: every listed file's ids read, one Ray task
per file (the pass before kept id digests and packing) against the pass now (small files packed into few tasks, the
changed file's ids read and the other files' kept digests loaded), alternating in one process on one Ray, wall clock.

    python -m bench.kept_id_digests --files 40 --rows 5000 --rounds 5

Both sides call pipeline.reembed.duplicates.check_ids on the same JSONL corpus and the same Ray: the baseline without
`sizes`/`keys`/`kept_at` (every file read, one task each, as the pass did before: a file without a listed size is
never packed), ours with them, as the job gives them, after a first night that wrote every
file's digests (timed too, as `first night`). Each round gives one file a new key (a change), so ours reads that
file and loads the other files' digests. The repeats' digests of both sides are checked equal every round. Wall
clock only: the pass's CPU is spent in Ray workers that start and exit during it, which a sum over this process's
live descendants misses (it read negative in a run), so no CPU column is given.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import ray

from bench.wallclock import ROOT, load_average, machine
from pipeline.config import EmbedConfig, StorageConfig
from pipeline.reading import ReadSpec
from pipeline.reembed.duplicates import check_ids
from pipeline.storage import list_inputs, resolve

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "his",
    "her",
    "an",
    "which",
    "or",
    "be",
    "are",
    "this",
    "had",
    "not",
    "but",
]


def write_corpus(folder: Path, files: int, rows: int, seed: int = 0) -> None:
    """`files` JSONL files of `rows` rows: an id (every 50th repeats an id of the first file) and ~60 words of text."""
    rng = random.Random(seed)
    folder.mkdir()
    for f in range(files):
        lines = []
        for r in range(rows):
            row_id = f"f0-r{r}" if f and r % 50 == 0 else f"f{f}-r{r}"
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 100)))
            lines.append(json.dumps({"id": row_id, "text": text, "url": f"https://example.org/{f}/{r}"}))
        (folder / f"part-{f:04d}.jsonl").write_text("\n".join(lines) + "\n")


def timed(fn) -> tuple[object, dict]:
    start = time.perf_counter()
    result = fn()
    return result, {"wall_s": round(time.perf_counter() - start, 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "kept_id_digests.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        write_corpus(corpus, args.files, args.rows)
        size_mb = sum(p.stat().st_size for p in corpus.iterdir()) / 1e6
        storage = StorageConfig()
        base, listed = list_inputs(str(corpus), storage)
        files = [f.path for f in listed]
        spec = ReadSpec(root=base, format="jsonl", text_column="text", id_column="id", keep_columns=())
        cfg = EmbedConfig.model_validate(
            {"input": {"uri": str(corpus), "format": "jsonl", "id_column": "id"}, "output": {"uri": str(work / "o")}}
        )
        kept_at = resolve(str(work / "ids"), storage)
        keys = {path: f"{path}@0" for path in files}
        sizes = {f.path: f.size for f in listed}  # as the re-embed job passes them: small files are packed
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        check_ids(cfg, spec, files, resolve(str(work / "warm"), storage))  # workers started, files in the page cache
        first, first_run = timed(
            lambda: check_ids(cfg, spec, files, resolve(str(work / "first"), storage), sizes, keys, kept_at)
        )
        print(f"first night (every file read, digests kept): {first_run}", flush=True)
        runs: dict[str, list[dict]] = {"every file read": [], "kept digests": []}
        for k in range(args.rounds):
            keys[files[k % len(files)]] = f"{files[k % len(files)]}@{k + 1}"  # one file changed tonight
            sides = {
                "every file read": lambda k=k: check_ids(cfg, spec, files, resolve(str(work / f"a{k}"), storage)),
                "kept digests": lambda k=k: check_ids(
                    cfg, spec, files, resolve(str(work / f"b{k}"), storage), sizes, keys, kept_at
                ),
            }
            results = []
            for name in list(sides) if k % 2 == 0 else list(sides)[::-1]:
                digests, run = timed(sides[name])
                results.append(digests)
                runs[name].append({**run, "load_before": round(load_average(), 2)})
                print(f"round {k} {name}: {run}", flush=True)
            assert results[0] == results[1] == first, "the two sides found other repeats"
        ray.shutdown()
    medians = {n: {key: statistics.median(r[key] for r in rs) for key in ("wall_s",)} for n, rs in runs.items()}
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "command": f"python -m bench.kept_id_digests --files {args.files} --rows {args.rows} --rounds {args.rounds}",
        "corpus": {"files": args.files, "rows_per_file": args.rows, "jsonl_mb": round(size_mb, 1)},
        "first_night": first_run,
        "runs": runs,
        "median": medians,
        "speedup_wall": round(medians["every file read"]["wall_s"] / medians["kept digests"]["wall_s"], 2),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("corpus", "first_night", "median", "speedup_wall")}))
    return result


if __name__ == "__main__":
    main()
