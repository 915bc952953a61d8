"""The re-embed run after the corpus is reorganized (every file moved into a date partition, same bytes): this tree
(the moved files' vectors reused, pipeline/reembed/moves.py) against a baseline commit (they were embedded again
through the model as new files, the old paths dropped).

    python -m bench.reembed_moves --baseline-ref main            # 2 rounds, the two versions alternating
    python -m bench.reembed_moves --baseline-ref HEAD~2 --files 8 --rows 100 --rounds 3 --out /tmp/moves.json

Each round and code version: a fresh corpus of `--files` JSONL files x `--rows` rows (the sample's texts, ids in an
id column), a first run that embeds it, then every file moved from `part-NNN.jsonl` to `2024/MM/part-NNN.jsonl`
(os.rename: same bytes, same inode): the second run is the one measured (wall clock of run_reembed in a child
process whose working directory and PYTHONPATH are that version's `pipeline` and `jobs` packages,
bench/baseline_code.py). The model is the local multilingual-e5-small at float32 on the CPU, as in
bench.reembed_retype. The order of the two versions is swapped every round. Printed and written: each run's wall,
rows embedded and files moved, the medians, the load average.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.baseline_code import extract, revisions, run_child
from bench.wallclock import ROOT, load_average, machine, model_path

REEMBED_CHILD = """
import json, os, sys, time
from pathlib import Path
from pipeline.reembed.config import ReembedConfig
from pipeline.reembed.job import run_reembed
raw, corpus = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
cfg = ReembedConfig.model_validate(raw)
first = run_reembed(cfg)
for k, path in enumerate(sorted(corpus.glob("*.jsonl"))):
    (corpus / "2024" / f"{k % 12 + 1:02d}").mkdir(parents=True, exist_ok=True)
    os.rename(path, corpus / "2024" / f"{k % 12 + 1:02d}" / path.name)
start = time.perf_counter()
second = run_reembed(cfg)
wall = time.perf_counter() - start
print("RESULT " + json.dumps({"first": first, "second": second, "wall_s": round(wall, 2)}))
"""


def make_corpus(folder: Path, files: int, rows: int) -> Path:
    texts = [json.loads(line)["text"] for line in (ROOT / "data/sample/sib200_sample.jsonl").read_text().splitlines()]
    corpus = folder / "corpus"
    corpus.mkdir(parents=True)
    for f in range(files):
        records = [{"id": f"f{f}-{r}", "text": texts[(f * rows + r) % len(texts)]} for r in range(rows)]
        (corpus / f"part-{f:03d}.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in records))
    return corpus


def run_once(code: Path, work: Path, files: int, rows: int, model: Path) -> dict:
    corpus = make_corpus(work, files, rows)
    raw = {
        "input": {"uri": str(corpus), "format": "jsonl", "id_column": "id"},
        "output": {"uri": str(work / "emb")},
        "model": {"name_or_path": str(model), "pooling": "mean", "dtype": "float32", "max_tokens": 128},
    }
    config = work / "config.json"
    config.write_text(json.dumps(raw))
    result = run_child(code, REEMBED_CHILD, str(config), str(corpus))
    second = result["second"]
    return {"wall_s": result["wall_s"], "rows_embedded": second["rows_embedded"], "files": second["files"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default="main")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reembed_moves.json")
    args = parser.parse_args(argv)
    model = model_path(args.model)
    baseline, head, dirty = revisions(args.baseline_ref)
    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        codes = {"baseline": extract(baseline, Path(tmp)), "this": ROOT}
        for k in range(args.rounds):
            order = ["baseline", "this"] if k % 2 == 0 else ["this", "baseline"]
            for name in order:
                load = load_average()
                run = run_once(codes[name], Path(tmp) / f"{name}-{k}", args.files, args.rows, model)
                run["load_before"] = round(load, 2)
                runs[name].append(run)
                print(f"round {k} {name}: {run['wall_s']} s, rows embedded {run['rows_embedded']}, {run['files']}")
    medians = {name: statistics.median(r["wall_s"] for r in rs) for name, rs in runs.items()}
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "baseline": baseline,
        "head": head,
        "uncommitted_changes": dirty,
        "corpus": {"files": args.files, "rows_per_file": args.rows, "model": args.model, "dtype": "float32"},
        "runs": runs,
        "median_wall_s": medians,
        "speedup": round(medians["baseline"] / medians["this"], 2),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"median_wall_s": medians, "speedup": result["speedup"]}))
    return result


if __name__ == "__main__":
    main()
