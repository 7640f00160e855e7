"""``debug_logger()``: every dicomio log record on stderr, for a quick look while debugging.

dicomio logs under the ``dicomio`` logger hierarchy and, as a library, adds no handlers of its
own (the logging HOWTO's advice); applications configure logging. This is the one-line
shortcut pynetdicom users know from ``pynetdicom.debug_logger()``.
"""

from __future__ import annotations

import logging

__all__ = ["debug_logger"]


class _DebugHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``debug_logger`` adds; its class marks it so a second call can find it."""


def debug_logger() -> logging.Logger:
    """Send the ``dicomio`` logger's records, DEBUG and up, to stderr; return that logger.

    DEBUG shows a one-line summary of every PDU and DIMSE message with its peer (never
    patient data at INFO and above). Calling it again replaces its own handler rather than
    adding a second one; handlers the application added are left alone.
    """
    logger = logging.getLogger("dicomio")
    for handler in [h for h in logger.handlers if isinstance(h, _DebugHandler)]:
        logger.removeHandler(handler)
    handler = _DebugHandler()
    handler.setFormatter(logging.Formatter("%(levelname).1s: %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return logger
