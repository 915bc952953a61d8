"""Kill a job at a random moment (SIGKILL, SIGTERM or SIGINT to its whole process group), run the same command
again until it finishes, and compare with an uninterrupted run.

What a user sees overnight: the OOM killer (SIGKILL), a preempted node or an evicted KubeRay pod (SIGTERM, then
SIGKILL after the grace period), Ctrl-C (SIGINT to the terminal's process group). bench/resume_kill.py kills at
chosen stage boundaries; this one kills anywhere: at a time drawn uniformly from [0, T], T the uninterrupted run's
wall time (start-up included), and with probability --double kills the first rerun too (a double crash). Each trial
has its own seed (`--seed S` -> trial i uses S*1000+i), printed with its result, so `--only-trial i` reproduces it.

Per trial it checks:
- at the kill (before any rerun): no `_SUCCESS` unless the run had finished; every Parquet file a reader of the
  output sees (pyarrow.dataset, hidden `_`/`.` names skipped) reads whole; a re-embed output's published version
  (`_current.json`) equals the version before the run or the finished one, never a mix;
- after the reruns: every id exactly once, vectors equal (float32 on both sides: bit-equal, else the smallest
  cosine, which must be >= 0.99999), rejects equal as (id, reason) multisets, `rows_in = rows_embedded +
  rows_reused + rows_rejected` with rows_in and output_rows as uninterrupted, `_SUCCESS` present, no temp file
  (`.`-named) left; cluster: assignments and centroids equal; mine_bitext: pairs equal; every rerun exits 0 (a
  re-embed rerun refused for a dead run's lease counts as a failure).

Every process of a run (driver, its in-process Ray: GCS, raylet, workers) carries an environment marker; after the
kill the harness SIGKILLs any of them still alive, by pid, so no Ray of a killed run outlives its trial.

    .venv/bin/python bench/kill_anywhere.py --scenario embed --kills 8 --seed 1 --out bench/results/kill_anywhere.md
    scenarios: embed, embed_chunk, embed_s3, reembed, reembed_incremental, cluster, mine_bitext
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bench.resume_kill import cluster_config, mine_config
from pipeline.config import StorageConfig
from pipeline.storage import resolve

SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}
EXPECTED_EXIT = {"KILL": -9, "TERM": 143, "INT": 130}  # the job's status after each (README: 130 Ctrl-C, 143 SIGTERM)
GRACE_S = 10.0  # after SIGTERM/SIGINT, what is left of the group is SIGKILLed (Kubernetes' grace period, shortened)
MARKER_ENV = "KILL_ANYWHERE_RUN"
COSINE_MIN = 0.99999
SAMPLE = REPO / "data" / "sample" / "sib200_sample.jsonl"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


# ----------------------------------------------------------------------------------------------- running a job


@dataclass
class Attempt:
    code: int | None  # exit status; negative: the signal that ended it
    wall_s: float
    killed: str | None = None  # signal sent, if any
    kill_at_s: float | None = None
    finished_before_kill: bool = False
    leftovers_killed: int = 0  # processes of the run still alive after the driver ended (killed by pid)
    leftover_names: list = field(default_factory=list)
    ray_logs: str | None = None


def run_processes(marker: str) -> list[int]:
    """Pids of live processes whose environment carries `marker` (every process of one run)."""
    needle = f"{MARKER_ENV}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()[-40:]
    except OSError:
        return "?"


def attempt(job: str, cfg_path: Path, log: Path, extra_env: dict, kill: tuple[str, float] | None) -> Attempt:
    """Run `python -m jobs.<job> --config cfg_path` in its own process group; with `kill` (signal, seconds) send the
    signal to the group at that time, SIGKILL what is left after GRACE_S, and kill any straggler of the run."""
    marker = uuid.uuid4().hex
    ray_tmp = tempfile.mkdtemp(prefix="ka-", dir="/tmp")  # never the shared /tmp/ray session
    env = {**os.environ, **extra_env, "PYTHONPATH": str(REPO), "RAY_TMPDIR": ray_tmp, MARKER_ENV: marker}
    env.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    start = time.perf_counter()
    with log.open("a") as handle:
        handle.write(f"\n===== attempt kill={kill} =====\n")
        handle.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", f"jobs.{job}", "--config", str(cfg_path)],
            stdout=handle,
            stderr=handle,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
        result = Attempt(code=None, wall_s=0.0)
        if kill is None:
            try:
                proc.wait(timeout=900)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        else:
            name, at = kill
            try:
                proc.wait(timeout=at)
                result.finished_before_kill = True
            except subprocess.TimeoutExpired:
                result.killed, result.kill_at_s = name, round(time.perf_counter() - start, 2)
                try:
                    os.killpg(proc.pid, SIGNALS[name])
                except ProcessLookupError:
                    pass
                if name != "KILL":
                    try:
                        proc.wait(timeout=GRACE_S)
                    except subprocess.TimeoutExpired:
                        pass
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the rest of the group, as the kubelet after the grace
                except ProcessLookupError:
                    pass
                proc.wait()
    result.code, result.wall_s = proc.returncode, round(time.perf_counter() - start, 2)
    deadline = time.monotonic() + 3.0  # Ray's own processes notice a dead driver/GCS and end by themselves
    while run_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    stragglers = run_processes(marker)
    names = sorted(Counter(process_name(pid) for pid in stragglers).items())
    for pid in stragglers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    result.leftovers_killed = len(stragglers)
    result.leftover_names = names
    if result.killed is None or result.code == EXPECTED_EXIT[result.killed]:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    else:
        result.ray_logs = ray_tmp  # kept: the session logs say why the job ended as it did
    return result


# ----------------------------------------------------------------------------------------------- reading outputs


def visible_files(loc) -> list[str]:
    """Parquet files a reader of the location sees (no path part starting with '_' or '.')."""
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True))
    rels = [i.path[len(loc.path) :].lstrip("/") for i in infos if i.type == pafs.FileType.File]
    return sorted(r for r in rels if r.endswith(".parquet") and not any(p[:1] in "_." for p in r.split("/")))


def all_files(loc) -> list[str]:
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True))
    return sorted(i.path[len(loc.path) :].lstrip("/") for i in infos if i.type == pafs.FileType.File)


def temp_files(loc) -> list[str]:
    return [r for r in all_files(loc) if any(p.startswith(".") for p in r.split("/"))]


def unreadable(loc, rels: list[str]) -> list[str]:
    bad = []
    for rel in rels:
        try:
            pq.read_table(f"{loc.path}/{rel}", filesystem=loc.fs)
        except Exception as err:  # noqa: BLE001 - any failure to read is what we look for
            bad.append(f"{rel}: {err}")
    return bad


def read_json(loc, rel: str) -> Any:
    try:
        with loc.fs.open_input_stream(f"{loc.path}/{rel}") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def exists(loc, rel: str) -> bool:
    return loc.fs.get_file_info(f"{loc.path}/{rel}").type == pafs.FileType.File


def embedding_rows(table: pa.Table) -> dict[tuple, np.ndarray]:
    keys = table.column("id").to_pylist()
    if "chunk_index" in table.column_names:
        keys = list(zip(keys, table.column("chunk_index").to_pylist()))
    vecs = table.column("embedding").to_numpy(zero_copy_only=False)
    return {k: np.asarray(v) for k, v in zip(keys, vecs)} | {("__count__",): np.array(len(keys))}


def compare_vectors(got: pa.Table, want: pa.Table) -> dict[str, Any]:
    """Ids each exactly once and the same set; bit-equal or the smallest cosine."""
    g, w = embedding_rows(got), embedding_rows(want)
    n_got, n_want = int(g.pop(("__count__",))), int(w.pop(("__count__",)))
    res: dict[str, Any] = {"rows": n_got, "dup_ids": n_got - len(g), "missing": len(set(w) - set(g))}
    res["extra"] = len(set(g) - set(w))
    res["dtype_equal"] = got.schema.field("embedding").type == want.schema.field("embedding").type
    common = sorted(set(g) & set(w), key=str)
    a = np.stack([g[k] for k in common]).astype(np.float64) if common else np.zeros((0, 1))
    b = np.stack([w[k] for k in common]).astype(np.float64) if common else np.zeros((0, 1))
    res["bit_equal"] = bool(common) and all(np.array_equal(g[k], w[k]) for k in common)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    res["min_cosine"] = float(cos.min()) if len(cos) else None
    res["ok"] = (
        n_got == n_want
        and res["dup_ids"] == 0
        and res["missing"] == 0
        and res["extra"] == 0
        and res["dtype_equal"]
        and (res["bit_equal"] or (res["min_cosine"] or 0) >= COSINE_MIN)
    )
    return res


def reject_multiset(loc) -> Counter:
    rels = [r for r in all_files(loc) if r.startswith("_rejects/") and r.endswith(".parquet")]
    rels = [r for r in rels if not any(p.startswith(".") for p in r.split("/"))]
    if not rels:
        return Counter()
    t = pads.dataset([f"{loc.path}/{r}" for r in rels], filesystem=loc.fs, format="parquet").to_table()
    return Counter(zip(t.column("id").to_pylist(), t.column("reason").to_pylist()))


# ----------------------------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    job: str
    config: Callable[[str], dict]  # output uri -> config
    out_uri: Callable[[str], str]  # run name -> output uri
    storage: StorageConfig = field(default_factory=StorageConfig)
    env: dict = field(default_factory=dict)
    prepare_trial: Callable[[str], None] = lambda uri: None  # e.g. copy the first version before an incremental run
    at_kill: Callable[[str, Any], list[str]] | None = None  # extra checks on the killed output
    final: Callable[[str, str], dict] | None = None  # (trial uri, baseline uri) -> {"ok": bool, ...}


def corpus_records() -> list[dict]:
    return [json.loads(line) for line in SAMPLE.read_text().splitlines()]


def embed_corpus(root: Path, files: int = 5, rows: int = 24, long_rows: bool = False) -> dict[str, bytes]:
    """`files` JSONL files of `rows` sample rows each, plus rejects: an empty text and a duplicate id."""
    recs = corpus_records()
    out = {}
    for f in range(files):
        chunk = [{"id": r["id"], "text": r["text"]} for r in recs[f * rows : (f + 1) * rows]]
        if long_rows:
            chunk[0] = {**chunk[0], "text": " ".join(r["text"] for r in recs[f * 3 : f * 3 + 6])}
        if f == 1:
            chunk.append({"id": f"empty-{f}", "text": "  "})
        if f == files - 1:
            chunk.append({"id": recs[0]["id"], "text": "a later copy of the first id"})
        out[f"c{f}.jsonl"] = b"".join(json.dumps(r).encode() + b"\n" for r in chunk)
    root.mkdir(parents=True, exist_ok=True)
    for name, body in out.items():
        (root / name).write_bytes(body)
    return out


def embed_config(model: Path, corpus: str, out: str, endpoint: str | None = None, **model_keys) -> dict:
    return {
        "input": {"uri": corpus, "format": "jsonl", "id_column": "id"},
        "output": {"uri": out, "rows_per_file": 10},
        "model": {"name_or_path": str(model), "max_tokens": 64, **model_keys},
        "batching": {"max_tokens_per_batch": 1024, "rows_per_block": 8},
        "compute": {"num_actors": 1, "num_tokenizers": 1},
        **({"storage": {"endpoint_url": endpoint}} if endpoint else {}),
    }


def embed_final(storage: StorageConfig) -> Callable[[str, str], dict]:
    def check(uri: str, base_uri: str) -> dict:
        loc, base = resolve(uri, storage), resolve(base_uri, storage)
        got = pads.dataset([f"{loc.path}/{r}" for r in visible_files(loc)], filesystem=loc.fs, format="parquet")
        want = pads.dataset([f"{base.path}/{r}" for r in visible_files(base)], filesystem=base.fs, format="parquet")
        res = compare_vectors(got.to_table(), want.to_table())
        s, bs = read_json(loc, "_summary.json") or {}, read_json(base, "_summary.json")
        identity = s.get("rows_in") == s.get("rows_embedded", 0) + s.get("rows_reused", 0) + s.get("rows_rejected", 0)
        res["summary_ok"] = (
            identity
            and s.get("rows_in") == bs["rows_in"]
            and s.get("rows_rejected") == bs["rows_rejected"]
            and s.get("output_rows") == bs["output_rows"]
        )
        res["rejects_equal"] = reject_multiset(loc) == reject_multiset(base)
        res["success"] = exists(loc, "_SUCCESS")
        res["temp_left"] = len(temp_files(loc))
        res["ok"] = res["ok"] and res["summary_ok"] and res["rejects_equal"] and res["success"]
        return res

    return check


def generic_at_kill(storage: StorageConfig) -> Callable[[str, Any], list[str]]:
    def check(uri: str, att: Attempt) -> list[str]:
        loc = resolve(uri, storage)
        problems = unreadable(loc, visible_files(loc))
        if exists(loc, "_SUCCESS") and not att.finished_before_kill:
            problems.append("_SUCCESS written by a killed run")
        return problems

    return check


def reembed_table(uri: str) -> pa.Table | None:
    from pipeline.reembed import open_current

    if not Path(uri, "_current.json").exists():
        return None
    return open_current(uri).to_table()


def build_model(work: Path) -> Path:
    from model_factory import build_model as build
    from model_factory import train_tokenizer

    texts = [r["text"] for r in corpus_records()]
    return build(work / "bert", "bert", train_tokenizer(texts))


def make_scenario(name: str, work: Path, model: Path, s3: dict) -> Scenario:
    local = lambda run: str(work / run)
    if name in ("embed", "embed_chunk"):
        corpus = work / "corpus"
        embed_corpus(corpus, long_rows=name == "embed_chunk")
        keys = {"long_inputs": "chunk", "max_tokens": 16, "chunk_overlap_tokens": 4} if name == "embed_chunk" else {}
        st = StorageConfig()
        return Scenario(
            "embed", lambda out: embed_config(model, str(corpus), out, **keys), local, st,
            at_kill=generic_at_kill(st), final=embed_final(st),
        )  # fmt: skip
    if name == "embed_s3":
        import boto3

        bucket = f"ka-{uuid.uuid4().hex[:8]}"
        client = boto3.client("s3", endpoint_url=s3["endpoint"], region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        for fname, body in embed_corpus(work / "corpus").items():
            client.put_object(Bucket=bucket, Key=f"corpus/{fname}", Body=body)
        st = StorageConfig(endpoint_url=s3["endpoint"])
        return Scenario(
            "embed", lambda out: embed_config(model, f"s3://{bucket}/corpus/", out, s3["endpoint"]),
            lambda run: f"s3://{bucket}/{run}", st, env=AWS_ENV, at_kill=generic_at_kill(st), final=embed_final(st),
        )  # fmt: skip
    if name in ("reembed", "reembed_incremental"):
        corpus = work / "corpus"
        embed_corpus(corpus)

        def config(out: str) -> dict:
            cfg = embed_config(model, str(corpus), out)
            cfg["reembed"] = {"lease_ttl_seconds": 120, "lease_settle_seconds": 0.2}
            return cfg

        versions: dict[str, pa.Table | None] = {"before": None}
        template = work / "v1-template"

        def prepare(uri: str) -> None:
            if name == "reembed_incremental":
                shutil.copytree(template, uri)

        def at_kill(uri: str, att: Attempt) -> list[str]:
            try:
                table = reembed_table(uri)
            except Exception as err:  # noqa: BLE001
                return [f"published version unreadable: {err}"]
            problems = unreadable(resolve(uri, StorageConfig()), visible_files(resolve(uri, StorageConfig())))
            if table is None:
                return problems + (["no published version left"] if versions["before"] is not None else [])
            same = [k for k, v in versions.items() if v is not None and compare_vectors(table, v)["ok"]]
            return problems + ([] if same else ["the published version equals neither the old nor the new one"])

        def final(uri: str, base_uri: str) -> dict:
            got, want = reembed_table(uri), reembed_table(base_uri)
            if got is None:
                return {"ok": False, "why": "nothing published"}
            res = compare_vectors(got, want)
            s, bs = (
                json.loads(Path(uri, "_summary.json").read_text()),
                json.loads(Path(base_uri, "_summary.json").read_text()),
            )
            res["rows_total_equal"] = s.get("rows_total") == bs.get("rows_total")
            res["success"] = Path(uri, "_SUCCESS").exists()
            res["temp_left"] = len(temp_files(resolve(uri, StorageConfig())))
            res["ok"] = res["ok"] and res["rows_total_equal"] and res["success"]
            return res

        scen = Scenario("reembed", config, local, prepare_trial=prepare, at_kill=at_kill, final=final)
        scen.versions, scen.template, scen.corpus = versions, template, corpus  # type: ignore[attr-defined]
        return scen
    if name == "cluster":

        def final(uri: str, base_uri: str) -> dict:
            a, b = pads.dataset(f"{uri}/assignments").to_table(), pads.dataset(f"{base_uri}/assignments").to_table()
            a, b = a.sort_by("id"), b.sort_by("id")
            ca, cb = pq.read_table(f"{uri}/centroids.parquet"), pq.read_table(f"{base_uri}/centroids.parquet")
            res = {"assignments_equal": a.equals(b), "centroids_equal": ca.equals(cb), "rows": a.num_rows}
            res["success"] = Path(uri, "_SUCCESS").exists()
            res["temp_left"] = len(temp_files(resolve(uri, StorageConfig())))
            res["ok"] = res["assignments_equal"] and res["centroids_equal"] and res["success"]
            return res

        def config(out: str) -> dict:
            cfg = cluster_config(work, 2000, 32, 8, Path(out))
            cfg["clustering"]["max_iter"] = 30
            return cfg

        st = StorageConfig()
        return Scenario("cluster", config, local, st, at_kill=generic_at_kill(st), final=final)
    if name == "mine_bitext":

        def final(uri: str, base_uri: str) -> dict:
            a = pads.dataset(f"{uri}/pairs").to_table().sort_by([("src_id", "ascending"), ("tgt_id", "ascending")])
            b = pads.dataset(f"{base_uri}/pairs").to_table().sort_by([("src_id", "ascending"), ("tgt_id", "ascending")])
            res = {"pairs": a.num_rows, "pairs_equal": a.equals(b)}
            if not res["pairs_equal"] and a.num_rows == b.num_rows:
                same_ids = a.select(["src_id", "tgt_id"]).equals(b.select(["src_id", "tgt_id"]))
                res["same_pair_ids"] = same_ids
            res["success"] = Path(uri, "_SUCCESS").exists()
            res["temp_left"] = len(temp_files(resolve(uri, StorageConfig())))
            res["ok"] = res["pairs_equal"] and res["success"]
            return res

        def config(out: str) -> dict:
            cfg = mine_config(work, model, 200, Path(out))
            cfg["model"]["max_tokens"] = 32
            cfg["mining"]["threshold"] = 1.0
            return cfg

        st = StorageConfig()
        return Scenario("mine_bitext", config, local, st, at_kill=generic_at_kill(st), final=final)
    raise SystemExit(f"unknown scenario {name}")


# ----------------------------------------------------------------------------------------------- trials


def write_cfg(work: Path, name: str, cfg: dict) -> Path:
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_to_end(scen: Scenario, cfg_path: Path, log: Path, max_runs: int = 3) -> list[Attempt]:
    runs = []
    for _ in range(max_runs):
        runs.append(attempt(scen.job, cfg_path, log, scen.env, None))
        if runs[-1].code == 0:
            break
    return runs


def trial(scen: Scenario, work: Path, base_uri: str, T: float, seed: int, sig: str, p_double: float) -> dict:
    rng = random.Random(seed)
    kill_at = round(rng.uniform(0, T), 2)
    double = rng.random() < p_double
    kill2_at = round(rng.uniform(0, T), 2)
    name = f"trial-{seed}"
    uri = scen.out_uri(name)
    scen.prepare_trial(uri)
    cfg_path = write_cfg(work, name, scen.config(uri))
    log = work / f"{name}.log"
    row: dict[str, Any] = {"seed": seed, "signal": sig, "T_s": T, "kill_at_s": kill_at}
    first = attempt(scen.job, cfg_path, log, scen.env, (sig, kill_at))
    row["first_exit"], row["finished_before_kill"] = first.code, first.finished_before_kill
    row["leftovers"] = first.leftover_names
    problems = scen.at_kill(uri, first) if scen.at_kill else []
    if not first.finished_before_kill and first.code != EXPECTED_EXIT[sig]:
        problems.append(f"exit {first.code} after SIG{sig} (expected {EXPECTED_EXIT[sig]}; Ray logs {first.ray_logs})")
    last = first
    if double and not first.finished_before_kill:
        last = attempt(scen.job, cfg_path, log, scen.env, (sig, kill2_at))
        row["double_kill_at_s"], row["second_exit"] = kill2_at, last.code
        problems += [f"after 2nd kill: {p}" for p in (scen.at_kill(uri, last) if scen.at_kill else [])]
        if not last.finished_before_kill and last.code != EXPECTED_EXIT[sig]:
            problems.append(f"2nd attempt: exit {last.code} after SIG{sig} (expected {EXPECTED_EXIT[sig]})")
    if last.finished_before_kill:  # nothing to resume: the same command would (rightly) refuse a finished run
        reruns = [last]
    else:
        reruns = run_to_end(scen, cfg_path, log)
    row["rerun_exits"] = [r.code for r in reruns]
    row["rerun_s"] = [r.wall_s for r in reruns]
    if reruns[-1].code != 0:
        problems.append(f"rerun failed: exit {reruns[-1].code} (log {log})")
    elif len(reruns) > 1:
        problems.append(f"rerun needed {len(reruns)} attempts: exits {row['rerun_exits']}")
    if reruns[-1].code == 0 and scen.final:
        row["compare"] = scen.final(uri, base_uri)
        if not row["compare"]["ok"]:
            problems.append("output differs from the uninterrupted run")
        if row["compare"].get("temp_left"):
            problems.append(f"{row['compare']['temp_left']} temp files left")
    row["problems"] = problems
    row["log"] = str(log)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--signals", nargs="+", default=["KILL", "TERM", "INT"], choices=list(SIGNALS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--double", type=float, default=0.25, help="probability of killing the first rerun too")
    parser.add_argument("--only-trial", type=int, help="run only trial i (reproduce one seed)")
    parser.add_argument("--work", type=Path, help="keep the work directory here (default: a temp dir, removed)")
    parser.add_argument("--out", type=Path, help="append the results as a markdown table")
    args = parser.parse_args()
    # Started in the background (`... &`, nohup), this process inherited SIGINT ignored, and so would every job it
    # runs: their "INT" kills would do nothing. A handler (unlike SIG_IGN) is reset to the default action by exec.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.update(AWS_ENV, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    work = args.work or Path(tempfile.mkdtemp(prefix="kill-anywhere-"))
    work.mkdir(parents=True, exist_ok=True)
    s3: dict[str, Any] = {}
    if args.scenario.endswith("_s3"):
        import socket

        from moto.server import ThreadedMotoServer

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        s3["server"] = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        s3["server"].start()
        s3["endpoint"] = f"http://127.0.0.1:{port}"
    rows = []
    try:
        model = build_model(work)
        scen = make_scenario(args.scenario, work, model, s3)
        if args.scenario == "reembed_incremental":  # the first version, then change the corpus once
            v1 = attempt("reembed", write_cfg(work, "v1", scen.config(str(scen.template))), work / "v1.log", {}, None)
            assert v1.code == 0, f"first version failed: see {work / 'v1.log'}"
            scen.versions["before"] = reembed_table(str(scen.template))
            recs = corpus_records()
            with (scen.corpus / "c1.jsonl").open("a") as f:  # changed: two more rows
                f.writelines(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in recs[200:202])
            (scen.corpus / "c5.jsonl").write_text(  # new
                "".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in recs[210:230])
            )
            (scen.corpus / "c2.jsonl").unlink()  # deleted
        base_uri = scen.out_uri("baseline")
        scen.prepare_trial(base_uri)
        base = attempt(
            scen.job, write_cfg(work, "baseline", scen.config(base_uri)), work / "baseline.log", scen.env, None
        )
        assert base.code == 0, f"uninterrupted run failed: see {work / 'baseline.log'}"
        if args.scenario.startswith("reembed"):
            scen.versions["after"] = reembed_table(base_uri)
        T = base.wall_s
        print(json.dumps({"scenario": args.scenario, "uninterrupted_s": T, "work": str(work)}), flush=True)
        trials = [args.only_trial] if args.only_trial is not None else range(args.kills)
        for i in trials:
            sig = args.signals[i % len(args.signals)]
            row = {
                "scenario": args.scenario,
                "trial": i,
                **trial(scen, work, base_uri, T, args.seed * 1000 + i, sig, args.double),
            }
            print(json.dumps(row, default=str), flush=True)
            rows.append(row)
    finally:
        if "server" in s3:
            s3["server"].stop()
        if args.work is None and all(not r["problems"] for r in rows):
            shutil.rmtree(work, ignore_errors=True)
    if args.out:
        write_report(args, rows)


def write_report(args, rows: list[dict]) -> None:
    lines = []
    if not args.out.exists():
        lines += [
            "# Kill anywhere, then the same command (bench/kill_anywhere.py)",
            "",
            (
                f"Machine: {platform.node()}, {os.cpu_count()} CPUs, shared with other jobs. Signal to the whole "
                "process group at a uniform random time in [0, T], T = the uninterrupted run's wall time; after "
                f"SIGTERM/SIGINT what is left is SIGKILLed after {GRACE_S:.0f} s. Vectors: float32 both sides; `bit` "
                "= bit-equal, else the smallest cosine."
            ),
            "",
            (
                "| scenario | seed | signal | T s | kill at s | 1st exit | 2nd kill at s | rerun exits | ids | vectors "
                "| rejects / summary | problems |"
            ),
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    lines.append(f"<!-- {' '.join(sys.argv)} -->")
    for r in rows:
        c = r.get("compare", {})
        ids = (
            "-"
            if not c
            else (
                "once, same" if c.get("dup_ids", 0) == 0 and not c.get("missing") and not c.get("extra") else "DIFFER"
            )
        )
        if "bit_equal" in c:
            vec = "bit" if c["bit_equal"] else f"cos {c['min_cosine']:.7f}"
        else:
            vec = ", ".join(f"{k}={v}" for k, v in c.items() if k.endswith("_equal"))
        rej = ", ".join(f"{k}={c[k]}" for k in ("rejects_equal", "summary_ok", "rows_total_equal") if k in c)
        lines.append(
            f"| {r['scenario']} | {r['seed']} | {r['signal']} | {r['T_s']} | {r['kill_at_s']}"
            f"{' (done first)' if r['finished_before_kill'] else ''} | {r['first_exit']} | {r.get('double_kill_at_s', '-')} | "
            f"{r['rerun_exits']} | {ids} | {vec} | {rej or '-'} | {'; '.join(r['problems']) or 'none'} |"
        )
    with args.out.open("a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
