"""Fragmentation into P-DATA-TF (PS3.8 D.1, E.1) and reassembly of messages (PS3.8 E.2)."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomio.dimse import (
    CEchoRQ,
    CFindRSP,
    CommandReceived,
    CStoreRQ,
    DataFragment,
    Message,
    MessageAssembler,
    MessageReceived,
    data_parts,
    data_pdu,
    encode_command,
    fragment,
    fragment_parts,
    max_fragment_size,
)
from dicomio.dimse.assembler import AssemblerEvent
from dicomio.dimse.fragment import UNLIMITED_FRAGMENT_SIZE, Templates
from dicomio.errors import LocalProtocolError, RemoteProtocolError
from dicomio.pdu import PDUReader, encode, encode_parts
from dicomio.pdu.items import PresentationDataValue
from dicomio.pdu.pdus import DataRun, PDataTF

STORE = CStoreRQ(
    message_id=3,
    affected_sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
    affected_sop_instance_uid="1.2.826.0.1.3680043.8.498.1",
    move_originator_application_entity_title="MOVESCU",
    move_originator_message_id=17,
)
ECHO = CEchoRQ(message_id=4)
STORE_COMMAND = encode_command(STORE)

max_pdu_lengths = st.sampled_from([0]) | st.integers(8, 20) | st.integers(21, 70_000)


def pdv(context_id: int, is_command: bool, is_last: bool, data: bytes) -> PDataTF:
    return PDataTF(
        pdvs=(
            PresentationDataValue(
                context_id=context_id, is_command=is_command, is_last=is_last, data=data
            ),
        )
    )


def feed(assembler: MessageAssembler, pdus: Iterable[PDataTF]) -> list[AssemblerEvent]:
    events: list[AssemblerEvent] = []
    for pdu in pdus:
        events.extend(assembler.receive(pdu))
    return events


def padded(dataset: bytes) -> bytes:
    """What is sent for ``dataset``: an odd one gets one 00H (PS3.5 A.5, PS3.8 E.1)."""
    return dataset + b"\x00" if len(dataset) % 2 else dataset


def streamed_bytes(events: list[AssemblerEvent]) -> bytes:
    assert isinstance(events[0], CommandReceived)
    fragments = events[1:]
    assert all(isinstance(e, DataFragment) for e in fragments)
    assert [e.is_last for e in fragments] == [False] * (len(fragments) - 1) + [True]  # type: ignore[union-attr]
    return b"".join(e.data for e in fragments)  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------
# Sizes


def test_max_fragment_size() -> None:
    assert max_fragment_size(0) == UNLIMITED_FRAGMENT_SIZE == 4 * 1024 * 1024
    assert max_fragment_size(16_384) == 16_378
    assert max_fragment_size(8) == 2
    assert max_fragment_size(9) == 2  # fragments are even (PS3.8 E.1)
    assert max_fragment_size(21) == 14
    for too_small in range(1, 8):
        with pytest.raises(LocalProtocolError):
            max_fragment_size(too_small)
    with pytest.raises(LocalProtocolError):
        next(fragment(1, STORE_COMMAND, b"data", 7))


@settings(max_examples=200, deadline=None)
@given(
    max_pdu=max_pdu_lengths,
    size=st.integers(0, 40_000),
    context_id=st.integers(0, 127).map(lambda n: 2 * n + 1),
    with_dataset=st.booleans(),
)
def test_fragment_and_reassemble(
    max_pdu: int, size: int, context_id: int, with_dataset: bool
) -> None:
    dataset = random.Random(size).randbytes(size) if with_dataset else None
    command = encode_command(STORE if with_dataset else ECHO)
    pdus = list(fragment(context_id, command, dataset, max_pdu))
    limit = max_fragment_size(max_pdu)
    kinds = []
    for pdu in pdus:
        assert len(pdu.pdvs) == 1
        item = pdu.pdvs[0]
        assert item.context_id == context_id
        assert len(item.data) <= limit
        if max_pdu:
            assert len(item.data) + 6 <= max_pdu  # PDV item within the P-DATA-TF limit
        assert len(item.data) % 2 == 0  # an odd data set is padded (PS3.8 E.1)
        kinds.append((item.is_command, item.is_last))
    # Command fragments first, each part flagged last exactly once, at its end.
    n_command = sum(1 for is_command, _ in kinds if is_command)
    assert all(is_command for is_command, _ in kinds[:n_command])
    assert [last for _, last in kinds[:n_command]] == [False] * (n_command - 1) + [True]
    data_kinds = kinds[n_command:]
    if dataset is None:
        assert not data_kinds
    else:
        assert [last for _, last in data_kinds] == [False] * (len(data_kinds) - 1) + [True]
        # Views of the data set, except a padded last fragment.
        views = pdus[n_command:-1] if size % 2 else pdus[n_command:]
        assert all(isinstance(pdu.pdvs[0].data, memoryview) for pdu in views)

    whole = feed(MessageAssembler(), pdus)
    message = STORE if with_dataset else ECHO
    sent = None if dataset is None else padded(dataset)
    assert whole == [MessageReceived(context_id=context_id, command=message, dataset=sent)]

    streaming = MessageAssembler(stream_if=lambda command: True)
    events = feed(streaming, pdus)
    if dataset is None:
        assert events == whole  # nothing to stream
    else:
        assert events[0] == CommandReceived(context_id=context_id, command=STORE)
        assert streamed_bytes(events) == padded(dataset)
    assert not streaming.in_progress(context_id)


@settings(max_examples=200, deadline=None)
@given(
    max_pdu=max_pdu_lengths,
    size=st.integers(0, 40_000),
    command_size=st.sampled_from([len(STORE_COMMAND), 70_000]),
    context_id=st.integers(0, 127).map(lambda n: 2 * n + 1),
    with_dataset=st.booleans(),
)
def test_fragment_parts_are_the_encoded_fragments(
    max_pdu: int, size: int, command_size: int, context_id: int, with_dataset: bool
) -> None:
    dataset = random.Random(size).randbytes(size) if with_dataset else None
    command = (STORE_COMMAND * (command_size // len(STORE_COMMAND) + 1))[:command_size]
    pdus = list(fragment(context_id, command, dataset, max_pdu))
    parts = fragment_parts(context_id, command, dataset, max_pdu)
    if dataset is None or size % 2 == 0:
        assert parts == [part for pdu in pdus for part in encode_parts(pdu)]
    else:  # the pad is a buffer of its own behind the last view
        assert parts[-1] == b"\x00"
    assert b"".join(parts) == b"".join(encode(pdu) for pdu in pdus)
    reader = PDUReader(max_pdu)
    reader.feed(b"".join(parts))
    assert list(reader) == pdus


@settings(max_examples=200, deadline=None)
@given(max_pdu=max_pdu_lengths, size=st.integers(0, 40_000), is_last=st.booleans())
def test_data_parts_are_the_encoded_data_pdus(max_pdu: int, size: int, is_last: bool) -> None:
    chunk = memoryview(random.Random(size).randbytes(size))
    step = max_fragment_size(max_pdu)
    pieces: list[bytes | memoryview] = [
        chunk[start : start + step] for start in range(0, size, step)
    ]
    if not pieces and is_last:
        pieces = [chunk]
    if is_last and size % 2:
        pieces[-1] = padded(bytes(pieces[-1]))
    pdus = [
        data_pdu(7, piece, is_last and index == len(pieces) - 1)
        for index, piece in enumerate(pieces)
    ]
    parts = data_parts(7, chunk, max_pdu, is_last=is_last)
    if is_last and size % 2:
        assert b"".join(parts) == b"".join(part for pdu in pdus for part in encode_parts(pdu))
    else:
        assert parts == [part for pdu in pdus for part in encode_parts(pdu)]


def test_streamed_data_parts_reassemble() -> None:
    dataset = random.Random(3).randbytes(100_000)
    step = max_fragment_size(1000)
    batch = 7 * step  # whole fragments except at the end
    parts = fragment_parts(1, STORE_COMMAND, None, 1000)
    for start in range(0, len(dataset), batch):
        chunk = dataset[start : start + batch]
        parts += data_parts(1, chunk, 1000, is_last=start + batch >= len(dataset))
    reader = PDUReader(1000)
    reader.feed(b"".join(parts))
    events = feed(MessageAssembler(), list(reader))  # type: ignore[arg-type]
    assert events == [MessageReceived(context_id=1, command=STORE, dataset=dataset)]


def test_fragment_parts_share_buffers() -> None:
    dataset = bytes(range(256)) * 400  # 102,400 bytes: six full 16,378-byte fragments and a rest
    parts = fragment_parts(1, STORE_COMMAND, dataset, 16_384)
    headers, fragments = parts[2::2], parts[3::2]
    assert len(fragments) == 7
    assert all(header is headers[0] for header in headers[:-1])  # one header object, reused
    assert headers[-1] != headers[0]  # the last fragment is shorter and flagged last
    assert all(isinstance(data, memoryview) and data.obj is dataset for data in fragments)
    assert parts[1] is STORE_COMMAND


def test_fragment_parts_refuse_what_cannot_be_sent() -> None:
    with pytest.raises(LocalProtocolError):
        fragment_parts(1, STORE_COMMAND, b"data", 7)
    for context_id in (0, 2, 256):
        with pytest.raises(LocalProtocolError):
            fragment_parts(context_id, STORE_COMMAND, b"data", 0)


def test_data_fragments_are_views_not_copies() -> None:
    dataset = bytearray(b"\x01\x02" * 100)
    pdus = list(fragment(1, STORE_COMMAND, dataset, 64))
    data = next(p.pdvs[0].data for p in pdus if not p.pdvs[0].is_command)
    assert isinstance(data, memoryview)
    dataset[0] = 0xFF
    assert data[0] == 0xFF


def test_empty_data_set_still_ends_the_message() -> None:
    pdus = list(fragment(1, STORE_COMMAND, b"", 0))
    assert [(p.pdvs[0].is_command, p.pdvs[0].is_last, len(p.pdvs[0].data)) for p in pdus] == [
        (True, True, len(STORE_COMMAND)),
        (False, True, 0),
    ]
    assert feed(MessageAssembler(), pdus) == [
        MessageReceived(context_id=1, command=STORE, dataset=b"")
    ]


def test_a_repeated_command_set_is_decoded_once_and_others_as_usual() -> None:
    pending = CFindRSP(
        message_id_being_responded_to=5,
        status=0xFF00,
        affected_sop_class_uid="1.2.840.10008.5.1.4.1.2.2.1",
        has_dataset=True,
    )
    final = CFindRSP(
        message_id_being_responded_to=5,
        status=0,
        affected_sop_class_uid="1.2.840.10008.5.1.4.1.2.2.1",
    )
    pdus = []
    for i in range(3):
        pdus += list(fragment(1, encode_command(pending), b"\x08\x00\x50\x00" + bytes([i]) * 4, 0))
    pdus += list(fragment(1, encode_command(final), None, 0))
    events = feed(MessageAssembler(), pdus)
    commands = [e.command for e in events if isinstance(e, MessageReceived)]
    assert commands == [pending, pending, pending, final]
    assert commands[0] is commands[1] is commands[2]  # decoded once: an immutable value
    assert [e.dataset[-1] for e in events[:3] if isinstance(e, MessageReceived) and e.dataset] == [
        0,
        1,
        2,
    ]


def test_ten_megabytes_at_sixteen_kilobytes() -> None:
    dataset = random.Random(10).randbytes(10 * 1024 * 1024)
    pdus = list(fragment(5, STORE_COMMAND, dataset, 16_384))
    assert len(pdus) == 1 + -(-len(dataset) // 16_378)
    assert max(len(p.pdvs[0].data) for p in pdus) == 16_378
    events = feed(MessageAssembler(), pdus)
    assert len(events) == 1
    assert isinstance(events[0], MessageReceived)
    assert events[0].dataset == dataset


def test_data_pdu_for_streaming_senders() -> None:
    chunks = [b"ab", b"cd", b"ef"]
    assembler = MessageAssembler()
    events = assembler.receive(next(fragment(3, STORE_COMMAND, None, 0)))
    assert events == []
    assert assembler.expects_data(3)
    for i, chunk in enumerate(chunks):
        events = assembler.receive(data_pdu(3, chunk, i == len(chunks) - 1))
    assert events == [MessageReceived(context_id=3, command=STORE, dataset=b"abcdef")]
    assert not assembler.expects_data(3)


# --------------------------------------------------------------------------------------
# Reassembly rules


def test_several_pdvs_in_one_pdata_tf_and_several_messages() -> None:
    pdus = [
        *fragment(1, encode_command(ECHO), None, 30),
        *fragment(1, STORE_COMMAND, b"0123456789", 0),
    ]
    merged = PDataTF(pdvs=[p.pdvs[0] for p in pdus])
    assert MessageAssembler().receive(merged) == [
        MessageReceived(context_id=1, command=ECHO, dataset=None),
        MessageReceived(context_id=1, command=STORE, dataset=b"0123456789"),
    ]


def test_interleaved_contexts_keep_separate_state() -> None:
    # PS3.8 E.1 forbids interleaving; we accept it across contexts (see assembler docs).
    one = list(fragment(1, STORE_COMMAND, b"a" * 40, 20))
    three = list(fragment(3, encode_command(ECHO), None, 20))
    mixed = [one[0], three[0], *one[1:3], *three[1:], *one[3:]]
    assembler = MessageAssembler()
    events = feed(assembler, mixed)
    assert events == [
        MessageReceived(context_id=3, command=ECHO, dataset=None),
        MessageReceived(context_id=1, command=STORE, dataset=b"a" * 40),
    ]


def test_stream_if_decides_per_message() -> None:
    rsp = CFindRSP(message_id_being_responded_to=3, status=0xFF00, has_dataset=True)
    assembler = MessageAssembler(stream_if=lambda command: isinstance(command, CStoreRQ))
    events = feed(
        assembler,
        [
            *fragment(1, encode_command(rsp), b"identifier", 0),
            *fragment(1, STORE_COMMAND, b"pixels" * 4, 16),
        ],
    )
    assert events[0] == MessageReceived(context_id=1, command=rsp, dataset=b"identifier")
    assert events[1] == CommandReceived(context_id=1, command=STORE)
    assert streamed_bytes(events[1:]) == b"pixels" * 4


def test_command_split_anywhere() -> None:
    for cut in range(1, len(STORE_COMMAND)):
        pdus = [
            pdv(1, True, False, STORE_COMMAND[:cut]),
            pdv(1, True, True, STORE_COMMAND[cut:]),
            pdv(1, False, True, b"xy"),
        ]
        assert feed(MessageAssembler(), pdus) == [
            MessageReceived(context_id=1, command=STORE, dataset=b"xy")
        ]


def test_data_before_any_command() -> None:
    with pytest.raises(RemoteProtocolError, match="no command"):
        MessageAssembler().receive(pdv(1, False, True, b"xx"))


def test_data_before_the_command_is_complete() -> None:
    assembler = MessageAssembler()
    assembler.receive(pdv(1, True, False, STORE_COMMAND[:20]))
    assert assembler.in_progress(1)
    assert not assembler.expects_data(1)
    with pytest.raises(RemoteProtocolError, match="before the last fragment"):
        assembler.receive(pdv(1, False, True, b"xx"))


def test_command_while_data_set_expected() -> None:
    assembler = MessageAssembler()
    assembler.receive(pdv(1, True, True, STORE_COMMAND))
    assembler.receive(pdv(1, False, False, b"xx"))
    with pytest.raises(RemoteProtocolError, match="still expected"):
        assembler.receive(pdv(1, True, True, STORE_COMMAND))


def test_data_after_a_command_without_data_set() -> None:
    assembler = MessageAssembler()
    assert assembler.receive(pdv(1, True, True, encode_command(ECHO))) == [
        MessageReceived(context_id=1, command=ECHO, dataset=None)
    ]
    with pytest.raises(RemoteProtocolError, match="0101H"):
        assembler.receive(pdv(1, False, True, b"xx"))


def test_malformed_command_set_raises_remote_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError):
        MessageAssembler().receive(pdv(1, True, True, STORE_COMMAND[:-3]))


def test_command_set_length_is_bounded() -> None:
    assembler = MessageAssembler(max_command_length=100)
    assembler.receive(pdv(1, True, False, b"\x00" * 100))
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        assembler.receive(pdv(1, True, False, b"\x00" * 2))


def test_message_boundaries_reset_state() -> None:
    assembler = MessageAssembler()
    messages: list[tuple[Message, bytes | None]] = [
        (STORE, b"1234"),
        (ECHO, None),
        (STORE, b""),
        (STORE, b"5" * 100),
    ]
    for message, dataset in messages:
        events = feed(assembler, fragment(7, encode_command(message), dataset, 16))
        assert events == [MessageReceived(context_id=7, command=message, dataset=dataset)]
        assert not assembler.in_progress(7)


def test_a_data_set_in_one_bytes_fragment_is_not_copied() -> None:
    # What PDUReader makes of a one-PDV P-DATA-TF that straddles its reads.
    dataset = bytes(range(256)) * 8
    assembler = MessageAssembler()
    assembler.receive(pdv(1, True, True, STORE_COMMAND))
    (event,) = assembler.receive(pdv(1, False, True, dataset))
    assert isinstance(event, MessageReceived)
    assert event.dataset is dataset


def test_collecting_state_follows_the_message() -> None:
    assembler = MessageAssembler()
    for _ in range(3):
        assert (
            feed(assembler, [pdv(1, True, True, STORE_COMMAND), pdv(1, False, False, b"ab")]) == []
        )
        assert assembler.expects_data(1)
        assert assembler.receive(pdv(1, False, True, b"cd")) == [
            MessageReceived(context_id=1, command=STORE, dataset=b"abcd")
        ]
        assert not assembler.in_progress(1)
    # A stray non-last data fragment after the message ended is still refused.
    with pytest.raises(RemoteProtocolError, match="no command"):
        assembler.receive(pdv(1, False, False, b"ef"))


# --------------------------------------------------------------------------------------
# Runs of data set fragments (DataRun)


def _group_runs(pdus: list[PDataTF], cuts: list[bool]) -> list[PDataTF | DataRun]:
    """Put consecutive one-PDV, non-last data set fragments of one context into runs.

    ``cuts`` decides where a run may also end early (cycled), as reads would cut them.
    """
    out: list[PDataTF | DataRun] = []
    run: list[PresentationDataValue] = []

    def flush() -> None:
        if run:
            out.append(DataRun(run[0].context_id, [item.data for item in run]))
            run.clear()

    for index, pdu in enumerate(pdus):
        item = pdu.pdvs[0] if len(pdu.pdvs) == 1 else None
        if item is None or item.is_command or item.is_last:
            flush()
            out.append(pdu)
            continue
        if run and (run[0].context_id != item.context_id or cuts[index % len(cuts)]):
            flush()
        run.append(item)
    flush()
    return out


def _outcome(
    assembler: MessageAssembler, items: Iterable[PDataTF | DataRun]
) -> tuple[list[AssemblerEvent], str | None]:
    events: list[AssemblerEvent] = []
    try:
        for item in items:
            events += assembler.receive(item)
    except RemoteProtocolError as exc:
        return events, str(exc)
    return events, None


_MESSAGE_PIECES = st.sampled_from(
    [
        [pdv(1, True, True, STORE_COMMAND)],
        [pdv(3, True, True, STORE_COMMAND)],
        [pdv(1, True, False, STORE_COMMAND[:10]), pdv(1, True, True, STORE_COMMAND[10:])],
        [pdv(1, True, True, encode_command(ECHO))],
        [pdv(1, False, False, b"ab")],
        [pdv(1, False, False, b"cdef")],
        [pdv(3, False, False, b"gh")],
        [pdv(1, False, True, b"ij")],
        [pdv(3, False, True, b"kl")],
        [
            PDataTF(
                pdvs=[
                    PresentationDataValue(1, False, False, b"mn"),
                    PresentationDataValue(3, False, False, b"op"),
                ]
            )
        ],
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(_MESSAGE_PIECES, max_size=25),
    cuts=st.lists(st.booleans(), min_size=1, max_size=5),
    stream=st.sampled_from([None, True, False, "store"]),
)
def test_a_data_run_gives_what_its_pdus_give(
    pieces: list[list[PDataTF]], cuts: list[bool], stream: bool | str | None
) -> None:
    pdus = [pdu for piece in pieces for pdu in piece]
    items = _group_runs(pdus, cuts)

    def stream_if(command: Message) -> bool:
        return isinstance(command, CStoreRQ) if stream == "store" else bool(stream)

    expected = _outcome(MessageAssembler(stream_if=None if stream is None else stream_if), pdus)
    got = _outcome(MessageAssembler(stream_if=None if stream is None else stream_if), items)
    assert got == expected


@settings(max_examples=100, deadline=None)
@given(
    max_pdu=st.integers(8, 5000),
    size=st.integers(0, 30_000),
    read_size=st.integers(1, 70_000),
    stream=st.booleans(),
)
def test_reader_runs_reassemble_what_fragment_parts_sent(
    max_pdu: int, size: int, read_size: int, stream: bool
) -> None:
    dataset = random.Random(size).randbytes(size)
    wire = b"".join(fragment_parts(5, STORE_COMMAND, dataset, max_pdu))
    reader = PDUReader(max_pdu)
    assembler = MessageAssembler(stream_if=lambda command: stream)
    events: list[AssemblerEvent] = []
    for start in range(0, len(wire), read_size):
        reader.feed(wire[start : start + read_size])
        while (item := reader.next_pdu_or_run()) is not None:
            assert isinstance(item, (PDataTF, DataRun))
            events += assembler.receive(item)
    if stream:
        assert events[0] == CommandReceived(context_id=5, command=STORE)
        assert streamed_bytes(events) == padded(dataset)
    else:
        assert events == [MessageReceived(context_id=5, command=STORE, dataset=padded(dataset))]
    assert not assembler.in_progress(5)


def test_assembler_idle_between_messages() -> None:
    assembler = MessageAssembler()
    assert assembler.idle
    assert assembler.receive(pdv(3, True, True, STORE_COMMAND)) == []
    assert not assembler.idle  # the command arrived, its data set is awaited
    (event,) = assembler.receive(pdv(3, False, True, b"\x08\x00\x00\x00"))
    assert isinstance(event, MessageReceived)
    assert assembler.idle


# -- command set templates --------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    message_id=st.integers(0, 0xFFFF),
    context_id=st.integers(1, 255).filter(lambda n: n & 1),
    uid=st.from_regex(r"1\.2(\.[1-9][0-9]{0,8}){0,6}", fullmatch=True),
    status=st.sampled_from([0x0000, 0x0211, 0xC000]),
)
def test_message_id_template_gives_the_message_bytes(
    message_id: int, context_id: int, uid: str, status: int
) -> None:
    from dicomio.dimse import CEchoRSP
    from dicomio.dimse.fragment import message_id_template

    def echo_rsp(answered: int) -> CEchoRSP:
        return CEchoRSP(
            message_id_being_responded_to=answered,
            affected_sop_class_uid=uid,
            status=status,
            has_dataset=False,
        )

    template = message_id_template(context_id, echo_rsp(1), 16384, "message_id_being_responded_to")
    assert template is not None
    head, tail = template
    expected = b"".join(
        fragment_parts(context_id, encode_command(echo_rsp(message_id)), None, 16384)
    )
    assert head + message_id.to_bytes(2, "little") + tail == expected


def test_message_id_template_only_for_one_pdu_without_data_set() -> None:
    from dicomio.dimse import CEchoRQ, CStoreRQ
    from dicomio.dimse.fragment import message_id_template

    echo = CEchoRQ(message_id=1, affected_sop_class_uid="1.2.840.10008.1.1")
    assert message_id_template(1, echo, 16384, "message_id") is not None
    assert message_id_template(1, echo, 40, "message_id") is None  # two fragments
    store = CStoreRQ(
        message_id=1,
        affected_sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        affected_sop_instance_uid="1.2.3",
    )
    assert message_id_template(1, store, 16384, "message_id") is None


_uids = st.from_regex(r"1\.2(\.[1-9][0-9]{0,8}){0,6}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    message_ids=st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    context_id=st.integers(1, 255).filter(lambda n: n & 1),
    class_uid=_uids,
    instance_uids=st.tuples(_uids, _uids),
    status=st.sampled_from([0x0000, 0xB000, 0xA700, 0xC000]),
    max_pdu=st.sampled_from([0, 128, 16384]),
)
def test_instance_uid_template_gives_the_message_bytes(
    message_ids: tuple[int, int],
    context_id: int,
    class_uid: str,
    instance_uids: tuple[str, str],
    status: int,
    max_pdu: int,
) -> None:
    """A C-STORE-RSP's template, filled with another message ID and another instance UID
    of the same encoded length, gives that response's bytes as fragmenting it does."""
    from dicomio.dimse import CStoreRSP
    from dicomio.dimse.fragment import instance_uid_template

    def store_rsp(answered: int, uid: str) -> CStoreRSP:
        return CStoreRSP(
            message_id_being_responded_to=answered,
            affected_sop_class_uid=class_uid,
            affected_sop_instance_uid=uid,
            status=status,
            has_dataset=False,
        )

    first, other = instance_uids
    template = instance_uid_template(context_id, store_rsp(message_ids[0], first), max_pdu)
    expected = b"".join(
        fragment_parts(context_id, encode_command(store_rsp(message_ids[0], first)), None, max_pdu)
    )
    if template is None:
        assert max_pdu and len(expected) > max_pdu + 6  # only a response of several PDUs
        return
    head, tail = template
    value = other.encode() + b"\x00" * (len(other) & 1)
    if len(value) != len(first) + (len(first) & 1):
        return  # another length: another template
    expected = b"".join(
        fragment_parts(context_id, encode_command(store_rsp(message_ids[1], other)), None, max_pdu)
    )
    assert head + message_ids[1].to_bytes(2, "little") + tail + value == expected


def test_instance_uid_template_only_when_the_uid_ends_the_response() -> None:
    from dicomio.dimse import CEchoRSP, CStoreRSP
    from dicomio.dimse.fragment import instance_uid_template

    fields: dict[str, object] = {
        "message_id_being_responded_to": 1,
        "affected_sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "status": 0,
        "has_dataset": False,
    }
    store = CStoreRSP(affected_sop_instance_uid="1.2.3", **fields)  # type: ignore[arg-type]
    assert instance_uid_template(1, store, 16384) is not None
    assert instance_uid_template(1, CStoreRSP(**fields), 16384) is None  # type: ignore[arg-type]
    echo = CEchoRSP(**fields)  # type: ignore[arg-type]
    assert instance_uid_template(1, echo, 16384) is None
    assert instance_uid_template(1, store, 40) is None  # two fragments


def test_templates_are_made_once_per_key_and_bounded() -> None:
    made: list[int] = []

    def make(n: int) -> tuple[bytes, bytes]:
        made.append(n)
        return bytes([n]), b""

    templates: Templates[int] = Templates(kept=2)
    assert templates.get(1, lambda: make(1)) == (b"\x01", b"")
    assert templates.get(1, lambda: make(1)) == (b"\x01", b"")
    assert templates.get(2, lambda: make(2)) == (b"\x02", b"")
    assert templates.get(3, lambda: make(3)) is None  # full: the ordinary path
    assert made == [1, 2]


# -- received command templates -------------------------------------------------------------


def _request_pdu(context_id: int, message: Message) -> bytes:
    return b"".join(fragment_parts(context_id, encode_command(message), None, 16384))


@settings(max_examples=200, deadline=None)
@given(
    message_ids=st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    context_id=st.integers(1, 255).filter(lambda n: n & 1),
    class_uid=_uids,
    priority=st.sampled_from([0, 1, 2]),
)
def test_received_template_cuts_a_request_around_its_message_id(
    message_ids: tuple[int, int], context_id: int, class_uid: str, priority: int
) -> None:
    """A received one-PDU command, cut by ``received_template``, is the same command with
    any other message ID once the two bytes are put back (what the SCP's repeated C-ECHO
    path relies on), whatever precedes the Message ID element."""
    from dicomio.dimse import CFindRQ
    from dicomio.dimse.fragment import received_template

    first, other = message_ids
    for make in (
        lambda mid: CEchoRQ(message_id=mid, affected_sop_class_uid=class_uid),
        lambda mid: CFindRQ(message_id=mid, affected_sop_class_uid=class_uid, priority=priority),
    ):
        template = received_template(_request_pdu(context_id, make(first)))
        assert template is not None
        head, tail = template
        assert head + other.to_bytes(2, "little") + tail == _request_pdu(context_id, make(other))


def test_received_template_refuses_anything_but_one_whole_command_pdu() -> None:
    from dicomio.dimse.fragment import received_template

    pdu = _request_pdu(1, CEchoRQ(message_id=7))
    assert received_template(pdu) is not None
    # Cut short, or with more behind it: the lengths no longer frame it.
    for size in range(len(pdu)):
        assert received_template(pdu[:size]) is None
    assert received_template(pdu + pdu) is None
    assert received_template(pdu + b"\x00\x00") is None
    # Not a P-DATA-TF, not a whole command fragment (a data set, or not the last).
    assert received_template(b"\x05" + pdu[1:]) is None
    for control in (0x00, 0x01, 0x02):
        assert received_template(pdu[:11] + bytes([control]) + pdu[12:]) is None
    # Two PDVs in the PDU: the first PDV item's length no longer spans the PDU.
    two = bytearray(pdu[:6] + pdu[6:])
    two[6:10] = (len(pdu) - 11).to_bytes(4, "big")
    assert received_template(bytes(two)) is None
    # An element of another group, or a Message ID that is not 2 bytes.
    at = pdu.index(b"\x00\x00\x10\x01\x02\x00\x00\x00")
    assert received_template(pdu[:12] + b"\x08\x00" + pdu[14:]) is None
    wide = pdu[: at + 4] + b"\x04\x00\x00\x00" + pdu[at + 8 :]
    assert received_template(wide) is None
    # No Message ID at all (a response), or an element length running past the end.
    rsp = _request_pdu(1, CFindRSP(message_id_being_responded_to=7, status=0))
    assert received_template(rsp) is None
    huge = pdu[:16] + b"\xff\xff\xff\xff" + pdu[20:]
    assert received_template(huge) is None
