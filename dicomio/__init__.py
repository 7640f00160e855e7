"""dicomio: asyncio-native DICOM networking (PS3.7 DIMSE over the PS3.8 Upper Layer)."""

__version__ = "0.1.0.dev0"
