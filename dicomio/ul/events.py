"""What the Upper Layer reports to its user (PS3.8 section 7, the service primitives).

A received PDU is reported as the PDU value itself, which is also what the peer sent
(``dicomio.pdu.pdus``): an ``AssociateRQ`` is the A-ASSOCIATE indication, an ``AssociateAC``
or ``AssociateRJ`` the A-ASSOCIATE confirmation, a ``PDataTF`` the P-DATA indication, a
``ReleaseRQ`` the A-RELEASE indication (also in a release collision), a ``ReleaseRP`` the
A-RELEASE confirmation and an ``Abort`` the A-ABORT indication (or, with source 2, an
A-P-ABORT raised by the peer's provider).

A ``DataRun`` (only from a ``ULConnection`` created with ``data_runs=True``) is the P-DATA
indications of several consecutive P-DATA-TF PDUs at once; ``DataRun.pdus()`` gives them.

Two events have no PDU behind them and are defined here: ``ProviderAbort`` (our own provider
aborted, PS3.8 7.4) and ``TransportClosed`` (the transport connection is gone, Evt17).
"""

from __future__ import annotations

import attrs

from dicomio.pdu.pdus import (
    Abort,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    DataRun,
    PDataTF,
    ReleaseRP,
    ReleaseRQ,
)

__all__ = ["TransportClosed", "ProviderAbort", "ULEvent"]


@attrs.frozen(kw_only=True)
class ProviderAbort:
    """A-P-ABORT indication (PS3.8 7.4): our Upper Layer aborted the association.

    Reported when the peer sent an invalid or unexpected PDU (AA-8, or AA-1 in Sta2) and
    when no A-ASSOCIATE-RQ arrived before ARTIM expired (Evt18 in Sta2). When the cause was a
    PDU, the A-ABORT that answers it (source 2, this ``reason``) is already queued for
    sending. ``reason`` is the A-ABORT reason/diag of PS3.8 Table 9-26
    (``dicomio.errors.AbortReason``).
    """

    reason: int
    message: str = ""


@attrs.frozen(kw_only=True)
class TransportClosed:
    """The transport connection was closed (PS3.8 Evt17, "transport connection closed").

    Reported for every Evt17. In Sta3 to Sta12 it is the A-P-ABORT indication of AA-4: the
    association ended without a release or an abort. In Sta13 (after a release, a reject or
    an abort) and in Sta2 (before any A-ASSOCIATE-RQ) it is the expected end.
    """


ULEvent = (
    AssociateRQ
    | AssociateAC
    | AssociateRJ
    | PDataTF
    | DataRun
    | ReleaseRQ
    | ReleaseRP
    | Abort
    | ProviderAbort
    | TransportClosed
)
"""Everything ``ULConnection.receive_data`` and ``handle_timer`` can report."""
