"""benchmarks.timed: wrapped functions keep doing what they did, and their time and calls are
counted, for plain functions, coroutine functions, methods and static methods alike."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from benchmarks.timed import Tally

MODULE = "tests_bench_timed_subject"


def make_subject() -> types.ModuleType:
    """A throwaway module with a class and a function of its own, made anew for each test so
    that the patches do not leak."""

    class Subject:
        def method(self, x: int) -> int:
            return x + 1

        @staticmethod
        def static(x: int) -> int:
            return x * 2

        async def coroutine(self, x: int) -> int:
            await anyio.lowlevel.checkpoint()
            return x - 1

    def failing() -> None:
        raise RuntimeError("counted anyway")

    module = types.ModuleType(MODULE)
    module.Subject = Subject  # type: ignore[attr-defined]
    module.failing = failing  # type: ignore[attr-defined]
    return module


@pytest.fixture
def subject() -> Iterator[types.ModuleType]:
    sys.modules[MODULE] = module = make_subject()
    yield module
    del sys.modules[MODULE]


def test_wrapped_functions_behave_and_are_counted(subject: Any) -> None:
    tally = Tally()
    for name in ("Subject.method", "Subject.static", "Subject.coroutine", "failing"):
        tally.install(f"{MODULE}:{name}")
    instance = subject.Subject()
    assert [instance.method(1), instance.method(2)] == [2, 3]
    assert (subject.Subject.static(4), instance.static(5)) == (8, 10)
    assert anyio.run(instance.coroutine, 7) == 6
    with pytest.raises(RuntimeError, match="counted anyway"):
        subject.failing()
    report = tally.report()
    assert {name: entry["calls"] for name, entry in report.items()} == {
        f"{MODULE}:Subject.method": 2,
        f"{MODULE}:Subject.static": 2,
        f"{MODULE}:Subject.coroutine": 1,
        f"{MODULE}:failing": 1,
    }
    assert all(entry["seconds"] >= 0 for entry in report.values())
    assert subject.Subject.method.__name__ == "method"  # functools.wraps


def test_a_function_imported_by_name_elsewhere_is_timed_there_too(subject: Any) -> None:
    user = types.ModuleType(MODULE + "_user")
    user.calls_it = subject.failing  # type: ignore[attr-defined]  # from subject import failing
    sys.modules[user.__name__] = user
    try:
        tally = Tally()
        tally.install(f"{MODULE}:failing")
        with pytest.raises(RuntimeError):
            user.calls_it()
        assert tally.report()[f"{MODULE}:failing"]["calls"] == 1
    finally:
        del sys.modules[user.__name__]


def test_a_name_without_a_function_is_refused() -> None:
    with pytest.raises(ValueError, match="module:function"):
        Tally().install(MODULE)
