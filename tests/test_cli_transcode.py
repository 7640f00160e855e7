"""Compressed transfer syntaxes end to end through the ``dicomio`` commands (issue #14,
acceptance 2), against DCMTK 3.6.7's storescp, storescu, getscu and movescu.

- ``dicomio storescu`` decompresses for a receiver that accepts only uncompressed syntaxes,
  and compresses losslessly for one that accepts only RLE, JPEG-LS or JPEG 2000 lossless
  (DCMTK storescp ``+xr``, ``+xt``, ``+xv``); a file that cannot be converted fails alone.
- ``dicomio qrscp`` holding compressed instances delivers every one to DCMTK getscu and to
  a DCMTK storescp through movescu, both accepting only uncompressed syntaxes.
- storescp/qrscp ``--accept`` (the acceptor's order wins) and ``--store-as`` (a failed
  conversion refuses the instance and leaves nothing on disk; the index records the
  syntax stored).

Pixels are held to pydicom's decode of the original (``as_rgb`` for lossy sources, as in
tests/test_transcode.py). Every process runs on a free loopback port, bounded in time.
"""

from __future__ import annotations

import sqlite3
import subprocess
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import UID, generate_uid

from dicomio.transcode import LOSSLESS_SYNTAXES
from tests.conftest import DCMTK_ENV, LOOPBACK, free_port, require_dcmtk, stop, wait_for_port
from tests.test_apps_cli import Process, dicomio, run, text

np = pytest.importorskip("numpy")
from pydicom.pixels import get_decoder, pixel_array  # noqa: E402

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::UserWarning")]

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
RLE = "1.2.840.10008.1.2.5"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
UNCOMPRESSED = {EXPLICIT, IMPLICIT, "1.2.840.10008.1.2.2"}

#: One compressed file per syntax the codecs extra reads, lossless and lossy.
COMPRESSED_FILES = (
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG Baseline, YBR_FULL
    "JPGExtended.dcm",  # JPEG Extended, 12 bit (JPEG-lossy.dcm: pydicom cannot decode it)
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG Lossless SV1, RGB
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEGLSNearLossless_16.dcm",
    "MR_small_jp2klossless.dcm",
    "JPEG2000.dcm",
    "MR_small_RLE.dcm",
    "SC_rgb_rle_2frame.dcm",
)


def _syntax(path: Path) -> UID:
    return UID(str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID))


def _decodable(name: str) -> Path:
    path = TEST_FILES / name
    if not path.exists():
        pytest.skip(f"pydicom's test file {name} is not installed")
    if not get_decoder(_syntax(path)).is_available:
        pytest.skip(f"the codecs extra has no decoder for {_syntax(path).name}")
    return path


def expected_pixels(path: Path) -> Any:
    """pydicom's decode of the original; lossy YBR sources decoded to RGB, as a
    decompressing converter must (PS3.5 8.2.1)."""
    return pixel_array(path, as_rgb=_syntax(path) not in LOSSLESS_SYNTAXES)


def received_pixels(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return pydicom.dcmread(path).pixel_array


def files_in(folder: Path) -> list[Path]:
    """Every file under ``folder``, hidden part files included."""
    return sorted(p for p in folder.rglob("*") if p.is_file())


@contextmanager
def dcmtk_storescp(tmp_path: Path, *flags: str) -> Iterator[tuple[int, Path]]:
    """DCMTK storescp with ``flags`` (none: its default, uncompressed only, ``+x=``)."""
    tools = require_dcmtk("storescp")
    out = tmp_path / "dcmtk-rx"
    out.mkdir()
    port = free_port()
    with open(tmp_path / "storescp.log", "wb") as log:
        proc = subprocess.Popen(
            [
                *(tools["storescp"], "-aet", "STORESCP", *flags, "-od", str(out)),
                *("-fe", ".dcm", "-dhl", "-ta", "30", "-td", "60", str(port)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=DCMTK_ENV,
        )
    try:
        wait_for_port(port, proc)
        yield port, out
    finally:
        stop(proc)


@contextmanager
def dicomio_server(tmp_path: Path, command: str, *args: str) -> Iterator[Process]:
    port = free_port()
    server = Process(
        dicomio(command, str(port), "--bind", LOOPBACK, *args), port, tmp_path / f"{command}.log"
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def storescu(port: int, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return run(dicomio("storescu", LOOPBACK, str(port), "-aec", "STORESCP", *map(str, args)))


# -- dicomio storescu ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", COMPRESSED_FILES)
def test_storescu_decompresses_for_an_uncompressed_only_storescp(
    name: str, tmp_path: Path
) -> None:
    """DCMTK storescp's default accepts no compressed syntax: the file is decompressed."""
    path = _decodable(name)
    with dcmtk_storescp(tmp_path) as (port, out):
        result = storescu(port, path)
    assert result.returncode == 0, text(result)
    (got,) = files_in(out)
    assert _syntax(got) in UNCOMPRESSED
    assert np.array_equal(received_pixels(got), expected_pixels(path))


@pytest.mark.parametrize(
    ("flag", "syntax"), [("r", RLE), ("t", JPEG_LS_LOSSLESS), ("v", J2K_LOSSLESS)]
)
def test_storescu_compresses_for_a_compressed_only_storescp(
    flag: str, syntax: str, tmp_path: Path
) -> None:
    """Proposing only RLE / JPEG-LS / J2K lossless (DCMTK's letters): the uncompressed file
    arrives compressed, and decodes bit-exact."""
    path = TEST_FILES / "CT_small.dcm"
    with dcmtk_storescp(tmp_path, f"+x{flag}") as (port, out):
        result = storescu(port, "--no-uncompressed", f"-x{flag}", path)
    assert result.returncode == 0, text(result)
    (got,) = files_in(out)
    assert _syntax(got) == syntax
    assert np.array_equal(received_pixels(got), pydicom.dcmread(path).pixel_array)


def test_storescu_fails_only_the_file_it_cannot_convert(tmp_path: Path) -> None:
    """A receiver taking only JPEG 2000 (lossy): the J2K file goes as it is; the
    uncompressed one would need lossy compression, refused without --allow-lossy, and is
    reported; with it, the instance goes under a new SOP Instance UID."""
    j2k = _decodable("JPEG2000.dcm")
    ct = TEST_FILES / "CT_small.dcm"
    with dcmtk_storescp(tmp_path, "+xw") as (port, out):
        result = storescu(port, "--no-uncompressed", "-xw", j2k, ct)
        assert result.returncode == 1, text(result)
        assert f"E: failed {ct}: " in text(result) and "lossy" in text(result), text(result)
        (got,) = files_in(out)
        assert _syntax(got) == J2K
        got.unlink()
        result = storescu(port, "--no-uncompressed", "-xw", "--allow-lossy", ct)
    assert result.returncode == 0, text(result)
    (got,) = files_in(out)
    ds = pydicom.dcmread(got)
    assert _syntax(got) == J2K
    assert ds.SOPInstanceUID != pydicom.dcmread(ct).SOPInstanceUID
    assert ds.LossyImageCompression == "01"


def test_propose_parsing_and_planning() -> None:
    from dicomio.apps._common import UsageError
    from dicomio.apps._scu_commands import SendItem, plan_associations
    from dicomio.apps._syntaxes import parse_syntax

    assert parse_syntax("jpeg-lossless") == "1.2.840.10008.1.2.4.70"
    assert parse_syntax(" RLE ") == RLE
    assert parse_syntax(J2K) == J2K
    with pytest.raises(UsageError, match="rle"):
        parse_syntax("jpeg-xl-someday")

    ct, sc = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.7"
    items = [
        SendItem(Path("a"), ct, EXPLICIT, 1),
        SendItem(Path("b"), sc, "1.2.840.10008.1.2.4.50", 1),
    ]
    ((contexts, files),) = plan_associations(items, [RLE])
    offered = {(str(c.abstract_syntax), tuple(map(str, c.transfer_syntaxes))) for c in contexts}
    assert offered == {
        (ct, (EXPLICIT, IMPLICIT)),
        (ct, (RLE,)),
        (sc, ("1.2.840.10008.1.2.4.50",)),
        (sc, (EXPLICIT, IMPLICIT)),  # so that the JPEG file can be decompressed
        (sc, (RLE,)),
    }
    assert files == items
    ((contexts, _),) = plan_associations(items, [RLE], uncompressed=False)
    assert {tuple(map(str, c.transfer_syntaxes)) for c in contexts} == {(RLE,)}
    # 50 classes with 3 contexts each: a class's contexts never straddle two associations.
    many = [SendItem(Path(f"{n}"), f"1.2.3.{n}", "1.2.840.10008.1.2.4.50", 1) for n in range(50)]
    plans = plan_associations(many, [RLE])
    assert [len(c) for c, _ in plans] == [126, 24]
    for contexts, files in plans:
        assert {f.sop_class for f in files} == {str(c.abstract_syntax) for c in contexts}


# -- dicomio storescp: --accept and --store-as ---------------------------------------------------


def test_storescp_accept_list_is_the_acceptors_preference(tmp_path: Path) -> None:
    """dicomio storescu proposes [Explicit, Implicit] for an Explicit VR file; dicomio
    storescp --accept implicit --accept explicit takes Implicit, its own first choice, and
    the file is converted to it. (DCMTK storescu is no use here: it proposes a context with
    the file's own syntax alone beside its list.)"""
    out = tmp_path / "rx"
    ct = TEST_FILES / "CT_small.dcm"
    with dicomio_server(
        tmp_path, "storescp", "-od", str(out), "--accept", "implicit", "--accept", "explicit"
    ) as server:
        result = storescu(server.port, ct)
        assert result.returncode == 0, text(result) + server.output()
    (got,) = files_in(out)
    assert _syntax(got) == IMPLICIT
    assert np.array_equal(received_pixels(got), pydicom.dcmread(ct).pixel_array)


def test_storescp_accept_list_holds_for_unknown_storage_classes(tmp_path: Path) -> None:
    """A private SOP class, which storescp accepts though it knows no such class, is held to
    ``--accept`` like the rest: offered JPEG alone it is refused, offered beside Explicit VR
    it gets Explicit VR."""
    import anyio

    from dicomio import AE

    private = "1.2.826.0.1.3680043.9.9999.1.1"
    jpeg = "1.2.840.10008.1.2.4.50"

    async def negotiate(port: int) -> tuple[list[str | None], list[int]]:
        ae = AE("CLIENT")
        ae.add_requested_context(private, [jpeg])
        ae.add_requested_context(private, [jpeg, EXPLICIT])
        with anyio.fail_after(30):
            async with ae.associate(LOOPBACK, port, ae_title="STORESCP") as assoc:
                return (
                    [cx.transfer_syntax for cx in assoc.accepted_contexts],
                    [cx.context_id for cx in assoc.rejected_contexts],
                )

    with dicomio_server(
        tmp_path, "storescp", "-od", str(tmp_path / "rx"), "--accept", "explicit"
    ) as server:
        accepted, rejected = anyio.run(negotiate, server.port)
    assert accepted == [EXPLICIT]
    assert rejected == [1]


def test_storescp_store_as_and_its_failure(tmp_path: Path) -> None:
    """--store-as jpeg-ls-lossless files a JPEG-LS instance; --store-as j2k (lossy, not
    allowed) refuses with 0xC000 and an Error Comment, and leaves nothing on disk."""
    tools = require_dcmtk("storescu")
    ct = TEST_FILES / "CT_small.dcm"
    out = tmp_path / "rx"
    with dicomio_server(
        tmp_path, "storescp", "-od", str(out), "--store-as", "jpeg-ls-lossless"
    ) as server:
        result = storescu(server.port, ct)
        assert result.returncode == 0, text(result) + server.output()
    (got,) = files_in(out)
    assert _syntax(got) == JPEG_LS_LOSSLESS
    assert np.array_equal(received_pixels(got), pydicom.dcmread(ct).pixel_array)

    refused = tmp_path / "refused"
    (tmp_path / "second").mkdir()
    with dicomio_server(
        tmp_path / "second", "storescp", "-od", str(refused), "--store-as", "j2k"
    ) as server:
        argv = [tools["storescu"], "-v", "-aec", "STORESCP", LOOPBACK, str(server.port)]
        result = run([*argv, str(ct)])
        log = server.output()
    assert "Error: CannotUnderstand" in text(result), text(result)
    assert "lossy" in log, log
    assert files_in(refused) == []


# -- dicomio qrscp: compressed archive, --store-as ------------------------------------------------


@pytest.fixture
def compressed_study(tmp_path: Path) -> tuple[str, dict[str, Path]]:
    """The compressed test files made one study (new UIDs; pixels untouched); returns the
    Study Instance UID and, per new SOP Instance UID, the original file."""
    folder = tmp_path / "study"
    folder.mkdir()
    study, series = generate_uid(), generate_uid()
    originals: dict[str, Path] = {}
    for n, name in enumerate(COMPRESSED_FILES):
        path = TEST_FILES / name
        if not path.exists() or not get_decoder(_syntax(path)).is_available:
            continue
        ds = pydicom.dcmread(path)
        uid = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.Modality, ds.InstanceNumber = "TRANSCODE", "OT", n + 1
        ds.save_as(folder / name)
        originals[uid] = path
    return study, originals


def _check_delivered(out: Path, originals: dict[str, Path]) -> None:
    got = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in files_in(out)}
    assert set(got) == set(originals)
    for uid, path in got.items():
        assert _syntax(path) in UNCOMPRESSED, path
        assert np.array_equal(received_pixels(path), expected_pixels(originals[uid])), path


def test_qrscp_delivers_compressed_instances_to_uncompressed_only_peers(
    compressed_study: tuple[str, dict[str, Path]], tmp_path: Path
) -> None:
    """DCMTK getscu (proposing only uncompressed syntaxes) and movescu to a DCMTK storescp
    (its default: uncompressed only) get every compressed instance, decompressed."""
    tools = require_dcmtk("getscu", "movescu")
    study, originals = compressed_study
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}"]
    with (
        dcmtk_storescp(tmp_path) as (move_port, moved),
        dicomio_server(
            tmp_path,
            "qrscp",
            "--data",
            str(tmp_path / "data"),
            "--dest",
            f"STORESCP={LOOPBACK}:{move_port}",
        ) as server,
    ):
        result = run(
            dicomio(
                "storescu",
                LOOPBACK,
                str(server.port),
                "-aec",
                "DICOMIO",
                str(tmp_path / "study"),
            )
        )
        assert result.returncode == 0, text(result)
        got = tmp_path / "got"
        got.mkdir()
        result = run(
            [
                tools["getscu"],
                "-S",
                "-aec",
                "DICOMIO",
                "-od",
                str(got),
                *keys,
                LOOPBACK,
                str(server.port),
            ]
        )
        assert "Failed" not in text(result) or "Release" in text(result), text(result)
        _check_delivered(got, originals)
        result = run(
            [
                tools["movescu"],
                "-S",
                "-aec",
                "DICOMIO",
                "-aem",
                "STORESCP",
                *keys,
                LOOPBACK,
                str(server.port),
            ]
        )
        assert result.returncode == 0, text(result) + server.output()
    _check_delivered(moved, originals)


def test_qrscp_store_as_records_the_stored_syntax(tmp_path: Path) -> None:
    """qrscp --store-as rle stores and indexes RLE; --store-as j2k (lossy, not allowed)
    refuses, and neither the archive nor its index keeps anything of the instance."""
    ct = TEST_FILES / "CT_small.dcm"
    uid = str(pydicom.dcmread(ct).SOPInstanceUID)
    data = tmp_path / "data"
    with dicomio_server(tmp_path, "qrscp", "--data", str(data), "--store-as", "rle") as server:
        result = run(dicomio("storescu", LOOPBACK, str(server.port), "-aec", "DICOMIO", str(ct)))
        assert result.returncode == 0, text(result) + server.output()
    with sqlite3.connect(data / "index.sqlite") as db:
        ((syntax, relative),) = db.execute(
            "SELECT transfer_syntax, path FROM instances WHERE sop_uid = ?", (uid,)
        ).fetchall()
    assert syntax == RLE
    assert _syntax(data / "files" / relative) == RLE

    data2 = tmp_path / "data2"
    (tmp_path / "second").mkdir()
    with dicomio_server(
        tmp_path / "second", "qrscp", "--data", str(data2), "--store-as", "j2k"
    ) as server:
        result = run(dicomio("storescu", LOOPBACK, str(server.port), "-aec", "DICOMIO", str(ct)))
        log = server.output()
    assert result.returncode == 1, text(result)
    assert "lossy" in log, log
    assert [p for p in files_in(data2) if not p.name.startswith("index.sqlite")] == []
    with sqlite3.connect(data2 / "index.sqlite") as db:
        assert db.execute("SELECT count(*) FROM instances").fetchone() == (0,)


def test_server_acceptance_options_parse(tmp_path: Path) -> None:
    import argparse

    from dicomio.apps._common import UsageError
    from dicomio.apps._scp_commands import _acceptance
    from dicomio.apps.cli import build_parser

    def accepted(*argv: str) -> Sequence[str] | None:
        args: argparse.Namespace = build_parser().parse_args(["storescp", *argv])
        return _acceptance(args, "storescp")

    assert accepted() is None  # every syntax, the requestor's order: as before
    assert accepted("+xa") is None
    assert accepted("+x=") == [EXPLICIT, "1.2.840.10008.1.2.2", IMPLICIT]
    assert accepted("--accept", "rle", "--accept", "explicit") == [RLE, EXPLICIT]
    assert accepted("+xr") == [RLE, EXPLICIT, "1.2.840.10008.1.2.2", IMPLICIT]
    with pytest.raises(UsageError):
        accepted("+xa", "+xr")
    with pytest.raises(UsageError):
        accepted("--store-as", "nonsense")
    config = tmp_path / "s.toml"
    config.write_text(
        '[storescp]\naccept = ["jpeg-ls-lossless", "uncompressed"]\nstore_as = "rle"\n'
    )
    assert accepted("--config", str(config))[:2] == [JPEG_LS_LOSSLESS, EXPLICIT]  # type: ignore[index]
    assert accepted("--config", str(config), "--accept", "rle") == [RLE]


def test_dicomio_getscu_and_movescu_print_the_failures(tmp_path: Path) -> None:
    """A stored instance that cannot be decompressed (pydicom cannot decode JPEG-lossy.dcm)
    for a getscu/movescu receiving only Explicit VR: the sub-operation fails, and both
    commands print the final Error Comment and the Failed SOP Instance UID List."""
    ds = pydicom.dcmread(TEST_FILES / "JPEG-lossy.dcm")
    uid = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = generate_uid(), generate_uid(), "X"
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "broken.dcm")
    keys = [
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={ds.StudyInstanceUID}",
    ]
    with (
        dcmtk_storescp(tmp_path) as (move_port, _),
        dicomio_server(
            tmp_path,
            "qrscp",
            "--data",
            str(tmp_path / "data"),
            "--dest",
            f"STORESCP={LOOPBACK}:{move_port}",
        ) as server,
    ):
        result = run(
            dicomio(
                "storescu", LOOPBACK, str(server.port), "-aec", "DICOMIO", str(tmp_path / "in")
            )
        )
        assert result.returncode == 0, text(result)
        sc_explicit = f"{ds.SOPClassUID}:{EXPLICIT}"
        common = [LOOPBACK, str(server.port), "-aec", "DICOMIO", *keys]
        got = str(tmp_path / "got")
        get = run(dicomio("getscu", *common, "-od", got, "--storage-class", sc_explicit))
        move = run(dicomio("movescu", *common, "-aem", "STORESCP"))
    for result in (get, move):
        assert result.returncode == 1, text(result)
        assert "failed 1" in text(result), text(result)
        assert "E: error comment: " in text(result), text(result)
        assert f"E: failed SOP instance: {uid}" in text(result), text(result)


def test_acceptor_order_picks_our_first_proposed_syntax() -> None:
    from dicomio.pdu import PresentationContextRQ
    from dicomio.presentation import build_context, negotiate_as_acceptor

    ct = "1.2.840.10008.5.1.4.1.1.2"
    rq = [
        PresentationContextRQ(context_id=1, abstract_syntax=ct, transfer_syntaxes=[EXPLICIT, RLE])
    ]
    ours = [build_context(ct, [RLE, EXPLICIT])]
    (theirs,), _, _ = negotiate_as_acceptor(rq, ours)
    (mine,), _, _ = negotiate_as_acceptor(rq, ours, acceptor_order=True)
    assert (theirs.transfer_syntax, mine.transfer_syntax) == (EXPLICIT, RLE)
