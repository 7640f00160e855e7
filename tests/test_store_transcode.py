"""send_c_store converting to an accepted transfer syntax, dicomio on both sides (issue #14).

A dicomio storage SCP accepting one transfer syntax receives pydicom's bundled files from a
dicomio SCU: compressed ones decompressed (the pixels pydicom itself decodes from the
source), uncompressed ones compressed losslessly (bit-exact), lossy only when allowed
(PS3.3 C.7.6.1.1.5, a new SOP Instance UID, PS3.4), each in codec worker processes and in
threads. C-MOVE and C-GET sub-operations that cannot be converted fail alone and say why in
the final response (PS3.4 C.4.2.1.4, C.4.3.1.3). Without the codecs extra, the error names
it and nothing else changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

import dicomio._scu as scu_module
from dicomio import AE, evt
from dicomio.dataset import decode_dataset
from dicomio.errors import CodecUnavailable, LossyTranscodeRefused, TranscodeError
from dicomio.presentation import build_role
from dicomio.sop import (
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    Verification,
)
from dicomio.transcode import LOSSLESS_SYNTAXES, transcode
from tests.conftest import LOOPBACK

np = pytest.importorskip("numpy")
from pydicom.pixels import get_decoder, pixel_array  # noqa: E402

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.timeout(120),
    # Vendor files trip pydicom's validation warnings; they are data, not defects of ours.
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
REPO = Path(__file__).resolve().parent.parent
DEADLINE = 60
MOVE = PatientRootQueryRetrieveInformationModelMove
GET = PatientRootQueryRetrieveInformationModelGet


def _syntax(path: Path) -> UID | None:
    try:
        ts = pydicom.filereader.read_file_meta_info(path).get("TransferSyntaxUID")
    except Exception:
        return None
    return UID(str(ts)) if ts else None


def _compressed_files() -> list[tuple[Path, UID, UID]]:
    """(path, transfer syntax, SOP class) of every small compressed image the extra decodes."""
    found = []
    for path in sorted(TEST_FILES.glob("*.dcm")):
        if path.stat().st_size > 400_000:
            continue
        ts = _syntax(path)
        if ts is None or not ts.is_compressed or not get_decoder(ts).is_available:
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        if "SOPClassUID" in ds and "SOPInstanceUID" in ds:
            found.append((path, ts, UID(str(ds.SOPClassUID))))
    return found


with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    COMPRESSED = _compressed_files()

#: Uncompressed sources for lossless compression: 16-bit grey (CT, MR) and 8-bit RGB.
NATIVE_SOURCES = ["CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm"]


class Received:
    """What a storage SCP got: per C-STORE, the request, the context's syntax, the raw set."""

    def __init__(self) -> None:
        self.stores: list[tuple[Any, UID, bytes]] = []

    async def on_store(self, event: Any) -> int:
        ts = event.context.transfer_syntax
        self.stores.append((event.request, UID(str(ts)), bytes(event.raw)))
        return 0

    def dataset(self, index: int) -> Dataset:
        _, ts, raw = self.stores[index]
        ds = decode_dataset(raw, ts)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts
        return ds


@asynccontextmanager
async def receiver(
    sop_classes: Sequence[str], syntaxes: Sequence[str]
) -> AsyncIterator[tuple[int, Received]]:
    """A dicomio storage SCP accepting ``sop_classes`` in ``syntaxes`` only."""
    received = Received()
    ae = AE("STORESCP")
    ae.add_supported_context(Verification)
    for sop_class in dict.fromkeys(sop_classes):
        ae.add_supported_context(sop_class, list(syntaxes))
    async with ae.start_server(
        (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_STORE, received.on_store)]
    ) as server:
        yield server.port, received


def sender(sop_classes: Sequence[str], syntaxes: Sequence[str], *, isolate: bool = True) -> AE:
    ae = AE("STORESCU")
    ae.isolate_codecs = isolate
    ae.add_requested_context(Verification)
    for sop_class in dict.fromkeys(sop_classes):
        ae.add_requested_context(sop_class, list(syntaxes))
    return ae


def _expected_pixels(path: Path, ts: UID) -> Any:
    """pydicom's decode of the source (colour as pydicom shows it for lossy syntaxes), or
    None when pydicom cannot decode it either."""
    try:
        # From a Dataset, not the path: pydicom's path reader trusts the meta's VR encoding,
        # which SC_rgb_jpeg.dcm's body does not follow (dcmread copes, as dicomio does).
        ds = pydicom.dcmread(path)
        return get_decoder(ts).as_array(ds, as_rgb=ts not in LOSSLESS_SYNTAXES)[0]
    except Exception:
        return None


def _both_forms(path: Path) -> list[Dataset | Path]:
    """The file as send_c_store takes it: its path (streamed) and its Dataset (encoded)."""
    return [path, pydicom.dcmread(path)]


@pytest.mark.parametrize("isolate", [True, False], ids=["processes", "threads"])
async def test_compressed_files_arrive_decompressed(isolate: bool) -> None:
    """Every bundled compressed image the extra decodes, as a path and as a Dataset, to an
    SCP accepting only Explicit VR Little Endian: it arrives in that syntax with pydicom's
    decode of the source. One pydicom cannot decode either fails alone with TranscodeError;
    the association goes on."""
    classes = [c for _, _, c in COMPRESSED]
    sent: list[tuple[Path, Any]] = []
    undecodable: list[str] = []
    with anyio.fail_after(DEADLINE):
        async with receiver(classes, [ExplicitVRLittleEndian]) as (port, got):
            scu = sender(classes, [ExplicitVRLittleEndian], isolate=isolate)
            async with scu.associate(LOOPBACK, port, ae_title="STORESCP") as assoc:
                for path, ts, _ in COMPRESSED:
                    expected = _expected_pixels(path, ts)
                    for item in _both_forms(path):
                        if expected is None:
                            with pytest.raises(TranscodeError, match="cannot transcode"):
                                await assoc.send_c_store(item)
                            undecodable.append(path.name)
                            continue
                        status = await assoc.send_c_store(item)
                        assert status.Status == 0, path.name
                        sent.append((path, expected))
                assert (await assoc.send_c_echo()).Status == 0
    assert len(got.stores) == len(sent) >= 60, undecodable
    for index, (path, expected) in enumerate(sent):
        request, ts, _ = got.stores[index]
        assert ts == ExplicitVRLittleEndian
        ds = got.dataset(index)
        assert np.array_equal(ds.pixel_array, expected), path.name
        source = pydicom.dcmread(path, stop_before_pixels=True)
        assert request.affected_sop_instance_uid == source.SOPInstanceUID == ds.SOPInstanceUID


@pytest.mark.parametrize("isolate", [True, False], ids=["processes", "threads"])
@pytest.mark.parametrize(
    "target", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda t: t.name
)
async def test_uncompressed_files_arrive_compressed_bit_exact(target: UID, isolate: bool) -> None:
    """To an SCP accepting only one lossless compressed syntax: each file, as a path and as
    a Dataset, arrives in it, its pixels decode to the source's exactly, and it keeps its
    SOP Instance UID (PS3.5 A.4)."""
    paths = [TEST_FILES / name for name in NATIVE_SOURCES]
    classes = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID) for p in paths]
    with anyio.fail_after(DEADLINE):
        async with receiver(classes, [target]) as (port, got):
            scu = sender(classes, [target], isolate=isolate)
            async with scu.associate(LOOPBACK, port, ae_title="STORESCP") as assoc:
                for path in paths:
                    for item in _both_forms(path):
                        assert (await assoc.send_c_store(item)).Status == 0
    assert len(got.stores) == 2 * len(paths)
    for index, path in enumerate(p for p in paths for _ in range(2)):
        source = pydicom.dcmread(path)
        ds = got.dataset(index)
        assert got.stores[index][1] == target
        assert ds["PixelData"].is_undefined_length  # encapsulated (PS3.5 A.4)
        assert np.array_equal(ds.pixel_array, source.pixel_array), path.name
        assert ds.SOPInstanceUID == source.SOPInstanceUID
        assert "LossyImageCompression" not in ds


async def test_own_syntax_accepted_is_sent_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file whose syntax was accepted goes as its bytes stand: no worker, no conversion."""

    async def no_codec(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("transcode_file called for a syntax the peer accepted")

    monkeypatch.setattr(scu_module, "transcode_file", no_codec)
    path = TEST_FILES / "MR_small_RLE.dcm"
    sop_class = str(pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID)
    with anyio.fail_after(DEADLINE):
        async with receiver([sop_class], [ExplicitVRLittleEndian, RLELossless]) as (port, got):
            scu = sender([sop_class], [RLELossless, ExplicitVRLittleEndian])
            async with scu.associate(LOOPBACK, port, ae_title="STORESCP") as assoc:
                assert (await assoc.send_c_store(path)).Status == 0
                assert (await assoc.send_c_store(pydicom.dcmread(path))).Status == 0
    data = path.read_bytes()
    for _, ts, raw in got.stores:
        assert ts == RLELossless
        assert data.endswith(raw)


# -- 2. lossy only when allowed --------------------------------------------------------------


async def test_lossy_target_refused_then_allowed(anyio_backend: str) -> None:
    """An SCP accepting only JPEG 2000 (lossy): refused without allow_lossy, with nothing
    sent and the association usable; with it, a new instance marked lossy (PS3.3
    C.7.6.1.1.5) whose UID the C-STORE request carries."""
    path = TEST_FILES / "CT_small.dcm"
    source = pydicom.dcmread(path)
    with anyio.fail_after(DEADLINE):
        async with receiver([source.SOPClassUID], [JPEG2000]) as (port, got):
            scu = sender([source.SOPClassUID], [JPEG2000])
            async with scu.associate(LOOPBACK, port, ae_title="STORESCP") as assoc:
                for item in (path, source):
                    with pytest.raises(LossyTranscodeRefused) as info:
                        await assoc.send_c_store(item)
                    message = str(info.value)
                    assert "allow_lossy=True" in message and "JPEG 2000" in message, message
                assert got.stores == []
                assert (await assoc.send_c_echo()).Status == 0
                assert (await assoc.send_c_store(path, allow_lossy=True)).Status == 0
                assert (await assoc.send_c_store(source, allow_lossy=True)).Status == 0
    assert len(got.stores) == 2
    uids = set()
    for index in range(2):
        request, ts, _ = got.stores[index]
        ds = got.dataset(index)
        assert ts == JPEG2000
        assert ds.LossyImageCompression == "01"
        assert ds.LossyImageCompressionMethod == "ISO_15444_1"
        assert float(ds.LossyImageCompressionRatio) > 1
        assert ds.SOPInstanceUID != source.SOPInstanceUID
        assert request.affected_sop_instance_uid == ds.SOPInstanceUID
        uids.add(ds.SOPInstanceUID)
        # Lossy, but close: a 10:1 JPEG 2000 of a CT keeps the image.
        diff = ds.pixel_array.astype(float) - source.pixel_array.astype(float)
        assert np.abs(diff).mean() < 50
    assert len(uids) == 2  # each lossy conversion makes its own instance


async def test_jpeg_baseline_only_cannot_be_reached(anyio_backend: str) -> None:
    """pydicom has no JPEG baseline encoder: with or without allow_lossy the error says that
    no encoder exists (not that lossy was refused, which allowing would not fix)."""
    path = TEST_FILES / "CT_small.dcm"
    sop_class = str(pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID)
    with anyio.fail_after(DEADLINE):
        async with receiver([sop_class], [JPEGBaseline8Bit]) as (port, got):
            scu = sender([sop_class], [JPEGBaseline8Bit])
            async with scu.associate(LOOPBACK, port, ae_title="STORESCP") as assoc:
                for allow in (False, True):
                    with pytest.raises(CodecUnavailable, match="no pixel data encoder"):
                        await assoc.send_c_store(path, allow_lossy=allow)
                assert (await assoc.send_c_echo()).Status == 0
    assert got.stores == []


# -- 3. C-MOVE and C-GET sub-operations that fail alone --------------------------------------


def _with_new_uid(src: Path, folder: Path, *, cut: bool = False) -> tuple[Path, str]:
    """A copy of ``src`` as a new instance; with ``cut``, its one frame's codestream is cut
    in half inside a still valid encapsulation (PS3.5 A.4)."""
    ds = pydicom.dcmread(src)
    if cut:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        ds.PixelData = encapsulate([frame[: len(frame) // 2]])
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(out)
    return out, str(ds.SOPInstanceUID)


@pytest.fixture
def study(tmp_path: Path) -> tuple[list[Path], list[str], str]:
    """Three good MR instances (RLE, JPEG-LS, J2K lossless) and a corrupt J2K one, last."""
    good = [
        _with_new_uid(TEST_FILES / name, tmp_path)
        for name in ("MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm")
    ]
    good.append(_with_new_uid(TEST_FILES / "MR_small_jp2klossless.dcm", tmp_path))
    bad = _with_new_uid(TEST_FILES / "MR_small_jp2klossless.dcm", tmp_path, cut=True)
    paths = [p for p, _ in good]
    paths.insert(1, bad[0])  # not last: the sub-operations after it go on
    return paths, [uid for _, uid in good], bad[1]


def _query() -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "*"
    return query


def _retrieve_handler(paths: list[Path]) -> Any:
    async def handler(event: Any) -> AsyncIterator[Any]:
        yield len(paths)
        for path in paths:
            yield 0xFF00, path

    return handler


@asynccontextmanager
async def retrieve_scp(paths: list[Path], destination: int | None) -> AsyncIterator[int]:
    """A dicomio C-MOVE and C-GET SCP serving ``paths`` (codecs in worker processes)."""
    ae = AE("QRSCP")
    ae.add_supported_context(Verification)
    ae.add_supported_context(MOVE)
    ae.add_supported_context(GET)
    sop_class = str(pydicom.dcmread(paths[0], stop_before_pixels=True).SOPClassUID)
    ae.add_supported_context(
        sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian], scu_role=True, scp_role=True
    )
    if destination is not None:
        ae.move_destinations = {"DEST": (LOOPBACK, destination)}
    handler = _retrieve_handler(paths)
    async with ae.start_server(
        (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_MOVE, handler), (evt.EVT_C_GET, handler)]
    ) as server:
        yield server.port


async def _move(port: int) -> list[tuple[Dataset, Dataset | None]]:
    scu = AE("MOVESCU")
    scu.add_requested_context(MOVE)
    scu.add_requested_context(Verification)
    async with scu.associate(LOOPBACK, port, ae_title="QRSCP") as assoc:
        responses = [r async for r in assoc.send_c_move(_query(), "DEST", MOVE)]
        assert (await assoc.send_c_echo()).Status == 0
    return responses


def _assert_one_failed(
    final: tuple[Dataset, Dataset | None], good: list[str], bad: str, reason: str
) -> None:
    """The final C-MOVE/C-GET response (PS3.4 C.4.2.1.4): the failed instance is counted,
    listed in the identifier's Failed SOP Instance UID List, and its cause given in the
    Error Comment."""
    final, identifier = final
    assert final.Status == 0xB000, final  # sub-operations complete, one or more failures
    assert final.NumberOfCompletedSuboperations == len(good)
    assert final.NumberOfFailedSuboperations == 1
    assert identifier is not None and identifier.FailedSOPInstanceUIDList == bad
    comment = str(final.ErrorComment)
    # The cause, kind first; the instance is in the Failed SOP Instance UID List.
    assert len(comment) <= 64 and reason in comment, comment


async def _echo(port: int) -> None:
    scu = AE("ECHOSCU")
    scu.add_requested_context(Verification)
    async with scu.associate(LOOPBACK, port, ae_title="QRSCP") as assoc:
        assert (await assoc.send_c_echo()).Status == 0


async def test_move_with_a_corrupt_instance(
    study: tuple[list[Path], list[str], str], anyio_backend: str
) -> None:
    """Acceptance 4: a C-MOVE to a destination accepting only uncompressed syntaxes; the
    corrupt J2K instance fails alone and is named; everything stays usable."""
    paths, good, bad = study
    sop_class = str(pydicom.dcmread(paths[0], stop_before_pixels=True).SOPClassUID)
    with anyio.fail_after(DEADLINE):
        async with (
            receiver([sop_class], [ExplicitVRLittleEndian, ImplicitVRLittleEndian]) as (
                dest,
                got,
            ),
            retrieve_scp(paths, dest) as port,
        ):
            statuses = await _move(port)
            await _echo(port)
    _assert_one_failed(statuses[-1], good, bad, "cannot")
    assert [str(r.affected_sop_instance_uid) for r, _, _ in got.stores] == good
    for index in range(len(good)):
        assert got.stores[index][1] in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        expected = pixel_array(TEST_FILES / "MR_small.dcm")
        assert np.array_equal(got.dataset(index).pixel_array, expected)


async def test_get_with_a_corrupt_instance(
    study: tuple[list[Path], list[str], str], anyio_backend: str
) -> None:
    """The same for C-GET: the requestor accepts only uncompressed syntaxes."""
    paths, good, bad = study
    sop_class = str(pydicom.dcmread(paths[0], stop_before_pixels=True).SOPClassUID)
    received = Received()
    scu = AE("GETSCU")
    scu.add_requested_context(GET)
    scu.add_requested_context(Verification)
    scu.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    with anyio.fail_after(DEADLINE):
        async with retrieve_scp(paths, None) as port:
            async with scu.associate(
                LOOPBACK,
                port,
                ae_title="QRSCP",
                ext_neg=[build_role(sop_class, scp_role=True)],
                evt_handlers=[(evt.EVT_C_STORE, received.on_store)],
            ) as assoc:
                statuses = [r async for r in assoc.send_c_get(_query(), GET)]
                assert (await assoc.send_c_echo()).Status == 0
            await _echo(port)
    _assert_one_failed(statuses[-1], good, bad, "cannot")
    assert [str(r.affected_sop_instance_uid) for r, _, _ in received.stores] == good


async def test_move_to_a_lossy_only_destination(tmp_path: Path, anyio_backend: str) -> None:
    """A destination accepting only JPEG 2000 (lossy): the instance already in it goes as
    is; a lossless one cannot go without permission, which a C-MOVE never gives: it fails
    with that reason, the others succeed."""
    lossy = tmp_path / "lossy.dcm"
    lossy.write_bytes(transcode(TEST_FILES / "MR_small.dcm", JPEG2000, allow_lossy=True))
    lossy_uid = str(pydicom.dcmread(lossy, stop_before_pixels=True).SOPInstanceUID)
    rle, rle_uid = _with_new_uid(TEST_FILES / "MR_small_RLE.dcm", tmp_path)
    sop_class = str(pydicom.dcmread(rle, stop_before_pixels=True).SOPClassUID)
    with anyio.fail_after(DEADLINE):
        async with (
            receiver([sop_class], [JPEG2000]) as (dest, got),
            retrieve_scp([rle, lossy], dest) as port,
        ):
            statuses = await _move(port)
    _assert_one_failed(statuses[-1], [lossy_uid], rle_uid, "lossy")
    assert [str(r.affected_sop_instance_uid) for r, _, _ in got.stores] == [lossy_uid]


# -- 5. without the codecs extra -------------------------------------------------------------

#: Imported before anything else in the test's Python and in the codec workers it starts
#: (they get the parent's environment): the codecs extra and numpy are "not installed".
_SITECUSTOMIZE = """
import sys
for name in ("numpy", "pylibjpeg", "libjpeg", "openjpeg", "rle", "jpeg_ls", "gdcm",
             "pylibjpeg_libjpeg", "pylibjpeg_openjpeg", "pylibjpeg_rle", "pyjpegls"):
    sys.modules[name] = None
"""

_WITHOUT_EXTRA = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
from pathlib import Path
import anyio, pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from dicomio import AE, evt
from dicomio.errors import TranscodeError
from dicomio._transcoding import transcode_file

files = Path(pydicom.__file__).parent / "data" / "test_files"
MR, CT = "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.2"
result = {}

def failure(exc):
    return [type(exc).__name__, str(exc)]

async def main():
    got = []
    async def on_store(event):
        got.append((str(event.context.transfer_syntax), bytes(event.raw).hex()))
        return 0
    scp = AE("STORESCP")
    scp.add_supported_context(MR, [ExplicitVRLittleEndian])
    scp.add_supported_context(CT, [ImplicitVRLittleEndian])
    scu = AE("STORESCU")
    scu.add_requested_context(MR, [ExplicitVRLittleEndian])
    scu.add_requested_context(CT, [ImplicitVRLittleEndian])
    with anyio.fail_after(60):
        async with scp.start_server(("127.0.0.1", 0), evt_handlers=[(evt.EVT_C_STORE, on_store)]) as server:
            async with scu.associate("127.0.0.1", server.port, ae_title="STORESCP") as assoc:
                for name in ("MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm"):
                    try:
                        await assoc.send_c_store(files / name)
                        result[name] = "no error"
                    except TranscodeError as exc:
                        result[name] = failure(exc)
                result["native"] = int((await assoc.send_c_store(files / "CT_small.dcm")).Status)
        # In a codec worker process, which imported what this one did.
        for name in ("MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm"):
            try:
                await transcode_file(files / name, ExplicitVRLittleEndian)
                result["worker " + name] = "no error"
            except TranscodeError as exc:
                result["worker " + name] = failure(exc)
        done = await transcode_file(files / "CT_small.dcm", ImplicitVRLittleEndian)
        result["worker native"] = done.path.read_bytes().hex()
        done.discard()
    result["received"] = got
    result["numpy"] = sys.modules.get("numpy") is not None

anyio.run(main)
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def without_extra(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What a dicomio SCU and its codec workers do when the extra (numpy included) is absent."""
    folder = tmp_path_factory.mktemp("no-extra")
    (folder / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(REPO)])}
    run = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTRA],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result: dict[str, Any] = json.loads(run.stdout)
    assert result["numpy"] is False  # the block worked
    return result


@pytest.mark.parametrize("where", ["", "worker "], ids=["here", "in-worker"])
def test_without_the_codecs_extra_the_error_names_it(
    without_extra: dict[str, Any], where: str
) -> None:
    """Acceptance 3: JPEG-LS cannot be decompressed; the error names 'dicomio[codecs]' and
    what pydicom says is missing (numpy, then the plugins)."""
    kind, message = without_extra[where + "MR_small_jpeg_ls_lossless.dcm"]
    assert kind == "CodecUnavailable", message
    assert "pip install 'dicomio[codecs]'" in message and "JPEG-LS" in message, message
    assert "numpy" in message.lower(), message


def test_without_the_codecs_extra_nothing_else_changed(without_extra: dict[str, Any]) -> None:
    """An uncompressed store converted between native syntaxes goes as with the extra, byte
    for byte, and so does a native to native conversion in a codec worker."""
    expected = _bare(transcode(TEST_FILES / "CT_small.dcm", ImplicitVRLittleEndian))
    assert without_extra["native"] == 0
    assert without_extra["received"] == [[ImplicitVRLittleEndian, expected]]
    assert without_extra["worker native"] == expected


@pytest.mark.parametrize("where", ["", "worker "], ids=["here", "in-worker"])
def test_without_numpy_rle_names_the_extra(without_extra: dict[str, Any], where: str) -> None:
    kind, message = without_extra[where + "MR_small_RLE.dcm"]
    assert kind == "CodecUnavailable", message
    assert "pip install 'dicomio[codecs]'" in message, message


def _bare(part10: bytes) -> str:
    """The data set of a Part 10 file, without preamble and meta (hex)."""
    from dicomio.dataset import parse_file_meta

    parsed = parse_file_meta(part10)
    assert parsed is not None
    return part10[parsed[1] :].hex()
