"""dicomio: asyncio-native DICOM networking (PS3.7 DIMSE over the PS3.8 Upper Layer).

Runs on asyncio and trio through anyio. Start with :class:`AE`::

    ae = AE("MYSCU")
    ae.add_requested_context(Verification)
    async with ae.associate("127.0.0.1", 11112, ae_title="ANY-SCP") as assoc:
        status = await assoc.send_c_echo()
"""

from dicomio import events as evt
from dicomio._debug import debug_logger
from dicomio._receive import IncomingRequests
from dicomio._scp import stream_to_disk
from dicomio._scu import ResponseStream
from dicomio.ae import AE, AssociateRequest
from dicomio.allocator import tune_allocator
from dicomio.association import Association, ServiceUser
from dicomio.config import DEFAULT_MAX_PDU, Timeouts
from dicomio.errors import (
    AssociationAborted,
    AssociationRejected,
    AssociationReleased,
    CodecUnavailable,
    ConnectionClosed,
    ConnectionRefused,
    DicomioError,
    DIMSETimeout,
    LocalProtocolError,
    LossyTranscodeRefused,
    NoPresentationContext,
    ProtocolError,
    RemoteProtocolError,
    TimeoutError,
    TranscodeError,
)
from dicomio.fanout import FanOut, Outcome, PeerReport, Retry
from dicomio.pool import AssociationPool, Peer
from dicomio.presentation import PresentationContext, build_context, build_role
from dicomio.server import Server
from dicomio.sop import register_uid

__version__ = "0.1.0.dev0"

__all__ = [
    "AE",
    "AssociateRequest",
    "Association",
    "AssociationAborted",
    "AssociationPool",
    "AssociationRejected",
    "AssociationReleased",
    "CodecUnavailable",
    "ConnectionClosed",
    "ConnectionRefused",
    "DEFAULT_MAX_PDU",
    "DIMSETimeout",
    "DicomioError",
    "FanOut",
    "IncomingRequests",
    "LocalProtocolError",
    "LossyTranscodeRefused",
    "NoPresentationContext",
    "Outcome",
    "Peer",
    "PeerReport",
    "PresentationContext",
    "ProtocolError",
    "RemoteProtocolError",
    "ResponseStream",
    "Retry",
    "Server",
    "ServiceUser",
    "TimeoutError",
    "Timeouts",
    "TranscodeError",
    "build_context",
    "build_role",
    "debug_logger",
    "evt",
    "register_uid",
    "stream_to_disk",
    "tune_allocator",
]
