"""Configuration of the clustering / semantic dedup job (`python -m jobs.cluster`).

Reuses the embed job's storage, output and compute sections so one YAML vocabulary covers both jobs; every section
forbids unknown keys.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline import columns
from pipeline.config import ComputeConfig, EmbedConfig, JobConfig, Location, OutputConfig, Section, StorageConfig
from pipeline.config_loading import YamlWord

log = logging.getLogger(__name__)

ASSIGNMENT_COLUMNS = ("id", "cluster_id", "cosine_to_centroid")


def one_storage(data: object) -> object:
    """The cluster job's raw config (a mapping) with `storage` and `embed.storage` made one: each key given in either
    (set and not null) is given in both. The embed step wrote with embed.storage alone and the clustering read with
    storage alone, so `--set storage.endpoint_url=http://minio:9000` sent the embed step to AWS (and the reverse).
    Anything else (no embed section, a section that does not validate) is returned as it is, for the models'
    validation to report.

    Raises:
        ValueError: a key given different values in the two sections; the message names both keys and values.
    """
    if not isinstance(data, dict) or not isinstance(data.get("embed"), dict):
        return data
    given: dict[str, dict] = {}
    for key, section in (("storage", data.get("storage")), ("embed.storage", data["embed"].get("storage"))):
        try:
            storage = section if isinstance(section, StorageConfig) else StorageConfig.model_validate(section or {})
        except ValueError:
            return data
        given[key] = {
            name: getattr(storage, name) for name in storage.model_fields_set if getattr(storage, name) is not None
        }
    own, embeds = given["storage"], given["embed.storage"]
    for name in sorted(own.keys() & embeds.keys()):
        if own[name] != embeds[name]:
            raise ValueError(
                f"storage.{name} ({own[name]!r}) and embed.storage.{name} ({embeds[name]!r}) differ: the embed step "
                "writes input.uri, which the clustering reads, so both use one store; give the key once (either "
                "section's value holds for both steps)"
            )
    merged = {**embeds, **own}
    return {**data, "storage": dict(merged), "embed": {**data["embed"], "storage": dict(merged)}}


class ClusterInputConfig(Section):
    """Column keys may be dotted paths into struct columns (doc.id, doc.vec); a column literally named so wins
    (pipeline.column_paths, docs/clustering.md)."""

    uri: Location = Field(
        description="Embeddings dataset (local dir or s3://bucket/prefix), e.g. the embed job's output."
    )
    id_column: str = Field("id", description="Column with a unique row id (cast to string in the outputs).")
    embedding_column: str = Field(
        "embedding",
        description="Column with the vectors: a (fixed-size) list of floats; a dotted path (doc.vec) reaches into a "
        "struct column.",
    )
    text_column: str | None = Field(
        None, description="Text column carried into the assignments; needed by dedup keep='longest'."
    )


# An eps above this joins rows less similar than unrelated sentences of one topic usually are: most likely a
# similarity threshold (0.9, 0.95) written where the distance is meant, so it is said once the config is read.
SIMILARITY_LIKE_EPS = 0.5


class DedupConfig(Section):
    eps: float = Field(
        ge=0,  # 0 is "exact copies only", as 1e-8 is: both count as the floor (0 was refused, 1e-8 taken)
        description="Rows of one cluster with cosine >= 1 - eps are duplicates (joined transitively); an eps below 1e-5 "
        "(0 too: exact copies only) counts as 1e-5 (float32 cosines of identical vectors read 1 +- 5e-7, so exact "
        "copies were missed). Measured with "
        "multilingual-e5-small (docs/clustering.md): 0.04-0.06 finds ~96% of small edits at ~100% precision; "
        "translations need ~0.1, where precision falls to ~0.83.",
    )

    @field_validator("eps")
    @classmethod
    def _a_distance(cls, eps: float) -> float:
        if eps >= 1:
            raise ValueError(
                f"eps {eps:g} is 1 or more: eps is a cosine distance (rows with cosine >= 1 - eps are duplicates), so "
                "it would join rows at cosine 0 or below, unrelated ones. For a cosine similarity threshold s write "
                "eps: 1 - s (0.95 -> 0.05); docs/clustering.md gives 0.04-0.06 for near copies"
            )
        if eps > SIMILARITY_LIKE_EPS:
            log.warning(
                "clustering.dedup.eps %g joins rows of a cluster whose cosine is only %g or more: eps is a cosine "
                "distance, not a similarity; for a cosine similarity threshold s write eps: 1 - s (0.95 -> 0.05)",
                eps,
                1 - eps,
            )
        return eps

    keep: Literal["first", "longest", "random"] = Field(
        "first",
        description="Which row of a duplicate group survives: first id (natural order, 'doc#2' < 'doc#10'), longest "
        "text, or a random one seeded by clustering.seed.",
    )
    max_cluster_rows: int = Field(
        50_000,
        gt=1,
        description="Clusters above this are split by a sub-k-means before the pairwise pass, bounding one piece's "
        "pairwise work to max_cluster_rows vectors; the rows the pieces keep are compared again when at most "
        "max_cluster_rows (beyond, the summary's dedup.rows_not_compared_across_pieces counts them, and a near "
        "duplicate cut apart may be missed); exact copies cut apart always join one group.",
    )
    block_rows: int = Field(
        2048, gt=0, description="Tile edge of the blocked cosine matmul: block_rows^2 float32 of scratch per task."
    )


def dedup_switch(data: object) -> object:
    """The raw clustering section with `dedup.enabled` (a switch other tools' configs have: `--set
    clustering.dedup.enabled=false`) or `dedup: false` read: false leaves dedup off (the section as if absent), true
    keeps the section's other keys. The section is then what it always was, so a run's fingerprint is unchanged.

    Raises:
        ValueError: `enabled` (or `dedup` itself) given a value that is not a boolean; `dedup: true`, which names
            no eps.
    """
    if not isinstance(data, dict):
        return data
    dedup = data.get("dedup")
    if isinstance(dedup, (bool, YamlWord)):
        if as_boolean(dedup):
            raise ValueError(
                "clustering.dedup: true turns dedup on without its eps (rows of a cluster with cosine >= 1 - eps are "
                "duplicates): write dedup: {eps: 0.05} (docs/clustering.md gives 0.04-0.06 for near copies)"
            )
        return {**data, "dedup": None}
    if not isinstance(dedup, dict) or "enabled" not in dedup:
        return data
    rest = {k: v for k, v in dedup.items() if k != "enabled"}
    return {**data, "dedup": rest if as_boolean(dedup["enabled"], "dedup.enabled") else None}


def as_boolean(value: object, key: str = "dedup") -> bool:
    if isinstance(value, YamlWord):
        return value.boolean
    if not isinstance(value, bool):
        # a ValueError: pydantic reports it as the key's validation error (a TypeError would escape as a traceback)
        raise ValueError(f"clustering.{key} is true or false, not {value!r}")  # noqa: TRY004
    return value


class ClusteringConfig(Section):
    k: int = Field(gt=0, description="Number of clusters.")
    max_iter: int = Field(50, ge=1, description="Most Lloyd iterations (each is one pass over the fit sample).")
    tol: float = Field(
        1e-6,
        ge=0,
        description="Stop once no centroid moves by more than this (1 - cosine to its previous position; an unchanged "
        "centroid moves 0, so tol 0 stops at the fixed point).",
    )
    seed: int = Field(0, description="Seeds the sample, the init and dedup keep='random'; same seed, same result.")
    init: Literal["kmeans++", "random"] = Field(
        "kmeans++", description="Greedy k-means++ on the init sample, or k random rows of it (FAISS's default)."
    )
    sample_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Fraction of rows the centroids are fit on (chosen by a hash of the id); all rows are assigned.",
    )
    init_sample_rows: int = Field(
        20_000,
        gt=0,
        description="Rows of the fit sample that k-means++ runs on, on the driver: its cost is O(rows * k * dim).",
    )
    dedup: DedupConfig | None = Field(
        None,
        description="Semantic dedup within clusters; off when absent, null or false, or with enabled: false in it.",
    )
    center_by: str | None = Field(
        None,
        description="Column naming each row's group (e.g. the language, carried by the embed job's keep_columns): "
        "each group's mean vector is subtracted and rows re-normalized before k-means, so clusters follow topic "
        "rather than language (SIB-200, 6 languages: V-measure 0.075 -> 0.414; docs/clustering.md). Centroids, "
        "cosines and dedup are then in the centred space. None: vectors as they are.",
    )

    @model_validator(mode="before")
    @classmethod
    def _dedup_switch(cls, data: object) -> object:
        return dedup_switch(data)


class ClusterConfig(JobConfig):
    input: ClusterInputConfig
    output: OutputConfig
    clustering: ClusteringConfig
    storage: StorageConfig = Field(default_factory=StorageConfig)
    compute: ComputeConfig = Field(
        default_factory=ComputeConfig,
        description="ray_address and cpus_per_actor (CPUs per k-means task) apply here; the rest to the embed step.",
    )
    embed: EmbedConfig | None = Field(
        None,
        description="Embed a raw corpus first (the embed job's config); its output.uri must be input.uri. Its storage "
        "is the job's: a key given in storage or in embed.storage holds for both steps (one store: the embed step "
        "writes what the clustering reads); the same key given two different values is refused.",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_storage(cls, data: object) -> object:
        return one_storage(data)

    @model_validator(mode="after")
    def _check(self) -> ClusterConfig:
        clash = sorted(set(ASSIGNMENT_COLUMNS) & set(self.output.keep_columns))
        if clash:
            raise ValueError(f"output.keep_columns {clash} clash with assignment columns; remove them")
        if self.clustering.dedup and self.clustering.dedup.keep == "longest" and not self.input.text_column:
            raise ValueError("clustering.dedup.keep 'longest' needs input.text_column (the text whose length counts)")
        if self.clustering.center_by in (self.input.id_column, self.input.embedding_column):
            raise ValueError("clustering.center_by must name a group column (e.g. lang), not the id or embedding")
        if self.embed is not None and self.embed.output.dtype not in ("float32", "float16"):
            raise ValueError(
                f"embed.output.dtype {self.embed.output.dtype} is quantized; clustering needs float32 or float16 "
                "vectors (embed.output.dimensions may stay)"
            )
        if self.embed is not None and self.embed.output.uri.rstrip("/") != self.input.uri.rstrip("/"):
            raise ValueError(
                f"embed.output.uri ({self.embed.output.uri}) must equal input.uri ({self.input.uri}): the clustering "
                "reads what the embed step writes"
            )
        if self.embed is not None:
            self._check_embed_writes_what_is_read()
        from pipeline.overlap import check_apart  # imports pipeline.storage, which imports pipeline.config

        check_apart("output.uri", self.output.uri, {"input.uri": self.input.uri})
        return self

    def _check_embed_writes_what_is_read(self) -> None:
        """Every column the clustering reads must be one the embed step can write: found now, not after embedding."""
        keep = self.embed.output.keep_columns
        writable = {columns.ID, columns.EMBEDDING, *columns.CHUNK_COLUMNS, *keep}
        writable |= {columns.NUM_TOKENS, columns.TRUNCATED_OUT} if self.embed.output.token_columns else set()
        read = [("input.id_column", self.input.id_column), ("input.embedding_column", self.input.embedding_column)]
        read += [("input.text_column", self.input.text_column)] if self.input.text_column else []
        read += [("output.keep_columns", c) for c in self.output.keep_columns]
        read += [("clustering.center_by", self.clustering.center_by)] if self.clustering.center_by else []
        for key, name in read:
            if name not in writable:
                raise ValueError(
                    f"{key} {name!r} is not a column the embed step writes (id, embedding and "
                    f"embed.output.keep_columns {list(keep)}): add {name!r} to embed.output.keep_columns, or "
                    f"change {key}"
                )

    def carried_columns(self) -> list[str]:
        """Input columns copied into the assignments: the text column first, then output.keep_columns."""
        cols = [self.input.text_column] if self.input.text_column else []
        return cols + [c for c in self.output.keep_columns if c not in cols]
