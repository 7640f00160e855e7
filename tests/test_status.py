"""DIMSE status classes and meanings (PS3.7 Annex C; PS3.4 B.2.3, C.4.1.1.4, C.4.2.1.5, C.4.3.1.4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.tag import Tag

from dicomio import status
from dicomio.status import SERVICES, Category, category, describe, status_dataset

S, W, F, C, P = (
    Category.SUCCESS,
    Category.WARNING,
    Category.FAILURE,
    Category.CANCEL,
    Category.PENDING,
)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0x0000, S),
        (0x0001, W),
        (0x0002, F),  # not an Annex C code: failure
        (0x00FF, F),
        (0x0100, F),
        (0x0106, F),
        (0x0107, W),
        (0x0108, F),
        (0x0115, F),
        (0x0116, W),
        (0x0117, F),
        (0x01FF, F),
        (0x0200, F),
        (0x02FF, F),
        (0x0300, F),
        (0x9FFF, F),
        (0xA000, F),
        (0xAFFF, F),
        (0xB000, W),
        (0xBFFF, W),
        (0xC000, F),
        (0xCFFF, F),
        (0xD000, F),
        (0xFDFF, F),
        (0xFE00, C),
        (0xFE01, F),
        (0xFEFF, F),
        (0xFF00, P),
        (0xFF01, P),
        (0xFF02, F),
        (0xFFFF, F),
    ],
)
def test_category_boundaries(code: int, expected: Category) -> None:
    assert category(code) is expected


@pytest.mark.parametrize("code", [-1, 0x10000])
def test_category_rejects_non_us_values(code: int) -> None:
    with pytest.raises(ValueError):
        category(code)


def test_named_constants() -> None:
    assert category(status.SUCCESS) is S
    assert category(status.CANCEL) is C
    assert category(status.PENDING) is category(status.PENDING_WARNING) is P
    for code in (
        status.OPTIONAL_ATTRIBUTES_NOT_SUPPORTED,
        status.ATTRIBUTE_LIST_ERROR,
        status.ATTRIBUTE_VALUE_OUT_OF_RANGE,
        status.SUB_OPERATIONS_WARNING,
    ):
        assert category(code) is W
    for code in (
        status.PROCESSING_FAILURE,
        status.NO_SUCH_SOP_INSTANCE,
        status.SOP_CLASS_NOT_SUPPORTED,
        status.UNRECOGNIZED_OPERATION,
        status.OUT_OF_RESOURCES,
        status.MOVE_DESTINATION_UNKNOWN,
        status.UNABLE_TO_PROCESS,
    ):
        assert category(code) is F
    assert status.PROCESSING_FAILURE == 0x0110
    assert status.SOP_CLASS_NOT_SUPPORTED == 0x0122
    assert status.UNRECOGNIZED_OPERATION == 0x0211
    assert status.OUT_OF_RESOURCES == 0xA700


@pytest.mark.parametrize(
    ("code", "service", "words"),
    [
        (0x0000, None, "Success"),
        (0x0110, None, "Processing failure"),
        (0x0122, "C-STORE", "SOP Class not supported"),  # general meaning, any service
        (0xA7FF, "C-STORE", "Out of Resources"),
        (0xA9AB, "C-STORE", "Data Set does not match SOP Class"),
        (0xC123, "C-STORE", "Cannot understand"),
        (0xB000, "C-STORE", "Coercion of Data Elements"),
        (0xB006, "c_store", "Elements Discarded"),
        (0xB007, "c-store", "Data Set does not match SOP Class"),
        (0xA700, "C-FIND", "Out of Resources"),
        (0xFF01, "C-FIND", "Optional Keys were not supported"),
        (0xFE00, "C-FIND", "Matching terminated due to Cancel"),
        (0xA801, "C-MOVE", "Move Destination unknown"),
        (0xA702, "C-MOVE", "Unable to perform sub-operations"),
        (0xB000, "C-MOVE", "One or more Failures"),
        (0xB000, "C-GET", "One or more Failures or Warnings"),
        (0xA701, "C-GET", "Unable to calculate number of matches"),
        (0xC001, "C-GET", "Unable to process"),
        (0xFF00, "C-GET", "Sub-operations are continuing"),
    ],
)
def test_describe(code: int, service: str | None, words: str) -> None:
    assert words in describe(code, service)


def test_describe_falls_back_to_the_class() -> None:
    assert describe(0xA801) == "Failure (0xA801)"  # C-MOVE's meaning only with C-MOVE
    assert describe(0xA7FF, "C-FIND") == "Failure (0xA7FF)"  # C-FIND names A700 only
    assert describe(0xB123, "C-ECHO") == "Warning (0xB123)"
    assert "not a status code" in describe(0x0300)


def test_describe_rejects_unknown_services() -> None:
    with pytest.raises(ValueError):
        describe(0, "C-FETCH")


@given(st.integers(0, 0xFFFF), st.sampled_from([None, *SERVICES]))
def test_describe_agrees_with_category(code: int, service: str | None) -> None:
    assert describe(code, service).startswith(category(code).value)


def test_status_dataset() -> None:
    ds = status_dataset(
        0xA801,
        ErrorComment="unknown destination",
        OffendingElement=[0x00000600],
        NumberOfRemainingSuboperations=3,
        NumberOfFailedSuboperations=None,
    )
    assert ds.Status == 0xA801
    assert ds.ErrorComment == "unknown destination"
    assert ds.OffendingElement == Tag(0x00000600)
    assert ds.NumberOfRemainingSuboperations == 3
    assert "NumberOfFailedSuboperations" not in ds
    assert status_dataset(0).Status == 0


@pytest.mark.parametrize("keyword", ["PatientName", "NotAKeyword", "Status"])
def test_status_dataset_takes_command_elements_only(keyword: str) -> None:
    with pytest.raises(ValueError):
        status_dataset(0, **{keyword: "x"})


def test_status_dataset_checks_the_code() -> None:
    with pytest.raises(ValueError):
        status_dataset(0x10000)


def test_all_lists_public_names() -> None:
    public = {
        name
        for name, value in vars(status).items()
        if not name.startswith("_")
        and getattr(value, "__module__", status.__name__) == status.__name__
        and not isinstance(value, type(status))
    }
    assert public == set(status.__all__)


def test_status_dataset_behaves_like_a_plain_dataset() -> None:
    """The fast construction must give a Dataset users cannot tell from ``Dataset()``."""
    import pickle

    from pydicom.dataset import Dataset

    a = status_dataset(0xFF00, ErrorComment="slow")
    b = Dataset()
    b.Status = 0xFF00
    b.ErrorComment = "slow"
    assert a == b
    assert a.Status == 0xFF00 and "Status" in a and a["Status"].VR == "US"
    a.PatientID = "X"  # mutable, and independent of every other status Dataset
    assert "PatientID" not in status_dataset(0)
    assert pickle.loads(pickle.dumps(a)) == a
    assert a.to_json_dict() == {**b.to_json_dict(), "00100020": {"vr": "LO", "Value": ["X"]}}


@given(code=st.integers(0, 0xFFFF))
def test_status_elements_are_never_shared(code: int) -> None:
    """The Status element is copied from a cached one: each Dataset has its own."""
    from pydicom.dataelem import DataElement

    a, b = status_dataset(code), status_dataset(code)
    assert a["Status"] is not b["Status"]
    assert a["Status"] == DataElement(0x00000900, "US", code)
    a.Status = code ^ 1
    assert b.Status == code and status_dataset(code).Status == code
    assert len(status._STATUS_ELEMENTS) <= status._STATUS_ELEMENTS_CAP


def test_status_element_follows_the_validation_mode() -> None:
    from pydicom import config

    before = config.settings.reading_validation_mode
    try:
        for mode in (config.IGNORE, config.WARN, config.RAISE):
            config.settings.reading_validation_mode = mode
            assert status_dataset(0)["Status"].validation_mode == mode
    finally:
        config.settings.reading_validation_mode = before
