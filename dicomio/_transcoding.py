"""Running :mod:`dicomio.transcode` off the event loop, in worker processes or threads.

Pixel codecs are C, C++ and Rust extensions. They may hold the GIL for a whole frame, and a
corrupt stream may crash one (a panic is caught, a segmentation fault is not). So by default
each conversion runs in a codec worker process (``python -m dicomio._codec_worker``): at
most one per CPU, reused, killed when its caller is cancelled; one that dies fails that one
data set with :class:`~dicomio.errors.TranscodeError`, never the server. ``isolate=False``
runs it in a worker thread of this process instead, which saves the process start (about a
second, once per worker), for callers that trust their input.

Data goes by file both ways: the source is a path (the file being sent, or a temporary one
the caller wrote), and the worker writes the result to a temporary file that the caller
streams to the network and then deletes. The event loop's process never holds a decoded
frame, and holds no more of the data set than the send's chunk. (anyio.to_process is not
used: it pickles, and it runs the parent's main script again in every worker.)
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import attrs
from anyio.lowlevel import RunVar
from anyio.streams.buffered import BufferedByteReceiveStream

from dicomio import errors
from dicomio.errors import TranscodeError

__all__ = ["Transcoded", "transcode_file"]

#: Worker threads for codec work when not isolated: as many as CPUs, per event loop.
_thread_limiter: RunVar[anyio.CapacityLimiter] = RunVar("dicomio_codec_threads")
#: The codec worker processes of this event loop.
_pool: RunVar[_Pool] = RunVar("dicomio_codec_pool")
#: How long a new worker may take to import its codecs and say READY.
START_TIMEOUT = 60.0
#: The longest answer line a worker may send (an error message with its cause).
_MAX_ANSWER = 1 << 16
#: How long a worker whose output closed before READY gets to exit on its own.
_EXIT_GRACE = 5.0
#: A worker idle this long is stopped when the pool is next used: a server that converted a
#: batch an hour ago does not keep one process per CPU for ever.
IDLE_TIMEOUT = 300.0


class _Worker:
    """One codec worker process and its two pipes."""

    def __init__(self, process: anyio.abc.Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._requests = process.stdin
        self._answers = BufferedByteReceiveStream(process.stdout)

    async def ready(self) -> None:
        with anyio.fail_after(START_TIMEOUT):
            line = await self._answers.receive_until(b"\n", _MAX_ANSWER)
        if line != b"READY":
            raise OSError(f"the codec worker said {line[:80]!r} instead of READY")

    async def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        await self._requests.send(json.dumps(request).encode() + b"\n")
        answer: dict[str, Any] = json.loads(await self._answers.receive_until(b"\n", _MAX_ANSWER))
        return answer

    async def kill(self) -> None:
        with anyio.CancelScope(shield=True):
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
            await self.process.aclose()


class _Pool:
    """At most one worker process per CPU, started when needed and then kept."""

    def __init__(self) -> None:
        self.limiter = anyio.CapacityLimiter(os.cpu_count() or 2)
        #: Idle workers and when each became idle, most recent last.
        self.idle: list[tuple[_Worker, float]] = []
        self.processes: set[anyio.abc.Process] = set()
        with contextlib.suppress(Exception):
            # As anyio does for its own worker processes: they are killed when the event
            # loop ends, not left to find their pipe closed.
            from anyio._core._eventloop import get_async_backend

            get_async_backend().setup_process_pool_exit_at_shutdown(self.processes)

    async def _start(self) -> _Worker:
        env = dict(os.environ)
        # The worker imports dicomio from where this process did, installed or not.
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        # Its standard error is a pipe only so that anyio's shutdown hook, which closes all
        # three, can be used; the worker writes its messages to our standard error instead,
        # handed over as an extra descriptor, and the pipe stays empty.
        errors_fd = os.dup(2)
        try:
            process = await anyio.open_process(
                [sys.executable, "-m", "dicomio._codec_worker", str(errors_fd)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                pass_fds=(errors_fd,),
            )
        finally:
            os.close(errors_fd)
        self.processes.add(process)
        worker = _Worker(process)
        try:
            await worker.ready()
        except BaseException as exc:
            self.processes.discard(process)
            if isinstance(exc, (anyio.EndOfStream, anyio.IncompleteRead)):
                # Its output closed: it is exiting. Wait for that first, because killing
                # it now races the event loop's own wait for it (Popen.send_signal polls,
                # and may reap the child first, leaving asyncio to report exit status 255).
                with anyio.move_on_after(_EXIT_GRACE, shield=True):
                    await process.wait()
            await worker.kill()
            if isinstance(exc, Exception) and not isinstance(exc, anyio.get_cancelled_exc_class()):
                # It died importing its codecs (anyio's EndOfStream or IncompleteRead), said
                # something else, or took too long: one type for callers, who count a failed
                # sub-operation on TranscodeError.
                raise TranscodeError(
                    f"the codec worker process did not start (exit status "
                    f"{process.returncode}): {type(exc).__name__}: {exc}"
                ) from exc
            raise
        return worker

    async def _prune(self) -> None:
        now = anyio.current_time()
        while self.idle and now - self.idle[0][1] > IDLE_TIMEOUT:
            worker, _ = self.idle.pop(0)
            self.processes.discard(worker.process)
            await worker.kill()

    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        async with self.limiter:
            await self._prune()
            worker = self.idle.pop()[0] if self.idle else await self._start()
            try:
                answer = await worker.ask(request)
            except BaseException as exc:
                # Cancelled (the worker is killed: its work is no longer wanted), or the
                # worker died: either way it is not reused.
                self.processes.discard(worker.process)
                await worker.kill()
                if isinstance(exc, Exception) and not isinstance(
                    exc, anyio.get_cancelled_exc_class()
                ):
                    code = worker.process.returncode
                    raise TranscodeError(
                        f"the codec worker process ended abnormally (exit status {code}) "
                        f"converting {request['src']} to {request['target']}: a crash on "
                        "this input; nothing else is affected"
                    ) from exc
                raise
            self.idle.append((worker, anyio.current_time()))
            return answer


def _current_pool() -> _Pool:
    try:
        return _pool.get()
    except LookupError:
        pool = _Pool()
        _pool.set(pool)
        return pool


@attrs.frozen
class Transcoded:
    """A converted data set in a temporary file, which its owner deletes (``discard``)."""

    #: The file: a bare data set (what a C-STORE carries) or, if asked, a Part 10 file.
    path: Path
    #: The SOP Instance UID of the result: new if a lossy step made a new instance (PS3.4).
    sop_instance_uid: str
    size: int

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def _job(
    src: str,
    out: str,
    target: str,
    source_syntax: str | None,
    allow_lossy: bool,
    bare: bool,
) -> str:
    """In a worker thread: convert the file ``src`` into the file ``out``; the result's UID."""
    from dicomio.transcode import _transcode_into

    with open(out, "wb") as fp:
        uid = _transcode_into(
            fp, src, target, source_syntax=source_syntax, allow_lossy=allow_lossy, bare=bare
        )
    return uid


def _limiter() -> anyio.CapacityLimiter:
    try:
        return _thread_limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(os.cpu_count() or 2)
        _thread_limiter.set(limiter)
        return limiter


async def transcode_file(
    src: str | os.PathLike[str],
    target: str,
    *,
    source_syntax: str | None = None,
    allow_lossy: bool = False,
    bare: bool = True,
    isolate: bool = True,
    directory: str | os.PathLike[str] | None = None,
) -> Transcoded:
    """Convert the file ``src`` to ``target`` in a worker; the result is in a temporary file.

    ``src`` is a Part 10 file, or with ``source_syntax`` a bare data set in that syntax. The
    result is a bare data set unless ``bare`` is false (then a Part 10 file when ``src`` is
    one). It goes in ``directory`` (default: the system's temporary folder), next to where a
    caller may rename it. Raises :class:`~dicomio.errors.TranscodeError` (or its subclasses
    ``CodecUnavailable``, ``LossyTranscodeRefused``) with the cause; nothing is left behind.
    """
    fd, name = tempfile.mkstemp(prefix=".dicomio-", suffix=".transcode", dir=directory)
    os.close(fd)
    out = Path(name)
    try:
        if isolate:
            request = {
                "src": os.fspath(src),
                "out": name,
                "target": str(target),
                "source_syntax": source_syntax,
                "allow_lossy": allow_lossy,
                "bare": bare,
            }
            answer = await _current_pool().run(request)
            if "error" in answer:
                kind = getattr(errors, str(answer["error"]), TranscodeError)
                if not (isinstance(kind, type) and issubclass(kind, TranscodeError)):
                    kind = TranscodeError
                raise kind(str(answer.get("message", "")))
            uid = str(answer["uid"])
        else:
            args = (os.fspath(src), name, str(target), source_syntax, allow_lossy, bare)
            uid = await anyio.to_thread.run_sync(_job, *args, limiter=_limiter())
        size = out.stat().st_size
    except BaseException:
        with contextlib.suppress(OSError):
            out.unlink()
        raise
    return Transcoded(out, uid, size)
