"""L1: the DICOM Upper Layer protocol for TCP/IP (PS3.8 section 9.2), sans-IO.

``ULConnection`` runs the state machine of PS3.8 Table 9-10 for one association: it takes
received bytes, the local user's requests and the time, and gives back events and bytes to
send. ``dicomio.ul.states`` holds the table itself. This package does no I/O and reads no
clock.
"""

from dicomio.ul.connection import Role, ULConnection
from dicomio.ul.events import ProviderAbort, TransportClosed, ULEvent
from dicomio.ul.states import TRANSITIONS, Action, Event, State, Transition

__all__ = [
    "Action",
    "TransportClosed",
    "Event",
    "ProviderAbort",
    "Role",
    "State",
    "TRANSITIONS",
    "Transition",
    "ULConnection",
    "ULEvent",
]
