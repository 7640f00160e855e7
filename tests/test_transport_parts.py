"""AsyncioSocketStream.send_parts: many buffers, one gathering write, same bytes as a join.

The lean stream is asyncio's; these tests run on that backend only. Every connection is on
127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import random

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomio._transport import SENDMSG_PARTS, AsyncioSocketStream
from tests.test_transport import (
    BLOCKING_SIZE,
    asyncio_only,
    connected,
    pattern,
    raw_read_exactly,
    read_exactly,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60), pytest.mark.uvloop]


def cut(data: bytes, sizes: list[int]) -> list[bytes | memoryview]:
    """``data`` in parts of these sizes (cycled), alternately bytes and memoryviews."""
    parts: list[bytes | memoryview] = []
    view = memoryview(data)
    position = 0
    index = 0
    while position < len(data):
        size = sizes[index % len(sizes)]
        piece = view[position : position + size]
        parts.append(bytes(piece) if index % 2 else piece)
        position += size
        index += 1
    return parts


@asyncio_only
async def test_parts_arrive_as_their_join(anyio_backend: str) -> None:
    data = pattern(300_000, seed=1)
    async with connected("anyio") as (ours, peer):
        assert isinstance(ours, AsyncioSocketStream)
        await ours.send_parts(cut(data, [12, 16_384, 1, 70_000]))
        with anyio.fail_after(10):
            assert await read_exactly(peer, len(data)) == data


@asyncio_only
async def test_more_parts_than_one_sendmsg_takes(anyio_backend: str) -> None:
    data = pattern(3 * SENDMSG_PARTS * 7 + 5, seed=2)
    parts = cut(data, [7])
    assert len(parts) > 2 * SENDMSG_PARTS
    async with connected("anyio") as (ours, peer):
        await ours.send_parts(parts)
        with anyio.fail_after(10):
            assert await read_exactly(peer, len(data)) == data


@asyncio_only
async def test_what_the_kernel_does_not_take_waits_in_order(anyio_backend: str) -> None:
    """A peer that does not read: sendmsg takes part, the rest waits; nothing is lost."""
    data = pattern(BLOCKING_SIZE, seed=3)
    parts = cut(data, [1 << 20, 12, 333_333])
    async with connected("raw") as (ours, sock):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ours.send_parts, parts)
            with anyio.fail_after(30):
                received = await raw_read_exactly(sock, len(data))
        assert received == data


@asyncio_only
async def test_after_send_soon_and_before_send(anyio_backend: str) -> None:
    """Queued send_soon bytes go first; a send after send_parts comes after it."""
    async with connected("anyio") as (ours, peer):
        assert isinstance(ours, AsyncioSocketStream)

        async def other() -> None:
            pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(other)  # something ready in this turn: send_soon queues
            assert await ours.send_soon(b"first,")
            await ours.send_parts([b"second", memoryview(b",third,")])
            await ours.send(b"fourth")
        with anyio.fail_after(10):
            assert await read_exactly(peer, 25) == b"first,second,third,fourth"


@asyncio_only
async def test_refused_after_close(anyio_backend: str) -> None:
    async with connected("raw") as (ours, _sock):
        await ours.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await ours.send_parts([b"x", b"y"])


@asyncio_only
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sizes=st.lists(st.integers(1, 100_000), min_size=1, max_size=6), seed=st.integers(0, 99))
async def test_any_cutting(anyio_backend: str, sizes: list[int], seed: int) -> None:
    data = random.Random(seed).randbytes(sum(sizes) * 3)
    async with connected("anyio") as (ours, peer):
        await ours.send_parts(cut(data, sizes))
        with anyio.fail_after(10):
            assert await read_exactly(peer, len(data)) == data
