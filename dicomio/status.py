"""DIMSE status codes: their classes (PS3.7 Annex C) and meanings (PS3.7 Annex C, PS3.4).

A status is a value, not an exception: Pending and Warning are normal outcomes, and even a
failure of one C-STORE leaves the association usable. Users receive it as a pydicom
``Dataset`` with ``.Status`` and the related command elements (``status_dataset``), as
pynetdicom returns it; ``category`` and ``describe`` interpret the code.

PS3.7 Annex C fixes the class of every code by its value. PS3.7 reserves 01xx and 02xx for
meanings that are the same in every service; Axxx, Bxxx and Cxxx are given meanings per
service in PS3.4, which the tables below hold, one row per line, as
``(first code, last code, meaning)``.
"""

from __future__ import annotations

import enum
import struct
from typing import Any

from pydicom import config as _config
from pydicom import datadict as _datadict
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

__all__ = [
    "ATTRIBUTE_LIST_ERROR",
    "ATTRIBUTE_VALUE_OUT_OF_RANGE",
    "CANCEL",
    "CLASS_INSTANCE_CONFLICT",
    "Category",
    "DUPLICATE_INVOCATION",
    "DUPLICATE_SOP_INSTANCE",
    "INVALID_ARGUMENT_VALUE",
    "INVALID_ATTRIBUTE_VALUE",
    "INVALID_OBJECT_INSTANCE",
    "MISSING_ATTRIBUTE",
    "MISSING_ATTRIBUTE_VALUE",
    "MISTYPED_ARGUMENT",
    "MOVE_DESTINATION_UNKNOWN",
    "NOT_AUTHORIZED",
    "NO_SUCH_ACTION_TYPE",
    "NO_SUCH_ARGUMENT",
    "NO_SUCH_ATTRIBUTE",
    "NO_SUCH_EVENT_TYPE",
    "NO_SUCH_SOP_CLASS",
    "NO_SUCH_SOP_INSTANCE",
    "OPTIONAL_ATTRIBUTES_NOT_SUPPORTED",
    "OUT_OF_RESOURCES",
    "OUT_OF_RESOURCES_MATCHES",
    "OUT_OF_RESOURCES_SUB_OPERATIONS",
    "PENDING",
    "PENDING_CODES",
    "PENDING_WARNING",
    "PROCESSING_FAILURE",
    "RESOURCE_LIMITATION",
    "SERVICES",
    "SOP_CLASS_NOT_SUPPORTED",
    "SUB_OPERATIONS_WARNING",
    "SUCCESS",
    "UNABLE_TO_PROCESS",
    "IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS",
    "UNRECOGNIZED_OPERATION",
    "category",
    "copy_status",
    "describe",
    "raw_but_status",
    "status_dataset",
]


class Category(enum.Enum):
    """The status classes of PS3.7 Annex C."""

    SUCCESS = "Success"
    WARNING = "Warning"
    FAILURE = "Failure"
    CANCEL = "Cancel"
    PENDING = "Pending"


# PS3.7 Annex C: classes and codes that mean the same in every service.
SUCCESS = 0x0000
OPTIONAL_ATTRIBUTES_NOT_SUPPORTED = 0x0001  # warning; PS3.4 (e.g. F.8.2, CC.2.7)
ATTRIBUTE_LIST_ERROR = 0x0107  # warning, C.4.2
ATTRIBUTE_VALUE_OUT_OF_RANGE = 0x0116  # warning, C.4.3
NO_SUCH_ATTRIBUTE = 0x0105
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_SOP_INSTANCE = 0x0112
NO_SUCH_EVENT_TYPE = 0x0113
NO_SUCH_ARGUMENT = 0x0114
INVALID_ARGUMENT_VALUE = 0x0115
INVALID_OBJECT_INSTANCE = 0x0117
NO_SUCH_SOP_CLASS = 0x0118
CLASS_INSTANCE_CONFLICT = 0x0119
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121
SOP_CLASS_NOT_SUPPORTED = 0x0122
NO_SUCH_ACTION_TYPE = 0x0123
NOT_AUTHORIZED = 0x0124
DUPLICATE_INVOCATION = 0x0210
UNRECOGNIZED_OPERATION = 0x0211
MISTYPED_ARGUMENT = 0x0212
RESOURCE_LIMITATION = 0x0213
CANCEL = 0xFE00
PENDING = 0xFF00
PENDING_WARNING = 0xFF01
#: The two Pending codes: a response with any other status is the last of its request's.
PENDING_CODES = (PENDING, PENDING_WARNING)

# PS3.4 codes shared by the storage and query/retrieve services.
OUT_OF_RESOURCES = 0xA700  # C-STORE A7xx, C-FIND A700
OUT_OF_RESOURCES_MATCHES = 0xA701  # C-MOVE/C-GET: unable to calculate number of matches
OUT_OF_RESOURCES_SUB_OPERATIONS = 0xA702  # C-MOVE/C-GET: unable to perform sub-operations
MOVE_DESTINATION_UNKNOWN = 0xA801  # C-MOVE
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # C-FIND/C-MOVE/C-GET (C-STORE: A9xx)
UNABLE_TO_PROCESS = 0xC000  # any Cxxx: C-STORE "cannot understand", Q/R "unable to process"
SUB_OPERATIONS_WARNING = 0xB000  # C-MOVE/C-GET: complete with failures (or warnings)


def category(code: int) -> Category:
    """Return the status class of ``code`` by the convention of PS3.7 Annex C.

    Success 0000; Warning 0001, Bxxx, 0107, 0116; Failure Axxx, Cxxx, 01xx (other than 0107
    and 0116), 02xx; Cancel FE00; Pending FF00, FF01. Annex C forbids any other value; one
    received anyway is classed as a failure, since nothing says the operation succeeded.
    """
    if not 0 <= code <= 0xFFFF:
        raise ValueError(f"a status is an unsigned 16-bit value (US): {code}")
    if code == 0x0000:
        return Category.SUCCESS
    if code in PENDING_CODES:
        return Category.PENDING
    if code == 0xFE00:
        return Category.CANCEL
    if code in (0x0001, 0x0107, 0x0116) or 0xB000 <= code <= 0xBFFF:
        return Category.WARNING
    return Category.FAILURE


_Table = tuple[tuple[int, int, str], ...]

# PS3.7 C.1-C.5: the general meanings, valid in every service.
_GENERAL: _Table = (
    (0x0000, 0x0000, "Success"),
    (0x0001, 0x0001, "Warning: Requested optional Attributes are not supported"),
    (0x0105, 0x0105, "Failure: No such attribute"),
    (0x0106, 0x0106, "Failure: Invalid attribute value"),
    (0x0107, 0x0107, "Warning: Attribute list error"),
    (0x0110, 0x0110, "Failure: Processing failure"),
    (0x0111, 0x0111, "Failure: Duplicate SOP Instance"),
    (0x0112, 0x0112, "Failure: No such SOP Instance"),
    (0x0113, 0x0113, "Failure: No such event type"),
    (0x0114, 0x0114, "Failure: No such argument"),
    (0x0115, 0x0115, "Failure: Invalid argument value"),
    (0x0116, 0x0116, "Warning: Attribute value out of range"),
    (0x0117, 0x0117, "Failure: Invalid SOP Instance"),
    (0x0118, 0x0118, "Failure: No such SOP Class"),
    (0x0119, 0x0119, "Failure: Class-instance conflict"),
    (0x0120, 0x0120, "Failure: Missing attribute"),
    (0x0121, 0x0121, "Failure: Missing attribute value"),
    (0x0122, 0x0122, "Failure: Refused: SOP Class not supported"),
    (0x0123, 0x0123, "Failure: No such action type"),
    (0x0124, 0x0124, "Failure: Refused: Not authorized"),
    (0x0210, 0x0210, "Failure: Duplicate invocation"),
    (0x0211, 0x0211, "Failure: Unrecognized operation"),
    (0x0212, 0x0212, "Failure: Mistyped argument"),
    (0x0213, 0x0213, "Failure: Resource limitation"),
    (0xFE00, 0xFE00, "Cancel"),
    (0xFF00, 0xFF00, "Pending"),
    (0xFF01, 0xFF01, "Pending: Warning"),
)

# PS3.4 B.2.3, Table B.2-1.
_C_STORE: _Table = (
    (0xA700, 0xA7FF, "Failure: Refused: Out of Resources"),
    (0xA900, 0xA9FF, "Failure: Error: Data Set does not match SOP Class"),
    (0xC000, 0xCFFF, "Failure: Error: Cannot understand"),
    (0xB000, 0xB000, "Warning: Coercion of Data Elements"),
    (0xB007, 0xB007, "Warning: Data Set does not match SOP Class"),
    (0xB006, 0xB006, "Warning: Elements Discarded"),
)

# PS3.4 C.4.1.1.4, Table C.4-1.
_C_FIND: _Table = (
    (0xA700, 0xA700, "Failure: Refused: Out of Resources"),
    (0xA900, 0xA900, "Failure: Identifier does not match SOP Class"),
    (0xC000, 0xCFFF, "Failure: Unable to process"),
    (0xFE00, 0xFE00, "Cancel: Matching terminated due to Cancel request"),
    (0x0000, 0x0000, "Success: Matching is complete - No final Identifier is supplied"),
    (
        0xFF00,
        0xFF00,
        "Pending: Matches are continuing - Current Match is supplied and any Optional Keys"
        " were supported in the same manner as Required Keys",
    ),
    (
        0xFF01,
        0xFF01,
        "Pending: Matches are continuing - Warning that one or more Optional Keys were not"
        " supported for existence and/or matching for this Identifier",
    ),
)

# PS3.4 C.4.2.1.5, Table C.4-2.
_C_MOVE: _Table = (
    (0xA701, 0xA701, "Failure: Refused: Out of Resources - Unable to calculate number of matches"),
    (0xA702, 0xA702, "Failure: Refused: Out of Resources - Unable to perform sub-operations"),
    (0xA801, 0xA801, "Failure: Refused: Move Destination unknown"),
    (0xA900, 0xA900, "Failure: Identifier does not match SOP Class"),
    (0xC000, 0xCFFF, "Failure: Unable to process"),
    (0xFE00, 0xFE00, "Cancel: Sub-operations terminated due to Cancel Indication"),
    (0xB000, 0xB000, "Warning: Sub-operations Complete - One or more Failures"),
    (0x0000, 0x0000, "Success: Sub-operations Complete - No Failures"),
    (0xFF00, 0xFF00, "Pending: Sub-operations are continuing"),
)

# PS3.4 C.4.3.1.4, Table C.4-3.
_C_GET: _Table = (
    (0xA701, 0xA701, "Failure: Refused: Out of Resources - Unable to calculate number of matches"),
    (0xA702, 0xA702, "Failure: Refused: Out of Resources - Unable to perform sub-operations"),
    (0xA900, 0xA900, "Failure: Identifier does not match SOP Class"),
    (0xC000, 0xCFFF, "Failure: Unable to process"),
    (0xFE00, 0xFE00, "Cancel: Sub-operations terminated due to Cancel Indication"),
    (0xB000, 0xB000, "Warning: Sub-operations Complete - One or more Failures or Warnings"),
    (0x0000, 0x0000, "Success: Sub-operations Complete - No Failures or Warnings"),
    (0xFF00, 0xFF00, "Pending: Sub-operations are continuing"),
)

# Services with PS3.4 meanings of their own; the others use the general meanings only (their
# service-class-specific codes depend on the SOP class, not the DIMSE service).
_BY_SERVICE: dict[str, _Table] = {
    "C-ECHO": (),
    "C-STORE": _C_STORE,
    "C-FIND": _C_FIND,
    "C-GET": _C_GET,
    "C-MOVE": _C_MOVE,
    "N-EVENT-REPORT": (),
    "N-GET": (),
    "N-SET": (),
    "N-ACTION": (),
    "N-CREATE": (),
    "N-DELETE": (),
}

#: The service names ``describe`` accepts.
SERVICES = tuple(_BY_SERVICE)


def _lookup(table: _Table, code: int) -> str | None:
    return next((meaning for low, high, meaning in table if low <= code <= high), None)


def describe(code: int, service: str | None = None) -> str:
    """Return the standard's meaning of ``code``, for ``service`` (e.g. ``"C-MOVE"``) if given.

    The service's PS3.4 table is consulted first, then the general meanings of PS3.7 Annex C.
    A code neither lists is described by its class alone, e.g. ``"Failure (0xA123)"``.
    ``service`` is case-insensitive and may use ``_`` for ``-``; an unknown name raises
    ``ValueError``.
    """
    cls = category(code)
    if service is not None:
        key = service.upper().replace("_", "-")
        if key not in _BY_SERVICE:
            raise ValueError(f"unknown DIMSE service {service!r}; expected one of {SERVICES}")
        meaning = _lookup(_BY_SERVICE[key], code)
        if meaning is not None:
            return meaning
    meaning = _lookup(_GENERAL, code)
    if meaning is not None:
        return meaning
    if _is_outside_annex_c(code):
        return f"Failure (0x{code:04X}, not a status code PS3.7 Annex C allows)"
    return f"{cls.value} (0x{code:04X})"


def _is_outside_annex_c(code: int) -> bool:
    high = code >> 12
    return not (
        code in (0x0000, 0x0001, 0xFE00, 0xFF00, 0xFF01)
        or high in (0xA, 0xB, 0xC)
        or 0x0100 <= code <= 0x02FF
    )


#: A blank Dataset's instance attributes, from a real one, so that new attributes of a
#: future pydicom are copied too; the mutable ones are copied for each new Dataset.
_PROTOTYPE: dict[str, Any] = dict(Dataset().__dict__)
_MUTABLE = tuple(k for k, v in _PROTOTYPE.items() if isinstance(v, (dict, list, set)))
_STATUS_TAG = Tag(0x0000, 0x0900)
_INSTANCE_UID_TAG = Tag(0x0000, 0x1000)  # Affected SOP Instance UID


def _blank_dataset() -> Dataset:
    """``Dataset()`` without its ~15 calls to ``Dataset.__setattr__``.

    Every response carries a status Dataset, so this is on the C-ECHO hot path.
    """
    return _dataset_with(_PROTOTYPE)


def _dataset_with(attributes: dict[str, Any]) -> Dataset:
    """A Dataset with a copy of these instance attributes, built without ``__init__``: the
    mutable ones (the element dict, private blocks ...) are fresh copies, never shared."""
    ds = Dataset.__new__(Dataset)
    state = ds.__dict__
    state.update(attributes)
    for key in _MUTABLE:
        state[key] = attributes[key].copy()
    return ds


#: Status elements pydicom built, by (code, validation mode): templates for ``_status_element``.
_STATUS_ELEMENTS: dict[tuple[int, int], DataElement] = {}
_STATUS_ELEMENTS_CAP = 256


def _status_element(code: int) -> DataElement:
    """``DataElement(Status, "US", code)``, as a copy of one pydicom built for that code.

    A response's status is one of a few codes, and pydicom's constructor converts and
    validates the value each time (most of the cost of a status Dataset). The copy shares
    nothing mutable: an element's attributes are its tag, VR, settings and an int value.
    """
    mode = _config.settings.reading_validation_mode
    template = _STATUS_ELEMENTS.get((code, mode))
    if template is None:
        template = DataElement(_STATUS_TAG, "US", code)
        if len(_STATUS_ELEMENTS) < _STATUS_ELEMENTS_CAP:
            _STATUS_ELEMENTS[code, mode] = template
    return _copy_element(template)


def _copy_element(element: DataElement) -> DataElement:
    """A copy of a DataElement whose value is immutable (an int, a str), without __init__."""
    copied = DataElement.__new__(DataElement)
    copied.__dict__.update(element.__dict__)
    return copied


def raw_but_status(status: Dataset) -> bool:
    """Whether every element but Status is still raw (immutable): ``copy_status`` copies
    such a Dataset whole."""
    return all(
        tag == _STATUS_TAG or isinstance(elem, RawDataElement)
        for tag, elem in status._dict.items()
    )


def copy_status(status: Dataset, instance_uid: str | None = None) -> Dataset:
    """A copy of a status Dataset (see ``raw_but_status``) that shares nothing mutable.

    What ``status_dataset`` would build again for the same values, for about a quarter of
    the cost: a C-FIND client gets one per match. With ``instance_uid``, the copy also has
    that Affected SOP Instance UID, which ``status`` must not have: the answers to a
    series of C-STOREs differ in nothing else.
    """
    ds = _dataset_with(status.__dict__)
    elements = ds._dict
    status_element = elements[_STATUS_TAG]
    assert isinstance(status_element, DataElement)  # status_dataset built it (raw_but_status)
    elements[_STATUS_TAG] = _copy_element(status_element)  # its value is an int
    if instance_uid is not None:
        raw = _raw_value("UI", instance_uid)
        if raw is None:
            ds.AffectedSOPInstanceUID = instance_uid
        else:
            elements[_INSTANCE_UID_TAG] = RawDataElement(
                _INSTANCE_UID_TAG, "UI", len(raw), raw, 0, True, True
            )
    return ds


def _raw_value(vr: str, value: Any) -> bytes | None:
    """A command element's value as Implicit VR Little Endian bytes, or None if unusual."""
    if vr == "US" and isinstance(value, int) and 0 <= value <= 0xFFFF:
        return _US.pack(value)
    if vr in ("UI", "LO") and isinstance(value, str) and value.isascii():
        raw = value.encode("ascii")
        return raw + (b"\0" if vr == "UI" else b" ") if len(raw) % 2 else raw
    if vr == "AT":
        tags = value if isinstance(value, (list, tuple)) else [value]
        if all(isinstance(t, int) and 0 <= t <= 0xFFFFFFFF for t in tags):
            return b"".join(_AT.pack(t >> 16, t & 0xFFFF) for t in tags)
    return None


def status_dataset(code: int, **elements: Any) -> Dataset:
    """Build the status ``Dataset`` a DIMSE response carries to the user (PS3.7 Annex C).

    ``elements`` are command-group (0000,xxxx) keywords from PS3.7 Annex E, such as
    ``ErrorComment``, ``OffendingElement``, ``ErrorID``, ``AffectedSOPInstanceUID``,
    ``AttributeIdentifierList`` or ``NumberOfRemainingSuboperations``; a value of None is
    left out. Any other keyword raises ``ValueError``.

    Elements other than the status are stored undecoded (as pydicom stores what it reads
    from a file) and decoded when first read: most callers look at ``.Status`` only.
    """
    if not 0 <= code <= 0xFFFF:
        raise ValueError(f"a status is an unsigned 16-bit value (US): {code}")
    ds = _blank_dataset()
    elements_by_tag = ds._dict
    elements_by_tag[_STATUS_TAG] = _status_element(code)
    for keyword, value in elements.items():
        entry = _COMMAND_ELEMENTS.get(keyword)
        if entry is None:
            # Only the command group: these fields belong to the response's command set,
            # not to an identifier or data set (PS3.7 Annex C, E.1).
            raise ValueError(f"{keyword!r} is not a command element that accompanies a status")
        if value is None:
            continue
        tag, vr = entry
        raw = _raw_value(vr, value)
        if raw is None:
            setattr(ds, keyword, value)
        else:
            elements_by_tag[tag] = RawDataElement(tag, vr, len(raw), raw, 0, True, True)
    return ds


def _command_elements() -> dict[str, tuple[BaseTag, str]]:
    """Keyword -> (tag, VR) of every command-group element but Status (PS3.7 E.1)."""
    table: dict[str, tuple[BaseTag, str]] = {}
    for keyword, tag in _datadict.keyword_dict.items():
        if tag >> 16 == 0x0000 and keyword != "Status":
            table[keyword] = (Tag(tag), _datadict.dictionary_VR(tag))
    return table


_COMMAND_ELEMENTS = _command_elements()
_US = struct.Struct("<H")
_AT = struct.Struct("<HH")
