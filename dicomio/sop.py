"""SOP class and transfer syntax names, and preset presentation context lists.

Every UID here comes from pydicom's UID dictionary (the PS3.6 Annex A registry that pydicom
ships), looked up by its keyword: nothing is typed out by hand, so a new pydicom release brings
new SOP classes with it. Import a UID by keyword, as with pynetdicom's ``sop_class``::

    from dicomio.sop import CTImageStorage, Verification, ImplicitVRLittleEndian

The names are served by a module ``__getattr__`` (PEP 562), which mypy understands: each one is a
``pydicom.uid.UID``. An unknown name raises ``AttributeError`` like any missing attribute.

The preset lists (``StoragePresentationContexts`` and friends) are tuples of
``dicomio.presentation.PresentationContext`` without context IDs, each offering
``DEFAULT_TRANSFER_SYNTAXES``.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom import _uid_dict
from pydicom.uid import UID

from dicomio.presentation import PresentationContext, build_context

__all__ = [
    "AllStoragePresentationContexts",
    "BasicWorklistManagementPresentationContexts",
    "ColorPalettePresentationContexts",
    "DEFAULT_TRANSFER_SYNTAXES",
    "DefinedProcedureProtocolPresentationContexts",
    "HangingProtocolPresentationContexts",
    "ImplantTemplatePresentationContexts",
    "InstanceAvailabilityPresentationContexts",
    "ModalityPerformedProcedureStepPresentationContexts",
    "ProtocolApprovalPresentationContexts",
    "QR_SOP_CLASSES",
    "QueryRetrievePresentationContexts",
    "RelevantPatientInformationPresentationContexts",
    "STORAGE_SOP_CLASSES",
    "StorageCommitmentPresentationContexts",
    "StoragePresentationContexts",
    "UNCOMPRESSED_TRANSFER_SYNTAXES",
    "UnifiedProcedureStepPresentationContexts",
    "VerificationPresentationContexts",
    "is_known",
    "is_storage",
    "name_of",
    "uid_for",
]

# pydicom's registry: {uid: (name, type, info, retired, keyword)}. Entries without a keyword
# (a few retired UIDs whose names were withdrawn) cannot be imported by name and are skipped.
_UIDS = _uid_dict.UID_dictionary
_BY_KEYWORD: dict[str, UID] = {entry[4]: UID(uid) for uid, entry in _UIDS.items() if entry[4]}
_BY_NAME: dict[str, UID] = {entry[0]: UID(uid) for uid, entry in _UIDS.items() if entry[0]}
_SEEN = [len(_UIDS)]


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
    entry = _UIDS.get(str(uid))
    if entry is None or not entry[0]:
        return str(uid)
    return entry[0]


def is_known(uid: str) -> bool:
    """True if the UID is in pydicom's copy of the PS3.6 Annex A registry."""
    return str(uid) in _UIDS


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
    ``dicomio.presentation.negotiate_as_acceptor(accept_any_storage=True)``).
    """
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
