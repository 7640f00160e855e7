"""SOP class and transfer syntax names, and preset presentation context lists.

Every UID here comes from pydicom's UID dictionary (the PS3.6 Annex A registry that pydicom
ships), looked up by its keyword: nothing is typed out by hand, so a new pydicom release brings
new SOP classes with it. Import a UID by keyword, as with pynetdicom's ``sop_class``::

    from dicomio.sop import CTImageStorage, Verification, ImplicitVRLittleEndian

The names are served by a module ``__getattr__`` (PEP 562), which mypy understands: each one is a
``pydicom.uid.UID``. An unknown name raises ``AttributeError`` like any missing attribute.

The preset lists (``StoragePresentationContexts`` and friends) are tuples of
``dicomio.presentation.PresentationContext`` without context IDs, each offering
``DEFAULT_TRANSFER_SYNTAXES``. Every preset list name pynetdicom has exists here, with the same
SOP classes (pynetdicom's Query/Retrieve list also has Repository Query, PS3.4 Annex II, which
dicomio's leaves out), plus pynetdicom's spellings of the procedure step lists as aliases.

``register_uid`` makes a private or newer SOP class known by keyword, like pynetdicom's.
"""

from __future__ import annotations

import keyword as _python_keyword
from collections.abc import Iterable

from pydicom import _uid_dict
from pydicom.uid import UID

from dicomio.presentation import PresentationContext, _checked_uid, build_context

__all__ = [
    "ALL_TRANSFER_SYNTAXES",
    "AllStoragePresentationContexts",
    "ApplicationEventLoggingPresentationContexts",
    "BasicWorklistManagementPresentationContexts",
    "ColorPalettePresentationContexts",
    "DEFAULT_TRANSFER_SYNTAXES",
    "DefinedProcedureProtocolPresentationContexts",
    "DisplaySystemPresentationContexts",
    "HangingProtocolPresentationContexts",
    "ImplantTemplatePresentationContexts",
    "InstanceAvailabilityPresentationContexts",
    "MediaCreationManagementPresentationContexts",
    "MediaStoragePresentationContexts",
    "ModalityPerformedPresentationContexts",
    "ModalityPerformedProcedureStepPresentationContexts",
    "NonPatientObjectPresentationContexts",
    "PrintManagementPresentationContexts",
    "ProcedureStepPresentationContexts",
    "ProtocolApprovalPresentationContexts",
    "QR_SOP_CLASSES",
    "QueryRetrievePresentationContexts",
    "RTMachineVerificationPresentationContexts",
    "RelevantPatientInformationPresentationContexts",
    "STORAGE_SOP_CLASSES",
    "StorageCommitmentPresentationContexts",
    "StoragePresentationContexts",
    "SubstanceAdministrationPresentationContexts",
    "UNCOMPRESSED_TRANSFER_SYNTAXES",
    "UnifiedProcedurePresentationContexts",
    "UnifiedProcedureStepPresentationContexts",
    "VerificationPresentationContexts",
    "is_known",
    "is_storage",
    "name_of",
    "register_uid",
    "uid_for",
]

# pydicom's registry: {uid: (name, type, info, retired, keyword)}. Entries without a keyword
# (a few retired UIDs whose names were withdrawn) cannot be imported by name and are skipped.
_UIDS = _uid_dict.UID_dictionary
_BY_KEYWORD: dict[str, UID] = {entry[4]: UID(uid) for uid, entry in _UIDS.items() if entry[4]}
_BY_NAME: dict[str, UID] = {entry[0]: UID(uid) for uid, entry in _UIDS.items() if entry[0]}
_SEEN = [len(_UIDS)]

# SOP classes added by register_uid() that pydicom does not know, in pydicom's entry shape, and
# the service every registered UID was given (which decides is_storage() for it).
_REGISTERED: dict[str, tuple[str, str, str, str, str]] = {}
_SERVICE_OF: dict[str, str] = {}


def _entry(uid: str) -> tuple[str, str, str, str, str] | None:
    return _REGISTERED.get(uid) or _UIDS.get(uid)


def __getattr__(name: str) -> UID:
    """Return the UID whose pydicom keyword is ``name`` (PEP 562 module attribute)."""
    try:
        return _BY_KEYWORD[name]
    except KeyError:
        pass
    # Other libraries may register UIDs in pydicom's dictionary after this module was
    # imported (pynetdicom adds newer transfer syntaxes, for one): look again, once.
    if len(_UIDS) != _SEEN[0]:
        _SEEN[0] = len(_UIDS)
        _BY_KEYWORD.update({e[4]: UID(uid) for uid, e in _UIDS.items() if e[4]})
        if name in _BY_KEYWORD:
            return _BY_KEYWORD[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_BY_KEYWORD))


def uid_for(name: str) -> UID:
    """Return the UID for a keyword (``"CTImageStorage"``) or a registry name
    (``"CT Image Storage"``), as PS3.6 Annex A lists them. Raises ``KeyError`` if unknown."""
    uid = _BY_KEYWORD.get(name) or _BY_NAME.get(name)
    if uid is None:
        raise KeyError(f"no SOP class or transfer syntax is named {name!r}")
    return uid


def name_of(uid: str) -> str:
    """Return the readable PS3.6 name of a UID (``"CT Image Storage"``), or the UID itself
    when pydicom's registry does not know it (private and newer UIDs)."""
    entry = _entry(str(uid))
    if entry is None or not entry[0]:
        return str(uid)
    return entry[0]


def is_known(uid: str) -> bool:
    """True if the UID is in pydicom's copy of the PS3.6 Annex A registry or was registered
    with ``register_uid``."""
    return _entry(str(uid)) is not None


def _is_storage_entry(entry: tuple[str, str, str, str, str]) -> bool:
    # The rule: a SOP Class whose keyword contains "Storage", except the Storage Commitment
    # classes (PS3.4 Annex J), which are N-ACTION/N-EVENT-REPORT services, not C-STORE.
    # This catches the plain "...Storage" classes, the "...Storage - For Presentation/For
    # Processing" pairs, the retired "...StorageRetired" and "...StorageTrial" classes, and
    # Media Storage Directory Storage (PS3.10 DICOMDIR), which can be sent with C-STORE.
    _name, kind, _info, _retired, keyword = entry
    return (
        kind == "SOP Class"
        and "Storage" in keyword
        and not keyword.startswith("StorageCommitment")
    )


def is_storage(uid: str) -> bool:
    """True if ``uid`` is a Storage SOP class (PS3.4 Annex B) in pydicom's registry.

    Unknown UIDs (private SOP classes, classes newer than the installed pydicom) give False:
    callers that want to treat them as storage must say so (see
    ``dicomio.presentation.negotiate_as_acceptor(accept_any_storage=True)``), or register
    them with ``register_uid(uid, keyword, "Storage")``.
    """
    service = _SERVICE_OF.get(str(uid))
    if service is not None:
        return service in _STORAGE_SERVICES
    entry = _UIDS.get(str(uid))
    return entry is not None and _is_storage_entry(entry)


#: Every Storage SOP class pydicom knows, current and retired, in registry order.
STORAGE_SOP_CLASSES: tuple[UID, ...] = tuple(
    UID(uid) for uid, entry in _UIDS.items() if _is_storage_entry(entry)
)


def _uids(keywords: Iterable[str]) -> tuple[UID, ...]:
    # A keyword missing from pydicom's registry fails at import time rather than later.
    return tuple(_BY_KEYWORD[keyword] for keyword in keywords)


#: The Query/Retrieve information models (PS3.4 Annex C and Y): FIND, MOVE and GET for the
#: Patient Root, Study Root and (retired) Patient/Study Only models, then Composite Instance
#: Root Retrieve and Composite Instance Retrieve Without Bulk Data.
QR_SOP_CLASSES: tuple[UID, ...] = _uids(
    (
        "PatientRootQueryRetrieveInformationModelFind",
        "PatientRootQueryRetrieveInformationModelMove",
        "PatientRootQueryRetrieveInformationModelGet",
        "StudyRootQueryRetrieveInformationModelFind",
        "StudyRootQueryRetrieveInformationModelMove",
        "StudyRootQueryRetrieveInformationModelGet",
        "PatientStudyOnlyQueryRetrieveInformationModelFind",
        "PatientStudyOnlyQueryRetrieveInformationModelMove",
        "PatientStudyOnlyQueryRetrieveInformationModelGet",
        "CompositeInstanceRootRetrieveMove",
        "CompositeInstanceRootRetrieveGet",
        "CompositeInstanceRetrieveWithoutBulkDataGet",
    )
)

#: The transfer syntaxes proposed when none are given (PS3.5 Section 10 and Annex A).
#:
#: Explicit VR Little Endian comes first: an acceptor that picks the first syntax it supports
#: in the requestor's order (as dicomio's acceptor does) then agrees on a syntax that carries
#: each element's VR, so private and unknown elements survive the transfer. Implicit VR Little
#: Endian is the DICOM default every implementation must accept (PS3.5 10.1), so it still
#: guarantees a match. pynetdicom proposes Implicit VR first; the set is the same, only the
#: preference differs. Deflated follows; Explicit VR Big Endian (retired in PS3.5) is last,
#: kept so that old peers which offer only it can still be answered.
DEFAULT_TRANSFER_SYNTAXES: tuple[UID, ...] = _uids(
    (
        "ExplicitVRLittleEndian",
        "ImplicitVRLittleEndian",
        "DeflatedExplicitVRLittleEndian",
        "ExplicitVRBigEndian",
    )
)

#: Every transfer syntax to accept when any will do (pynetdicom's ``ALL_TRANSFER_SYNTAXES``):
#: the ``DEFAULT_TRANSFER_SYNTAXES`` first, then each transfer syntax of pydicom's PS3.6
#: registry that is not retired, in registry order. Retired ones (the old JPEG processes,
#: Papyrus, RFC 2557 MIME, XML) are left out as pynetdicom leaves them out: no current
#: implementation sends them. A storage SCP that accepts these keeps whatever arrives.
#: Four syntaxes newer than pydicom 3.0's registry close the list (typed out, the one
#: exception to this module's rule, so the list does not depend on the pydicom release or on
#: whether pynetdicom, which registers them, was imported first): JPEG XL Lossless, JPEG XL
#: JPEG Recompression, JPEG XL and Deflated Image Frame Compression (PS3.6 Table A-1, 2024
#: editions; PS3.5 Annex A.4).
ALL_TRANSFER_SYNTAXES: tuple[UID, ...] = tuple(
    dict.fromkeys(
        DEFAULT_TRANSFER_SYNTAXES
        + tuple(
            UID(uid)
            for uid, entry in _UIDS.items()
            if entry[1] == "Transfer Syntax" and not entry[3]
        )
        + tuple(
            UID(uid)
            for uid in (
                "1.2.840.10008.1.2.4.110",
                "1.2.840.10008.1.2.4.111",
                "1.2.840.10008.1.2.4.112",
                "1.2.840.10008.1.2.8.1",
            )
        )
    )
)

#: Transfer syntaxes with native (not encapsulated) pixel data, PS3.5 A.1-A.5.
UNCOMPRESSED_TRANSFER_SYNTAXES: tuple[UID, ...] = _uids(
    (
        "ImplicitVRLittleEndian",
        "ExplicitVRLittleEndian",
        "DeflatedExplicitVRLittleEndian",
        "ExplicitVRBigEndian",
    )
)

# The 120 Storage SOP classes a C-STORE SCU proposes by default, commonest first.
#
# PS3.8 9.3.2.2 gives presentation context IDs as odd numbers 1-255, so one association can
# offer at most 128 contexts; pydicom knows about 200 Storage SOP classes, so a selection is
# needed. 120 leaves eight IDs free for Verification, a Q/R model or Storage Commitment on the
# same association. Included: the current image, waveform, presentation state, structured
# report, encapsulated document, ophthalmic and first-generation radiotherapy classes, i.e.
# what modalities, archives and viewers exchange. Left out: retired classes; DICOS and DICONDE
# (security screening and industrial testing); the non-patient objects (hanging protocols,
# colour palettes, implant templates, protocols, inventories), which travel through their own
# Q/R services; the media directory; volumetric presentation states and second-generation RT,
# which few systems produce. AllStoragePresentationContexts (for an SCP) has every class.
_COMMON_STORAGE = (
    # Projection radiography and mammography
    "ComputedRadiographyImageStorage",
    "DigitalXRayImageStorageForPresentation",
    "DigitalXRayImageStorageForProcessing",
    "DigitalMammographyXRayImageStorageForPresentation",
    "DigitalMammographyXRayImageStorageForProcessing",
    "DigitalIntraOralXRayImageStorageForPresentation",
    "DigitalIntraOralXRayImageStorageForProcessing",
    "BreastTomosynthesisImageStorage",
    "BreastProjectionXRayImageStorageForPresentation",
    "BreastProjectionXRayImageStorageForProcessing",
    # CT, MR, PET, NM, US
    "CTImageStorage",
    "EnhancedCTImageStorage",
    "LegacyConvertedEnhancedCTImageStorage",
    "MRImageStorage",
    "EnhancedMRImageStorage",
    "EnhancedMRColorImageStorage",
    "LegacyConvertedEnhancedMRImageStorage",
    "MRSpectroscopyStorage",
    "PositronEmissionTomographyImageStorage",
    "EnhancedPETImageStorage",
    "LegacyConvertedEnhancedPETImageStorage",
    "NuclearMedicineImageStorage",
    "UltrasoundImageStorage",
    "UltrasoundMultiFrameImageStorage",
    "EnhancedUSVolumeStorage",
    # Angiography and fluoroscopy
    "XRayAngiographicImageStorage",
    "EnhancedXAImageStorage",
    "XRayRadiofluoroscopicImageStorage",
    "EnhancedXRFImageStorage",
    "XRay3DAngiographicImageStorage",
    "XRay3DCraniofacialImageStorage",
    "IntravascularOpticalCoherenceTomographyImageStorageForPresentation",
    "IntravascularOpticalCoherenceTomographyImageStorageForProcessing",
    # Secondary capture
    "SecondaryCaptureImageStorage",
    "MultiFrameSingleBitSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
    "MultiFrameTrueColorSecondaryCaptureImageStorage",
    # Visible light
    "VLEndoscopicImageStorage",
    "VideoEndoscopicImageStorage",
    "VLMicroscopicImageStorage",
    "VideoMicroscopicImageStorage",
    "VLSlideCoordinatesMicroscopicImageStorage",
    "VLPhotographicImageStorage",
    "VideoPhotographicImageStorage",
    "VLWholeSlideMicroscopyImageStorage",
    # Ophthalmology
    "OphthalmicPhotography8BitImageStorage",
    "OphthalmicPhotography16BitImageStorage",
    "StereometricRelationshipStorage",
    "OphthalmicTomographyImageStorage",
    "WideFieldOphthalmicPhotographyStereographicProjectionImageStorage",
    "WideFieldOphthalmicPhotography3DCoordinatesImageStorage",
    "OphthalmicOpticalCoherenceTomographyEnFaceImageStorage",
    "OphthalmicOpticalCoherenceTomographyBscanVolumeAnalysisStorage",
    "LensometryMeasurementsStorage",
    "AutorefractionMeasurementsStorage",
    "KeratometryMeasurementsStorage",
    "SubjectiveRefractionMeasurementsStorage",
    "VisualAcuityMeasurementsStorage",
    "SpectaclePrescriptionReportStorage",
    "OphthalmicAxialMeasurementsStorage",
    "IntraocularLensCalculationsStorage",
    "MacularGridThicknessAndVolumeReportStorage",
    "OphthalmicVisualFieldStaticPerimetryMeasurementsStorage",
    "OphthalmicThicknessMapStorage",
    "CornealTopographyMapStorage",
    # Presentation states
    "GrayscaleSoftcopyPresentationStateStorage",
    "ColorSoftcopyPresentationStateStorage",
    "PseudoColorSoftcopyPresentationStateStorage",
    "BlendingSoftcopyPresentationStateStorage",
    "XAXRFGrayscaleSoftcopyPresentationStateStorage",
    "BasicStructuredDisplayStorage",
    # Waveforms
    "TwelveLeadECGWaveformStorage",
    "GeneralECGWaveformStorage",
    "AmbulatoryECGWaveformStorage",
    "General32bitECGWaveformStorage",
    "HemodynamicWaveformStorage",
    "CardiacElectrophysiologyWaveformStorage",
    "BasicVoiceAudioWaveformStorage",
    "GeneralAudioWaveformStorage",
    "ArterialPulseWaveformStorage",
    "RespiratoryWaveformStorage",
    # Structured reports and key objects
    "BasicTextSRStorage",
    "EnhancedSRStorage",
    "ComprehensiveSRStorage",
    "Comprehensive3DSRStorage",
    "ExtensibleSRStorage",
    "KeyObjectSelectionDocumentStorage",
    "ProcedureLogStorage",
    "MammographyCADSRStorage",
    "ChestCADSRStorage",
    "ColonCADSRStorage",
    "XRayRadiationDoseSRStorage",
    "EnhancedXRayRadiationDoseSRStorage",
    "RadiopharmaceuticalRadiationDoseSRStorage",
    "PatientRadiationDoseSRStorage",
    "AcquisitionContextSRStorage",
    "SimplifiedAdultEchoSRStorage",
    "ImplantationPlanSRStorage",
    # Encapsulated documents
    "EncapsulatedPDFStorage",
    "EncapsulatedCDAStorage",
    "EncapsulatedSTLStorage",
    "EncapsulatedOBJStorage",
    # Derived objects: registration, segmentation, measurements
    "RawDataStorage",
    "SpatialRegistrationStorage",
    "SpatialFiducialsStorage",
    "DeformableSpatialRegistrationStorage",
    "SegmentationStorage",
    "SurfaceSegmentationStorage",
    "RealWorldValueMappingStorage",
    "ParametricMapStorage",
    # Radiotherapy
    "RTImageStorage",
    "RTDoseStorage",
    "RTStructureSetStorage",
    "RTPlanStorage",
    "RTBeamsTreatmentRecordStorage",
    "RTBrachyTreatmentRecordStorage",
    "RTTreatmentSummaryRecordStorage",
    "RTIonPlanStorage",
    "RTIonBeamsTreatmentRecordStorage",
)


def _contexts(uids: Iterable[str]) -> tuple[PresentationContext, ...]:
    return tuple(build_context(uid, DEFAULT_TRANSFER_SYNTAXES) for uid in uids)


#: Verification (PS3.4 Annex A): the C-ECHO context.
VerificationPresentationContexts = _contexts(_uids(("Verification",)))

#: 120 common Storage SOP classes for a C-STORE SCU; see ``_COMMON_STORAGE`` for the choice.
StoragePresentationContexts = _contexts(_uids(_COMMON_STORAGE))

#: Every Storage SOP class, for an SCP's supported contexts. More than 128: an acceptor may
#: support any number, a requestor may propose at most 128 (PS3.8 9.3.2.2).
AllStoragePresentationContexts = _contexts(STORAGE_SOP_CLASSES)

#: The Query/Retrieve models of ``QR_SOP_CLASSES`` (PS3.4 Annex C).
QueryRetrievePresentationContexts = _contexts(QR_SOP_CLASSES)

#: Basic Worklist Management: Modality Worklist FIND (PS3.4 Annex K).
BasicWorklistManagementPresentationContexts = _contexts(
    _uids(("ModalityWorklistInformationModelFind",))
)

#: Protocol Approval Query/Retrieve (PS3.4 Annex HH).
ProtocolApprovalPresentationContexts = _contexts(
    _uids(
        (
            "ProtocolApprovalInformationModelFind",
            "ProtocolApprovalInformationModelMove",
            "ProtocolApprovalInformationModelGet",
        )
    )
)

#: Defined Procedure Protocol Query/Retrieve (PS3.4 Annex HH).
DefinedProcedureProtocolPresentationContexts = _contexts(
    _uids(
        (
            "DefinedProcedureProtocolInformationModelFind",
            "DefinedProcedureProtocolInformationModelMove",
            "DefinedProcedureProtocolInformationModelGet",
        )
    )
)

#: Hanging Protocol Query/Retrieve (PS3.4 Annex U).
HangingProtocolPresentationContexts = _contexts(
    _uids(
        (
            "HangingProtocolInformationModelFind",
            "HangingProtocolInformationModelMove",
            "HangingProtocolInformationModelGet",
        )
    )
)

#: Color Palette Query/Retrieve (PS3.4 Annex X).
ColorPalettePresentationContexts = _contexts(
    _uids(
        (
            "ColorPaletteQueryRetrieveInformationModelFind",
            "ColorPaletteQueryRetrieveInformationModelMove",
            "ColorPaletteQueryRetrieveInformationModelGet",
        )
    )
)

#: Implant Template Query/Retrieve: generic, assembly and group models (PS3.4 Annex BB).
ImplantTemplatePresentationContexts = _contexts(
    _uids(
        (
            "GenericImplantTemplateInformationModelFind",
            "GenericImplantTemplateInformationModelMove",
            "GenericImplantTemplateInformationModelGet",
            "ImplantAssemblyTemplateInformationModelFind",
            "ImplantAssemblyTemplateInformationModelMove",
            "ImplantAssemblyTemplateInformationModelGet",
            "ImplantTemplateGroupInformationModelFind",
            "ImplantTemplateGroupInformationModelMove",
            "ImplantTemplateGroupInformationModelGet",
        )
    )
)

#: Relevant Patient Information Query (PS3.4 Annex Q).
RelevantPatientInformationPresentationContexts = _contexts(
    _uids(
        (
            "GeneralRelevantPatientInformationQuery",
            "BreastImagingRelevantPatientInformationQuery",
            "CardiacRelevantPatientInformationQuery",
        )
    )
)

#: Storage Commitment Push Model (PS3.4 Annex J).
StorageCommitmentPresentationContexts = _contexts(_uids(("StorageCommitmentPushModel",)))

#: Modality Performed Procedure Step and its retrieve and notification classes (PS3.4 F.7).
ModalityPerformedProcedureStepPresentationContexts = _contexts(
    _uids(
        (
            "ModalityPerformedProcedureStep",
            "ModalityPerformedProcedureStepRetrieve",
            "ModalityPerformedProcedureStepNotification",
        )
    )
)

#: Unified Procedure Step push, watch, pull, event and query (PS3.4 Annex CC).
UnifiedProcedureStepPresentationContexts = _contexts(
    _uids(
        (
            "UnifiedProcedureStepPush",
            "UnifiedProcedureStepWatch",
            "UnifiedProcedureStepPull",
            "UnifiedProcedureStepEvent",
            "UnifiedProcedureStepQuery",
        )
    )
)

#: Instance Availability Notification (PS3.4 Annex R).
InstanceAvailabilityPresentationContexts = _contexts(_uids(("InstanceAvailabilityNotification",)))

#: Application Event Logging: procedural events and substance administration (PS3.4 Annex P).
ApplicationEventLoggingPresentationContexts = _contexts(
    _uids(("ProceduralEventLogging", "SubstanceAdministrationLogging"))
)

#: Display System Management (PS3.4 Annex EE).
DisplaySystemPresentationContexts = _contexts(_uids(("DisplaySystem",)))

#: Media Creation Management (PS3.4 Annex S).
MediaCreationManagementPresentationContexts = _contexts(_uids(("MediaCreationManagement",)))

#: Media Storage Directory Storage: a DICOMDIR sent with C-STORE (PS3.4 Annex I, PS3.10).
MediaStoragePresentationContexts = _contexts(_uids(("MediaStorageDirectoryStorage",)))

#: Non-Patient Object Storage: hanging protocols, colour palettes, implant templates, defined
#: procedure protocols, protocol approvals and inventories (PS3.4 Annex GG).
NonPatientObjectPresentationContexts = _contexts(
    _uids(
        (
            "HangingProtocolStorage",
            "ColorPaletteStorage",
            "GenericImplantTemplateStorage",
            "ImplantAssemblyTemplateStorage",
            "ImplantTemplateGroupStorage",
            "CTDefinedProcedureProtocolStorage",
            "ProtocolApprovalStorage",
            "XADefinedProcedureProtocolStorage",
            "InventoryStorage",
        )
    )
)

#: Print Management: the current (not retired) SOP classes and meta SOP classes (PS3.4 Annex H).
PrintManagementPresentationContexts = _contexts(
    _uids(
        (
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
        )
    )
)

#: RT Machine Verification: conventional and ion (PS3.4 Annex DD).
RTMachineVerificationPresentationContexts = _contexts(
    _uids(("RTConventionalMachineVerification", "RTIonMachineVerification"))
)

#: Substance Administration Query: product characteristics and substance approval (PS3.4
#: Annex V).
SubstanceAdministrationPresentationContexts = _contexts(
    _uids(("ProductCharacteristicsQuery", "SubstanceApprovalQuery"))
)

# pynetdicom's spellings, the same tuples.
ModalityPerformedPresentationContexts = ModalityPerformedProcedureStepPresentationContexts
ProcedureStepPresentationContexts = ModalityPerformedProcedureStepPresentationContexts
UnifiedProcedurePresentationContexts = UnifiedProcedureStepPresentationContexts

_ALIASES = {
    "ModalityPerformedPresentationContexts": "ModalityPerformedProcedureStepPresentationContexts",
    "ProcedureStepPresentationContexts": "ModalityPerformedProcedureStepPresentationContexts",
    "UnifiedProcedurePresentationContexts": "UnifiedProcedureStepPresentationContexts",
}

# register_uid's services, one row per PS3.4 service class, named as pynetdicom's service
# classes are less the "ServiceClass" suffix, with the preset list each SOP class joins.
_SERVICE_PRESETS = {
    "ApplicationEventLogging": "ApplicationEventLoggingPresentationContexts",
    "BasicWorklistManagement": "BasicWorklistManagementPresentationContexts",
    "ColorPaletteQueryRetrieve": "ColorPalettePresentationContexts",
    "DefinedProcedureProtocolQueryRetrieve": "DefinedProcedureProtocolPresentationContexts",
    "DisplaySystemManagement": "DisplaySystemPresentationContexts",
    "HangingProtocolQueryRetrieve": "HangingProtocolPresentationContexts",
    "ImplantTemplateQueryRetrieve": "ImplantTemplatePresentationContexts",
    "InstanceAvailabilityNotification": "InstanceAvailabilityPresentationContexts",
    "MediaCreationManagement": "MediaCreationManagementPresentationContexts",
    "NonPatientObjectStorage": "NonPatientObjectPresentationContexts",
    "PrintManagement": "PrintManagementPresentationContexts",
    "ProcedureStep": "ModalityPerformedProcedureStepPresentationContexts",
    "ProtocolApprovalQueryRetrieve": "ProtocolApprovalPresentationContexts",
    "QueryRetrieve": "QueryRetrievePresentationContexts",
    "RelevantPatientInformationQuery": "RelevantPatientInformationPresentationContexts",
    "RTMachineVerification": "RTMachineVerificationPresentationContexts",
    "Storage": "AllStoragePresentationContexts",
    "StorageCommitment": "StorageCommitmentPresentationContexts",
    "SubstanceAdministrationQuery": "SubstanceAdministrationPresentationContexts",
    "UnifiedProcedureStep": "UnifiedProcedureStepPresentationContexts",
    "Verification": "VerificationPresentationContexts",
}

# Services whose SOP classes are sent with C-STORE: is_storage() is True for them.
_STORAGE_SERVICES = frozenset({"Storage", "NonPatientObjectStorage"})

_QR_MESSAGES = ("C-FIND", "C-GET", "C-MOVE")


def _service_name(service_class: str | type) -> str:
    name = service_class if isinstance(service_class, str) else service_class.__name__
    name = name.removesuffix("ServiceClass")
    if name not in _SERVICE_PRESETS:
        known = ", ".join(sorted(_SERVICE_PRESETS))
        raise ValueError(f"unknown service class {name!r}; one of: {known}")
    return name


def register_uid(
    uid: str,
    keyword: str,
    service_class: str | type,
    dimse_msg_type: str = "",
    *,
    name: str | None = None,
) -> UID:
    """Make a private or newer SOP class known to dicomio by ``keyword``, as pynetdicom's
    ``register_uid`` does, and return it as a ``UID``.

    ``service_class`` names its PS3.4 service: ``"Storage"``, ``"QueryRetrieve"``,
    ``"BasicWorklistManagement"``, ... (pynetdicom's service class names, with or without
    the ``ServiceClass`` suffix; a pynetdicom service class object works too). Afterwards:

    - ``dicomio.sop.<keyword>``, ``uid_for``, ``name_of`` and ``is_known`` know the UID
      (``name`` is its readable name, the keyword by default);
    - a Storage or Non-Patient Object Storage class counts for ``is_storage``, so C-GET SCUs
      propose the SCP role for it (``storage_scp_roles``) and storage SCPs accept it;
    - the service's preset list (``AllStoragePresentationContexts`` for storage,
      ``QueryRetrievePresentationContexts``, ...) and, for storage and Q/R,
      ``STORAGE_SOP_CLASSES`` / ``QR_SOP_CLASSES`` gain it. These are rebound in this module:
      read them as ``dicomio.sop.NAME`` after registering (a name imported earlier with
      ``from dicomio.sop import ...`` keeps the tuple it had).

    ``dimse_msg_type`` is pynetdicom's C-FIND/C-GET/C-MOVE for a Query/Retrieve class; it is
    checked but changes nothing, as dicomio dispatches on the DIMSE command the peer sends.
    Registering the same UID and keyword again does nothing more; a keyword or UID that
    already means something else raises ``ValueError``.
    """
    uid = _checked_uid(uid)
    service = _service_name(service_class)
    if not keyword.isidentifier() or _python_keyword.iskeyword(keyword):
        raise ValueError(f"keyword {keyword!r} is not a valid Python identifier")
    if dimse_msg_type and dimse_msg_type not in _QR_MESSAGES:
        raise ValueError(f"dimse_msg_type must be one of {', '.join(_QR_MESSAGES)} or empty")
    if keyword in globals():
        raise ValueError(f"keyword {keyword!r} is already a name in dicomio.sop")
    if _BY_KEYWORD.get(keyword, uid) != uid:
        raise ValueError(f"keyword {keyword!r} already names {_BY_KEYWORD[keyword]}")
    entry = _entry(uid)
    if entry is not None and entry[4] != keyword:
        raise ValueError(f"{uid} is already known as {entry[4] or entry[0]!r}")
    if entry is None:
        _REGISTERED[uid] = (name or keyword, "SOP Class", "", "", keyword)
        _BY_NAME[name or keyword] = uid
    _BY_KEYWORD[keyword] = uid
    _SERVICE_OF[uid] = service

    module = globals()
    preset = _SERVICE_PRESETS[service]
    contexts: tuple[PresentationContext, ...] = module[preset]
    if uid not in {cx.abstract_syntax for cx in contexts}:
        module[preset] = (*contexts, build_context(uid, DEFAULT_TRANSFER_SYNTAXES))
        for alias, target in _ALIASES.items():
            if target == preset:
                module[alias] = module[preset]
    if service in _STORAGE_SERVICES and uid not in STORAGE_SOP_CLASSES:
        module["STORAGE_SOP_CLASSES"] = (*STORAGE_SOP_CLASSES, uid)
        if service != "Storage" and uid not in {
            cx.abstract_syntax for cx in AllStoragePresentationContexts
        }:
            module["AllStoragePresentationContexts"] = (
                *AllStoragePresentationContexts,
                build_context(uid, DEFAULT_TRANSFER_SYNTAXES),
            )
    if service == "QueryRetrieve" and uid not in QR_SOP_CLASSES:
        module["QR_SOP_CLASSES"] = (*QR_SOP_CLASSES, uid)
    return uid
