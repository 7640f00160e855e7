"""The seven Upper Layer PDUs of PS3.8 section 9.3, as immutable values.

The same classes are sent by one side and received by the other; the Upper Layer
(``dicomio.ul``) also reports them as its events. Values only: the codec lives in
``dicomio.pdu.codec``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import NamedTuple

import attrs
from pydicom.uid import UID

from dicomio.pdu.items import (
    PresentationContextAC,
    PresentationContextRQ,
    PresentationDataValue,
    UserInformationSubItem,
    same_type_eq,
    same_type_ne,
    to_uid,
)

#: The DICOM application context name (PS3.7 Annex A.2.1), the only one defined.
DICOM_APPLICATION_CONTEXT = UID("1.2.840.10008.3.1.1.1")


class PDUType(enum.IntEnum):
    """PDU type byte (PS3.8 Table 9-11)."""

    A_ASSOCIATE_RQ = 0x01
    A_ASSOCIATE_AC = 0x02
    A_ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    A_RELEASE_RQ = 0x05
    A_RELEASE_RP = 0x06
    A_ABORT = 0x07


class RejectResult(enum.IntEnum):
    """A-ASSOCIATE-RJ result (PS3.8 Table 9-21)."""

    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class RejectSource(enum.IntEnum):
    """A-ASSOCIATE-RJ source (PS3.8 Table 9-21)."""

    SERVICE_USER = 1
    SERVICE_PROVIDER_ACSE = 2
    SERVICE_PROVIDER_PRESENTATION = 3


class RejectReason(enum.IntEnum):
    """A-ASSOCIATE-RJ reason/diag; the meaning depends on the source (PS3.8 Table 9-21)."""

    # source 1: service user
    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NAME_NOT_SUPPORTED = 2
    CALLING_AE_TITLE_NOT_RECOGNIZED = 3
    CALLED_AE_TITLE_NOT_RECOGNIZED = 7
    # source 2: service provider (ACSE): 1 no reason given, 2 protocol version not supported
    # source 3: service provider (presentation): 1 temporary congestion, 2 local limit exceeded


def _contexts_rq(values: Iterable[PresentationContextRQ]) -> tuple[PresentationContextRQ, ...]:
    return tuple(values)


def _contexts_ac(values: Iterable[PresentationContextAC]) -> tuple[PresentationContextAC, ...]:
    return tuple(values)


def _sub_items(
    values: Iterable[UserInformationSubItem],
) -> tuple[UserInformationSubItem, ...]:
    return tuple(values)


def to_ae_title(value: str | bytes) -> str:
    """AE titles are stored without the insignificant leading/trailing spaces (PS3.5 AE VR)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value.strip(" \x00")


@attrs.frozen(kw_only=True, cache_hash=True)
class AssociateRQ:
    """A-ASSOCIATE-RQ PDU (PS3.8 9.3.2)."""

    called_ae_title: str = attrs.field(converter=to_ae_title)
    calling_ae_title: str = attrs.field(converter=to_ae_title)
    application_context: UID = attrs.field(default=DICOM_APPLICATION_CONTEXT, converter=to_uid)
    presentation_contexts: tuple[PresentationContextRQ, ...] = attrs.field(
        default=(), converter=_contexts_rq
    )
    user_information: tuple[UserInformationSubItem, ...] = attrs.field(
        default=(), converter=_sub_items
    )
    protocol_version: int = 1


@attrs.frozen(kw_only=True, cache_hash=True)
class AssociateAC:
    """A-ASSOCIATE-AC PDU (PS3.8 9.3.3). AE titles echo the request and are not tested."""

    called_ae_title: str = attrs.field(converter=to_ae_title)
    calling_ae_title: str = attrs.field(converter=to_ae_title)
    application_context: UID = attrs.field(default=DICOM_APPLICATION_CONTEXT, converter=to_uid)
    presentation_contexts: tuple[PresentationContextAC, ...] = attrs.field(
        default=(), converter=_contexts_ac
    )
    user_information: tuple[UserInformationSubItem, ...] = attrs.field(
        default=(), converter=_sub_items
    )
    protocol_version: int = 1


@attrs.frozen(kw_only=True)
class AssociateRJ:
    """A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""

    result: int
    source: int
    reason: int


class _PDataTFFields(NamedTuple):
    pdvs: tuple[PresentationDataValue, ...]


class PDataTF(_PDataTFFields):
    """P-DATA-TF PDU (PS3.8 9.3.5): one or more presentation data values.

    A named tuple, like ``PresentationDataValue`` and for the same reason: it is the one PDU
    built for every fragment of every message. ``pdvs`` may be given as any iterable and is
    stored as a tuple; equality holds only with another ``PDataTF``.
    """

    __slots__ = ()

    def __new__(cls, pdvs: Iterable[PresentationDataValue]) -> PDataTF:
        return tuple.__new__(cls, (tuple(pdvs),))

    __eq__ = same_type_eq
    __ne__ = same_type_ne
    __hash__ = tuple.__hash__


class _DataRunFields(NamedTuple):
    context_id: int
    fragments: tuple[bytes | memoryview, ...]
    continued: tuple[int, ...]


class DataRun(_DataRunFields):
    """Consecutive P-DATA-TF PDUs, each holding one data set fragment that is not the last.

    Not a PDU of PS3.8: it stands for ``len(fragments)`` PDUs received one after another,
    each ``PDataTF([PresentationDataValue(context_id, False, False, fragment)])`` (message
    control header 00H, PS3.8 E.2), and ``pdus()`` gives exactly those. It exists because
    the bulk of a large data set arrives as such PDUs, dozens per transport read, and
    building two values per fragment and passing each through the Upper Layer and the DIMSE
    reassembly one at a time costs more than everything else done with them: a receiver that
    asks for runs (``PDUReader.next_pdu_or_run``, ``ULConnection(data_runs=True)``) handles a
    run with one call per layer. The fragments are what ``PresentationDataValue.data`` would
    be: views of the received bytes. A PDU whose data straddled two reads comes as one
    view of each, not joined (a copy of up to a PDU): ``continued`` holds the index of every
    fragment that goes on the PDU of the fragment before it, and ``pdus()`` joins them. A
    receiver that only wants the data set's bytes, in order, takes ``fragments`` as they are.

    A named tuple like ``PDataTF``, with the same promises: immutable, a readable repr, and
    equality only with another ``DataRun``.
    """

    __slots__ = ()

    def __new__(
        cls,
        context_id: int,
        fragments: Iterable[bytes | memoryview],
        continued: Iterable[int] = (),
    ) -> DataRun:
        return tuple.__new__(cls, (context_id, tuple(fragments), tuple(continued)))

    def pdus(self) -> list[PDataTF]:
        """The P-DATA-TF PDUs this run stands for, in the order they were received."""
        context_id = self.context_id
        data: list[bytes | memoryview] = list(self.fragments)
        for index in reversed(self.continued):
            data[index - 1 : index + 1] = [b"".join(data[index - 1 : index + 1])]
        return [
            tuple.__new__(
                PDataTF,
                ((tuple.__new__(PresentationDataValue, (context_id, False, False, fragment)),),),
            )
            for fragment in data
        ]

    __eq__ = same_type_eq
    __ne__ = same_type_ne
    __hash__ = tuple.__hash__


@attrs.frozen(kw_only=True)
class ReleaseRQ:
    """A-RELEASE-RQ PDU (PS3.8 9.3.6)."""


@attrs.frozen(kw_only=True)
class ReleaseRP:
    """A-RELEASE-RP PDU (PS3.8 9.3.7)."""


@attrs.frozen(kw_only=True)
class Abort:
    """A-ABORT PDU (PS3.8 9.3.8); see ``dicomio.errors.AbortSource``/``AbortReason``."""

    source: int = 0
    reason: int = 0


PDU = AssociateRQ | AssociateAC | AssociateRJ | PDataTF | ReleaseRQ | ReleaseRP | Abort
