"""A codec worker process: ``python -m dicomio._codec_worker`` (started by dicomio._transcoding).

It reads one JSON request per line on standard input, converts a file to another file with
:func:`dicomio.transcode._transcode_into`, and answers one JSON line on standard output:
``{"uid": ...}``, or ``{"error": <class name in dicomio.errors>, "message": ...}``. It exits
at the end of its input, which is when its parent closes the pipe or dies. Nothing but the
answers goes to standard output: the codecs' own chatter is sent to standard error.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    from dicomio import errors
    from dicomio.transcode import _transcode_into

    try:
        # Straight to the file: the pixels are written a frame at a time as they are made.
        with open(request["out"], "wb") as out:
            uid = _transcode_into(
                out,
                request["src"],
                request["target"],
                source_syntax=request.get("source_syntax"),
                allow_lossy=bool(request.get("allow_lossy")),
                bare=bool(request.get("bare")),
            )
    except errors.TranscodeError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    except MemoryError:
        return {"error": "TranscodeError", "message": "out of memory in the codec worker"}
    except OSError as exc:
        return {"error": "TranscodeError", "message": f"cannot write the result: {exc}"}
    return {"uid": uid}


def serve(requests: TextIO, answers: TextIO) -> None:
    """Answer each request line until the input ends."""
    for line in requests:
        if line.strip():
            answers.write(json.dumps(_answer(json.loads(line))) + "\n")
            answers.flush()


def main() -> None:
    # The protocol owns the real standard output. Whatever else writes to it, Python code or
    # a codec's C library writing to descriptor 1, goes to standard error instead.
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    if len(sys.argv) > 1:  # the parent's standard error, handed over (see _transcoding)
        os.dup2(int(sys.argv[1]), 2)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import dicomio.transcode  # noqa: F401  (imported before READY: startup cost is paid here)

    answers.write("READY\n")
    answers.flush()
    serve(sys.stdin, answers)


if __name__ == "__main__":
    main()
