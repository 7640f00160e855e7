"""The one exception hierarchy of dicomio.

Protocol errors say who broke the rules and carry the remedy: the A-ABORT source and
reason (PS3.8 9.3.8, Table 9-26) that the Upper Layer sends when the error escapes.
``LocalProtocolError`` means our own caller asked for something that is illegal now;
``RemoteProtocolError`` means the peer sent something the standard forbids.
Failures of an association are exceptions; non-success DIMSE statuses are not
(they are values, see ``dicomio.status``).
"""

from __future__ import annotations

import builtins
import enum

__all__ = [
    "AbortReason",
    "AbortSource",
    "AssociationAborted",
    "AssociationRejected",
    "AssociationReleased",
    "ConnectionClosed",
    "ConnectionRefused",
    "DicomioError",
    "DIMSETimeout",
    "LocalProtocolError",
    "NoPresentationContext",
    "ProtocolError",
    "RemoteProtocolError",
    "TimeoutError",
]


class AbortSource(enum.IntEnum):
    """A-ABORT source field (PS3.8 Table 9-26)."""

    SERVICE_USER = 0
    RESERVED = 1
    SERVICE_PROVIDER = 2


class AbortReason(enum.IntEnum):
    """A-ABORT reason/diag field when the source is the service provider (PS3.8 Table 9-26)."""

    NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    RESERVED = 3
    UNRECOGNIZED_PDU_PARAMETER = 4
    UNEXPECTED_PDU_PARAMETER = 5
    INVALID_PDU_PARAMETER_VALUE = 6


class DicomioError(Exception):
    """Base of every exception dicomio raises on purpose."""


class ProtocolError(DicomioError):
    """A violation of PS3.8 or PS3.7; carries the A-ABORT that answers it."""

    def __init__(
        self,
        message: str,
        *,
        abort_source: AbortSource = AbortSource.SERVICE_PROVIDER,
        abort_reason: AbortReason = AbortReason.NOT_SPECIFIED,
    ) -> None:
        super().__init__(message)
        self.abort_source = abort_source
        self.abort_reason = abort_reason


class LocalProtocolError(ProtocolError):
    """Our caller asked for something the protocol does not allow in this state."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes or PDUs that break the standard."""


class AssociationRejected(DicomioError):
    """The acceptor answered A-ASSOCIATE-RJ (PS3.8 Table 9-21)."""

    def __init__(self, result: int, source: int, reason: int) -> None:
        super().__init__(f"association rejected: result={result} source={source} reason={reason}")
        self.result = result
        self.source = source
        self.reason = reason


class AssociationAborted(DicomioError):
    """The association ended by A-ABORT (from the peer) or A-P-ABORT (from the provider)."""

    def __init__(self, source: int, reason: int, message: str = "") -> None:
        super().__init__(message or f"association aborted: source={source} reason={reason}")
        self.source = source
        self.reason = reason


class AssociationReleased(DicomioError):
    """An operation was attempted, or was pending, on an association that was released."""


class ConnectionClosed(DicomioError):
    """The transport connection closed without a release or abort."""


class TimeoutError(DicomioError, builtins.TimeoutError):
    """A dicomio timeout (connect, ACSE, DIMSE, network idle); also a builtin TimeoutError."""


class DIMSETimeout(TimeoutError):
    """No DIMSE response arrived within the DIMSE timeout."""


class NoPresentationContext(DicomioError):
    """No accepted presentation context can carry the requested service or data set."""


class ConnectionRefused(DicomioError, builtins.ConnectionRefusedError):
    """The TCP connection to the peer was refused: nothing listens there (ECONNREFUSED).

    Also a builtin ``ConnectionRefusedError`` (so an ``OSError``), as a plain socket
    would raise.
    """
