"""Wall clock a user sees: the whole `python -m jobs.embed` process against sentence-transformers, same dtype.

    python -m bench.wallclock                                   # the headline run (README / docs/performance.md)
    python -m bench.wallclock --cases multilingual-e5-small:float32 --docs 200 --no-quickstart   # a quick check

For each case (model:dtype), one after the other in this one run, on the same corpus (bench/corpus.py: skewed,
multilingual, lognormal lengths):

* (a) sentence-transformers: a child process loads the model as sentence-transformers does (`SentenceTransformer`,
  `model_kwargs={"dtype": ..., "attn_implementation": "sdpa"}`), warms up on 8 texts, then times one `encode` over
  every text at its defaults (batch_size 32, sorted by characters, tokenizer inside). Its torch threads are torch's
  default (all cores). Two wall times: `encode` alone (the baseline of the ratio) and the whole child process.
* (d) ours: `python -m jobs.embed --config <yaml>` with every `compute` and `batching` key at its default, timed by
  the parent from launch to exit: Python start, imports, Ray start-up, the read tasks, the tokenizer and model actors
  (model load included), the Parquet writer and Ray's shutdown. As a rerun of the model (a scheduled or repeated
  job): its model resolution is in the resolution cache beforehand (pipeline/resolution_cache.py), so the driver
  loads no tokenizer; `--cold-resolution` times a first run instead (bench/resolution_cache.py measures both).

Ratio = (a) `encode` wall / (d) process wall: how much sooner a user has the vectors of the whole corpus on disk than
sentence-transformers has them in memory, with model loading charged to us only. CPU seconds are an extra column:
(a) the process's (`time.process_time`), (d) the whole process tree's (driver, raylet, GCS, every worker), sampled
every 0.2 s. Fixed cost = (d) wall - the model stage's forward-pass seconds (`embed_seconds` of the job summary).
The row-by-row cosine of (d)'s stored vectors to (a)'s checks that both computed the same thing at that dtype.
The README quickstart (configs/quickstart.yaml, 320 rows) with a local model is timed last, wall clock, as a first run
of the model and as its rerun (`--no-quickstart` skips it; `--quickstart-only` times it again into the results of an
earlier run, keeping their cases).

Results: bench/results/wallclock.json and wallclock.md (`--tag` names others); `--write-docs` also regenerates the
marked sections of docs/performance.md and README.md from that JSON (`--render-only FILE` does only that).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("RAYEMBED_MODELS", ROOT / ".models"))


def model_path(name: str | Path) -> Path:
    """`name` itself where it is a directory, else the model of that name under MODELS (which may not exist)."""
    return Path(name) if Path(name).is_dir() else MODELS / name


RESULTS = ROOT / "bench" / "results"
POOLING = {"smollm2-135m": "last_token", "multilingual-e5-small": "mean", "all-minilm-l6-v2": "mean"}
DEFAULT_CASES = (
    "multilingual-e5-small:float32,multilingual-e5-small:bfloat16,smollm2-135m:float32,smollm2-135m:bfloat16"
)
MARK = "wallclock"  # <!-- wallclock:start --> ... <!-- wallclock:end --> in the regenerated documents


class TreeCpu:
    """CPU seconds (user + system) of a process and all its descendants, sampled while it runs.

    A descendant that exits between two samples loses at most one interval of its CPU time (0.2 s by default).
    """

    def __init__(self, pid: int, interval: float = 0.2):
        import psutil

        self.psutil, self.root, self.interval = psutil, psutil.Process(pid), interval
        self.seen: dict[tuple[int, float], float] = {}  # (pid, create_time) -> last CPU seconds

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except self.psutil.Error:
            return
        for p in procs:
            try:
                t = p.cpu_times()
                self.seen[(p.pid, p.create_time())] = t.user + t.system + t.children_user + t.children_system
            except self.psutil.Error:
                continue

    def total(self) -> float:
        return sum(self.seen.values())


def run_timed(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run `cmd` to completion; (wall seconds from launch to exit, CPU seconds of its process tree)."""
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        cpu = TreeCpu(proc.pid)
        while proc.poll() is None:
            cpu.sample()
            time.sleep(cpu.interval)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}; see {log}:\n{log.read_text()[-3000:]}")
    return wall, cpu.total()


def st_child(spec: dict) -> dict:
    """(a), inside its own process: load, warm up, time one `encode` over the corpus."""
    import torch

    from bench.baselines import load_sentence_transformer

    texts = [json.loads(line)["text"] for line in Path(spec["texts"]).read_text().splitlines()]
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[spec["dtype"]]
    start = time.perf_counter()
    st = load_sentence_transformer(spec["model_dir"], spec["pooling"], spec["max_tokens"], dtype=dtype)
    load = time.perf_counter() - start
    st.encode(texts[:8], batch_size=32)  # warm-up: first-call allocations are not throughput
    start, start_cpu = time.perf_counter(), time.process_time()
    vectors = st.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    np.save(spec["vectors"], np.asarray(vectors, dtype=np.float32))
    tokens = sum(len(ids) for ids in st.tokenizer(texts, truncation=True, max_length=spec["max_tokens"])["input_ids"])
    return {
        "encode_seconds": wall,
        "encode_cpu_seconds": cpu,
        "load_seconds": load,
        "tokens": tokens,
        "torch_threads": torch.get_num_threads(),
    }


def write_corpus(texts: list[str], corpus_dir: Path, files: int = 4) -> list[str]:
    """JSONL files part-000.jsonl...; returns the job's derived id (`<file>#<row>`) of every text, in order."""
    corpus_dir.mkdir(parents=True, exist_ok=True)
    ids = []
    for i, part in enumerate(np.array_split(np.arange(len(texts)), files)):
        name = f"part-{i:03d}.jsonl"
        with (corpus_dir / name).open("w") as f:
            for row, j in enumerate(part):
                f.write(json.dumps({"text": texts[j]}, ensure_ascii=False) + "\n")
                ids.append(f"{name}#{row}")
    return ids


def job_config(model_dir: str, pooling: str, dtype: str, max_tokens: int, corpus: Path, out: Path) -> dict:
    """The user's config: input, output and model; batching and compute at their defaults."""
    return {
        "input": {"uri": str(corpus), "format": "jsonl"},
        "output": {"uri": str(out), "overwrite": True},
        "model": {
            "name_or_path": model_dir,
            "pooling": pooling,
            "dtype": dtype,
            "max_tokens": max_tokens,
            "prompt": "",
        },
    }


def stored_vectors(out: Path, ids: list[str]) -> np.ndarray:
    import pyarrow.dataset as pads

    table = pads.dataset(str(out), format="parquet").to_table(columns=["id", "embedding"])
    where = {key: i for i, key in enumerate(table.column("id").to_pylist())}
    flat = table.column("embedding").combine_chunks()
    matrix = np.asarray(flat.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(flat), -1)
    return matrix[[where[key] for key in ids]]


def load_average() -> float:
    return os.getloadavg()[0]


# The job's model resolution, as its driver makes it, recorded in the resolution cache (pipeline/resolution_cache.py)
# so that the timed job is a rerun of this model and config, as a scheduled or repeated job is.
WARM_RESOLUTION = """
import sys
from pipeline.config import EmbedConfig
from pipeline.config_loading import load_config
from pipeline.model_defaults import with_model_defaults
from pipeline.resolution_cache import resolve_remembered
cfg, _ = with_model_defaults(load_config(EmbedConfig, sys.argv[1]))
resolve_remembered(cfg.model)
"""


def run_case(
    model: str,
    dtype: str,
    docs: int,
    max_tokens: int,
    seed: int,
    work: Path,
    warm_resolution: bool = True,
    job_sets: tuple[str, ...] = (),
) -> dict:
    """One row: sentence-transformers `encode` and our whole job on the same corpus, same dtype. `job_sets` are
    `--set KEY=VALUE` overrides for our job only (e.g. model.compile=true); torch.compile then starts from an empty
    Inductor cache of the case's own, as a first compile on a machine does."""
    from bench.corpus import DATA, build_corpus

    model_dir = str(model_path(model))
    if not Path(model_dir).is_dir():
        raise SystemExit(f"model {model!r} not found at {model_dir}: run ../shared/tools/get-models.sh .models")
    pooling = POOLING.get(Path(model_dir).name, "mean")
    case = work / f"{Path(model_dir).name}-{dtype}"
    case.mkdir(parents=True)
    corpus = build_corpus(docs, seed, data=DATA)
    ids = write_corpus(corpus.texts, case / "corpus")
    (case / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus.texts))
    load_before = load_average()

    spec = {
        "model_dir": model_dir,
        "pooling": pooling,
        "max_tokens": max_tokens,
        "dtype": dtype,
        "texts": str(case / "texts.jsonl"),
        "vectors": str(case / "st.npy"),
        "result": str(case / "st.json"),
    }
    (case / "st_spec.json").write_text(json.dumps(spec))
    print(f"[{model} {dtype}] (a) sentence-transformers ...", flush=True)
    st_cmd = [sys.executable, "-m", "bench.wallclock", "--st-child", str(case / "st_spec.json")]
    st_wall, st_tree_cpu = run_timed(st_cmd, case / "st.log")
    st = json.loads((case / "st.json").read_text())

    import yaml

    out = case / "out"
    (case / "job.yaml").write_text(
        yaml.safe_dump(job_config(model_dir, pooling, dtype, max_tokens, case / "corpus", out))
    )
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(case / "inductor-cache")}
    if warm_resolution:
        subprocess.run(
            [sys.executable, "-c", WARM_RESOLUTION, str(case / "job.yaml")], cwd=ROOT, check=True, capture_output=True
        )
    else:  # a cache of its own without the resolution; the model's file hashes as any earlier run left them
        from pipeline.file_hashes import CACHE_NAME, cache_path

        (case / "cache").mkdir()
        if cache_path().is_file():
            shutil.copy(cache_path(), case / "cache" / CACHE_NAME)
        env["RAYEMBED_CACHE_DIR"] = str(case / "cache")
    print(f"[{model} {dtype}] (d) python -m jobs.embed ...", flush=True)
    job_wall, job_cpu = run_timed(
        [sys.executable, "-m", "jobs.embed", "--config", str(case / "job.yaml")]
        + [arg for item in job_sets for arg in ("--set", item)],
        case / "job.log",
        env=env,
    )
    summary = json.loads((out / "_summary.json").read_text())

    ours, theirs = stored_vectors(out, ids), np.load(case / "st.npy")
    cosine = np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    tokens = int(summary["tokens"])
    return {
        "model": Path(model_dir).name,
        "pooling": pooling,
        "dtype": dtype,
        "job_sets": list(job_sets),
        "docs": docs,
        "max_tokens": max_tokens,
        "corpus": corpus.source,
        "tokens": tokens,
        "st_tokens": st["tokens"],
        "st": {**st, "process_seconds": st_wall, "process_cpu_seconds": st_tree_cpu},
        "job": {
            "process_seconds": job_wall,
            "cpu_seconds": job_cpu,
            "embed_seconds": summary["embed_seconds"],
            "fixed_seconds": job_wall - summary["embed_seconds"],
            "padding_efficiency": summary["padding_efficiency"],
            "summary_wall_seconds": summary["wall_seconds"],
            "model_resolution_cached": summary.get("model_resolution_cached", False),
        },
        "ratio_wall": st["encode_seconds"] / job_wall,
        "ratio_wall_process": st_wall / job_wall,
        "ratio_cpu": st["encode_cpu_seconds"] / job_cpu,
        "cosine": {"min": float(cosine.min()), "mean": float(cosine.mean()), "p01": float(np.percentile(cosine, 1))},
        "load_average": [load_before, load_average()],
    }


def quickstart_args(model_dir: str | Path, out: Path) -> list[str]:
    """`python -m jobs.embed` arguments of the README quickstart with a local model (bench.exit_cost runs it too)."""
    pooling = POOLING.get(Path(model_dir).name, "mean")
    sets = [f"model.name_or_path={model_dir}", f"model.pooling={pooling}", "model.max_tokens=512", f"output.uri={out}"]
    return ["--config", "configs/quickstart.yaml", *[a for s in sets for a in ("--set", s)]]


def run_quickstart(model: str, work: Path) -> dict:
    """The README quickstart twice: a first run of the model (a resolution cache of its own, empty; the model's file
    hashes as earlier runs left them) and its rerun (the entry the first run wrote), as a user meets them."""
    from pipeline.file_hashes import CACHE_NAME, cache_path

    model_dir = str(model_path(model))
    pooling = POOLING.get(Path(model_dir).name, "mean")
    out = work / "quickstart"
    cache = work / "quickstart-cache"
    cache.mkdir(parents=True, exist_ok=True)
    if cache_path().is_file():
        shutil.copy(cache_path(), cache / CACHE_NAME)
    cmd = [sys.executable, "-m", "jobs.embed", *quickstart_args(model_dir, out)]
    env = {**os.environ, "RAYEMBED_CACHE_DIR": str(cache)}
    runs = {}
    for name in ("first_run", "rerun"):
        print(f"[quickstart {name}] python -m jobs.embed --config configs/quickstart.yaml ...", flush=True)
        load_before = load_average()
        wall, cpu = run_timed(cmd, work / f"quickstart-{name}.log", env)
        summary = json.loads((out / "_summary.json").read_text())
        runs[name] = {
            "process_seconds": wall,
            "cpu_seconds": cpu,
            "embed_seconds": summary["embed_seconds"],
            "fixed_seconds": wall - summary["embed_seconds"],
            "model_resolution_cached": summary.get("model_resolution_cached"),
            "load_average": [load_before, load_average()],
        }
    return {
        "model": Path(model_dir).name,
        "command": (
            "python -m jobs.embed --config configs/quickstart.yaml --set model.name_or_path=.models/"
            f"{Path(model_dir).name} --set model.pooling={pooling} --set model.max_tokens=512"
        ),
        "rows": summary["rows_in"],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **runs["first_run"],  # the keys of results written before the rerun was timed too
        "rerun": runs["rerun"],
    }


def machine() -> dict:
    import torch

    name = platform.processor() or "CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        name = next(
            (ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")),
            name,
        )
    flags = cpuinfo.read_text() if cpuinfo.is_file() else ""
    return {
        "cpu": name,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def render(raw: dict) -> str:
    m = raw["machine"]
    busy = max((max(c["load_average"]) for c in raw["cases"]), default=0.0)
    lines = [
        f"Measured {raw['date']} on {m['cpu']}, {m['cores']} cores"
        + (" (AVX-512 BF16)" if m["avx512_bf16"] else "")
        + f", torch {m['torch']}; load average up to {busy:.1f} during the run"
        # the run itself keeps about `cores` threads busy: only load well above that is someone else's
        + (
            " (a busy, shared machine: wall times are stretched on both sides)."
            if busy > 1.5 * m["cores"]
            else " (the benchmark's own processes: a quiet machine)."
        ),
        f"Command: `{raw['command']}`",
        "",
        (
            "| model | dtype | tokens | (a) ST `encode` wall s | (a) ST process wall s | (d) our job process wall s "
            "| **wall ratio a/d** | (a) CPU s | (d) CPU s | fixed cost s | padding eff. | threads a / d | cosine min |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for c in raw["cases"]:
        st, job = c["st"], c["job"]
        kept = f" (measured {c['date']})" if c.get("date", raw["date"]) != raw["date"] else ""
        lines.append(
            f"| {c['model']} ({c['pooling']}){''.join(f', `{x}`' for x in c.get('job_sets', []))}{kept} | {c['dtype']} | {c['tokens']:,} | {st['encode_seconds']:.1f} | "
            f"{st['process_seconds']:.1f} | {job['process_seconds']:.1f} | **{c['ratio_wall']:.2f}** | "
            f"{st['encode_cpu_seconds']:.1f} | {job['cpu_seconds']:.1f} | {job['fixed_seconds']:.1f} | "
            f"{job['padding_efficiency']:.3f} | {st['torch_threads']} / {raw['machine']['cores']} | "
            f"{c['cosine']['min']:.5f} |"
        )
    lines += [
        "",
        (
            "Wall ratio a/d = sentence-transformers' `encode` call alone / our whole job process (Python start to exit, "
            "model loading and Ray start-up included); above 1 the job is faster. Fixed cost = (d) wall - model-stage "
            "seconds. CPU s: (a) its process, (d) the whole process tree. Threads: (a) torch's default; (d) the model "
            "actor's default (its node's cores). Both sides at the dtype of the row, SDPA attention. "
            + (
                "(d) as a rerun of its model: the driver's model resolution from the resolution cache."
                if all(c["job"].get("model_resolution_cached") for c in raw["cases"])
                else "(d) as a first run of its model: the driver loads the tokenizer (an empty resolution cache)."
                if not any(c["job"].get("model_resolution_cached") for c in raw["cases"])
                else ""
            )
        ),
    ]
    q = raw.get("quickstart")
    if q and "rerun" in q:
        r = q["rerun"]
        lines += [
            "",
            (
                f"Quickstart (`{q['command']}`, {q['rows']} rows; measured {q.get('date', raw['date'])}): a first run of "
                f"the model **{q['process_seconds']:.1f} s wall** from launch to exit ({q['embed_seconds']:.1f} s in "
                f"the model stage, {q['fixed_seconds']:.1f} s fixed cost, {q['cpu_seconds']:.1f} CPU-s for the process "
                f"tree); its rerun **{r['process_seconds']:.1f} s** ({r['embed_seconds']:.1f} s model stage, "
                f"{r['fixed_seconds']:.1f} s fixed cost, {r['cpu_seconds']:.1f} CPU-s)."
            ),
        ]
    elif q:
        lines += [
            "",
            (
                f"Quickstart (`{q['command']}`, {q['rows']} rows): **{q['process_seconds']:.1f} s wall** from launch to "
                f"exit, of which {q['embed_seconds']:.1f} s in the model stage and {q['fixed_seconds']:.1f} s fixed cost; "
                f"{q['cpu_seconds']:.1f} CPU-s for the process tree."
            ),
        ]
    return "\n".join(lines) + "\n"


def kept_cases(old: dict, measured: list[dict]) -> list[dict]:
    """The cases of an earlier run (`old`, a results JSON) that `measured` does not have (same model, dtype and job
    overrides), each with its own date: that run's, where the case has none."""
    done = {(c["model"], c["dtype"], tuple(c.get("job_sets", []))) for c in measured}
    return [
        {**c, "date": c.get("date", old["date"])}
        for c in old["cases"]
        if (c["model"], c["dtype"], tuple(c.get("job_sets", []))) not in done
    ]


def replace_marked(path: Path, body: str) -> None:
    text = path.read_text()
    start, end = f"<!-- {MARK}:start -->", f"<!-- {MARK}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"{path} has no {start} ... {end} section to regenerate")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{body}{end}{tail}")


def write_docs(raw: dict, source: Path) -> None:
    note = f"Generated by `python -m bench.wallclock --render-only {source.relative_to(ROOT)} --write-docs`.\n\n"
    body = note + render(raw)
    replace_marked(ROOT / "docs" / "performance.md", body)
    replace_marked(ROOT / "README.md", body)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated model:dtype (model under .models/ or a dir)")
    p.add_argument("--docs", type=int, default=3000, help="documents for encoder cases")
    p.add_argument("--decoder-docs", type=int, default=600, help="documents for last-token (decoder) cases")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quickstart-model", default="multilingual-e5-small")
    p.add_argument("--no-quickstart", action="store_true")
    p.add_argument(
        "--cold-resolution",
        action="store_true",
        help="time each job as a first run of its model (empty resolution cache)",
    )
    p.add_argument("--tag", default="wallclock", help="results go to bench/results/<tag>.json and .md")
    p.add_argument("--write-docs", action="store_true", help="regenerate docs/performance.md and README.md sections")
    p.add_argument("--render-only", type=Path, default=None, help="render an existing results JSON, run nothing")
    p.add_argument(
        "--quickstart-only",
        action="store_true",
        help="time the quickstart again into bench/results/<tag>.json, keeping its cases (the line says when)",
    )
    p.add_argument(
        "--job-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a --set override for our job only, repeatable (e.g. model.compile=true); shown in the table",
    )
    p.add_argument(
        "--keep-cases-from",
        type=Path,
        default=None,
        help="a results JSON whose cases this run does not measure again stay in the table, each with its date",
    )
    p.add_argument("--st-child", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.st_child:
        spec = json.loads(args.st_child.read_text())
        Path(spec["result"]).write_text(json.dumps(st_child(spec)))
        return None
    if args.render_only:
        raw = json.loads(args.render_only.read_text())
        print(render(raw))
        if args.write_docs:
            write_docs(raw, args.render_only.resolve())
        return raw
    work = Path(tempfile.mkdtemp(prefix="rayembed-wallclock-"))
    if args.quickstart_only:
        json_path = RESULTS / f"{args.tag}.json"
        raw = json.loads(json_path.read_text())
        raw["quickstart"] = run_quickstart(args.quickstart_model, work)
        json_path.write_text(json.dumps(raw, indent=2))
        (RESULTS / f"{args.tag}.md").write_text(
            f"# Whole job vs sentence-transformers, wall clock, same dtype\n\n{render(raw)}"
        )
        print(render(raw))
        if args.write_docs:
            write_docs(raw, json_path)
        return raw
    command = "python -m bench.wallclock" + (" " + " ".join(sys.argv[1:] if argv is None else argv)).rstrip()
    raw = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "cases": [],
        "quickstart": None,
        "work": str(work),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS / f"{args.tag}.json", RESULTS / f"{args.tag}.md"
    for item in args.cases.split(","):
        model, dtype = item.rsplit(":", 1)
        decoder = POOLING.get(Path(model).name) == "last_token"
        raw["cases"].append(
            run_case(
                model,
                dtype,
                args.decoder_docs if decoder else args.docs,
                args.max_tokens,
                args.seed,
                work,
                warm_resolution=not args.cold_resolution,
                job_sets=tuple(args.job_set),
            )
        )
        raw["cases"][-1]["date"] = raw["date"]
        json_path.write_text(json.dumps(raw, indent=2))  # after every case: a run cut short keeps what it measured
    if args.keep_cases_from:
        raw["cases"] += kept_cases(json.loads(args.keep_cases_from.read_text()), raw["cases"])
    if not args.no_quickstart:
        raw["quickstart"] = run_quickstart(args.quickstart_model, work)
    json_path.write_text(json.dumps(raw, indent=2))
    report = render(raw)
    md_path.write_text(f"# Whole job vs sentence-transformers, wall clock, same dtype\n\n{report}")
    print(report)
    if args.write_docs:
        write_docs(raw, json_path)
    return raw


if __name__ == "__main__":
    main()
