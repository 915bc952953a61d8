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

import json
from pathlib import Path

from bench.baseline_code import run_child
from bench.reembed_compare import compare
from bench.wallclock import ROOT

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
    return compare(argv, __doc__, ROOT / "bench" / "results" / "reembed_moves.json", run_once)


if __name__ == "__main__":
    main()
