"""L2: DIMSE messages (PS3.7) carried over the P-DATA service (PS3.8 Annex E).

This package owns the command sets of PS3.7 6.3.1 (group 0000, Implicit VR Little Endian),
every DIMSE-C (PS3.7 9.3) and DIMSE-N (PS3.7 10.3) request and response as an immutable
value, their direct encoding and decoding, the fragmentation of a message into P-DATA-TF
PDUs within the peer's maximum length (PS3.8 D.1, E.1), and the reassembly of received
PDVs into messages, whole or as a stream of data set fragments.

Sans-IO: this package does no I/O and reads no clock.
"""

from dicomio.dimse.assembler import (
    AssemblerEvent,
    CommandReceived,
    DataFragment,
    MessageAssembler,
    MessageReceived,
)
from dicomio.dimse.commands import (
    MESSAGE_CLASSES,
    CCancelRQ,
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CGetRSP,
    CMoveRQ,
    CMoveRSP,
    CStoreRQ,
    CStoreRSP,
    Message,
    NActionRQ,
    NActionRSP,
    NCreateRQ,
    NCreateRSP,
    NDeleteRQ,
    NDeleteRSP,
    NEventReportRQ,
    NEventReportRSP,
    NGetRQ,
    NGetRSP,
    NSetRQ,
    NSetRSP,
    Priority,
    Request,
    Response,
    decode_command,
    encode_command,
    response_class_for,
)
from dicomio.dimse.fragment import data_pdu, fragment, max_fragment_size

__all__ = [
    "MESSAGE_CLASSES",
    "AssemblerEvent",
    "CCancelRQ",
    "CEchoRQ",
    "CEchoRSP",
    "CFindRQ",
    "CFindRSP",
    "CGetRQ",
    "CGetRSP",
    "CMoveRQ",
    "CMoveRSP",
    "CStoreRQ",
    "CStoreRSP",
    "CommandReceived",
    "DataFragment",
    "Message",
    "MessageAssembler",
    "MessageReceived",
    "NActionRQ",
    "NActionRSP",
    "NCreateRQ",
    "NCreateRSP",
    "NDeleteRQ",
    "NDeleteRSP",
    "NEventReportRQ",
    "NEventReportRSP",
    "NGetRQ",
    "NGetRSP",
    "NSetRQ",
    "NSetRSP",
    "Priority",
    "Request",
    "Response",
    "data_pdu",
    "decode_command",
    "encode_command",
    "fragment",
    "max_fragment_size",
    "response_class_for",
]
