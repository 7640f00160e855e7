"""C-ECHO both ways from command set templates: the default answers (no EVT_C_ECHO handler)
and the requestor's requests.

The SCP answers each C-ECHO-RQ with bytes built once per presentation context and SOP class
(``dicomio.dimse.fragment.message_id_template``) and the request's message ID: these tests
hold the answers to the message IDs asked, with many requests outstanding at once and
across presentation contexts, and check that debug logging (which takes the ordinary path)
answers the same; the requests come from the client's own templates
(``dicomio._scu._echo_template``), which debug logging also steps around. dicomio to
dicomio on 127.0.0.1, asyncio and trio; every wait bounded.

On asyncio the SCP also remembers a C-ECHO-RQ's PDU once it has answered it, and answers
later copies of it (another message ID, nothing else different) in the read callback,
without the Upper Layer or the command decoder: the last test holds that path to its
conditions.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from dicomio import AE, _transport, evt
from dicomio.sop import Verification

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

LOOPBACK = "127.0.0.1"
WINDOW = 16


def _ae(title: str) -> AE:
    ae = AE(title)
    ae.add_supported_context(Verification)
    ae.add_requested_context(Verification)
    ae.add_requested_context(Verification, ["1.2.840.10008.1.2.1"])
    ae.async_ops_window = (WINDOW, WINDOW)
    ae.dimse_timeout = 20
    return ae


async def _echoes(port: int, count: int) -> list[int]:
    statuses: list[int] = []
    async with _ae("SCU").associate(LOOPBACK, port, ae_title="SCP") as assoc:

        async def one() -> None:
            statuses.append((await assoc.send_c_echo()).Status)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(count):
                    tg.start_soon(one)
            # And one at a time, after the template exists.
            for _ in range(5):
                statuses.append((await assoc.send_c_echo()).Status)
    return statuses


async def test_outstanding_echoes_each_get_their_answer() -> None:
    async with _ae("SCP").start_server((LOOPBACK, 0)) as server:
        statuses = await _echoes(server.port, 200)
    assert statuses == [0] * 205


async def test_echo_answers_with_debug_logging(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="dicomio"):
        async with _ae("SCP").start_server((LOOPBACK, 0)) as server:
            statuses = await _echoes(server.port, 20)
    assert statuses == [0] * 25
    assert any("sending CEchoRSP" in r.getMessage() for r in caplog.records)
    assert any("sending CEchoRQ" in r.getMessage() for r in caplog.records)


async def test_a_repeated_echo_is_answered_from_its_bytes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scp_ae = _ae("SCP")
    async with (
        scp_ae.start_server((LOOPBACK, 0)) as server,
        _ae("SCU").associate(LOOPBACK, server.port, ae_title="SCP") as assoc,
    ):
        with anyio.fail_after(30):
            assert (await assoc.send_c_echo()).Status == 0
            [served] = [a for a in scp_ae.active_associations if a.is_acceptor]
            # What reaches the served association's Upper Layer from now on.
            fed: list[bytes] = []
            receive_data = served._ul.receive_data

            def counting(data: Any, *, now: float) -> Any:
                fed.append(bytes(data))
                return receive_data(data, now=now)

            served._ul.receive_data = counting  # type: ignore[method-assign]
            hooked = isinstance(served._stream, _transport.AsyncioSocketStream)

            async def echoes(count: int) -> None:
                fed.clear()
                for _ in range(count):
                    assert (await assoc.send_c_echo()).Status == 0

            # Each answer carries its request's message ID (the client matches them).
            await echoes(20)
            assert len(fed) == (0 if hooked else 20)

            # A handler bound meanwhile answers: the ordinary path again.
            called: list[int] = []

            async def on_echo(event: Any) -> int:
                called.append(event.request.message_id)
                return 0x0000

            served.bind(evt.EVT_C_ECHO, on_echo)
            await echoes(3)
            assert len(called) == 3 and len(fed) == 3
            served.unbind(evt.EVT_C_ECHO, on_echo)

            # Debug logging, whose lines the reader writes: the ordinary path too.
            with caplog.at_level(logging.DEBUG, logger="dicomio"):
                await echoes(2)
            assert len(fed) == 2
            await echoes(5)
            assert len(fed) == (0 if hooked else 5)
