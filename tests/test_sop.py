"""SOP class and transfer syntax names derived from pydicom's UID dictionary."""

from __future__ import annotations

import pydicom.uid
import pytest
from pydicom._uid_dict import UID_dictionary
from pydicom.uid import UID

from dicomio import sop
from dicomio.presentation import MAX_PRESENTATION_CONTEXTS, PresentationContext
from dicomio.sop import (
    DEFAULT_TRANSFER_SYNTAXES,
    QR_SOP_CLASSES,
    STORAGE_SOP_CLASSES,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    CTImageStorage,
    ImplicitVRLittleEndian,
    PatientRootQueryRetrieveInformationModelFind,
    QueryRetrievePresentationContexts,
    StoragePresentationContexts,
    Verification,
    VerificationPresentationContexts,
    is_known,
    is_storage,
    name_of,
    uid_for,
)

PRESETS = [name for name in sop.__all__ if name.endswith("PresentationContexts")]


def test_names_import_as_uids() -> None:
    assert isinstance(CTImageStorage, UID)
    assert CTImageStorage == "1.2.840.10008.5.1.4.1.1.2"
    assert Verification == "1.2.840.10008.1.1"
    assert PatientRootQueryRetrieveInformationModelFind == "1.2.840.10008.5.1.4.1.2.1.1"
    assert ImplicitVRLittleEndian == pydicom.uid.ImplicitVRLittleEndian


def test_every_keyword_in_the_dictionary_is_available() -> None:
    for uid, entry in UID_dictionary.items():
        if entry[4]:
            assert getattr(sop, entry[4]) == uid
    assert "CTImageStorage" in dir(sop)


def test_unknown_names_raise() -> None:
    with pytest.raises(AttributeError):
        _ = sop.NoSuchSOPClassStorage
    with pytest.raises(ImportError):
        from dicomio.sop import NoSuchSOPClassStorage  # noqa: F401


def test_uid_for() -> None:
    assert uid_for("CTImageStorage") == CTImageStorage
    assert uid_for("CT Image Storage") == CTImageStorage
    assert uid_for("Verification SOP Class") == Verification
    with pytest.raises(KeyError):
        uid_for("Nonsense")


def test_name_of() -> None:
    assert name_of(CTImageStorage) == "CT Image Storage"
    assert name_of("1.2.840.10008.1.2") == "Implicit VR Little Endian"
    assert name_of("1.2.3.4") == "1.2.3.4"


@pytest.mark.parametrize(
    ("uid", "expected"),
    [
        (CTImageStorage, True),
        ("1.2.840.10008.5.1.4.1.1.1.1", True),  # Digital X-Ray Image Storage - For Presentation
        ("1.2.840.10008.5.1.4.1.1.6", True),  # Ultrasound Image Storage (Retired)
        ("1.2.840.10008.5.1.4.1.1.88.1", True),  # Text SR Storage - Trial (Retired)
        ("1.2.840.10008.5.1.4.38.1", True),  # Hanging Protocol Storage
        ("1.2.840.10008.1.3.10", True),  # Media Storage Directory Storage
        ("1.2.840.10008.1.20.1", False),  # Storage Commitment Push Model
        ("1.2.840.10008.1.20.2", False),  # Storage Commitment Pull Model (Retired)
        ("1.2.840.10008.1.20.1.1", False),  # its well-known instance
        ("1.2.840.10008.4.2", False),  # Storage Service Class: not a SOP class
        (Verification, False),
        (PatientRootQueryRetrieveInformationModelFind, False),
        (ImplicitVRLittleEndian, False),
        ("1.2.826.0.1.3680043.9.9999.1", False),  # unknown
    ],
)
def test_is_storage(uid: str, expected: bool) -> None:
    assert is_storage(uid) is expected


def test_is_known() -> None:
    assert is_known(CTImageStorage)
    assert not is_known("1.2.826.0.1.3680043.9.9999.1")


def test_storage_sop_classes() -> None:
    assert len(STORAGE_SOP_CLASSES) == len(set(STORAGE_SOP_CLASSES)) > 150
    assert all(is_storage(uid) for uid in STORAGE_SOP_CLASSES)
    assert CTImageStorage in STORAGE_SOP_CLASSES
    every_storage_uid = {uid for uid in UID_dictionary if is_storage(uid)}
    assert set(STORAGE_SOP_CLASSES) == every_storage_uid


def test_qr_sop_classes() -> None:
    names = [name_of(uid) for uid in QR_SOP_CLASSES]
    for root in ("Patient Root", "Study Root", "Patient/Study Only"):
        for service in ("FIND", "MOVE", "GET"):
            assert f"{root} Query/Retrieve Information Model - {service}" in names
    assert "Composite Instance Root Retrieve - GET" in names
    assert len(set(QR_SOP_CLASSES)) == len(QR_SOP_CLASSES)


def test_transfer_syntaxes() -> None:
    assert (
        pydicom.uid.ExplicitVRLittleEndian,
        pydicom.uid.ImplicitVRLittleEndian,
        pydicom.uid.DeflatedExplicitVRLittleEndian,
        pydicom.uid.ExplicitVRBigEndian,
    ) == DEFAULT_TRANSFER_SYNTAXES
    assert set(UNCOMPRESSED_TRANSFER_SYNTAXES) == set(DEFAULT_TRANSFER_SYNTAXES)
    assert all(uid.is_transfer_syntax for uid in UNCOMPRESSED_TRANSFER_SYNTAXES)
    assert all(not uid.is_compressed for uid in UNCOMPRESSED_TRANSFER_SYNTAXES)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_are_unnumbered_contexts_with_default_syntaxes(name: str) -> None:
    contexts = getattr(sop, name)
    assert isinstance(contexts, tuple) and contexts
    for cx in contexts:
        assert isinstance(cx, PresentationContext)
        assert cx.context_id is None and cx.result is None
        assert cx.transfer_syntaxes == DEFAULT_TRANSFER_SYNTAXES
        assert is_known(cx.abstract_syntax)
    assert len({cx.abstract_syntax for cx in contexts}) == len(contexts)


def test_storage_presets() -> None:
    assert len(StoragePresentationContexts) == 120
    for cx in StoragePresentationContexts:
        assert is_storage(cx.abstract_syntax)
        assert not UID_dictionary[cx.abstract_syntax][3], "no retired classes"
    # Room is left for Verification and one Q/R model (FIND, MOVE, GET) on one association.
    one_model = QueryRetrievePresentationContexts[:3]
    total = (
        len(StoragePresentationContexts) + len(VerificationPresentationContexts) + len(one_model)
    )
    assert total <= MAX_PRESENTATION_CONTEXTS
    assert [cx.abstract_syntax for cx in AllStoragePresentationContexts] == list(
        STORAGE_SOP_CLASSES
    )


def test_all_lists_public_names() -> None:
    public = {
        name
        for name, value in vars(sop).items()
        if not name.startswith("_")
        and getattr(value, "__module__", sop.__name__) == sop.__name__
        and not isinstance(value, type(sop))
    }
    assert public == set(sop.__all__)
    assert all(hasattr(sop, name) for name in sop.__all__)
