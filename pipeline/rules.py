"""Rules of the code that decide a resumable job's results, recorded in its run fingerprint as `rules.<name>`.

A changed configuration key is named by the fingerprint; a changed rule of the code is in no key: a new margin
formula, a new normalization of the vectors read, a new tie order of the neighbour search. A run started by one
version of rayembed and resumed by another would then keep the stages its first attempt recorded (k-NN lists,
fitted centroids, pairs of some language pairs) and compute the rest under the new rules: a mix of both, silently.
So each job records its rules (`pipeline.bitext.resume.mine_rules`, `pipeline.clustering.resume.cluster_rules`):
one short text per rule with its version number and the constants it uses, read from the code at run time, so a
changed constant changes the record by itself; a change of a formula bumps its version in that text, in the same
commit. A resume whose recorded rules differ from this version's is refused naming each rule (`check_rules`). A run
recorded before rules were recorded has none: every rule reads '(absent)', and it is refused as well. A rule the
run's configuration does not use (mining's languages rule without a lang_column, clustering's dedup rule without
dedup) decides nothing of its results: `applied` takes it as the run recorded it, so a resume across a change of it
(or across the version that added it) goes on.
"""

from __future__ import annotations

from typing import Any

from pipeline import commit
from pipeline.commit import OutputExistsError
from pipeline.storage import Location

PREFIX = "rules."


def rule_fields(rules: dict[str, str]) -> dict[str, str]:
    """The fingerprint fields of `rules` ({name: 'version: what the rule is'})."""
    return {PREFIX + name: text for name, text in rules.items()}


def applied(rules: dict[str, str], unused: set[str], recorded: dict[str, Any] | None) -> dict[str, str]:
    """The rules a run is checked and fingerprinted with: this version's `rules`, but those named in `unused` (rules
    its configuration does not use) as `recorded` holds them, left out where it holds none. A new run (`recorded`
    None) records them all.

    Args:
        rules: this version's rules, {name: 'version: the rule'}.
        unused: names of the rules the run's configuration does not use.
        recorded: the recorded run (`commit.check_available`'s result), None when there is none.
    """
    if recorded is None:
        return dict(rules)
    fingerprint = recorded.get("fingerprint", {})
    kept = {name: text for name, text in rules.items() if name not in unused}
    was = {name: fingerprint[PREFIX + name] for name in rules if name in unused and PREFIX + name in fingerprint}
    return kept | was


def check_rules(out: Location, recorded: dict[str, Any] | None, rules: dict[str, str], job: str) -> None:
    """Refuse to resume a run whose recorded rules differ from this version's, once it has recorded a stage.

    Args:
        out: the run's output location.
        recorded: the recorded run (`commit.check_available`'s result), None when there is none.
        rules: this version's rules, as in the fingerprint (without the prefix).
        job: the job's name, for the message.
    Raises:
        OutputExistsError: naming each rule that differs ('rules.margin: recorded -> this version's') and what to
            do. A run that recorded no stage is left to `commit.begin`, which starts it over.
    """
    if recorded is None:
        return
    old = {k: v for k, v in recorded.get("fingerprint", {}).items() if k.startswith(PREFIX)}
    new = rule_fields(rules)
    diffs = [
        f"{key}: {old.get(key, '(absent)')!s} -> {new.get(key, '(absent)')!s}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
    if diffs and commit.committed_units(out):
        raise OutputExistsError(
            f"output {out.uri} holds an unfinished {job} started by another version of rayembed, whose rules differ "
            f"from this version's: {'; '.join(diffs)}. The stages it recorded were computed under its rules and "
            "cannot be mixed with this version's results: set output.overwrite=true to start over with this "
            "version, or finish the run with the version that started it"
        )
