"""CPU seconds of every process a command starts, Ray's daemons, workers and actors included, with what each ran.

    python -m bench.process_cpu -- python -m jobs.embed --config configs/quickstart.yaml --set ...

This process becomes a child subreaper (Linux), runs the command and samples its whole process tree every
`--interval` seconds with psutil: each process's CPU (user + system) at its last sample, when it started and was
last seen (seconds from launch), and the process titles it went through (Ray names a worker after what it runs:
`ray::IDLE`, `ray::MapBatches(read_units)`, `ray::MapWorker(MapBatches(EmbedActor)).__init__`), each with the CPU
the process had used by then. A process that exits between two samples loses at most one interval of CPU. The total
of the reaped tree (RUSAGE_CHILDREN) is printed with it. For the fixed cost of a job: which processes it starts,
which of them run nothing, and where their CPU goes (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.process_tree import become_subreaper, children_cpu, reap_orphans


def sample(root: psutil.Process, seen: dict[int, dict], now: float, start: float) -> None:
    for p in root.children(recursive=True):
        try:
            with p.oneshot():
                t = p.cpu_times()
                title = " ".join(p.cmdline())[:120]
                created = p.create_time() - start
        except psutil.Error:
            continue
        entry = seen.setdefault(p.pid, {"pid": p.pid, "title": title, "started": round(created, 1), "titles": []})
        cpu = t.user + t.system + t.children_user + t.children_system
        if title and title != entry.get("_last"):
            entry["titles"].append((round(now, 1), title[:70], round(cpu, 2)))
            entry["_last"] = title
        entry.update(title=title or entry["title"], cpu=round(cpu, 2), last_seen=round(now, 1))


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = p.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        p.error("give the command after --")
    if not become_subreaper():
        print("no child subreaper here: daemons orphaned at the command's exit are not seen", file=sys.stderr)
    before, start = children_cpu(), time.time()
    proc = subprocess.Popen(command)
    me, seen = psutil.Process(), {}
    while proc.poll() is None:
        sample(me, seen, time.time() - start, start)
        time.sleep(args.interval)
    exited = time.time() - start
    deadline = time.monotonic() + 60
    while me.children() and time.monotonic() < deadline:  # Ray's daemons after the driver's exit
        sample(me, seen, time.time() - start, start)
        reap_orphans(args.interval)
    reap_orphans()
    processes = sorted(({k: v for k, v in e.items() if k != "_last"} for e in seen.values()), key=lambda e: -e["cpu"])
    result = {
        "command": command,
        "exit_status": proc.returncode,
        "command_seconds": round(exited, 1),
        "tree_cpu_seconds": round(children_cpu() - before, 2),
        "sampled_cpu_seconds": round(sum(e["cpu"] for e in processes), 2),
        "processes": processes,
    }
    print(
        f"exit {proc.returncode} after {exited:.1f} s; tree CPU {result['tree_cpu_seconds']:.1f} s "
        f"(sampled {result['sampled_cpu_seconds']:.1f} s in {len(processes)} processes)"
    )
    for e in processes:
        print(f"{e['cpu']:6.2f} CPU-s  {e['started']:6.1f}-{e.get('last_seen', 0):6.1f} s  {e['title'][:90]}")
        for at, title, cpu in e["titles"][1:]:
            print(f"{'':30s}at {at:6.1f} s ({cpu:5.2f} CPU-s so far): {title}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
