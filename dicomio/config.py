"""Frozen configuration values. There are no module-level mutable settings in dicomio."""

from __future__ import annotations

import attrs

__all__ = ["DEFAULT_MAX_PDU", "Timeouts"]

#: Maximum P-DATA-TF length dicomio proposes for receiving. Generous, because loopback and
#: LAN throughput grows with PDU size (fewer headers, fewer reads), yet bounded, because the
#: PDU reader buffers one whole PDU per association before decoding it.
DEFAULT_MAX_PDU = 262_144


@attrs.frozen(kw_only=True)
class Timeouts:
    """Every wait dicomio makes, in seconds; None waits for ever (not recommended).

    ``connect``: TCP connect; ``tls_handshake``: TLS handshake; ``acse``: A-ASSOCIATE and
    A-RELEASE replies, and the ARTIM timer (PS3.8 9.1.5); ``dimse``: each DIMSE response;
    ``network``: an idle association with no traffic; ``cancel``: how long to wait for the final
    response after C-CANCEL before aborting the association.
    """

    connect: float | None = 30.0
    tls_handshake: float | None = 30.0
    acse: float | None = 30.0
    dimse: float | None = 30.0
    network: float | None = None
    cancel: float = 10.0
