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


class TimeoutAttributes:
    """pynetdicom's ``acse_timeout``, ``dimse_timeout``, ``network_timeout`` and
    ``connection_timeout``, read from and written to the object's ``timeouts``."""

    timeouts: Timeouts

    @property
    def acse_timeout(self) -> float | None:
        return self.timeouts.acse

    @acse_timeout.setter
    def acse_timeout(self, value: float | None) -> None:
        self.timeouts = attrs.evolve(self.timeouts, acse=value)

    @property
    def dimse_timeout(self) -> float | None:
        return self.timeouts.dimse

    @dimse_timeout.setter
    def dimse_timeout(self, value: float | None) -> None:
        self.timeouts = attrs.evolve(self.timeouts, dimse=value)

    @property
    def network_timeout(self) -> float | None:
        return self.timeouts.network

    @network_timeout.setter
    def network_timeout(self, value: float | None) -> None:
        self.timeouts = attrs.evolve(self.timeouts, network=value)

    @property
    def connection_timeout(self) -> float | None:
        return self.timeouts.connect

    @connection_timeout.setter
    def connection_timeout(self, value: float | None) -> None:
        self.timeouts = attrs.evolve(self.timeouts, connect=value)
