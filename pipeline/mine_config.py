"""Configuration of the bitext mining job, built from the embed job's sections so both jobs read alike.

`source` and `target` are embed-job inputs plus a language; `mining` holds the k-NN and margin settings. Every
section forbids unknown keys (pipeline.config.Section), so a typo is an error rather than a silently ignored key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config import (
    BatchingConfig,
    ComputeConfig,
    InputConfig,
    ModelConfig,
    OutputConfig,
    Section,
    StorageConfig,
)


class SideConfig(InputConfig):
    """One side of the mining: a text corpus (as the embed job's `input`) in one language."""

    lang: str = Field(description="Language code written to the output (src_lang/tgt_lang), e.g. 'fra'.")
    lang_column: str | None = Field(
        None,
        description="Column holding each row's language. When set, only rows whose value equals `lang` are mined, "
        "so one multilingual corpus can serve as both sides.",
    )
    embeddings_uri: str | None = Field(
        None,
        description="An embeddings dataset the embed job already wrote from this same input (columns id, "
        "embedding). When set, nothing is embedded: vectors are joined to the texts by id.",
    )

    @model_validator(mode="after")
    def _check_side(self) -> SideConfig:
        if self.lang_column is not None and self.format == "text":
            raise ValueError("lang_column needs a columnar input (parquet or jsonl); format=text has no columns")
        return self


class MiningConfig(Section):
    k: int = Field(4, gt=0, description="Neighbours per sentence for candidates and margin density (LASER uses 4).")
    margin: Literal["ratio", "distance", "absolute"] = Field(
        "ratio",
        description="ratio: cos / mean neighbourhood density; distance: cos - density; absolute: plain cosine.",
    )
    retrieval: Literal["fwd", "bwd", "max", "intersect"] = Field(
        "max",
        description="max: 1:1 greedy over both directions' best candidates; intersect: mutual best only; "
        "fwd/bwd: every source's (target's) best candidate.",
    )
    threshold: float | None = Field(
        None,
        description="Keep pairs with score >= threshold (in the margin's units; ratio ~1.0-1.1). None keeps every "
        "selected pair; summary.json lists how many pairs each threshold would keep, to help choose one.",
    )
    dedup: bool = Field(
        True, description="Drop exact duplicate sentences per side before mining (mined data must not repeat)."
    )
    block_size: int = Field(
        4096,
        gt=0,
        description="Query rows per streamed block and key rows per matmul tile: each actor's temporary memory is "
        "block_size^2 floats (64 MB at 4096).",
    )
    num_shards: int = Field(1, gt=0, description="Minimum number of shard actors holding the keys.")
    max_rows_per_shard: int = Field(
        2_000_000,
        gt=0,
        description="Upper bound on keys per actor; more shards are started when a side is larger. The shard's "
        "memory is rows x dim x 4 bytes (2M x 384 = 3 GB).",
    )
    cpus_per_shard: float = Field(1.0, gt=0, description="CPUs each shard actor reserves (its torch threads).")
    gpus_per_shard: float | None = Field(
        None, ge=0, description="GPUs per shard actor; None: 1 when the cluster has GPUs, else 0."
    )
    max_in_flight: int = Field(4, gt=0, description="Query blocks outstanding at once (driver memory, actor overlap).")
    backend: Literal["ray", "local"] = Field(
        "ray", description="ray: shard actors; local: the same search in the driver process (debugging, tiny sets)."
    )
    histogram_bins: int = Field(50, gt=1, description="Bins of the score histogram in summary.json and the PNG.")


class MineConfig(Section):
    source: SideConfig
    target: SideConfig
    output: OutputConfig
    storage: StorageConfig = Field(default_factory=StorageConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    mining: MiningConfig = Field(default_factory=MiningConfig)

    @model_validator(mode="after")
    def _check(self) -> MineConfig:
        if self.output.keep_columns:
            raise ValueError("output.keep_columns is not used by mine_bitext; remove it (pairs carry id and text)")
        if self.model.long_inputs != "truncate":
            raise ValueError("model.long_inputs must be 'truncate' for mining: one vector per sentence")
        if self.output.dtype not in ("float32", "float16"):
            raise ValueError(
                f"output.dtype {self.output.dtype} is quantized; mining needs float32 or float16 vectors "
                "(output.dimensions may stay)"
            )
        same = (self.source.uri, self.source.lang_column, self.source.lang)
        if same == (self.target.uri, self.target.lang_column, self.target.lang):
            raise ValueError(
                "source and target select the same rows; set different uris, or a lang_column with two languages"
            )
        inside = self.output.uri.rstrip("/") + "/"
        for name, side in (("source", self.source), ("target", self.target)):
            if self.output.overwrite and side.embeddings_uri and side.embeddings_uri.startswith(inside):
                raise ValueError(
                    f"{name}.embeddings_uri is inside output.uri, which output.overwrite=true empties first; "
                    "write this run to another output.uri"
                )
        return self
