"""What pynetdicom users reach for: debug_logger, register_uid, ALL_TRANSFER_SYNTAXES, every
preset list name, and a clear error for mutating a presentation context."""

from __future__ import annotations

import copy
import logging
import pickle
from collections.abc import Iterator

import attrs
import pytest
from pydicom._uid_dict import UID_dictionary
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGBaseline8Bit

import dicomio
from dicomio import sop
from dicomio.pdu.items import PresentationContextResult, PresentationContextRQ
from dicomio.presentation import (
    FrozenContextError,
    build_context,
    negotiate_as_acceptor,
    storage_scp_roles,
)

PRIVATE = "1.2.826.0.1.3680043.9.9999.16.1"
PRIVATE_FIND = "1.2.826.0.1.3680043.9.9999.16.2"

# pynetdicom 3.0's preset list names (pynetdicom/presentation.py) and their SOP classes by
# keyword, checked against pydicom's registry below. Written out rather than imported from
# pynetdicom so that the test holds without it; test_matches_pynetdicom compares when present.
PYNETDICOM_PRESETS = {
    "ApplicationEventLoggingPresentationContexts": {
        "ProceduralEventLogging",
        "SubstanceAdministrationLogging",
    },
    "DisplaySystemPresentationContexts": {"DisplaySystem"},
    "MediaCreationManagementPresentationContexts": {"MediaCreationManagement"},
    "MediaStoragePresentationContexts": {"MediaStorageDirectoryStorage"},
    "NonPatientObjectPresentationContexts": {
        "HangingProtocolStorage",
        "ColorPaletteStorage",
        "GenericImplantTemplateStorage",
        "ImplantAssemblyTemplateStorage",
        "ImplantTemplateGroupStorage",
        "CTDefinedProcedureProtocolStorage",
        "ProtocolApprovalStorage",
        "XADefinedProcedureProtocolStorage",
        "InventoryStorage",
    },
    "PrintManagementPresentationContexts": {
        "BasicFilmSession",
        "BasicFilmBox",
        "BasicGrayscaleImageBox",
        "BasicColorImageBox",
        "PrintJob",
        "BasicAnnotationBox",
        "Printer",
        "PrinterConfigurationRetrieval",
        "PresentationLUT",
        "BasicGrayscalePrintManagementMeta",
        "BasicColorPrintManagementMeta",
    },
    "RTMachineVerificationPresentationContexts": {
        "RTConventionalMachineVerification",
        "RTIonMachineVerification",
    },
    "SubstanceAdministrationPresentationContexts": {
        "ProductCharacteristicsQuery",
        "SubstanceApprovalQuery",
    },
    "ModalityPerformedPresentationContexts": {
        "ModalityPerformedProcedureStep",
        "ModalityPerformedProcedureStepRetrieve",
        "ModalityPerformedProcedureStepNotification",
    },
    "ProcedureStepPresentationContexts": {
        "ModalityPerformedProcedureStep",
        "ModalityPerformedProcedureStepRetrieve",
        "ModalityPerformedProcedureStepNotification",
    },
    "UnifiedProcedurePresentationContexts": {
        "UnifiedProcedureStepPush",
        "UnifiedProcedureStepWatch",
        "UnifiedProcedureStepPull",
        "UnifiedProcedureStepEvent",
        "UnifiedProcedureStepQuery",
    },
}

# Names both libraries have whose membership differs on purpose (see dicomio.sop).
DIFFERENT_ON_PURPOSE = {
    # pynetdicom's also has Repository Query (PS3.4 Annex II).
    "QueryRetrievePresentationContexts",
    # A selection of 120 either way; dicomio's is chosen and ordered for today's modalities.
    "StoragePresentationContexts",
}


@pytest.fixture
def restore_sop() -> Iterator[None]:
    """register_uid changes dicomio.sop's module state: put it back after the test."""
    module = vars(sop)
    saved = dict(module)
    tables = [sop._BY_KEYWORD, sop._BY_NAME, sop._REGISTERED, sop._SERVICE_OF]
    snapshots = [dict(table) for table in tables]
    seen = sop._SEEN[0]
    try:
        yield
    finally:
        for name in set(module) - set(saved):
            del module[name]
        module.update(saved)
        for table, snapshot in zip(tables, snapshots, strict=True):
            table.clear()
            table.update(snapshot)
        # The keyword table was put back, so let __getattr__ rescan pydicom's registry.
        sop._SEEN[0] = seen


def _keywords(contexts: tuple[dicomio.PresentationContext, ...]) -> set[str]:
    return {UID_dictionary[cx.abstract_syntax][4] for cx in contexts}


# -- debug_logger ---------------------------------------------------------------------------


def test_debug_logger_is_idempotent_and_leaves_other_handlers() -> None:
    logger = logging.getLogger("dicomio")
    before_level, before_handlers = logger.level, list(logger.handlers)
    theirs = logging.NullHandler()
    logger.addHandler(theirs)
    try:
        assert dicomio.debug_logger() is logger
        dicomio.debug_logger()
        assert logger.level == logging.DEBUG
        ours = [h for h in logger.handlers if h is not theirs and h not in before_handlers]
        assert len(ours) == 1 and isinstance(ours[0], logging.StreamHandler)
        assert theirs in logger.handlers
        assert logging.getLogger("dicomio.association").isEnabledFor(logging.DEBUG)
    finally:
        for handler in list(logger.handlers):
            if handler not in before_handlers:
                logger.removeHandler(handler)
        logger.setLevel(before_level)


def test_debug_logger_writes_records(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("dicomio")
    before_level, before_handlers = logger.level, list(logger.handlers)
    try:
        dicomio.debug_logger()
        logging.getLogger("dicomio.association").debug("hello %s", "peer")
        assert "D: dicomio.association: hello peer" in capsys.readouterr().err
    finally:
        for handler in list(logger.handlers):
            if handler not in before_handlers:
                logger.removeHandler(handler)
        logger.setLevel(before_level)


# -- ALL_TRANSFER_SYNTAXES ------------------------------------------------------------------


def test_all_transfer_syntaxes() -> None:
    syntaxes = sop.ALL_TRANSFER_SYNTAXES
    assert len(set(syntaxes)) == len(syntaxes)
    assert syntaxes[: len(sop.DEFAULT_TRANSFER_SYNTAXES)] == sop.DEFAULT_TRANSFER_SYNTAXES
    assert JPEGBaseline8Bit in syntaxes
    assert "1.2.840.10008.1.2.4.201" in syntaxes  # HTJ2K Lossless
    assert "1.2.840.10008.1.2.4.110" in syntaxes  # JPEG XL Lossless, newer than pydicom 3.0
    assert "1.2.840.10008.1.2.4.52" not in syntaxes  # retired JPEG process 3 and 5
    for uid in syntaxes:
        entry = UID_dictionary.get(uid)
        assert entry is None or (entry[1] == "Transfer Syntax" and uid in _default_or_current())
    # Every one is a valid transfer syntax for a context.
    assert build_context(sop.CTImageStorage, syntaxes).transfer_syntaxes == syntaxes


def _default_or_current() -> set[str]:
    current = {uid for uid, e in UID_dictionary.items() if e[1] == "Transfer Syntax" and not e[3]}
    return current | set(sop.DEFAULT_TRANSFER_SYNTAXES)


# -- preset lists ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PYNETDICOM_PRESETS))
def test_pynetdicom_preset_names(name: str) -> None:
    contexts = getattr(sop, name)
    assert _keywords(contexts) == PYNETDICOM_PRESETS[name]
    assert all(not UID_dictionary[cx.abstract_syntax][3] for cx in contexts), "none retired"


def test_aliases_are_the_same_lists() -> None:
    assert sop.ModalityPerformedPresentationContexts is (
        sop.ModalityPerformedProcedureStepPresentationContexts
    )
    assert sop.ProcedureStepPresentationContexts is (
        sop.ModalityPerformedProcedureStepPresentationContexts
    )
    assert sop.UnifiedProcedurePresentationContexts is sop.UnifiedProcedureStepPresentationContexts


def test_non_patient_objects_and_dicomdir_are_storage() -> None:
    for name in ("NonPatientObjectPresentationContexts", "MediaStoragePresentationContexts"):
        for cx in getattr(sop, name):
            assert sop.is_storage(cx.abstract_syntax)
            assert cx.abstract_syntax in sop.STORAGE_SOP_CLASSES


def test_matches_pynetdicom() -> None:
    pynetdicom = pytest.importorskip("pynetdicom")
    names = [n for n in pynetdicom.__all__ if n.endswith("PresentationContexts")]
    assert names
    for name in names:
        ours = {cx.abstract_syntax for cx in getattr(sop, name)}
        theirs = {cx.abstract_syntax for cx in getattr(pynetdicom, name)}
        if name == "QueryRetrievePresentationContexts":
            assert theirs - ours == {"1.2.840.10008.5.1.4.1.1.201.6"}  # Repository Query
            assert ours <= theirs
        elif name == "AllStoragePresentationContexts":
            # Ours adds the retired classes, DICONDE/DICOS, the non-patient objects and
            # DICOMDIR; theirs has a few classes newer than pydicom's registry, which a
            # storage SCP takes through accept_any_storage (an unknown UID counts as storage).
            assert all(not sop.is_known(uid) for uid in theirs - ours)
        elif name not in DIFFERENT_ON_PURPOSE:
            assert ours == theirs, name
    assert set(pynetdicom.ALL_TRANSFER_SYNTAXES) <= set(sop.ALL_TRANSFER_SYNTAXES)


# -- register_uid ---------------------------------------------------------------------------


@pytest.mark.usefixtures("restore_sop")
def test_register_private_storage_class() -> None:
    uid = dicomio.register_uid(PRIVATE, "AcmeScannerStorage", "Storage", name="Acme Storage")
    assert uid == PRIVATE and isinstance(uid, UID)
    assert sop.AcmeScannerStorage == PRIVATE
    assert sop.uid_for("AcmeScannerStorage") == sop.uid_for("Acme Storage") == PRIVATE
    assert sop.name_of(PRIVATE) == "Acme Storage"
    assert sop.is_known(PRIVATE) and sop.is_storage(PRIVATE)
    assert "AcmeScannerStorage" in dir(sop)
    assert sop.STORAGE_SOP_CLASSES[-1] == PRIVATE
    assert sop.AllStoragePresentationContexts[-1].abstract_syntax == PRIVATE
    assert sop.AllStoragePresentationContexts[-1].transfer_syntaxes == (
        sop.DEFAULT_TRANSFER_SYNTAXES
    )
    # A C-GET SCU proposes the SCP role for it.
    roles = storage_scp_roles([build_context(PRIVATE)])
    assert [r.sop_class_uid for r in roles] == [PRIVATE]
    # Registering again changes nothing.
    before = sop.AllStoragePresentationContexts
    assert dicomio.register_uid(PRIVATE, "AcmeScannerStorage", "StorageServiceClass") == PRIVATE
    assert sop.AllStoragePresentationContexts is before


@pytest.mark.usefixtures("restore_sop")
def test_registered_non_storage_class_is_refused_by_a_storage_scp() -> None:
    request = [
        PresentationContextRQ(
            context_id=1,
            abstract_syntax=PRIVATE_FIND,
            transfer_syntaxes=(ExplicitVRLittleEndian,),
        )
    ]
    # Unknown, it is taken for a private storage class...
    items, _, _ = negotiate_as_acceptor(request, [], accept_any_storage=True)
    assert items[0].result == PresentationContextResult.ACCEPTANCE
    # ...registered as a Q/R model, it is not.
    dicomio.register_uid(PRIVATE_FIND, "AcmeFind", "QueryRetrieve", "C-FIND")
    assert not sop.is_storage(PRIVATE_FIND) and sop.is_known(PRIVATE_FIND)
    items, _, _ = negotiate_as_acceptor(request, [], accept_any_storage=True)
    assert items[0].result == PresentationContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED
    assert sop.QueryRetrievePresentationContexts[-1].abstract_syntax == PRIVATE_FIND
    assert sop.QR_SOP_CLASSES[-1] == PRIVATE_FIND
    # And a supported context for it is accepted as any other.
    items, _, _ = negotiate_as_acceptor(request, [build_context(sop.AcmeFind)])
    assert items[0].result == PresentationContextResult.ACCEPTANCE


@pytest.mark.usefixtures("restore_sop")
def test_register_updates_aliases_and_non_patient_storage() -> None:
    dicomio.register_uid(PRIVATE, "AcmeStepRetrieve", "ProcedureStep")
    assert sop.ProcedureStepPresentationContexts[-1].abstract_syntax == PRIVATE
    assert sop.ModalityPerformedPresentationContexts is (
        sop.ModalityPerformedProcedureStepPresentationContexts
    )
    dicomio.register_uid(PRIVATE_FIND, "AcmeProtocolStorage", "NonPatientObjectStorage")
    assert sop.is_storage(PRIVATE_FIND)
    assert sop.NonPatientObjectPresentationContexts[-1].abstract_syntax == PRIVATE_FIND
    assert sop.AllStoragePresentationContexts[-1].abstract_syntax == PRIVATE_FIND
    assert [cx.abstract_syntax for cx in sop.AllStoragePresentationContexts] == list(
        sop.STORAGE_SOP_CLASSES
    )


@pytest.mark.usefixtures("restore_sop")
def test_register_accepts_a_pynetdicom_service_class() -> None:
    service_class = pytest.importorskip("pynetdicom.service_class")
    dicomio.register_uid(PRIVATE, "AcmeOtherStorage", service_class.StorageServiceClass)
    assert sop.is_storage(PRIVATE)


@pytest.mark.usefixtures("restore_sop")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((PRIVATE, "not an identifier", "Storage"), "not a valid Python identifier"),
        ((PRIVATE, "class", "Storage"), "not a valid Python identifier"),
        ((PRIVATE, "AcmeStorage", "Teleportation"), "unknown service class"),
        ((PRIVATE, "CTImageStorage", "Storage"), "already names"),
        ((PRIVATE, "register_uid", "Storage"), "already a name in dicomio.sop"),
        (("1.2.840.10008.5.1.4.1.1.2", "MyCT", "Storage"), "already known as"),
        (("1.2.3.abc", "AcmeStorage", "Storage"), "not a valid UID"),
        ((PRIVATE, "AcmeFind", "QueryRetrieve", "C-ECHO"), "dimse_msg_type"),
    ],
)
def test_register_refuses(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dicomio.register_uid(*args)
    assert not sop.is_known(PRIVATE)


@pytest.mark.usefixtures("restore_sop")
def test_registering_a_known_uid_under_its_own_keyword_adds_its_service() -> None:
    sop.register_uid("1.2.840.10008.5.1.4.1.1.201.6", "RepositoryQuery", "QueryRetrieve")
    assert sop.QueryRetrievePresentationContexts[-1].abstract_syntax == sop.RepositoryQuery
    assert sop.name_of(sop.RepositoryQuery) == "Repository Query"


def test_restore_sop_fixture_left_no_trace() -> None:
    assert not sop._REGISTERED and not sop._SERVICE_OF
    assert not sop.is_known(PRIVATE)
    assert "AcmeScannerStorage" not in dir(sop)


# -- frozen presentation contexts -----------------------------------------------------------


@pytest.mark.parametrize("field", ["scp_role", "transfer_syntaxes", "context_id", "nonsense"])
def test_mutating_a_context_names_the_supported_way(field: str) -> None:
    cx = sop.StoragePresentationContexts[0]
    with pytest.raises(FrozenContextError) as excinfo:
        setattr(cx, field, True)
    message = str(excinfo.value)
    assert f"{field!r} cannot be changed" in message
    for remedy in ("attrs.evolve", "build_context", "add_supported_context", "build_role"):
        assert remedy in message
    # Existing handlers for attrs' error, and for AttributeError, still catch it.
    assert isinstance(excinfo.value, attrs.exceptions.FrozenInstanceError)
    assert isinstance(excinfo.value, AttributeError)
    with pytest.raises(FrozenContextError):
        delattr(cx, "scp_role")


def test_contexts_are_still_built_evolved_and_compared() -> None:
    cx = build_context(sop.CTImageStorage)
    changed = attrs.evolve(cx, scp_role=True)
    assert changed.scp_role is True and cx.scp_role is None
    assert attrs.evolve(changed, scp_role=None) == cx
    # Copying and pickling set fields through object.__setattr__ as __init__ does.
    assert copy.deepcopy(changed) == changed
    assert pickle.loads(pickle.dumps(changed)) == changed
