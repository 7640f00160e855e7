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
    "CodecUnavailable",
    "ConnectionClosed",
    "ConnectionRefused",
    "DicomioError",
    "DIMSETimeout",
    "LocalProtocolError",
    "LossyTranscodeRefused",
    "NoPresentationContext",
    "ProtocolError",
    "RemoteProtocolError",
    "TimeoutError",
    "TranscodeError",
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


# The words of PS3.8 Table 9-21 (A-ASSOCIATE-RJ) for each Result, Source and, by source,
# Reason/Diag. value, as the standard writes them; messages print them next to the numbers.
_REJECT_RESULTS = {1: "rejected-permanent", 2: "rejected-transient"}
_REJECT_SOURCES = {
    1: "DICOM UL service-user",
    2: "DICOM UL service-provider (ACSE related function)",
    3: "DICOM UL service-provider (Presentation related function)",
}
_REJECT_REASONS = {
    1: {
        1: "no-reason-given",
        2: "application-context-name-not-supported",
        3: "calling-AE-title-not-recognized",
        **dict.fromkeys((4, 5, 6, 8, 9, 10), "reserved"),
        7: "called-AE-title-not-recognized",
    },
    2: {1: "no-reason-given", 2: "protocol-version-not-supported"},
    3: {
        1: "temporary-congestion",
        2: "local-limit-exceeded",
        **dict.fromkeys((0, 3, 4, 5, 6, 7), "reserved"),
    },
}

# PS3.8 Table 9-26 (A-ABORT): Source, and Reason/Diag. (defined for source 2 only).
_ABORT_SOURCES = {
    0: "DICOM UL service-user (initiated abort)",
    1: "reserved",
    2: "DICOM UL service-provider (initiated abort)",
}
_ABORT_REASONS = {
    0: "reason-not-specified",
    1: "unrecognized-PDU",
    2: "unexpected-PDU",
    3: "reserved",
    4: "unrecognized-PDU parameter",
    5: "unexpected-PDU parameter",
    6: "invalid-PDU-parameter value",
}


def _word(table: dict[int, str], value: int, what: str) -> str:
    return table.get(value, f"unknown {what} {value}")


def _rejection_words(result: int, source: int, reason: int) -> str:
    """The PS3.8 Table 9-21 words for an A-ASSOCIATE-RJ's three fields, comma-separated."""
    return ", ".join(
        (
            _word(_REJECT_RESULTS, result, "result"),
            _word(_REJECT_SOURCES, source, "source"),
            _word(_REJECT_REASONS.get(source, {}), reason, "reason"),
        )
    )


def _abort_words(source: int, reason: int) -> str:
    """The PS3.8 Table 9-26 words for an A-ABORT's source and, from the provider, reason.

    From any other source the reason field is not significant (and not tested), so it gets
    no words.
    """
    words = _word(_ABORT_SOURCES, source, "source")
    if source == 2:
        words += ", " + _word(_ABORT_REASONS, reason, "reason")
    return words


class AssociationRejected(DicomioError):
    """The acceptor answered A-ASSOCIATE-RJ (PS3.8 Table 9-21).

    ``result``, ``source`` and ``reason`` are the PDU's fields; the message adds the words.
    """

    def __init__(self, result: int, source: int, reason: int) -> None:
        super().__init__(
            f"association rejected: {_rejection_words(result, source, reason)} "
            f"(result={result} source={source} reason={reason})"
        )
        self.result = result
        self.source = source
        self.reason = reason


class AssociationAborted(DicomioError):
    """The association ended by A-ABORT (from the peer) or A-P-ABORT (from the provider).

    ``source`` and ``reason`` are those of PS3.8 Table 9-26; the message adds their words
    and then ``message``, the detail (what broke the standard, or who aborted), if any.
    """

    def __init__(self, source: int, reason: int, message: str = "") -> None:
        text = (
            f"association aborted: {_abort_words(source, reason)} "
            f"(source={source} reason={reason})"
        )
        super().__init__(f"{text}: {message}" if message else text)
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


class TranscodeError(DicomioError):
    """A data set could not be converted to another transfer syntax (PS3.5 8.2, A.4).

    The message names the cause: a stream the codec cannot decode (corrupt, truncated, an
    unsupported sub-type), pixel data an encoder refuses, or a data set that cannot be read.
    """


class CodecUnavailable(TranscodeError):
    """No installed pixel codec can decode the source or encode the target syntax.

    Pixel codecs are the optional extra ``pip install 'dicomio[codecs]'``; the message says
    when installing it would help and when no codec pydicom knows exists for the syntax.
    """


class LossyTranscodeRefused(TranscodeError):
    """The conversion would compress lossily and the caller did not allow it.

    Lossy compression changes pixel values for good (PS3.3 C.7.6.1.1.5), so dicomio never
    does it silently: pass ``allow_lossy=True`` to permit it.
    """
