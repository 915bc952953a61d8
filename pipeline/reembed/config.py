"""Config of the re-embed job: the embed job's sections plus a `reembed` section for leasing and retention."""

from __future__ import annotations

from pydantic import Field, model_validator

from pipeline.config import EmbedConfig, Section


class ReembedSettings(Section):
    lease_ttl_seconds: float = Field(
        600.0,
        gt=0,
        description="Lifetime of the output's lease; the running job renews it every third of this. A run killed "
        "on another host blocks the next one for at most this long (same host: a dead pid is taken over at once).",
    )
    lease_settle_seconds: float = Field(
        2.0,
        ge=0,
        description="On a store that ignores conditional writes (S3's If-None-Match/If-Match; AWS S3 and recent "
        "S3-compatible stores honour them, local disks are locked): the wait between writing the lease and reading "
        "it back, so two runs that both saw no lease find out which write won (pipeline.lease).",
    )
    lease_wait_seconds: float = Field(
        0.0,
        ge=0,
        description="How long a run waits for another run's live lease to be released or to expire before it exits "
        "3 (0: at once). A retry whose earlier attempt died on another host (a RayJob retry gets a new head pod) "
        "finds that attempt's lease live for up to lease_ttl_seconds: a wait above the TTL lets the retry resume "
        "instead of failing (configs/reembed.yaml waits 660 s).",
    )
    keep_manifests: int = Field(
        2,
        ge=1,
        description="Published manifests per version whose data files are kept. Older data is deleted after a "
        "publish; 2 keeps the files of a reader that opened the previous manifest just before the switch.",
    )
    owner: str | None = Field(None, description="Name written into the lease for messages; default host:pid.")


class ReembedConfig(EmbedConfig):
    reembed: ReembedSettings = Field(default_factory=ReembedSettings, description="Leasing and retention.")

    @model_validator(mode="after")
    def _check_reembed(self) -> ReembedConfig:
        if self.output.dtype in ("int8", "uint8"):
            raise ValueError(
                f"output.dtype {self.output.dtype} needs calibration ranges fixed across runs, which the re-embed job "
                "does not keep; use float32, float16, binary or ubinary (or jobs.embed for a one-off dataset)"
            )
        if self.output.overwrite:
            raise ValueError(
                "output.overwrite does not apply to the re-embed job: it versions the output itself "
                "(remove the key, or use jobs.embed for a one-off dataset)"
            )
        ours = {"lease_seconds": "reembed.lease_ttl_seconds", "lease_wait_seconds": "reembed.lease_wait_seconds"}
        # the embed job's lease keys, set to another value than their default: the re-embed job's lease is set in its
        # own section, so they did nothing. A config written out whole (--show-config, model_dump) holds the defaults.
        fields = type(self.output).model_fields
        given = [key for key in ours if getattr(self.output, key) != fields[key].default]
        if given:
            raise ValueError(
                f"output.{given[0]} is the embed job's lease setting; the re-embed job's lease is set by "
                f"{ours[given[0]]} (section reembed): move the value there"
            )
        return self
