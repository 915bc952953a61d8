"""Errors that mean "fix your input, config or model", not "there is a bug": jobs print them without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Mixed into every error whose message tells the user what to change."""
