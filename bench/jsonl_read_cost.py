"""CPU time of reading one JSONL file, this tree against a baseline commit, alternating processes in one run.

For a change to the JSONL parse (e.g. the repeated-key check, pipeline.repeated_keys): the sib200 sample repeated
to about `--mb` MB with unique ids, read whole through pipeline.reading.read_file with text, id and two kept
columns (4 keys the job reads), each read in its own process; process CPU seconds and wall clock, median of
`--rounds`. No model: this is the read stage alone.

    .venv/bin/python bench/jsonl_read_cost.py --baseline-ref main~1 --mb 50 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_code import REPO, alternate_rounds, cpu_table, extract, revisions

SAMPLE = REPO / "data" / "sample" / "sib200_sample.jsonl"

CHILD = """
import json, sys, time
from pipeline.config import StorageConfig
from pipeline.reading import ReadSpec, read_file
from pipeline.storage import resolve
spec = ReadSpec(resolve(sys.argv[1], StorageConfig()), "jsonl", "text", "id", tuple(json.loads(sys.argv[2])))
wall, cpu = time.perf_counter(), time.process_time()
rows = sum(b.num_rows for b in read_file(spec, "a.jsonl"))
print("RESULT " + json.dumps({"rows": rows, "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", required=True)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--colon-text",
        action="store_true",
        help="end every text with ' (10:30)': each line then holds a ':' inside a string (repeated_keys.may_repeat "
        "looks at its parsed strings)",
    )
    parser.add_argument(
        "--nested",
        action="store_true",
        help="records {id, text, meta: {lang, topic}}, kept columns meta.lang, meta.topic",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "jsonl_read_cost.md")
    args = parser.parse_args()
    base_rev, head, dirty = revisions(args.baseline_ref)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        records = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
        (work / "data").mkdir()
        suffix = " (10:30)" if args.colon_text else ""
        keep = ["meta.lang", "meta.topic"] if args.nested else ["lang", "topic"]

        def shape(r: dict) -> dict:
            if not args.nested:
                return r
            return {"id": r["id"], "text": r["text"], "meta": {"lang": r["lang"], "topic": r["topic"]}}

        with open(work / "data" / "a.jsonl", "w", encoding="utf-8") as f:
            copy = 0
            while f.tell() < args.mb * 10**6:
                f.write(
                    "".join(
                        json.dumps(
                            shape({**r, "id": f"{copy}-{r['id']}", "text": r["text"] + suffix}), ensure_ascii=False
                        )
                        + "\n"
                        for r in records
                    )
                )
                copy += 1
        baseline = extract(args.baseline_ref, work)
        load = os.getloadavg()
        runs = alternate_rounds(baseline, args.rounds, CHILD, str(work / "data"), json.dumps(keep))
        load_after = os.getloadavg()
    rows = runs["baseline"][0]["rows"]
    lines = [
        "# CPU time of reading one JSONL file (bench/jsonl_read_cost.py)",
        "",
        (
            f"{args.mb} MB JSONL, {rows:,} rows, 4 keys read (text, id, 2 kept){', every text holding a colon' if args.colon_text else ''}{', nested meta' if args.nested else ''}. Baseline {base_rev[:10]}, this tree "
            f"{head}{' (uncommitted changes)' if dirty else ''}. Machine: {platform.machine()}, {os.cpu_count()} "
            f"cores, shared with other work: load average {load[0]:.1f} before, {load_after[0]:.1f} after. "
            f"Alternating processes, median of {args.rounds}. "
            f"`python bench/jsonl_read_cost.py --baseline-ref {args.baseline_ref} --mb {args.mb} --rounds "
            f"{args.rounds}{' --colon-text' if args.colon_text else ''}{' --nested' if args.nested else ''}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
        ),
        "",
        *cpu_table(runs),
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
