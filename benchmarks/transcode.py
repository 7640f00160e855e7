"""Transcoding speed: dicomio.transcode (pydicom + the codecs extra) beside DCMTK's tools.

Run ``python -m benchmarks.transcode [--frames N] [--size PIXELS] [--repeat R]``. It builds
one multi-frame 16-bit (12 bits stored) monochrome image with smooth anatomy-like content
and a little noise, then reports, per syntax, decode and encode speed in MB/s of decoded
pixels (best of ``repeat`` runs), with the compressed size. DCMTK columns time the whole
tool (process start and file I/O included); the ``dcmconv`` row (a plain copy) shows that
fixed cost. Every compressed result is also decoded by the other side and compared pixel
for pixel, so the table doubles as an interoperability check.

DCMTK 3.6.7 has no JPEG 2000 tools, and pydicom has no JPEG lossless encoder: those cells
say "n/a". The JPEG lossless file dicomio decodes is DCMTK's (``dcmcjpeg +e1``, Process 14
Selection Value 1).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from dicomio.transcode import transcode

#: (name, syntax, DCMTK encode command, DCMTK decode command); None where DCMTK has no tool.
CODECS = [
    ("JPEG lossless SV1", JPEGLosslessSV1, ["dcmcjpeg", "+e1"], ["dcmdjpeg"]),
    ("JPEG-LS lossless", JPEGLSLossless, ["dcmcjpls"], ["dcmdjpls"]),
    ("JPEG 2000 lossless", JPEG2000Lossless, None, None),
    ("RLE lossless", RLELossless, ["dcmcrle"], ["dcmdrle"]),
]


def make_image(frames: int, size: int) -> bytes:
    """A Part 10 Explicit VR Little Endian multi-frame image: blobs, a gradient, some noise."""
    rng = np.random.default_rng(14)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    stack = np.empty((frames, size, size), dtype=np.uint16)
    for index in range(frames):
        image = 600 + 800 * x
        for _ in range(12):
            cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.03, 0.2)
            image += rng.uniform(300, 1500) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / r**2)
        image += rng.normal(0, 12, image.shape)
        stack[index] = np.clip(image + index * 5, 0, 4095).astype(np.uint16)
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Bench^Transcode"
    ds.PatientID = "BENCH"
    ds.Modality = "OT"
    ds.Rows = ds.Columns = size
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stack.tobytes()
    ds["PixelData"].VR = "OW"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def best(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run_tool(argv: list[str], src: Path, dst: Path) -> None:
    subprocess.run([*argv, str(src), str(dst)], check=True, capture_output=True, timeout=300)


def pixels(data: bytes) -> np.ndarray:
    return pydicom.dcmread(BytesIO(data)).pixel_array  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    native = make_image(args.frames, args.size)
    decoded_mb = args.frames * args.size * args.size * 2 / 1e6
    reference = pixels(native)
    have_dcmtk = shutil.which("dcmconv") is not None
    print(
        f"image: {args.frames} frames of {args.size}x{args.size}, 16 bits allocated, 12 stored: "
        f"{decoded_mb:.1f} MB decoded; best of {args.repeat}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "native.dcm"
        src.write_bytes(native)
        if have_dcmtk:
            copy = best(args.repeat, lambda: run_tool(["dcmconv"], src, work / "copy.dcm"))
            rows.append(("(dcmconv copy, DCMTK fixed cost)", "", "", f"{copy * 1000:.0f} ms", ""))
        for name, syntax, dcm_enc, dcm_dec in CODECS:
            ours_enc = ours_dec = theirs_enc = theirs_dec = "n/a"
            compressed: bytes | None = None
            try:
                compressed = transcode(native, syntax)
            except Exception as exc:  # no pydicom encoder for this syntax
                ours_enc = f"n/a ({type(exc).__name__})"
            else:
                t = best(args.repeat, lambda syntax=syntax: transcode(native, syntax))
                ours_enc = f"{decoded_mb / t:.0f}"
                if dcm_dec and have_dcmtk:  # interop: DCMTK decodes ours
                    (work / "ours.dcm").write_bytes(compressed)
                    run_tool(dcm_dec, work / "ours.dcm", work / "ours-dec.dcm")
                    assert np.array_equal(pixels((work / "ours-dec.dcm").read_bytes()), reference)
            if dcm_enc and have_dcmtk:
                out = work / "dcmtk.dcm"
                t = best(args.repeat, lambda a=dcm_enc, o=out: run_tool(a, src, o))
                theirs_enc = f"{decoded_mb / t:.0f}"
                if compressed is None:
                    compressed = out.read_bytes()
            if compressed is None:
                rows.append((name, "", "n/a", f"{ours_enc} / {theirs_enc}", ""))
                continue
            ratio = decoded_mb * 1e6 / len(compressed)
            size = f"{len(compressed) / 1e6:.2f} MB ({ratio:.1f}:1)"
            assert np.array_equal(pixels(transcode(compressed, ExplicitVRLittleEndian)), reference)
            t = best(args.repeat, lambda d=compressed: transcode(d, ExplicitVRLittleEndian))
            ours_dec = f"{decoded_mb / t:.0f}"
            if dcm_dec and have_dcmtk:
                comp, out = work / "in.dcm", work / "out.dcm"
                comp.write_bytes(compressed)
                t = best(args.repeat, lambda a=dcm_dec, c=comp, o=out: run_tool(a, c, o))
                theirs_dec = f"{decoded_mb / t:.0f}"
                assert np.array_equal(pixels(out.read_bytes()), reference), name
            rows.append(
                (name, size, f"{ours_dec} / {theirs_dec}", f"{ours_enc} / {theirs_enc}", "")
            )
    print()
    print(
        "| syntax | compressed size | decode MB/s dicomio / DCMTK | encode MB/s dicomio / DCMTK |"
    )
    print("|---|---|---|---|")
    for name, size, dec, enc, _ in rows:
        print(f"| {name} | {size} | {dec} | {enc} |")


if __name__ == "__main__":
    main()
