"""The files of a local model directory, as the driver hashed them, checked again where the weights are loaded.

The run's fingerprint (pipeline.fingerprint) names the model by the content hash of its directory, taken on the
driver when the run starts; every embedding actor then loads the weights from that directory on its own node, at
its own time (an actor the pool adds later, one restarted after a crash). A directory changed in between (a nightly
`git pull` or sync of new weights at the hour of the run, an edit of config.json) gave vectors of other weights
under the fingerprint of the old ones, without a word: a version mixing two models. So the driver hands the
actors each file's sha256 (ModelFiles) and an actor checks, once it has loaded the model, that the directory still
holds those files: a stat per file, a file read only when its stat moved (pipeline.file_hashes), e.g. on another
node's own copy. A hub model is pinned instead: the workers load the commit the driver resolved (pinned_revision).
Pure: no Ray, no torch.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import UserError
from pipeline.file_hashes import FileHashes
from pipeline.special_entries import dangling_kind, system_folder

if TYPE_CHECKING:
    from pipeline.config import ModelConfig

NAMED = 5  # changed files a refusal names


class ModelChangedError(UserError, RuntimeError):
    """The model directory no longer holds the files the run's fingerprint was taken from."""


class ModelUnreadableError(UserError, PermissionError):
    """A file or folder of a local model directory that the job's user may not read: its identity cannot be taken."""


def is_hidden(relative: Path) -> bool:
    """Whether a path relative to a model directory is, or lies under, a `.` name (`.git/FETCH_HEAD`, `.DS_Store`)."""
    return any(part.startswith(".") for part in relative.parts)


def model_paths(folder: Path) -> list[Path]:
    """Every file below `folder` that a model loader can open, hidden ones (is_hidden) left out, sorted as paths.

    Symbolic links are followed, to files and to folders alike: a sentence-transformers module folder (`2_Dense/`)
    or a tokenizer folder linked in from a shared place is loaded through the link, so its files are part of the
    model (Path.rglob does not enter a linked folder: its weights were left out of the identity). A link back to a
    folder it lies in (`self -> .`) is not entered again. What is not a regular file (a FIFO) is left out: no loader
    reads it; a link to nothing (a hub snapshot copied without its blobs, a blob removed by a cache cleanup) is
    refused: the loader took the file as missing without a word (a fast tokenizer built from vocab.txt instead of
    tokenizer.json). So are the folders a filesystem or NAS keeps (special_entries.system_folder:
    `lost+found` at a volume's root, mode 700; Synology's `@eaDir`, which its indexer adds beside files at any hour:
    a new file there stopped a run as a changed model).

    Raises:
        ModelUnreadableError: a folder below `folder` the user may not list; a link to nothing.
    """
    found: list[Path] = []

    def walk(directory: Path, entered: frozenset[str]) -> None:
        try:
            children = list(directory.iterdir())
        except PermissionError:
            raise ModelUnreadableError(unreadable_message(folder, directory, "a folder")) from None
        for child in children:
            if child.name.startswith(".") or (system_folder(child.name) and child.is_dir()):
                continue
            if child.is_dir():
                real = os.path.realpath(child)
                if real not in entered:
                    walk(child, entered | {real})
            elif child.is_file():
                found.append(child)
            elif child.is_symlink():  # to nothing: a loader takes the file as missing (tokenizer.json: from vocab.txt)
                raise ModelUnreadableError(
                    f"model directory {folder}: {child} is {dangling_kind(str(child))}, or remove the link: a loader "
                    "takes the file as missing without a word, so the model it loads cannot be told"
                )

    walk(folder, frozenset({os.path.realpath(folder)}))
    return sorted(found)


def unreadable_message(folder: Path, path: Path, what: str) -> str:
    return (
        f"model directory {folder}: {path} is {what} the job's user may not read, so the model's identity (a hash of "
        "its files) cannot be taken: give it read access (chmod -R a+rX), or move it out of the model directory (or "
        "give it a name that starts with '.': hidden names are not part of the model)"
    )


def hashed_files(folder: Path, hashes: FileHashes) -> list[tuple[str, str]]:
    """(relative path, sha256) of every file below `folder` but hidden ones (model_paths), in the order the content
    hash of the directory takes them (sorted as paths).

    Raises:
        ModelUnreadableError: a file or folder the user may not read (named, with what to do).
    """
    found = []
    for path in model_paths(folder):
        try:
            found.append((str(path.relative_to(folder)), hashes.sha256(path)))
        except PermissionError:
            raise ModelUnreadableError(unreadable_message(folder, path, "a file")) from None
    return found


@dataclass(frozen=True)
class ModelFiles:
    """A local model directory's files and their sha256 as the driver hashed them.

    `folder`: the directory as the workers open it (absolute, ModelConfig.for_workers); `sha256`: relative path ->
    hex digest, every file of the directory's content hash (pipeline.fingerprint.hash_directory).
    """

    folder: str
    sha256: dict[str, str]

    @classmethod
    def of(cls, folder: str | Path) -> ModelFiles:
        hashes = FileHashes()
        found = hashed_files(Path(folder), hashes)
        hashes.save()
        return cls(str(folder), dict(found))

    def changes(self) -> list[str]:
        """What differs in the directory now: `path (changed)`, `path (gone)`, `path (new)`; [] when nothing."""
        hashes = FileHashes()
        now = dict(hashed_files(Path(self.folder), hashes))
        hashes.save()
        changed = [f"{p} (changed)" for p in self.sha256 if p in now and now[p] != self.sha256[p]]
        gone = [f"{p} (gone)" for p in self.sha256 if p not in now]
        new = [f"{p} (new)" for p in now if p not in self.sha256]
        return changed + gone + new

    def check(self, where: str) -> None:
        """Raise ModelChangedError when the directory's files are no longer those hashed.

        Args:
            where: who checks (`an embedding actor on node X`), for the message.
        """
        changes = self.changes()
        if changes:
            more = f" and {len(changes) - NAMED} more" if len(changes) > NAMED else ""
            raise ModelChangedError(
                f"model directory {self.folder} changed after this run hashed it for its fingerprint "
                f"({', '.join(changes[:NAMED])}{more}; found by {where}): its vectors would be of other weights than "
                "the ones the output records, so nothing more is embedded. Update a model directory between runs, "
                "not during one (or write the new model to a new directory); the same command then resumes with the "
                "model as it is (a new fingerprint: the embed job refuses the unfinished run naming model.identity, "
                "the re-embed job starts a new version)"
            )


def files_digest(files: dict[str, str]) -> str:
    """The content hash of a directory (pipeline.fingerprint.hash_directory) from its files' sha256 (path order)."""
    digest = hashlib.sha256()
    for rel in sorted(files, key=Path):
        digest.update(rel.encode() + b"\0" + files[rel].encode() + b"\0")
    return digest.hexdigest()


def held_to(model: ModelConfig, identity: dict[str, str] | None) -> tuple[ModelConfig, ModelFiles | None]:
    """The model config the workers load and the files they check, so that they load the model `identity` names
    (pipeline.fingerprint.model_identity, as the run's fingerprint records it).

    A hub model gets the commit the driver resolved as its revision: a branch (`main`, or no revision) moved upstream
    while the run goes on would give later actors, or another node, other weights. A local directory is hashed again
    here (a stat per file) and must still be the one `identity` hashed; its files go to the actors (ModelFiles).
    None: nothing is held (a caller without an identity).

    Raises:
        ModelChangedError: the local directory changed since `identity` was taken.
    """
    if identity is None:
        return model, None
    if identity.get("source") == "hub":
        return model.model_copy(update={"revision": identity["commit"]}), None
    files = ModelFiles.of(model.for_workers().name_or_path)
    if files_digest(files.sha256) != identity.get("sha256"):
        raise ModelChangedError(
            f"model directory {model.name_or_path} changed after this run hashed it for its fingerprint (its content "
            "hash is another one now), before any embedding actor started: its vectors would be of other weights than "
            "the ones the output records. Update a model directory between runs, not during one (or write the new "
            "model to a new directory), and run the same command again"
        )
    return model, files
