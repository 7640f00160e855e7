"""Fragmentation of a DIMSE message into P-DATA-TF PDUs (PS3.8 Annex E.1, PS3.7 6.3.1).

A message is its command set followed, if Command Data Set Type says so, by its data set.
Each is cut into fragments, each fragment goes into one presentation data value (PDV)
with a message control header (PS3.8 E.2), and here each PDV goes into its own P-DATA-TF.

Sizes come from PS3.8 D.1: the maximum length a peer announces bounds the *variable field*
of the P-DATA-TF PDUs it receives. That field holds the PDV items, and one PDV item costs
6 bytes besides its fragment: a 4-byte item length, the presentation context ID and the
message control header. So a fragment may be at most ``max_pdu_length - 6`` bytes, rounded
down to even because PS3.8 E.1 requires every fragment to have an even number of bytes.

Data set fragments are ``memoryview`` slices of the caller's buffer: nothing is copied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

from dicomio.errors import LocalProtocolError
from dicomio.pdu.items import PresentationDataValue
from dicomio.pdu.pdus import PDataTF

__all__ = ["PDV_OVERHEAD", "UNLIMITED_FRAGMENT_SIZE", "data_pdu", "fragment", "max_fragment_size"]

#: Bytes a PDV item adds to its fragment inside the P-DATA-TF variable field (PS3.8 9.3.5.1).
PDV_OVERHEAD: Final = 6

#: Fragment size used when the peer announced no maximum (maximum length 0, PS3.8 D.1).
#: No limit does not mean one PDU per message: a 2 GB data set in one PDU would make a
#: receiver that frames whole PDUs (as most do) buffer all of it before it could use a
#: byte, and the 32-bit PDU length could not even describe a 4 GB one. 4 MiB fragments keep
#: the per-PDU cost (12 header bytes and one call each) negligible while bounding the
#: memory a peer needs per PDU.
UNLIMITED_FRAGMENT_SIZE: Final = 4 * 1024 * 1024

# PDataTF's ``converter=tuple`` leaves mypy with an unsolved generic parameter for ``pdvs``;
# calling the class through this alias keeps the call sites type-checked by their result.
_PDataTF: Callable[..., PDataTF] = PDataTF


def max_fragment_size(max_pdu_length: int) -> int:
    """The largest fragment one PDV may carry to a peer with this maximum length (PS3.8 D.1).

    0 means the peer set no limit, and gives ``UNLIMITED_FRAGMENT_SIZE``. Below 8 no even,
    non-empty fragment fits (PS3.8 E.1), so such a limit raises ``LocalProtocolError``:
    nothing can be sent to that peer.
    """
    if max_pdu_length == 0:
        return UNLIMITED_FRAGMENT_SIZE
    size = (max_pdu_length - PDV_OVERHEAD) & ~1
    if size < 2:
        raise LocalProtocolError(
            f"a maximum PDU length of {max_pdu_length} leaves no room for an even "
            f"fragment after the {PDV_OVERHEAD}-byte PDV header (PS3.8 D.1, E.1)"
        )
    return size


def data_pdu(context_id: int, chunk: bytes | memoryview, is_last: bool) -> PDataTF:
    """One P-DATA-TF with one data set fragment, for callers that stream a data set.

    The caller keeps ``chunk`` within ``max_fragment_size`` and even (PS3.8 E.1).
    """
    return _PDataTF(
        pdvs=(
            PresentationDataValue(
                context_id=context_id, is_command=False, is_last=is_last, data=chunk
            ),
        )
    )


def fragment(
    context_id: int,
    command: bytes,
    dataset: bytes | memoryview | None,
    max_pdu_length: int,
) -> Iterator[PDataTF]:
    """Yield the P-DATA-TF PDUs that carry one message, one PDV per PDU (PS3.8 E.1).

    ``command`` is an encoded command set (see ``encode_command``); ``dataset`` is the
    encoded data set, or None when Command Data Set Type is 0101H. The command fragments
    come first, the last one flagged as such, then the data set fragments. An empty data
    set still gets one (empty, last) fragment, so that the receiver sees the message end.
    """
    size = max_fragment_size(max_pdu_length)
    # Hot loop for large data sets: names bound locally, one value pair per fragment.
    pdata_tf = _PDataTF
    pdv = PresentationDataValue

    if len(command) <= size:
        # The usual case: a command set is a hundred bytes or so.
        yield pdata_tf(
            pdvs=(pdv(context_id=context_id, is_command=True, is_last=True, data=command),)
        )
    else:
        view = memoryview(command)
        end = len(view)
        for start in range(0, end, size):
            stop = start + size
            yield pdata_tf(
                pdvs=(
                    pdv(
                        context_id=context_id,
                        is_command=True,
                        is_last=stop >= end,
                        data=view[start:stop],
                    ),
                )
            )

    if dataset is None:
        return
    view = memoryview(dataset)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    end = len(view)
    if end == 0:
        yield pdata_tf(
            pdvs=(pdv(context_id=context_id, is_command=False, is_last=True, data=view),)
        )
        return
    for start in range(0, end, size):
        stop = start + size
        yield pdata_tf(
            pdvs=(
                pdv(
                    context_id=context_id,
                    is_command=False,
                    is_last=stop >= end,
                    data=view[start:stop],
                ),
            )
        )
