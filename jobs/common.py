"""Shared command-line handling for the job entrypoints."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from pipeline.config import ConfigError, load_config
from pipeline.errors import UserError


def run_job(description: str, config_model: type[BaseModel], run: Callable[[Any], dict], argv: list[str] | None) -> int:
    """Parse `--config FILE --set a.b=c`, run, print the summary as JSON.

    Config errors exit 2 and input/model errors exit 1, each with its message and no traceback.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a key")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(config_model, args.config, args.set)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        summary = run(cfg)
    except (UserError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0
