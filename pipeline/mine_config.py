"""Configuration of the bitext mining job, built from the embed job's sections so both jobs read alike.

`source` and `target` are embed-job inputs plus a language; `mining` holds the k-NN and margin settings. Every
section forbids unknown keys (pipeline.config.Section), so a typo is an error rather than a silently ignored key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config import (
    BatchingConfig,
    ComputeConfig,
    InputConfig,
    JobConfig,
    Location,
    ModelConfig,
    OutputConfig,
    Section,
    StorageConfig,
)

# A language names folders (texts/<side>/lang=<L>/, pairs/src_lang=<L>/): a separator nests them, and readers of
# Hive partitions decode %XX in folder names (a%20b is read back as 'a b').
UNFIT_IN_FOLDER = "/\\%"


class SideConfig(InputConfig):
    """One side of the mining: a text corpus (as the embed job's `input`) in one or several languages."""

    lang: str | list[str] = Field(
        description="Language code written to the output (src_lang/tgt_lang), e.g. 'fra'; or a list of codes "
        "(needs lang_column): every source language is mined against every target language, each language read "
        "and embedded once."
    )
    lang_column: str | None = Field(
        None,
        description="Column holding each row's language (a dotted path such as meta.lang reaches into a struct). "
        "When set, only rows whose value equals `lang` (or is in the list) are mined, so one multilingual corpus can "
        "serve as both sides. Two text_columns of one file (translation.en / translation.fr) need none.",
    )
    embeddings_uri: Location | None = Field(
        None,
        description="An embeddings dataset the embed job already wrote from this same input (columns id, "
        "embedding). When set, nothing is embedded: vectors are joined to the texts by id (a hash join in Ray "
        "tasks, not on the driver).",
    )
    embedding_column: str = Field(
        "embedding",
        description="The vector column of the embeddings_uri files (a list of floats): 'vector' for a LanceDB "
        "export, whatever another tool wrote. The job's own embeddings always use 'embedding'.",
    )
    embeddings_id_column: str = Field(
        "id",
        description="The column of the embeddings_uri files holding each vector's id, the id of a text row of this "
        "side (<file>#<row> for text files, else the values of id_column). The job's own embeddings use 'id'.",
    )
    keep_columns: list[str] = Field(
        default_factory=list,
        description="Input columns carried into the pairs as src_<name> (source) or tgt_<name> (target), e.g. url; "
        "a dotted path into a struct (meta.url) gives src_meta.url.",
    )

    @field_validator("lang", mode="before")
    @classmethod
    def _integer_langs(cls, value: object) -> object:
        """An integer `lang` (`lang: 1`, `lang: [1, 2]`: a lang_column of integer ids) is its decimal text, the form a
        lang_column value is compared in (languages.lang_key); it was refused 'Input should be a valid string'."""
        as_text = lambda v: str(v) if type(v) is int else v  # not bool, not float
        return [as_text(v) for v in value] if isinstance(value, list) else as_text(value)

    @property
    def langs(self) -> list[str]:
        """The side's languages as a list (the one-language form gives a list of one)."""
        return [self.lang] if isinstance(self.lang, str) else list(self.lang)

    @model_validator(mode="after")
    def _check_side(self) -> SideConfig:
        for lang in self.langs:
            if not lang.strip():
                raise ValueError(f"lang {lang!r} is empty; name the language (the lang_column's value for it)")
            bad = sorted(set(lang) & set(UNFIT_IN_FOLDER))
            if bad:
                raise ValueError(
                    f"lang {lang!r} cannot name a folder (texts/<side>/lang=<L>/, pairs/src_lang=<L>/): it holds "
                    f"{', '.join(bad)}; use a code without '/', '\\' or '%' (rewrite the lang_column's values if "
                    "they hold it)"
                )
        if self.lang_column is not None and self.format == "text":
            raise ValueError("lang_column needs a columnar input (parquet or jsonl); format=text has no columns")
        if isinstance(self.lang, list):
            if not self.lang:
                raise ValueError("lang is an empty list; list at least one language")
            if len(set(self.lang)) != len(self.lang):
                raise ValueError(f"lang lists a language twice: {self.lang}")
            if len(self.lang) > 1 and self.lang_column is None:
                raise ValueError(
                    "a list of several languages needs lang_column (the column naming each row's language)"
                )
        named = {k for k in ("embedding_column", "embeddings_id_column") if k in self.model_fields_set}
        if named and self.embeddings_uri is None:
            raise ValueError(
                f"{' and '.join(sorted(named))} name columns of embeddings_uri files; without embeddings_uri the job "
                "embeds the side itself (columns id, embedding): set embeddings_uri or remove them"
            )
        if self.embedding_column == self.embeddings_id_column:
            raise ValueError(f"embedding_column and embeddings_id_column are both {self.embedding_column!r}")
        if self.format == "text" and self.keep_columns:
            raise ValueError("keep_columns needs a columnar input (parquet or jsonl); format=text has no columns")
        clash = sorted(set(self.keep_columns) & {"id", "text", "row"})
        if clash:
            raise ValueError(f"keep_columns {clash} clash with the pairs' own id/text columns; remove them")
        return self


class IvfConfig(Section):
    """FAISS inverted-file index per key shard (mining.index: ivf); measured in docs/bitext.md."""

    nlist: int | None = Field(
        None,
        gt=0,
        description="Inverted lists per shard; None: 4 * sqrt(shard rows), FAISS's rule of thumb, capped so that "
        "every list gets at least 39 training vectors.",
    )
    nprobe: int | None = Field(
        None,
        gt=0,
        description="Lists visited per query: recall against cost. None: max(32, nlist / 8), which gave recall@4 "
        ">= 0.95 against exact search on real e5 vectors at every measured size (6 k and 52 k keys, 1 and 2 shards; "
        "docs/bitext.md). Set it lower for speed once recall on your own vectors is measured (bench/bitext_ivf.py).",
    )
    pq_m: int | None = Field(
        None,
        gt=0,
        description="None: IVF-Flat (exact vectors in the lists). An int: IVF-PQ with pq_m 8-bit sub-quantizers "
        "(dim must be divisible by it); scores become approximate, memory per key pq_m bytes.",
    )
    train_rows: int = Field(
        100_000, gt=0, description="Keys sampled (seeded) from the shard to train the coarse quantizer (and PQ)."
    )
    seed: int = Field(0, description="Seed of the training sample and FAISS's k-means.")

    @model_validator(mode="after")
    def _check_pq(self) -> IvfConfig:
        from pipeline.bitext.ivf import PQ_CODES  # numpy only; FAISS is imported when an index is built

        if self.pq_m is not None and self.train_rows < PQ_CODES:
            raise ValueError(
                f"mining.ivf.train_rows ({self.train_rows}) is below {PQ_CODES}, the points FAISS needs to train "
                "the 8-bit codes of mining.ivf.pq_m: raise train_rows, or unset pq_m for IVF-Flat"
            )
        return self


UNITS_HINT = "thresholds are in the margin's units: ratio ~1.0-1.1, distance ~0-0.1, absolute a cosine"


class MiningConfig(Section):
    k: int = Field(4, gt=0, description="Neighbours per sentence for candidates and margin density (LASER uses 4).")
    margin: Literal["ratio", "distance", "absolute"] = Field(
        "ratio",
        description="ratio: cos / mean neighbourhood density (cosines clipped at 0, in [0, 2k]); distance: cos - "
        "density; absolute: plain cosine. Every score is finite (docs/bitext.md, Margin scores).",
    )
    retrieval: Literal["fwd", "bwd", "max", "intersect"] = Field(
        "max",
        description="max: 1:1 greedy over both directions' best candidates; intersect: mutual best only; "
        "fwd/bwd: every source's (target's) best candidate.",
    )
    threshold: float | None = Field(
        None,
        allow_inf_nan=False,  # NaN compares false, so a NaN threshold would keep every pair
        description="Keep pairs with score >= threshold (in the margin's units; ratio ~1.0-1.1, distance ~0-0.1, "
        "absolute a cosine). None keeps every selected pair; summary.json lists how many pairs each threshold would "
        "keep, to help choose one. A threshold no score of the margin can reach is refused.",
    )
    dedup: bool = Field(
        True, description="Drop exact duplicate sentences per side before mining (mined data must not repeat)."
    )
    block_size: int = Field(
        4096,
        gt=0,
        description="Query rows per streamed block (and key rows per matmul tile on a GPU, where the tile is "
        "block_size^2 floats: 64 MB at 4096). On CPU the exact search keeps no score matrix (FAISS scan).",
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
    score_max: float | None = Field(
        None,
        allow_inf_nan=False,
        description="Drop pairs scoring above this (same units as threshold): near-identical copies such as "
        "boilerplate, URLs or untranslated text score far above real translations. None keeps them.",
    )
    dedup_pairs: bool = Field(
        True,
        description="Keep one pair per identical (source text, target text), the best-scoring one. Only matters "
        "when dedup is off or retrieval repeats a sentence (fwd/bwd): deduplicated sides cannot repeat a pair.",
    )
    center: bool = Field(
        False,
        description="Subtract each language's mean vector (then re-normalize) before the k-NN, removing the "
        "per-language offset of multilingual encoders. Off by default: measured on Tatoeba (docs/bitext.md).",
    )
    index: Literal["exact", "ivf"] = Field(
        "exact",
        description="exact: blocked matmul, the true top-k; ivf: FAISS IVF per key shard (approximate, for sides "
        "where exact search costs too much; see docs/bitext.md for the measured recall and speed).",
    )
    ivf: IvfConfig = Field(default_factory=IvfConfig, description="Settings of index: ivf.")
    join_bucket_rows: int = Field(
        1_000_000,
        gt=0,
        description="Rows per bucket of the id join between texts and vectors (one task holds a bucket's vectors: "
        "rows x dim x 4 bytes).",
    )

    @model_validator(mode="after")
    def _check_window(self) -> MiningConfig:
        """A score window no pair can be in is an error: the run would end with no pairs and no message."""
        low, high = self.threshold, self.score_max
        if low is not None and high is not None and high < low:
            raise ValueError(
                f"mining.score_max ({high}) is below mining.threshold ({low}): pairs are kept when threshold <= "
                "score <= score_max, so none would be; raise score_max, lower threshold, or unset one of them"
            )
        from pipeline.bitext.margin import margin_range  # numpy only

        bounds = margin_range(self.margin, self.k)
        of_k = f" at mining.k={self.k}" if self.margin == "ratio" else ""
        if low is not None and low > bounds[1]:
            raise ValueError(
                f"mining.threshold {low} is above the highest {self.margin} margin{of_k} ({bounds[1]:g}), so no pair "
                f"would be kept; {UNITS_HINT} (a ratio threshold left in place when mining.margin changed?)"
            )
        if high is not None and high < bounds[0]:
            raise ValueError(
                f"mining.score_max {high} is below the lowest {self.margin} margin ({bounds[0]:g}), so no pair "
                f"would be kept; {UNITS_HINT}"
            )
        return self

    @model_validator(mode="after")
    def _check_k(self) -> MiningConfig:
        """k = 1 caps the ratio margin at 1 and the distance margin at 0 (docs/bitext.md): a threshold above the cap
        keeps no pair and is refused. Below it k = 1 is mutual-nearest-neighbour mining and runs."""
        cap = {"ratio": 1.0, "distance": 0.0}.get(self.margin)
        if self.k == 1 and cap is not None and self.threshold is not None and self.threshold > cap:
            raise ValueError(
                f"mining.threshold {self.threshold} is above the highest {self.margin} margin at mining.k=1 ({cap:g}), "
                "so no pair would be kept: with k=1 a sentence's neighbourhood is its best candidate alone, a "
                f"mutual-best pair scores exactly {cap:g} and any other pair less; use k >= 2 (LASER uses 4), or a "
                f"threshold <= {cap:g} to keep the mutual-best pairs"
            )
        return self


class MineConfig(JobConfig):
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
            raise ValueError(
                "output.keep_columns is not used by mine_bitext; remove it (pairs carry id and text) or set "
                "source.keep_columns / target.keep_columns"
            )
        if self.model.long_inputs != "truncate":
            raise ValueError("model.long_inputs must be 'truncate' for mining: one vector per sentence")
        if self.output.dtype not in ("float32", "float16"):
            raise ValueError(
                f"output.dtype {self.output.dtype} is quantized; mining needs float32 or float16 vectors "
                "(output.dimensions may stay)"
            )
        same_input = self.same_input
        if same_input and not self.multi_pair and self.source.lang == self.target.lang:
            raise ValueError(
                "source and target select the same rows; set different uris, a lang_column with two languages, or "
                "different text_columns (e.g. translation.en and translation.fr)"
            )
        if same_input and not self.pairs():
            raise ValueError("source and target list the same languages only: no pair to mine")
        inside = self.output.uri.rstrip("/") + "/"
        for name, side in (("source", self.source), ("target", self.target)):
            if self.output.overwrite and side.embeddings_uri and side.embeddings_uri.startswith(inside):
                raise ValueError(
                    f"{name}.embeddings_uri is inside output.uri, which output.overwrite=true empties first; "
                    "write this run to another output.uri"
                )
        from pipeline.overlap import check_apart  # imports pipeline.storage, which imports pipeline.config

        sides = {
            f"{name}.{key}": getattr(getattr(self, name), key)
            for name in ("source", "target")
            for key in ("uri", "embeddings_uri")
        }
        check_apart("output.uri", self.output.uri, sides)
        return self

    @property
    def same_input(self) -> bool:
        """True when both sides read the same texts of the same rows: one uri, one lang_column and one text_column.
        Different text columns of one file (a Hugging Face translation dataset's `translation.en` and
        `translation.fr`) are two corpora, aligned row by row."""

        def key(side: SideConfig) -> tuple:
            return side.uri, side.lang_column, side.text_column

        return key(self.source) == key(self.target)

    @property
    def multi_pair(self) -> bool:
        """True when a side lists languages: outputs are then partitioned per pair (docs/bitext.md)."""
        return isinstance(self.source.lang, list) or isinstance(self.target.lang, list)

    def pairs(self) -> list[tuple[str, str]]:
        """(source lang, target lang) pairs to mine, in config order; a language is never mined against itself
        within one corpus."""
        same_input = self.same_input
        return [(s, t) for s in self.source.langs for t in self.target.langs if not (same_input and s == t)]
