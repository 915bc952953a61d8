"""transformers' LOAD REPORT, held while a model loads and shown only when it says something about the vectors.

transformers 5 logs a table of the checkpoint's missing, unexpected and mismatched weights as a warning on every
load. For multilingual-e5 (a BERT saved without its pooler) that is 'pooler.dense.weight | MISSING' in every model
actor's output of every run, read as an error, while rayembed pools the hidden states itself and never runs the
pooler. pipeline.model_loading.check_weights_loaded decides which missing weights matter (and fails the load naming
them); this module only holds the report until that is decided.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

# transformers.utils.logging.get_logger(__name__) in transformers/modeling_utils.py, which logs the report
TRANSFORMERS_LOADER = "transformers.modeling_utils"
MARK = "LOAD REPORT"


class _Hold(logging.Filter):
    """Keeps the LOAD REPORT records back; lets every other record through."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if MARK in str(record.msg):
            self.records.append(record)
            return False
        return True


@contextmanager
def held_load_report(name: str) -> Iterator[None]:
    """Hold the reports transformers logs inside the block; show them if the block raises, else log at debug level
    that they were left out (weights of modules no embedding goes through: the caller checked the rest).

    Args:
        name: the model, for the debug line.
    """
    logger = logging.getLogger(TRANSFORMERS_LOADER)
    hold = _Hold()
    logger.addFilter(hold)
    try:
        yield
    except BaseException:
        logger.removeFilter(hold)
        for record in hold.records:
            logger.handle(record)  # the load failed: the report is part of what went wrong
        raise
    finally:
        logger.removeFilter(hold)
    if hold.records:
        logging.getLogger(__name__).debug(
            "model %s: transformers' load report left out (only weights no embedding goes through):\n%s",
            name,
            "\n".join(record.getMessage() for record in hold.records),
        )
