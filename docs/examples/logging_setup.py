"""Logging: ``docs/logging.md``. Run by ``tests/test_docs_examples.py``."""

from __future__ import annotations

import logging


# --8<-- [start:configure]
def configure() -> None:
    # dicomio adds no handlers of its own: configure logging as for any library.
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("dicomio").setLevel(logging.INFO)  # associations, failures
    logging.getLogger("dicomio.association").setLevel(logging.DEBUG)  # every message


# --8<-- [end:configure]
