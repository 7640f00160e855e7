"""Converting an encoded data set from one transfer syntax to another (PS3.5 8.2, A.4).

Owns one pure, synchronous function, :func:`transcode`, and the two questions a sender asks
before calling it: :func:`can_transcode` (is there a way from A to B with the installed codecs,
within the lossless rule?) and :func:`choose_syntax` (which of the syntaxes a peer accepted
should this data set travel in?). The async layers run :func:`transcode` in a worker thread.

The lossless rule. Decompressing to a native syntax (Implicit or Explicit VR Little Endian,
Deflated, Big Endian) never changes a pixel value. Compressing to RLE Lossless, JPEG-LS
Lossless or JPEG 2000 Lossless Only is bit-exact too. Any other compressed target may lose
information, and dicomio never produces one unless the caller passes ``allow_lossy=True``;
re-encoding pixels that are already lossy into a lossy syntax is lossy again and needs the
same permission. When it is given, the result says so as PS3.3 C.7.6.1.1.5 requires: Lossy
Image Compression "01", the Lossy Image Compression Ratio and Method appended to any earlier
ones, and a new SOP Instance UID (a lossily changed image is a new instance, PS3.4).

Codecs are pydicom's pixel decoders and encoders with their plugin packages, the optional
extra ``pip install 'dicomio[codecs]'``. Without it everything that needs no pixel codec works
(native syntax to native syntax, a syntax to itself), and anything else raises
:class:`~dicomio.errors.CodecUnavailable` naming the extra. Pixels move one frame at a time:
each frame is decoded, encoded and appended to the output, so memory is about one decoded
frame beyond the input and output (PS3.5 A.4: one fragment per frame, with a Basic Offset
Table, or an Extended Offset Table when the offsets do not fit 32 bits).
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Iterable, Iterator
from io import BytesIO
from typing import TYPE_CHECKING, Any, BinaryIO

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.tag import Tag
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)
from pydicom.valuerep import VR

from dicomio.dataset import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    decode_dataset,
    encode_dataset,
    write_part10_header,
)
from dicomio.errors import CodecUnavailable, DicomioError, LossyTranscodeRefused, TranscodeError

if TYPE_CHECKING:
    import numpy as np
    from pydicom.pixels.decoders.base import Decoder
    from pydicom.pixels.encoders.base import Encoder

__all__ = [
    "LOSSLESS_SYNTAXES",
    "NATIVE_SYNTAXES",
    "can_transcode",
    "choose_syntax",
    "transcode",
]

#: The extra that installs the codec plugins; every CodecUnavailable message names it.
_EXTRA = "dicomio[codecs]"

#: Syntaxes whose Pixel Data is native, not encapsulated (PS3.5 A.1-A.3, A.5).
NATIVE_SYNTAXES = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
    }
)

#: Syntaxes that cannot lose information (PS3.5 A.4: RLE, JPEG Process 14, JPEG-LS Lossless,
#: the "Lossless Only" JPEG 2000 and HTJ2K syntaxes), and the native ones. Every other
#: encapsulated syntax may be lossy and is treated as lossy.
LOSSLESS_SYNTAXES = NATIVE_SYNTAXES | frozenset(
    {
        RLELossless,
        JPEGLossless,
        JPEGLosslessSV1,
        JPEGLSLossless,
        JPEG2000Lossless,
        JPEG2000MCLossless,
        HTJ2KLossless,
        HTJ2KLosslessRPCL,
    }
)

#: The order choose_syntax tries conversions in: decompressing first (every peer can read it,
#: and it is the cheapest), then lossless compression, then (only with permission) lossy.
_PREFERENCE = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    JPEG2000Lossless,
    RLELossless,
    JPEGLosslessSV1,
    JPEGLossless,
    HTJ2KLossless,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEG2000,
    JPEGLSNearLossless,
    HTJ2K,
    JPEGExtended12Bit,
    JPEGBaseline8Bit,
)

#: (0028,2114) Lossy Image Compression Method for each lossy target (PS3.3 C.7.6.1.1.5.1),
#: and the encoder options dicomio uses for it.
_LOSSY_METHODS = {JPEG2000: "ISO_15444_1", JPEGLSNearLossless: "ISO_14495_1"}
_LOSSY_OPTIONS: dict[UID, dict[str, Any]] = {
    # A 10:1 ratio keeps diagnostic detail in most modalities; near-lossless JPEG-LS with
    # NEAR=2 bounds every pixel's error by 2.
    JPEG2000: {"j2k_cr": [10.0]},
    JPEGLSNearLossless: {"jls_error": 2},
}

#: Decoder plugins to prefer over pydicom's default pick, where both are installed. Measured
#: (benchmarks/transcode.py, 20 frames of 512x512x12 bits): JPEG-LS decodes at 125 MB/s
#: with pyjpegls (CharLS) and 30 MB/s with pylibjpeg-libjpeg, which pydicom tries first.
_PREFERRED_DECODERS = {JPEGLSLossless: "pyjpegls", JPEGLSNearLossless: "pyjpegls"}

_PIXEL_DATA = Tag(0x7FE0, 0x0010)
_EXTENDED_OFFSETS = (Tag(0x7FE0, 0x0001), Tag(0x7FE0, 0x0002))
_GROUP_LENGTHS = (Tag(0x0028, 0x0000), Tag(0x7FE0, 0x0000))


def _is_lossless(syntax: UID) -> bool:
    return syntax in LOSSLESS_SYNTAXES


def _source_is_lossy(ds: Dataset, syntax: UID) -> bool:
    """Whether the pixels in ``ds`` may already have lost information (PS3.3 C.7.6.1.1.5)."""
    flag = str(ds.get("LossyImageCompression", "") or "")
    if flag == "01":
        return True
    # A lossy-capable syntax whose data set does not say "00" is taken to be lossy.
    return not _is_lossless(syntax) and flag != "00"


# -- which codecs are installed -----------------------------------------------------------------


def _have_numpy() -> bool:
    """Whether numpy, which every pixel codec path of pydicom needs, can be imported."""
    from pydicom.config import have_numpy

    return bool(have_numpy)


def _decoder(syntax: UID) -> Decoder:
    """pydicom's decoder for ``syntax``, or CodecUnavailable saying why there is none."""
    from pydicom.pixels.decoders.base import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise CodecUnavailable(f"pydicom has no pixel data decoder for {syntax.name}") from None
    if not decoder.is_available or not _have_numpy():
        # pydicom's own RLE decoder calls itself available without numpy, then fails.
        missing = "; ".join(decoder.missing_dependencies) or "numpy is not installed"
        raise CodecUnavailable(
            f"cannot decode {syntax.name}: no codec installed "
            f"(pip install '{_EXTRA}'; pydicom reports: {missing})"
        )
    return decoder


def _encoder(syntax: UID) -> Encoder:
    """pydicom's encoder for ``syntax``, or CodecUnavailable saying why there is none."""
    from pydicom.pixels.encoders.base import get_encoder

    try:
        encoder = get_encoder(syntax)
    except NotImplementedError:
        raise CodecUnavailable(
            f"no pixel data encoder exists for {syntax.name} in pydicom "
            f"(not even with '{_EXTRA}' installed)"
        ) from None
    if not encoder.is_available or not _have_numpy():
        missing = "; ".join(encoder.missing_dependencies) or "numpy is not installed"
        raise CodecUnavailable(
            f"cannot encode {syntax.name}: no codec installed "
            f"(pip install '{_EXTRA}'; pydicom reports: {missing})"
        )
    return encoder


def _check_lossy(source: UID, target: UID, *, source_lossy: bool, allow_lossy: bool) -> None:
    if allow_lossy or _is_lossless(target):
        return
    reason = (
        f"{target.name} is a lossy transfer syntax"
        if not source_lossy
        else f"re-encoding lossy pixels from {source.name} into {target.name} loses more"
    )
    raise LossyTranscodeRefused(
        f"refusing to transcode {source.name} to {target.name}: {reason}; "
        "pass allow_lossy=True to permit lossy compression (PS3.3 C.7.6.1.1.5)"
    )


def can_transcode(source: str, target: str, *, allow_lossy: bool = False) -> bool:
    """Whether the installed codecs can convert ``source`` to ``target`` under the lossless rule.

    True for a syntax to itself and between native syntaxes (no codec is needed); otherwise
    the source's pixels must be decodable and the target encodable with what is installed,
    and a lossy target needs ``allow_lossy``. The answer is about syntaxes: an encoder can
    still refuse a particular image (say 1-bit or 32-bit pixels), which :func:`transcode`
    reports as :class:`~dicomio.errors.TranscodeError`.
    """
    src, dst = UID(source), UID(target)
    if src == dst or (src in NATIVE_SYNTAXES and dst in NATIVE_SYNTAXES):
        return True
    if not allow_lossy and not _is_lossless(dst):
        return False
    try:
        _decoder(src)
        if dst not in NATIVE_SYNTAXES:
            _encoder(dst)
    except CodecUnavailable:
        return False
    return True


def choose_syntax(
    source: str, accepted: Iterable[str], *, allow_lossy: bool = False
) -> UID | None:
    """The syntax, among those a peer ``accepted``, to send a data set encoded in ``source`` in.

    The data set's own syntax if it was accepted (nothing to convert); else the first
    accepted syntax it can be converted to losslessly with the installed codecs, native
    syntaxes first (PS3.5 A.1-A.2: every peer can read them, and decoding is cheapest);
    a lossy one only with ``allow_lossy``. None when there is no way.
    """
    src = UID(source)
    offered = {UID(syntax) for syntax in accepted}
    if src in offered:
        return src
    ranked = [s for s in _PREFERENCE if s in offered] + sorted(offered - set(_PREFERENCE))
    for syntax in ranked:
        if can_transcode(src, syntax, allow_lossy=allow_lossy):
            return syntax
    return None


# -- the conversion -----------------------------------------------------------------------------


def transcode(
    src: bytes | bytearray | memoryview | str | os.PathLike[str],
    target: str,
    *,
    source_syntax: str | None = None,
    allow_lossy: bool = False,
) -> bytes:
    """Convert an encoded data set to the transfer syntax ``target`` (PS3.5 8.2, A.4).

    ``src`` is a Part 10 file (a path or its bytes), whose meta says its syntax, or, with
    ``source_syntax``, a bare data set as carried in a C-STORE. The result has the same form:
    a Part 10 file with its meta updated (Transfer Syntax UID, Media Storage SOP Instance UID,
    dicomio as the implementation that wrote it), or a bare data set.

    Every element but the pixel-related ones is kept. Pixel Data, Photometric Interpretation
    (YBR_FULL_422 from a lossy JPEG decodes to RGB, PS3.5 8.2.1), Planar Configuration and
    Number of Frames are set for the new syntax; an Extended Offset Table is dropped or
    rebuilt. Raises LossyTranscodeRefused for a lossy target without ``allow_lossy``,
    CodecUnavailable when a codec is missing, and TranscodeError for anything that cannot be
    read, decoded or encoded, naming the cause.
    """
    return _transcode(src, target, source_syntax=source_syntax, allow_lossy=allow_lossy)[0]


def _transcode(
    src: bytes | bytearray | memoryview | str | os.PathLike[str],
    target: str,
    *,
    source_syntax: str | None,
    allow_lossy: bool,
    bare: bool = False,
) -> tuple[bytes, str]:
    """:func:`transcode`, and the SOP Instance UID of the result (new after a lossy step)."""
    out = BytesIO()
    uid = _transcode_into(
        out, src, target, source_syntax=source_syntax, allow_lossy=allow_lossy, bare=bare
    )
    return out.getvalue(), uid


def _transcode_into(
    out: BinaryIO,
    src: bytes | bytearray | memoryview | str | os.PathLike[str],
    target: str,
    *,
    source_syntax: str | None,
    allow_lossy: bool,
    bare: bool = False,
) -> str:
    """Write the conversion of ``src`` to ``out``; return the result's SOP Instance UID.

    With ``bare`` the result is the data set alone even when ``src`` is a Part 10 file: what
    a C-STORE carries. Pixels are written a frame at a time as they are decoded and encoded
    (see :func:`_stream_pixels`), so beyond the input this holds about one decoded frame;
    lossy targets, Big Endian, Deflated and data sets with elements after Pixel Data are
    built in memory instead.
    """
    dst = UID(str(target))
    try:
        ds, part10 = _parse(src, source_syntax)
        src_syntax = UID(str(ds.file_meta.TransferSyntaxUID))
        uid = str(ds.get("SOPInstanceUID", ""))
        if src_syntax == dst and not (bare and part10):
            out.write(_read_source(src))
            return uid
        meta = _file_meta(ds, dst) if part10 and not bare else None
        # Only Pixel Data is ever compressed (PS3.5 A.4): without it no syntax loses anything.
        if _PIXEL_DATA in ds and src_syntax != dst:
            source_lossy = _source_is_lossy(ds, src_syntax)
            _check_lossy(src_syntax, dst, source_lossy=source_lossy, allow_lossy=allow_lossy)
            if not (src_syntax in NATIVE_SYNTAXES and dst in NATIVE_SYNTAXES):
                if _can_stream(ds, dst):
                    _stream_pixels(out, ds, src_syntax, dst, meta, source_lossy=source_lossy)
                    return uid
                _convert_pixels(ds, src_syntax, dst, source_lossy=source_lossy)
                uid = str(ds.get("SOPInstanceUID", ""))
                if meta is not None:
                    meta = _file_meta(ds, dst)  # a lossy step gave a new instance UID
        if meta is not None:
            write_part10_header(out, meta)
        out.write(encode_dataset(ds, dst))
        return uid
    except DicomioError:
        raise
    except BaseException as exc:
        # Codec plugins and pydicom's reader fail with whatever their authors chose
        # (RuntimeError, ValueError, struct.error, KeyError ...), and a Rust plugin's panic
        # (pylibjpeg-rle on a corrupt segment) is a BaseException: one type for callers.
        # Running out of memory is not a fault of the input, so it is not disguised as one.
        panic = type(exc).__name__ == "PanicException"
        if isinstance(exc, MemoryError) or not (isinstance(exc, Exception) or panic):
            raise
        raise TranscodeError(
            f"cannot transcode to {dst.name}: {type(exc).__name__}: {exc}"
        ) from exc


def _read_source(src: bytes | bytearray | memoryview | str | os.PathLike[str]) -> bytes:
    if isinstance(src, bytes | bytearray | memoryview):
        return bytes(src)
    try:
        with open(src, "rb") as fp:
            return fp.read()
    except OSError as exc:
        raise TranscodeError(f"cannot read {os.fspath(src)!r}: {exc}") from exc


def _parse(
    src: bytes | bytearray | memoryview | str | os.PathLike[str], source_syntax: str | None
) -> tuple[Dataset, bool]:
    """The data set and whether it came as a Part 10 file; ``ds.file_meta`` names its syntax.

    A file is read by pydicom directly, so its bytes are held once, in the data set.
    """
    ds: Dataset
    if source_syntax is None:
        fp = BytesIO(src) if isinstance(src, bytes | bytearray | memoryview) else open(src, "rb")  # noqa: SIM115
        with fp:
            fp.seek(128)
            if fp.read(4) != b"DICM":
                raise TranscodeError(
                    "not a Part 10 file (no DICM prefix, PS3.10 7.1); pass source_syntax "
                    "for a bare data set"
                )
            fp.seek(0)
            ds = dcmread(fp)
        if "TransferSyntaxUID" not in ds.file_meta:
            raise TranscodeError("the file meta has no Transfer Syntax UID (PS3.10 7.1)")
        # Some writers encode the body otherwise than the meta says (pydicom's SC_rgb_jpeg.dcm:
        # meta Explicit VR, body Implicit VR), and pydicom then holds raw elements without a
        # VR that its writer cannot encode. Converting every element now gives them their VR.
        for _ in ds.iterall():
            pass
        return ds, True
    syntax = UID(str(source_syntax))
    ds = decode_dataset(_read_source(src), syntax)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    return ds, False


def _file_meta(ds: Dataset, syntax: UID) -> FileMetaDataset:
    """The source's file meta with the new syntax, instance and writer (PS3.10 7.1)."""
    meta = FileMetaDataset()
    for elem in ds.file_meta:
        if elem.tag != 0x00020000:  # group length: written afresh
            # A new element: setting a value on a shared one would change the source's meta,
            # which encode_dataset reads to know the byte order of raw values.
            meta.add(DataElement(elem.tag, elem.VR, elem.value))
    meta.FileMetaInformationVersion = b"\x00\x01"
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def _frames(ds: Dataset, source: UID) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """``ds``'s frames, decoded one at a time, each with its image pixel description."""
    decoder = _decoder(source)
    # Lossy syntaxes decode as pydicom shows them (JPEG's YBR_FULL_422 to RGB, PS3.5 8.2.1);
    # lossless ones keep their colour space, since YBR to RGB rounds and would lose bits.
    plugin = _PREFERRED_DECODERS.get(source, "")
    frames: Iterator[tuple[np.ndarray, dict[str, Any]]] = decoder.iter_array(
        ds,
        as_rgb=not _is_lossless(source),
        decoding_plugin=plugin if plugin in decoder.available_plugins else "",
    )
    return frames


def _describe_pixels(
    ds: Dataset, image_pixel: dict[str, Any], nr_frames: int, *, source_lossy: bool
) -> None:
    """Set the attributes that describe ``ds``'s new pixels (PS3.5 8.2, PS3.3 C.7.6.3).

    Changed elements are new DataElement objects, never the source's changed in place: the
    decoder may still be reading the source data set.
    """

    def put(keyword: str, value: Any) -> None:
        tag = Tag(keyword)
        ds[tag] = DataElement(tag, dictionary_VR(tag), value)

    if source_lossy and "LossyImageCompression" not in ds:
        put("LossyImageCompression", "01")  # once lossy, always marked (PS3.3 C.7.6.1.1.5)
    put("PhotometricInterpretation", image_pixel["photometric_interpretation"])
    if int(image_pixel["samples_per_pixel"]) > 1:
        # Decoded frames are colour-by-pixel; RLE, JPEG-LS and JPEG 2000 all take them so.
        put("PlanarConfiguration", int(image_pixel["planar_configuration"]))
    if "NumberOfFrames" in ds or nr_frames > 1:
        put("NumberOfFrames", nr_frames)
    # The Extended Offset Table is rebuilt or not needed; the retired group lengths of the
    # groups that change would be wrong (PS3.5 7.2), so they go.
    for tag in (*_EXTENDED_OFFSETS, *_GROUP_LENGTHS):
        if tag in ds:
            del ds[tag]


def _can_stream(ds: Dataset, target: UID) -> bool:
    """Whether the pixels can be written a frame at a time, straight to the output.

    Yes for Explicit and Implicit VR Little Endian and the lossless encapsulated syntaxes,
    when Pixel Data is the data set's last element. A lossy target needs the compression
    ratio in group 0028 before the pixels are written; Big Endian and Deflated are rare
    enough to be built in memory.
    """
    if target in NATIVE_SYNTAXES:
        if target not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            return False
    elif not _is_lossless(target):
        return False
    return bool(max(ds.keys()) == _PIXEL_DATA)


def _stream_pixels(
    out: BinaryIO,
    ds: Dataset,
    source: UID,
    target: UID,
    meta: FileMetaDataset | None,
    *,
    source_lossy: bool,
) -> None:
    """Write ``ds`` in ``target`` to ``out``, decoding and encoding one frame at a time.

    Native Pixel Data has a defined length: frame size times Number of Frames, known once
    the first frame is decoded. Encapsulated Pixel Data (PS3.5 A.4) has one fragment per
    frame and a Basic Offset Table, written as zeros and filled in at the end (empty when
    the offsets could pass 4 GiB: a Basic Offset Table may be empty).
    """
    encoder = None if target in NATIVE_SYNTAXES else _encoder(target)
    nr_frames = int(ds.get("NumberOfFrames", 1) or 1)
    frames = _frames(ds, source)
    first = next(frames, None)
    if first is None:
        raise TranscodeError(f"{source.name} pixel data holds no frames")
    arr, image_pixel = first
    bits_allocated = int(ds.BitsAllocated)
    source_size = len(ds[_PIXEL_DATA].value or b"")

    head = Dataset()
    head.file_meta = ds.file_meta
    for elem in ds:
        if elem.tag != _PIXEL_DATA:
            head.add(elem)
    _describe_pixels(head, image_pixel, nr_frames, source_lossy=source_lossy)
    if meta is not None:
        write_part10_header(out, meta)
    out.write(encode_dataset(head, target))
    del head

    implicit = target == ImplicitVRLittleEndian
    count = 0
    if encoder is None:
        frame_size = arr.nbytes
        length = frame_size * nr_frames
        vr = b"OB" if bits_allocated <= 8 else b"OW"
        out.write(_element_header(vr, length + length % 2, implicit=implicit))
        for arr, _ in itertools.chain([first], frames):
            if arr.nbytes != frame_size:
                raise TranscodeError(
                    f"frame {count + 1} decodes to {arr.nbytes} bytes, not {frame_size}"
                )
            out.write(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
            count += 1
        if length % 2:
            out.write(b"\x00")  # PS3.5 7.1: even value length
    else:
        out.write(_element_header(b"OB", 0xFFFFFFFF, implicit=False))
        with_offsets = source_size + nr_frames * 8 < 2**31 and nr_frames * 4 < 2**31
        table = nr_frames * 4 if with_offsets else 0
        out.write(_ITEM + struct.pack("<I", table))
        table_at = out.tell()
        out.write(bytes(table))
        offsets: list[int] = []
        position = 0
        for arr, pixel in itertools.chain([first], frames):
            count += 1
            if count > nr_frames:
                break
            data = _encode_frame(encoder, ds, arr, pixel, target)
            if len(data) % 2:
                data += b"\x00"  # PS3.5 A.4: fragments are even in length
            offsets.append(position)
            out.write(_ITEM + struct.pack("<I", len(data)))
            out.write(data)
            position += 8 + len(data)
        out.write(_SEQUENCE_DELIMITER)
        if with_offsets:
            if position > 2**32 - 1:
                raise TranscodeError("the encoded frames pass 4 GiB: no Basic Offset Table fits")
            end = out.tell()
            out.seek(table_at)
            out.write(struct.pack(f"<{len(offsets)}I", *offsets))
            out.seek(end)
    if count != nr_frames:
        raise TranscodeError(f"Number of Frames is {nr_frames}, but {count} frames were decoded")


_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000) Item, Little Endian
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # (FFFE,E0DD), length 0


def _element_header(vr: bytes, length: int, *, implicit: bool) -> bytes:
    """The header of (7FE0,0010) Pixel Data in a Little Endian syntax (PS3.5 7.1.1-7.1.3)."""
    if implicit:
        return struct.pack("<HHI", 0x7FE0, 0x0010, length)
    return struct.pack("<HH2s2xI", 0x7FE0, 0x0010, vr, length)


def _convert_pixels(ds: Dataset, source: UID, target: UID, *, source_lossy: bool) -> None:
    """Replace ``ds``'s Pixel Data, decoded from ``source``, by its encoding in ``target``."""
    encoder = None if target in NATIVE_SYNTAXES else _encoder(target)
    frames = _frames(ds, source)
    image_pixel: dict[str, Any] = {}
    native = bytearray()
    encoded: list[bytes] = []
    decoded_size = nr_frames = 0
    for arr, image_pixel in frames:
        decoded_size += arr.nbytes
        nr_frames += 1
        if encoder is None:
            native += arr.tobytes()
        else:
            encoded.append(_encode_frame(encoder, ds, arr, image_pixel, target))
    if not image_pixel:
        raise TranscodeError(f"{source.name} pixel data holds no frames")
    del ds[_PIXEL_DATA]  # the source's pixels are no longer needed: free them first
    _describe_pixels(ds, image_pixel, nr_frames, source_lossy=source_lossy)

    if encoder is None:
        if len(native) % 2:
            native += b"\x00"  # PS3.5 7.1: even value length
        ds.PixelData = bytes(native)  # pydicom takes a bytearray for a list of values
        del native
        elem = ds[_PIXEL_DATA]
        elem.VR = VR.OB if int(ds.BitsAllocated) <= 8 else VR.OW
        elem.is_undefined_length = False
        return

    # PS3.5 A.4: one fragment per frame, with a Basic Offset Table while offsets fit.
    encoded_size = sum(len(f) for f in encoded)
    if (len(encoded) - 1) * 8 + encoded_size - len(encoded[-1]) <= 2**32 - 1:
        ds.PixelData = encapsulate(encoded, has_bot=True)
    else:
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(
            encoded
        )
    encoded.clear()
    elem = ds[_PIXEL_DATA]
    elem.VR = VR.OB
    elem.is_undefined_length = True

    if not _is_lossless(target):
        _mark_lossy(ds, target, ratio=decoded_size / max(1, encoded_size))


def _encode_frame(
    encoder: Encoder, ds: Dataset, arr: np.ndarray, image_pixel: dict[str, Any], target: UID
) -> bytes:
    from pydicom.pixels.utils import as_pixel_options

    opts = as_pixel_options(ds)
    opts.update(image_pixel)
    opts.update(_LOSSY_OPTIONS.get(target, {}))
    opts["number_of_frames"] = 1
    opts.pop("extended_offsets", None)
    return bytes(encoder.encode(arr, **opts))


def _mark_lossy(ds: Dataset, method_syntax: UID, *, ratio: float) -> None:
    """Record a lossy compression just applied (PS3.3 C.7.6.1.1.5) and give a new instance UID."""
    ds.LossyImageCompression = "01"
    ratios = [str(r) for r in _multi(ds.get("LossyImageCompressionRatio"))]
    methods = [str(m) for m in _multi(ds.get("LossyImageCompressionMethod"))]
    ds.LossyImageCompressionRatio = [*ratios, f"{ratio:.6g}"]
    ds.LossyImageCompressionMethod = [*methods, _LOSSY_METHODS[method_syntax]]
    ds.SOPInstanceUID = generate_uid()


def _multi(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return [value]
    return list(value)
