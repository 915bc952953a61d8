"""What makes two runs' vectors interchangeable: the model's pinned identity plus the recipe around it.

The embed job records a fingerprint when a run starts and compares it field by field when the same command is
run again: equal means the committed units of the earlier attempt are reusable; any difference is named in the
refusal. The re-embed job hashes its own recipe into a version name (pipeline.reembed.fingerprint) from the same
model identity.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.change_tokens import listed_token, local_token, same_token
from pipeline.config import EmbedConfig, ModelConfig
from pipeline.file_hashes import FileHashes
from pipeline.line_ranges import LINE_FORMATS
from pipeline.model_defaults import model_file, runs_shipped_code
from pipeline.model_files import hashed_files
from pipeline.storage import ListedFile
from pipeline.tokenization import CHUNK_RULE
from pipeline.units import packing


def model_identity(model: ModelConfig) -> dict[str, str]:
    """Pin the weights: the hub commit a revision resolves to, or a content hash of a local model directory.

    A branch name such as `main` moves; the resolved commit does not, so a model updated upstream under the same
    name yields a new fingerprint. Local directories have no commit, so their files are hashed (tokenizer and
    config included: they change the vectors too); a file is read again only when it changed (pipeline.file_hashes).
    A model that runs code of another hub repo (model.trust_remote_code) adds those repos' commits (`code`,
    code_commits).
    """
    identity = weights_identity(model)
    code = code_commits(model)
    return {**identity, "code": code} if code else identity


def weights_identity(model: ModelConfig) -> dict[str, str]:
    """model_identity without the code other repos ship (code_commits)."""
    local = Path(model.name_or_path)
    if local.is_dir():
        return {"source": "local", "sha256": hash_directory(local)}
    from transformers.utils import cached_file

    config_path = Path(cached_file(model.name_or_path, "config.json", revision=model.revision))
    commit = snapshot_commit(config_path)
    if commit is None:
        raise RuntimeError(f"cannot resolve the commit of {model.name_or_path}: {config_path} is not in a hub cache")
    return {"source": "hub", "commit": commit}


# The auto_map entries whose code rayembed runs (pipeline.model_loading.shipped_code): file and keys.
CODE_ENTRIES = (("config.json", ("AutoConfig", "AutoModel")), ("tokenizer_config.json", ("AutoTokenizer",)))


def code_commits(model: ModelConfig) -> str:
    """`REPO@COMMIT ...` of the hub repos whose code the model runs from outside itself; "" when none.

    With model.trust_remote_code, an auto_map entry `OTHER/REPO--module.Class` (nomic-embed-text-v1:
    `nomic-ai/nomic-bert-2048--modeling_hf_nomic_bert.NomicBertModel`; jina-embeddings-v3) makes transformers run
    `module.py` of that other repo at its `main`, which the model's own commit or content hash does not pin: code
    pushed there changed the vectors under the same identity (a re-embed version, a resumed run, mixing two models).
    Its commit is taken as the model's is, from the hub cache (offline too).

    Raises:
        ModelUnavailableError: the module is not cached and the hub cannot be reached (as for the model's files).
    """
    if not runs_shipped_code(model):
        return ""
    references: set[str] = set()
    for filename, keys in CODE_ENTRIES:
        path = model_file(model, filename)
        try:
            declared = json.loads(path.read_text()) if path is not None else {}
        except (OSError, ValueError):
            continue  # refused where it is loaded, naming the file
        auto_map = declared.get("auto_map") if isinstance(declared, dict) else None
        for key in keys if isinstance(auto_map, dict) else ():
            value = auto_map.get(key)
            references |= {v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)}
    commits = {}
    for reference in sorted(r for r in references if "--" in r):
        repo, _, name = reference.partition("--")
        module = f"{name.rsplit('.', 1)[0]}.py"
        path = model_file(ModelConfig(name_or_path=repo), module)
        commit = snapshot_commit(path) if path is not None else None
        if commit is None:
            raise RuntimeError(f"cannot resolve the commit of {repo}, whose {module} {model.name_or_path} runs")
        commits[repo] = commit
    return " ".join(f"{repo}@{commit}" for repo, commit in sorted(commits.items()))


def snapshot_commit(path: Path) -> str | None:
    """The commit of a file in a hub cache, `.../models--ORG--NAME/snapshots/COMMIT/...`; None when `path` is in none.

    Taken at the last `snapshots` folder right below a `models--` one: the cache itself may lie below a folder of
    that name (`HF_HOME=/data/snapshots/hf`), whose next part (`hf`) was taken for the commit, so the workers,
    which load that revision (pipeline.model_files.held_to), found no such commit and every commit of the model
    had the same identity.
    """
    parts = path.parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith("models--"):
            return parts[i + 1]
    return None


def hash_directory(folder: Path) -> str:
    """sha256 over (relative path, sha256 of the file) of every file below `folder` but hidden ones, in path order.

    Hidden means a `.` name anywhere in the path below `folder` (pipeline.model_files.is_hidden): a file, or any
    file under a hidden folder. A model cloned with git keeps `.git/` there (`FETCH_HEAD` rewritten by every `git
    pull`, `lfs/objects/` a second copy of the weights) and `huggingface-cli download --local-dir` keeps
    `.cache/huggingface/`: none of it is loaded, and hashing it gave the same weights a new identity after a pull
    that changed nothing (a new re-embed version, a refused resume).
    File hashes come from pipeline.file_hashes, which reads a file again only when its size, mtime, inode or ctime
    changed.
    """
    hashes = FileHashes()
    digest = hashlib.sha256()
    for rel, sha in hashed_files(folder, hashes):
        digest.update(rel.encode() + b"\0" + sha.encode() + b"\0")
    hashes.save()
    return digest.hexdigest()


# Up to this many files, a run records its listing file by file (~100 bytes each in _run/fingerprint.json), so a
# refusal can name the files that changed; a longer listing is recorded by its digest only.
LISTING_ENTRIES_MAX = 100_000
CHANGES_NAMED = 5  # files a refusal names per kind of change


def listing_digest(listed: list[ListedFile]) -> dict[str, Any]:
    """The input listing, which decides equality (`differences`):

    - `files`, and `sha256`: a digest over (path, size, mtime) in listing order, as every version recorded it;
    - `tokens_sha256`: a digest over (path, size, mtime and, for local files, inode change time:
      pipeline.change_tokens.local_token), so a file rewritten with its old size and mtime (`cp -p`, `rsync -t`,
      `touch -r`) is a different listing;
    - `etags_sha256`: a digest over (path, ETag) (S3 objects; null for local files), so an object rewritten with
      its old size within LastModified's second is a different listing;
    - up to LISTING_ENTRIES_MAX files, the `entries` [path, size, mtime_ns, ctime_ns (null on S3), etag (null on
      local disk)] that let a refusal name the files added, removed or changed.

    Older versions recorded no `etags_sha256`, or neither digest, and entries of three or four fields: such a record
    is compared on what it has (same_listing), so its run resumes when nothing changed, as it did before.
    """
    digest, tokens, etags = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
    for f in listed:
        digest.update(f"{f.path}\0{f.size}\0{f.mtime_ns}\n".encode())
        tokens.update(f"{f.path}\0{f.size}\0{local_token(f.mtime_ns, f.ctime_ns)}\n".encode())
        etags.update(f"{f.path}\0{f.etag}\n".encode())
    record: dict[str, Any] = {
        "files": len(listed),
        "sha256": digest.hexdigest()[:16],
        "tokens_sha256": tokens.hexdigest()[:16],
        "etags_sha256": etags.hexdigest()[:16],
    }
    if len(listed) <= LISTING_ENTRIES_MAX:
        record["entries"] = [[f.path, f.size, f.mtime_ns, f.ctime_ns, f.etag] for f in listed]
    return record


def same_listing(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether two `listing_digest` records list the same files, unchanged. A digest that one record lacks (an
    older version's) is not compared: such a run resumes when nothing changed, as it did before."""
    if (old["files"], old["sha256"]) != (new["files"], new["sha256"]):
        return False
    return all(old[d] == new[d] for d in ("tokens_sha256", "etags_sha256") if d in old and d in new)


def entry_token(entry: list) -> str:
    """The change token of one recorded entry: [path, size, mtime_ns] (older versions), [..., ctime_ns] or
    [..., ctime_ns, etag]."""
    return listed_token(entry[2], entry[3] if len(entry) > 3 else None, entry[4] if len(entry) > 4 else None)


# Asked by `differences` for the files of a listing whose change token moved at an unchanged size (the listing key,
# pairs of recorded and current entries); returns the paths whose content is the same (pipeline.input_contents).
SameContent = Callable[[str, list[tuple[list, list]]], set[str]]


def moved_entries(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[list, list]] | None:
    """The (recorded, current) entries of the files whose change token moved at an unchanged size, when that is all
    that differs between two `listing_digest` records (the same paths, in the same order); None when a file was
    added, removed or resized, or when either record has no entries."""
    if "entries" not in old or "entries" not in new or len(old["entries"]) != len(new["entries"]):
        return None
    moved = []
    for before, after in zip(old["entries"], new["entries"], strict=True):
        if before[0] != after[0] or before[1] != after[1]:
            return None
        if before[2] != after[2] or not same_token(entry_token(before), entry_token(after)):
            moved.append((before, after))
    return moved


def same_etag(before: list, after: list) -> bool:
    """Whether two entries of an S3 object carry the same ETag: the same content (an MD5 of it, or of its parts),
    whatever its LastModified says. Local entries (no ETag) never do."""
    return len(before) > 4 and len(after) > 4 and before[4] is not None and before[4] == after[4]


def content_moves(key: str, old: dict[str, Any], new: dict[str, Any], same_content: SameContent | None) -> set[str]:
    """The paths of the files whose change token moved without a change of their content, so that a listing with
    only such files differing is the same corpus: an S3 object of the same ETag, or a local file whose content
    `same_content` says is the one recorded (`touch`, `chmod`, `cp`/`rsync` without -t). Empty when files were
    added, removed or resized (moved_entries)."""
    moved = moved_entries(old, new)
    if not moved:
        return set()
    same = {before[0] for before, after in moved if same_etag(before, after)}
    rest = [(before, after) for before, after in moved if before[0] not in same]
    if rest and same_content is not None:
        same |= same_content(key, rest)
    return same


def listing_changes(old: dict[str, Any], new: dict[str, Any], unchanged: set[str] = frozenset()) -> str:
    """What changed between two `listing_digest` records, in words: 'N files -> M files (added a, b; removed c;
    changed d (size 10 -> 12 bytes); e (modified); f (rewritten with its old size and modification time))', at
    most CHANGES_NAMED names per kind; the `unchanged` paths (content_moves) are not named. Without the earlier
    entries (a listing too long to record, or a run recorded before they were), only the counts and digests."""
    head = f"{old.get('files')} files -> {new.get('files')} files"
    if "entries" not in old or "entries" not in new:
        digests = "tokens_sha256" if old.get("sha256") == new.get("sha256") else "sha256"
        return f"{head} (listing {digests} {old.get(digests)} -> {new.get(digests)})"
    before = {e[0]: (e[1], e[2], entry_token(e)) for e in old["entries"]}
    after = {e[0]: (e[1], e[2], entry_token(e)) for e in new["entries"]}
    added = [p for p in after if p not in before]
    removed = [p for p in before if p not in after]
    changed = []
    for path in (p for p in after if p in before and p not in unchanged):
        (old_size, old_mtime, old_token), (new_size, new_mtime, new_token) = before[path], after[path]
        if old_size != new_size:
            changed.append(f"{path} (size {old_size} -> {new_size} bytes)")
        elif old_mtime != new_mtime:
            changed.append(f"{path} (modified)")
        elif not same_token(old_token, new_token):
            changed.append(f"{path} (rewritten with its old size and modification time)")
    kinds = (("added", added), ("removed", removed), ("changed", changed))
    parts = [f"{kind} {named(items)}" for kind, items in kinds if items]
    return f"{head} ({'; '.join(parts) or 'the same files in another order'})"


def named(items: list[str]) -> str:
    shown = ", ".join(items[:CHANGES_NAMED])
    return shown + (f" and {len(items) - CHANGES_NAMED} more" if len(items) > CHANGES_NAMED else "")


def embed_fingerprint(
    cfg: EmbedConfig,
    metadata: dict[str, str],
    listed: list[ListedFile],
    identity: dict[str, str],
    packed: bool = True,
    split_lines: bool = True,
) -> dict[str, Any]:
    """The fields that decide whether an unfinished run may be resumed, by name.

    Args:
        metadata: the embedding metadata written into every output file (pipeline.writing.embedding_metadata), so
            whatever a reader is told about the vectors is also what a resume must agree on; fields added there
            later join the fingerprint without a change here.
        listed: the input listing (a new, removed, resized or rewritten file is a different corpus, a local file
            rewritten with its old size and mtime included: listing_digest).
        identity: model_identity(cfg.model): the resolved revision or the local weights' content hash.
        packed: small files are packed into units (pipeline.units.packing, recorded as `input.unit_packing`);
            False for a run started before they were, whose fingerprint lacks that field (units.plan_units).
        split_lines: JSONL and text files over input.unit_bytes are split into byte ranges (pipeline.line_ranges,
            recorded as `input.line_ranges`); False for a run started before they were (one unit per such file).
            The ranges' row counts are not part of it: the listing pins each file's size and change token, and the
            counts are recorded apart (`_run/line_rows.json`, embed_job.count_ranges).
    """
    return {
        **{f"metadata.{k}": v for k, v in sorted(metadata.items())},
        "model.identity": identity,
        "model.dtype": cfg.model.dtype,
        "model.chunk_overlap_tokens": cfg.model.chunk_overlap_tokens if cfg.model.long_inputs == "chunk" else None,
        # how chunk mode lays its windows: a run started by a version that laid them otherwise is not resumed with
        # this one's (refused naming the rule); recorded in chunk mode only, so truncate-mode runs keep resuming
        **({"rules.chunk_windows": CHUNK_RULE} if cfg.model.long_inputs == "chunk" else {}),
        "input.format": cfg.input.format,
        "input.text_column": cfg.input.text_column,
        "input.id_column": cfg.input.id_column,
        "input.duplicate_ids": cfg.input.duplicate_ids if cfg.input.id_column else None,
        "input.unit_bytes": cfg.input.unit_bytes,
        **({"input.unit_packing": packing(cfg.input.unit_bytes)} if packed else {}),
        **({"input.line_ranges": {"formats": list(LINE_FORMATS), "compressed": "one unit"}} if split_lines else {}),
        "input.listing": listing_digest(listed),
        "output.keep_columns": list(cfg.output.keep_columns),
        # the output's columns, as keep_columns: a resume that switched it on reused units written without them.
        # Recorded only when on, so a run started before it was recorded (off, the default) still resumes.
        **({"output.token_columns": True} if cfg.output.token_columns else {}),
        # the model's own code runs (a class of its own instead of transformers'): other vectors. Recorded only then,
        # so runs of models that ship no code, and runs started before it was recorded, keep their fingerprint
        **({"model.trust_remote_code": True} if runs_shipped_code(cfg.model) else {}),
    }


# The configuration key behind each `metadata.*` field of an embed fingerprint, as a refusal names it: the
# fingerprint keeps the file metadata's own names (`metadata.dtype`), which no configuration key has.
METADATA_KEYS = {
    "metadata.model": "model.name_or_path",
    "metadata.revision": "model.revision",
    "metadata.pooling": "model.pooling",
    "metadata.prompt": "model.prompt (as resolved from model.prompt, prompt_name, task and input.kind)",
    "metadata.normalized": "model.normalize",
    "metadata.max_tokens": "model.max_tokens",
    "metadata.long_inputs": "model.long_inputs",
    "metadata.dtype": "output.dtype",
    "metadata.precision": "output.dtype",
    "metadata.dimensions": "output.dimensions",
    "metadata.input_kind": "input.kind",
    "metadata.version": "metadata.version (the rayembed version)",
    "metadata.max_tokens_limits": "metadata.max_tokens_limits (the model's token limits)",
    "metadata.eos_token": "metadata.eos_token (the model's EOS token handling)",
    "metadata.bos_token": "metadata.bos_token (the model's BOS token handling)",
}


def differences(
    recorded: dict[str, Any], current: dict[str, Any], same_content: SameContent | None = None
) -> list[str]:
    """'field: recorded -> current' for every field that differs (missing on one side included), sorted. A listing
    (`listing_digest`) is compared by `same_listing` and described by `listing_changes`; one whose only differences
    are files of moved change tokens but unchanged content (content_moves: an S3 object of the same ETag, a local
    file `same_content` clears) is the same. A `metadata.*` field is named by its configuration key (METADATA_KEYS),
    once per key."""
    missing = object()
    out = []
    for key in sorted(set(recorded) | set(current)):
        old, new = recorded.get(key, missing), current.get(key, missing)
        if is_listing(old) and is_listing(new):
            if not same_listing(old, new):
                unchanged = content_moves(key, old, new, same_content)
                if len(unchanged) != len(moved_entries(old, new) or ()) or not unchanged:
                    out.append(f"{key}: {listing_changes(old, new, unchanged)}")
        elif json.dumps(old, sort_keys=True, default=str) != json.dumps(new, sort_keys=True, default=str):
            show = lambda v: "(absent)" if v is missing else json.dumps(v, sort_keys=True)
            line = f"{METADATA_KEYS.get(key, key)}: {show(old)} -> {show(new)}"
            if line not in out:  # metadata.dtype and metadata.precision are both output.dtype
                out.append(line)
    return out


def is_listing(value: Any) -> bool:
    return isinstance(value, dict) and {"files", "sha256"} <= set(value)
