"""The re-embed job's lease: the one every job holds on its output (pipeline.lease), kept importable from here."""

from __future__ import annotations

from pipeline.lease import Lease, LeaseHeldError, LeaseLostError, describe, is_stale

__all__ = ["Lease", "LeaseHeldError", "LeaseLostError", "describe", "is_stale"]
