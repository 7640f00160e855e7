"""The service user half of an association: ``send_c_*`` and ``send_n_*`` (PS3.7 9.1, 10.1).

Every call takes a slot of the asynchronous operations window (PS3.7 D.3.3.3), so with a
window of N up to N operations are outstanding at once and further calls wait their turn in
order. Responses reach their caller by message ID. C-FIND, C-GET and C-MOVE return a
``ResponseStream``: iterate it with ``async for``; leaving the loop early sends C-CANCEL
(PS3.7 9.3.2.3) and waits a bounded time for the final response, then aborts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import anyio
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian

from dicomio import errors
from dicomio import transcode as transcode_module
from dicomio._locks import Gate
from dicomio._transcoding import Transcoded, transcode_file
from dicomio.dataset import (
    UNCOMPRESSED,
    decode_dataset,
    encode_dataset,
    file_info,
    load_file,
    read_if_cached,
)
from dicomio.dimse import (
    CCancelRQ,
    CEchoRQ,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CMoveRQ,
    CStoreRQ,
    NActionRQ,
    NCreateRQ,
    NDeleteRQ,
    NEventReportRQ,
    NGetRQ,
    NSetRQ,
)
from dicomio.dimse.fragment import Templates, message_id_template
from dicomio.sop import name_of
from dicomio.status import PENDING_CODES, copy_status, raw_but_status, status_dataset
from dicomio.transcode import NATIVE_SYNTAXES, choose_syntax
from dicomio.ul import Role

if TYPE_CHECKING:
    from dicomio.ae import AE
    from dicomio.association import Association, _Operation
    from dicomio.config import Timeouts
    from dicomio.presentation import PresentationContext

__all__ = ["ResponseStream", "ServiceUserMixin"]

VERIFICATION = UID("1.2.840.10008.1.1")
#: Files up to this size are read in one go (one thread hop); larger ones are streamed.
WHOLE_FILE_LIMIT = 4 * 1024 * 1024
FILE_CHUNK = 1024 * 1024

#: Status elements of a response command that users see on the status Dataset.
_STATUS_FIELDS = (
    ("error_comment", "ErrorComment"),
    ("error_id", "ErrorID"),
    ("offending_element", "OffendingElement"),
    ("number_of_remaining_sub_operations", "NumberOfRemainingSuboperations"),
    ("number_of_completed_sub_operations", "NumberOfCompletedSuboperations"),
    ("number_of_failed_sub_operations", "NumberOfFailedSuboperations"),
    ("number_of_warning_sub_operations", "NumberOfWarningSuboperations"),
    ("affected_sop_class_uid", "AffectedSOPClassUID"),
)


#: Status Datasets made lately, by status and the values of ``_STATUS_FIELDS``, each
#: copied for a response with the same (``copy_status``): the responses of one association
#: mostly repeat one status (Success, a C-ECHO's class UID). The Affected SOP Instance UID
#: is not part of it but added to the copy: it differs from one C-STORE-RSP to the next.
#: Bounded, cleared when full.
_STATUSES: dict[tuple[Any, ...], Dataset] = {}
STATUSES_REMEMBERED = 64


def response_status(command: Any) -> Dataset:
    """The status Dataset of a response, as pynetdicom users know it (``.Status`` ...)."""
    values = [command.status]
    append = values.append
    for attr, _ in _STATUS_FIELDS:
        append(getattr(command, attr, None))
    instance_uid = getattr(command, "affected_sop_instance_uid", None)
    key = tuple(values)
    try:
        remembered = _STATUSES.get(key)
    except TypeError:  # an unhashable value (a list of offending elements)
        key, remembered = (), None
    if remembered is not None:
        return copy_status(remembered, instance_uid)
    fields = {}
    for (_, keyword), value in zip(_STATUS_FIELDS, values[1:], strict=True):
        if value is not None:
            fields[keyword] = value
    status = status_dataset(command.status, **fields)
    if key and raw_but_status(status):
        if len(_STATUSES) >= STATUSES_REMEMBERED:
            _STATUSES.clear()
        _STATUSES[key] = status
        return copy_status(status, instance_uid)
    if instance_uid is not None:
        return status_dataset(command.status, AffectedSOPInstanceUID=instance_uid, **fields)
    return status


def _echo_request(message_id: int) -> CEchoRQ:
    """The C-ECHO-RQ (PS3.7 9.3.5.1) with ``message_id``."""
    return CEchoRQ(message_id=message_id, affected_sop_class_uid=VERIFICATION)


#: C-ECHO-RQ command set templates by context ID and the peer's maximum PDU length, for
#: every association of the process: a client verifying peer after peer proposes the same
#: context. Beyond its bound, requests are built and encoded.
_ECHO_TEMPLATES: Templates[tuple[int, int]] = Templates()


def _echo_template(context_id: int, max_pdu: int) -> tuple[bytes, bytes] | None:
    """The C-ECHO-RQ's template for a context and a peer's maximum length, remembered."""
    return _ECHO_TEMPLATES.get(
        (context_id, max_pdu),
        lambda: message_id_template(context_id, _echo_request(0), max_pdu, "message_id"),
    )


def _is_final(command: Any) -> bool:
    return command.status not in PENDING_CODES


# PS3.8 Table 9-18: the Result/Reason of a presentation context that was not accepted.
_CONTEXT_REJECTIONS = {
    1: "user-rejection",
    2: "no-reason (provider rejection)",
    3: "abstract-syntax-not-supported (provider rejection)",
    4: "transfer-syntaxes-not-supported (provider rejection)",
}


def _named(uid: str | None) -> str:
    """``CT Image Storage (1.2.840.10008.5.1.4.1.1.2)``: the PS3.6 name beside the UID."""
    if uid is None:
        return "no transfer syntax"
    name = name_of(uid)
    return f"{name} ({uid})" if name != str(uid) else str(uid)


class ServiceUserMixin:
    """``send_c_*`` and ``send_n_*``; mixed into ``Association``."""

    if TYPE_CHECKING:
        # What the mixin uses of ``Association`` (declared, not defined, here).
        log: logging.LoggerAdapter[logging.Logger]
        ae: AE
        role: Role
        timeouts: Timeouts
        requested_contexts: tuple[PresentationContext, ...]
        accepted_contexts: tuple[PresentationContext, ...]
        rejected_contexts: tuple[PresentationContext, ...]
        remote_max_pdu: int
        _window: Gate

        def _new_operation(self) -> _Operation: ...
        def _release_operation(self, op: _Operation) -> None: ...
        async def _next_response(
            self, op: _Operation, timeout: float | None
        ) -> tuple[Any, bytes | None]: ...
        async def send_message(
            self,
            context_id: int,
            command: Any,
            dataset: bytes | memoryview | AsyncIterable[bytes] | None = None,
        ) -> None: ...
        async def _send_encoded(self, pdu: bytes) -> None: ...
        @property
        def _debug(self) -> bool: ...

    #: ``_context_as_scu``'s answers without a transfer syntax, and the accepted contexts
    #: they were found in (a new tuple of them, after negotiation, forgets them).
    _scu_contexts: tuple[tuple[PresentationContext, ...], dict[str, PresentationContext]] | None
    _scu_contexts = None

    # -- context selection ---------------------------------------------------------------

    def _contexts_for(self, abstract_syntax: str) -> list[PresentationContext]:
        return [cx for cx in self.accepted_contexts if cx.abstract_syntax == abstract_syntax]

    def _context_as_scu(
        self, abstract_syntax: str, transfer_syntax: str | None = None
    ) -> PresentationContext:
        """An accepted context for ``abstract_syntax`` in which we may act as SCU."""
        if transfer_syntax is None:
            # Asked once per request (a C-ECHO, a C-FIND) with the same answer while the
            # accepted contexts stand: remembered for them.
            remembered = self._scu_contexts
            if remembered is not None and remembered[0] is self.accepted_contexts:
                found = remembered[1].get(abstract_syntax)
                if found is not None:
                    return found
            else:
                remembered = self._scu_contexts = (self.accepted_contexts, {})
        candidates = [cx for cx in self._contexts_for(abstract_syntax) if self._may_be_scu(cx)]
        if transfer_syntax is not None:
            for cx in candidates:
                if cx.transfer_syntax == transfer_syntax:
                    return cx
        if candidates:
            if transfer_syntax is None:
                assert remembered is not None
                remembered[1][abstract_syntax] = candidates[0]
            return candidates[0]
        raise self._no_context(
            abstract_syntax,
            f"no presentation context to use {_named(abstract_syntax)}"
            + (f" in {_named(transfer_syntax)}" if transfer_syntax else "")
            + " as SCU",
        )

    def _no_context(self, abstract_syntax: str, what: str) -> errors.NoPresentationContext:
        """``what`` failed for lack of a context of ``abstract_syntax``; say why, with names.

        Either the context was accepted but this side may not act as SCU on it (the role
        is the reason: PS3.7 D.3.3.4), or it was rejected (with its PS3.8 Table 9-18
        result), or it was never proposed.
        """
        if self._contexts_for(abstract_syntax):
            if self.role is Role.REQUESTOR:
                why = (
                    "the context was accepted, but this side (the requestor) does not have the "
                    "SCU role on it: the role selection left the SCU role out or the acceptor "
                    "refused it"
                )
            else:
                why = (
                    "the context was accepted, but this side (the acceptor) may act as SCU on "
                    "it only if the requestor takes the SCP role, which it did not propose or "
                    "was refused"
                )
            why += " (SCP/SCU Role Selection, PS3.7 D.3.3.4)"
        else:
            rejected = [
                cx.result
                for cx in self.rejected_contexts
                if cx.abstract_syntax == abstract_syntax and cx.result is not None
            ]
            if rejected:
                why = "proposed and rejected: " + ", ".join(
                    _CONTEXT_REJECTIONS.get(result, f"result {result}")
                    for result in dict.fromkeys(rejected)
                )
            elif any(cx.abstract_syntax == abstract_syntax for cx in self.requested_contexts):
                why = "proposed, but not accepted"
            else:
                why = "not proposed"
        accepted = "; ".join(
            f"{_named(cx.abstract_syntax)} in {_named(cx.transfer_syntax)}"
            for cx in self.accepted_contexts
        )
        return errors.NoPresentationContext(
            f"{what}: {why}; accepted contexts: {accepted or 'none'}"
        )

    def _may_be_scu(self, cx: PresentationContext) -> bool:
        """Whether we may invoke operations on ``cx`` (roles per PS3.7 D.3.3.4)."""
        return cx.local_roles(is_requestor=self.role is Role.REQUESTOR)[0]

    def _context_for_report(self, abstract_syntax: str) -> PresentationContext:
        """An accepted context for ``abstract_syntax`` on which we may send N-EVENT-REPORT.

        N-EVENT-REPORT goes the other way from the other services: the performing side, the
        SOP class's SCP, reports (PS3.7 10.1.1; PS3.4 J.3.3 Storage Commitment, CC.2.4 UPS
        events). So the acceptor, SCP by default (PS3.7 D.3.3.4), reports on its own
        association without role selection. A side that is only the SCU keeps the right to
        report that it has always had here: a context where we are SCP is preferred.
        """
        is_requestor = self.role is Role.REQUESTOR
        contexts = [
            cx
            for cx in self._contexts_for(abstract_syntax)
            if any(cx.local_roles(is_requestor=is_requestor))
        ]
        contexts.sort(key=lambda cx: not cx.local_roles(is_requestor=is_requestor)[1])
        if contexts:
            return contexts[0]
        return self._context_as_scu(abstract_syntax)  # raises NoPresentationContext

    # -- plumbing ------------------------------------------------------------------------

    async def _request(
        self,
        context: PresentationContext,
        build: Any,
        dataset: Any = None,
        template: tuple[bytes, bytes] | None = None,
    ) -> _Operation:
        """Send the request ``build(message_id)`` makes, or its ``template``'s bytes.

        ``template`` is a command-only request's P-DATA-TF cut around its message ID
        (``message_id_template``): the request is then never built or encoded.
        """
        op = self._new_operation()
        try:
            if template is None:
                await self.send_message(context.context_id or 0, build(op.message_id), dataset)
            else:
                head, tail = template
                await self._send_encoded(head + op.message_id.to_bytes(2, "little") + tail)
        except BaseException:
            self._release_operation(op)
            raise
        return op

    async def _single(
        self,
        context: PresentationContext,
        build: Any,
        dataset: Any = None,
        template: tuple[bytes, bytes] | None = None,
    ) -> tuple[Any, bytes | None]:
        """Send one request and wait for its one response, within the window."""
        window = self._window
        if window.locked():
            await window.acquire()
        else:
            window.acquire_nowait()  # what ``async with`` does then, without its calls
        try:
            op = await self._request(context, build, dataset, template)
            try:
                command, data = await self._next_response(op, self.timeouts.dimse)
            finally:
                self._release_operation(op)
            return command, data
        finally:
            window.release()

    # -- C-ECHO ----------------------------------------------------------------------------

    async def send_c_echo(self) -> Dataset:
        """C-ECHO (PS3.7 9.1.5): the status Dataset (``.Status == 0`` on success)."""
        context = self._context_as_scu(VERIFICATION)
        # Every C-ECHO-RQ on a context is the same but for its message ID: sent from a
        # template unless debug logging wants the request to describe.
        template = (
            None if self._debug else _echo_template(context.context_id or 0, self.remote_max_pdu)
        )
        command, _ = await self._single(context, _echo_request, None, template)
        return response_status(command)

    # -- C-STORE ---------------------------------------------------------------------------

    async def send_c_store(
        self,
        dataset: Dataset | str | Path,
        *,
        priority: int = 2,
        originator_aet: str | None = None,
        originator_id: int | None = None,
        allow_lossy: bool = False,
    ) -> Dataset:
        """C-STORE (PS3.7 9.1.1) a Dataset, or a Part 10 file streamed from disk.

        The data set travels in its own transfer syntax if the peer accepted that for its
        SOP class: a file as its bytes stand, in chunks. Otherwise it is converted to an
        accepted syntax: between uncompressed syntaxes in a thread; across compression
        (decompressing, or compressing losslessly to RLE, JPEG-LS, JPEG 2000 or JPEG
        lossless) with the pixel codecs of ``dicomio[codecs]``, in a worker process (or a
        thread, if ``ae.isolate_codecs`` is false). A lossy target is used only with
        ``allow_lossy``, and then the instance gets a new SOP Instance UID (PS3.4), which
        this request carries. Raises ``NoPresentationContext`` when the SOP class has no
        context, ``LossyTranscodeRefused``/``CodecUnavailable``/``TranscodeError`` (all
        ``TranscodeError``) when no conversion is allowed, installed or possible.
        """
        transcoded: Transcoded | None = None
        payload: Any
        try:
            if isinstance(dataset, (str, Path)):
                plan = await self._store_payload_from_file(Path(dataset), allow_lossy)
            else:
                plan = await self._store_payload_from_dataset(dataset, allow_lossy)
            context, payload, sop_class, sop_instance, transcoded = plan

            def build(mid: int) -> CStoreRQ:
                return CStoreRQ(
                    message_id=mid,
                    affected_sop_class_uid=sop_class,
                    affected_sop_instance_uid=sop_instance,
                    priority=priority,
                    move_originator_application_entity_title=originator_aet,
                    move_originator_message_id=originator_id,
                    has_dataset=True,
                )

            command, _ = await self._single(context, build, payload)
        finally:
            if transcoded is not None:
                transcoded.discard()
        return response_status(command)

    def _store_context(
        self, sop_class: str, transfer_syntax: str, allow_lossy: bool
    ) -> tuple[PresentationContext, str]:
        """The context to store ``sop_class`` encoded in ``transfer_syntax`` in, and how.

        How: ``"as is"``; ``"native"`` (re-encoded between uncompressed syntaxes, no pixel
        codec); or ``"codec"`` (the pixels are decoded and/or encoded, PS3.5 A.4).
        """
        candidates = [cx for cx in self._contexts_for(sop_class) if self._may_be_scu(cx)]
        for cx in candidates:
            if cx.transfer_syntax == transfer_syntax:
                return cx, "as is"
        if transfer_syntax in UNCOMPRESSED:
            convertible = [cx for cx in candidates if cx.transfer_syntax in UNCOMPRESSED]
            # Keep the byte order where we can: a conversion between Little and Big Endian
            # has to swap every OW/OF/OL/OD/OV value (PS3.5 7.3), the costliest and riskiest.
            big = transfer_syntax == ExplicitVRBigEndian
            convertible.sort(key=lambda cx: (cx.transfer_syntax == ExplicitVRBigEndian) != big)
            if convertible:
                return convertible[0], "native"
        what = f"cannot send {_named(sop_class)} in {_named(transfer_syntax)}"
        if not candidates:
            raise self._no_context(sop_class, what)
        accepted = [str(cx.transfer_syntax) for cx in candidates]
        target = choose_syntax(transfer_syntax, accepted, allow_lossy=allow_lossy)
        if target is not None:
            return next(cx for cx in candidates if cx.transfer_syntax == target), "codec"
        raise self._no_conversion(what, transfer_syntax, accepted, allow_lossy)

    def _no_conversion(
        self, what: str, source: str, accepted: list[str], allow_lossy: bool
    ) -> errors.TranscodeError:
        """Why none of the ``accepted`` syntaxes can be reached from ``source``."""
        listed = ", ".join(map(_named, dict.fromkeys(accepted)))
        if not allow_lossy and choose_syntax(source, accepted, allow_lossy=True) is not None:
            return errors.LossyTranscodeRefused(
                f"{what}: the peer accepted only {listed}, reachable only by lossy compression, "
                "which is never done unless allowed (allow_lossy=True; storescu --allow-lossy)"
            )
        reasons = []
        for target in dict.fromkeys(accepted):
            try:
                transcode_module._decoder(UID(source))
                if UID(target) not in NATIVE_SYNTAXES:
                    transcode_module._encoder(UID(target))
            except errors.CodecUnavailable as exc:
                reasons.append(str(exc))
        if reasons:
            return errors.CodecUnavailable(f"{what}: accepted only {listed}; " + reasons[0])
        return errors.TranscodeError(f"{what}: accepted only {listed}, and none can be reached")

    async def _store_payload_from_dataset(
        self, ds: Dataset, allow_lossy: bool
    ) -> tuple[PresentationContext, Any, UID, UID, Transcoded | None]:
        sop_class = UID(str(ds.SOPClassUID))
        sop_instance = UID(str(ds.SOPInstanceUID))
        meta = getattr(ds, "file_meta", None)
        ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
        if ts is None:
            implicit = getattr(ds, "is_implicit_VR", None)
            ts = (
                UID("1.2.840.10008.1.2")
                if implicit in (True, None)
                else UID("1.2.840.10008.1.2.1")
            )
        source = UID(str(ts))
        context, how = self._store_context(sop_class, source, allow_lossy)
        target = context.transfer_syntax
        assert target is not None
        if how != "codec":
            payload = encode_dataset(ds, target, convert_raw=True)
            return context, payload, sop_class, sop_instance, None
        # pydicom holds what it read as raw elements, converted on access. One read in a VR
        # encoding other than its meta names (pydicom's SC_rgb_jpeg.dcm: meta Explicit, body
        # Implicit) has no VR, and pydicom's writer fails on it with a TypeError: converting
        # every element now gives each its VR from the dictionary, as reading it would.
        for _ in ds.iterall():
            pass
        # The codec works on a file: the data set, encoded as it stands, goes to one first.
        fd, name = tempfile.mkstemp(prefix=".dicomio-", suffix=".dataset")
        os.close(fd)
        try:
            await anyio.to_thread.run_sync(_write_encoded, name, ds, source)
            done = await self._transcode(name, target, source, allow_lossy)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
        return context, _read_chunks(done.path, 0), sop_class, UID(done.sop_instance_uid), done

    async def _store_payload_from_file(
        self, path: Path, allow_lossy: bool
    ) -> tuple[PresentationContext, Any, UID, UID, Transcoded | None]:
        # A small file the page cache holds whole is read here, without waiting for a disk;
        # otherwise one thread hop reads it (or, if large, its head) and the meta group.
        cached = read_if_cached(path, WHOLE_FILE_LIMIT)
        if cached is not None:
            loaded = file_info(path, cached, len(cached))
        else:
            loaded = await anyio.to_thread.run_sync(load_file, path, WHOLE_FILE_LIMIT)
        if loaded is None:
            ds = await anyio.to_thread.run_sync(dcmread, path)
            return await self._store_payload_from_dataset(ds, allow_lossy)
        info, raw = loaded
        context, how = self._store_context(info.sop_class_uid, info.transfer_syntax, allow_lossy)
        target = context.transfer_syntax
        assert target is not None
        if how == "codec":
            done = await self._transcode(path, target, None, allow_lossy)
            chunks = _read_chunks(done.path, 0)
            return context, chunks, info.sop_class_uid, UID(done.sop_instance_uid), done
        if how == "native":

            def convert_file() -> bytes:
                # The bytes already read are decoded, not the file read again; the work
                # (decode and re-encode) stays off the event loop.
                ds = dcmread(BytesIO(raw) if raw is not None else path)
                return encode_dataset(ds, target)

            data = await anyio.to_thread.run_sync(convert_file)
            return context, data, info.sop_class_uid, info.sop_instance_uid, None
        payload: Any
        if info.dataset_length % 2 and info.transfer_syntax != DeflatedExplicitVRLittleEndian:
            # Only a Deflated stream may end odd (PS3.5 A.5); the fragmenter pads either
            # way, so that the peer gets even fragments (PS3.8 E.1) and can try to parse it.
            self.log.warning(
                "%s: data set of odd length %d in %s, not valid (PS3.5 7.1); sent padded "
                "with one 00H",
                path,
                info.dataset_length,
                info.transfer_syntax,
            )
        if raw is not None:
            payload = memoryview(raw)[info.dataset_offset :]
        else:
            payload = _read_chunks(path, info.dataset_offset)
        return context, payload, info.sop_class_uid, info.sop_instance_uid, None

    async def _transcode(
        self, src: str | Path, target: str, source_syntax: str | None, allow_lossy: bool
    ) -> Transcoded:
        what = f"{src} ({_named(source_syntax)})" if source_syntax else str(src)
        self.log.info("converting %s to %s", what, _named(target))
        return await transcode_file(
            src,
            target,
            source_syntax=source_syntax,
            allow_lossy=allow_lossy,
            isolate=self.ae.isolate_codecs,
        )

    # -- C-FIND / C-GET / C-MOVE -----------------------------------------------------------

    async def send_c_cancel(
        self,
        msg_id: int,
        context_id: int | None = None,
        query_model: str | None = None,
    ) -> None:
        """C-CANCEL (PS3.7 9.3.2.3) the C-FIND, C-GET or C-MOVE whose Message ID is ``msg_id``.

        pynetdicom's call: the presentation context is ``context_id``, else the accepted
        one for ``query_model``. Iterating the operation's ``ResponseStream`` goes on to its
        final response; ``ResponseStream.cancel()`` does the same without naming anything,
        and leaving the ``async for`` early cancels and drops the rest.
        """
        if not 0 <= msg_id <= 0xFFFF:
            raise ValueError(f"a Message ID is an unsigned 16-bit value (US): {msg_id}")
        if context_id is None:
            if query_model is None:
                raise ValueError("send_c_cancel needs context_id or query_model")
            context_id = self._context_as_scu(query_model).context_id
        elif not any(cx.context_id == context_id for cx in self.accepted_contexts):
            raise ValueError(f"presentation context {context_id} was not accepted")
        await self.send_message(context_id or 0, CCancelRQ(message_id_being_responded_to=msg_id))

    def send_c_find(
        self, identifier: Dataset, query_model: str, *, priority: int = 2
    ) -> ResponseStream:
        """C-FIND (PS3.7 9.1.2): ``async for status, identifier in ...``."""
        context = self._context_as_scu(query_model)

        def build(mid: int) -> CFindRQ:
            return CFindRQ(
                message_id=mid,
                affected_sop_class_uid=context.abstract_syntax,
                priority=priority,
                has_dataset=True,
            )

        return ResponseStream(cast("Association", self), context, build, identifier)

    def send_c_get(
        self, identifier: Dataset, query_model: str, *, priority: int = 2
    ) -> ResponseStream:
        """C-GET (PS3.7 9.1.3); sub-operation C-STOREs go to this association's EVT_C_STORE
        handler, which needs storage contexts where we took the SCP role."""
        context = self._context_as_scu(query_model)

        def build(mid: int) -> CGetRQ:
            return CGetRQ(
                message_id=mid,
                affected_sop_class_uid=context.abstract_syntax,
                priority=priority,
                has_dataset=True,
            )

        return ResponseStream(cast("Association", self), context, build, identifier)

    def send_c_move(
        self,
        identifier: Dataset,
        move_aet: str,
        query_model: str,
        *,
        priority: int = 2,
    ) -> ResponseStream:
        """C-MOVE (PS3.7 9.1.4) to the AE titled ``move_aet``."""
        context = self._context_as_scu(query_model)

        def build(mid: int) -> CMoveRQ:
            return CMoveRQ(
                message_id=mid,
                affected_sop_class_uid=context.abstract_syntax,
                priority=priority,
                move_destination=move_aet,
                has_dataset=True,
            )

        return ResponseStream(cast("Association", self), context, build, identifier)

    # -- N-services (PS3.7 10.1) -------------------------------------------------------------

    async def _n_request(
        self,
        abstract_syntax: str,
        build: Any,
        dataset: Dataset | None,
        *,
        report: bool = False,
    ) -> tuple[Dataset, Dataset | None]:
        if report:
            context = self._context_for_report(abstract_syntax)
        else:
            context = self._context_as_scu(abstract_syntax)
        ts = context.transfer_syntax
        assert ts is not None
        payload = encode_dataset(dataset, ts) if dataset is not None else None
        command, data = await self._single(context, build, payload)
        reply = decode_dataset(data, ts) if data is not None else None
        return response_status(command), reply

    async def send_n_event_report(
        self,
        dataset: Dataset | None,
        event_type: int,
        class_uid: str,
        instance_uid: str,
        *,
        meta_uid: str | None = None,
    ) -> tuple[Dataset, Dataset | None]:
        """N-EVENT-REPORT (PS3.7 10.1.1): (status, event reply).

        The SCP of the SOP class reports, so an acceptor may call this on its own
        association (from a handler, or a task it starts) with no role selection: e.g. a
        Storage Commitment result after the N-ACTION (PS3.4 J.3.3).
        """
        return await self._n_request(
            meta_uid or class_uid,
            lambda mid: NEventReportRQ(
                message_id=mid,
                affected_sop_class_uid=class_uid,
                affected_sop_instance_uid=instance_uid,
                event_type_id=event_type,
                has_dataset=dataset is not None,
            ),
            dataset,
            report=True,
        )

    async def send_n_get(
        self,
        identifier_list: Sequence[int],
        class_uid: str,
        instance_uid: str,
        *,
        meta_uid: str | None = None,
    ) -> tuple[Dataset, Dataset | None]:
        """N-GET (PS3.7 10.1.2): (status, attribute list)."""
        return await self._n_request(
            meta_uid or class_uid,
            lambda mid: NGetRQ(
                message_id=mid,
                requested_sop_class_uid=class_uid,
                requested_sop_instance_uid=instance_uid,
                attribute_identifier_list=tuple(identifier_list) or None,
                has_dataset=False,
            ),
            None,
        )

    async def send_n_set(
        self,
        dataset: Dataset,
        class_uid: str,
        instance_uid: str,
        *,
        meta_uid: str | None = None,
    ) -> tuple[Dataset, Dataset | None]:
        """N-SET (PS3.7 10.1.3): (status, attribute list)."""
        return await self._n_request(
            meta_uid or class_uid,
            lambda mid: NSetRQ(
                message_id=mid,
                requested_sop_class_uid=class_uid,
                requested_sop_instance_uid=instance_uid,
                has_dataset=True,
            ),
            dataset,
        )

    async def send_n_action(
        self,
        dataset: Dataset | None,
        action_type: int,
        class_uid: str,
        instance_uid: str,
        *,
        meta_uid: str | None = None,
    ) -> tuple[Dataset, Dataset | None]:
        """N-ACTION (PS3.7 10.1.4): (status, action reply)."""
        return await self._n_request(
            meta_uid or class_uid,
            lambda mid: NActionRQ(
                message_id=mid,
                requested_sop_class_uid=class_uid,
                requested_sop_instance_uid=instance_uid,
                action_type_id=action_type,
                has_dataset=dataset is not None,
            ),
            dataset,
        )

    async def send_n_create(
        self,
        dataset: Dataset | None,
        class_uid: str,
        instance_uid: str | None = None,
        *,
        meta_uid: str | None = None,
    ) -> tuple[Dataset, Dataset | None]:
        """N-CREATE (PS3.7 10.1.5): (status, attribute list)."""
        return await self._n_request(
            meta_uid or class_uid,
            lambda mid: NCreateRQ(
                message_id=mid,
                affected_sop_class_uid=class_uid,
                affected_sop_instance_uid=instance_uid,
                has_dataset=dataset is not None,
            ),
            dataset,
        )

    async def send_n_delete(
        self,
        class_uid: str,
        instance_uid: str,
        *,
        meta_uid: str | None = None,
    ) -> Dataset:
        """N-DELETE (PS3.7 10.1.6): the status."""
        status, _ = await self._n_request(
            meta_uid or class_uid,
            lambda mid: NDeleteRQ(
                message_id=mid,
                requested_sop_class_uid=class_uid,
                requested_sop_instance_uid=instance_uid,
                has_dataset=False,
            ),
            None,
        )
        return status


def _write_encoded(path: str, ds: Dataset, syntax: UID) -> None:
    with open(path, "wb") as fp:
        fp.write(encode_dataset(ds, syntax))


def _shorter(a: float, b: float | None) -> float:
    return a if b is None else min(a, b)


async def _read_chunks(path: Path, offset: int) -> AsyncIterator[bytes]:
    """A file's bytes from ``offset``, a chunk at a time, read off the event loop."""
    async with await anyio.open_file(path, "rb") as fp:
        await fp.seek(offset)
        while chunk := await fp.read(FILE_CHUNK):
            yield chunk


class ResponseStream:
    """The responses to one C-FIND, C-GET or C-MOVE, as ``(status, identifier)`` pairs.

    Iterate with ``async for``. Leaving early cancels the operation: on ``break`` or an
    exception in the loop body the C-CANCEL is queued at once and goes out with the next
    write; ``async with`` or ``aclose()`` also wait (bounded by the cancel timeout) for the
    final response; a cancelled task waits the same way inside a shielded scope. If no final
    response comes, the association is aborted.
    """

    def __init__(
        self, assoc: Association, context: PresentationContext, build: Any, identifier: Dataset
    ) -> None:
        self._assoc = assoc
        self._context = context
        self._build = build
        self._identifier = identifier
        self._op: _Operation | None = None
        self._holds_window = False
        self._done = False
        # The last C-FIND pending response's command and its status Dataset, kept private:
        # the pending responses of one C-FIND repeat one command, so each gets a copy.
        self._last_command: Any = None
        self._last_status: Dataset | None = None

    def __aiter__(self) -> ResponseStream:
        return self

    @property
    def message_id(self) -> int | None:
        """The request's Message ID once it has been sent (the first ``__anext__``)."""
        return None if self._op is None else self._op.message_id

    async def cancel(self) -> None:
        """Send a C-CANCEL (PS3.7 9.3.2.3) and go on iterating: the responses the peer sends
        before it stops, then its final response (usually status FE00H, Cancel), still come.

        Nothing is sent if the request has not gone out yet or its final response came.
        """
        op = self._op
        if self._done or op is None or op.final:
            return
        await self._assoc.send_c_cancel(op.message_id, self._context.context_id)

    async def __aenter__(self) -> ResponseStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def __anext__(self) -> tuple[Dataset, Dataset | None]:
        if self._done:
            raise StopAsyncIteration
        assoc = self._assoc
        try:
            if self._op is None:
                await assoc._window.acquire()
                self._holds_window = True
                ts = self._context.transfer_syntax
                assert ts is not None
                self._op = await assoc._request(
                    self._context, self._build, encode_dataset(self._identifier, ts)
                )
            op = self._op
            if op.responses:
                # Already read (the responses of one read come together): what
                # _next_response returns then, without its call.
                command, data = op.responses.popleft()
                if op.final and not op.responses:
                    assoc._ops.pop(op.message_id, None)
            else:
                command, data = await assoc._next_response(op, assoc.timeouts.dimse)
        except BaseException as exc:
            if isinstance(exc, errors.DIMSETimeout):
                # The peer has already been silent for a whole DIMSE timeout: wait no longer
                # than that again for the final response to our C-CANCEL.
                await self._cancel(
                    wait=True, timeout=_shorter(assoc.timeouts.cancel, assoc.timeouts.dimse)
                )
                raise
            if isinstance(exc, errors.DicomioError):
                self._finish()
                raise
            await self._cancel(wait=True)
            raise
        last = self._last_command
        if (command is last or command == last) and self._last_status is not None:
            status = copy_status(self._last_status)
        else:
            status = response_status(command)
            if isinstance(command, CFindRSP) and not _is_final(command) and raw_but_status(status):
                self._last_command, self._last_status = command, status
                status = copy_status(status)
        identifier = None
        if data is not None:
            ts = self._context.transfer_syntax
            assert ts is not None
            identifier = decode_dataset(data, ts)
        if command.status not in PENDING_CODES:  # _is_final, without the call
            self._finish()
        return status, identifier

    def _finish(self) -> None:
        self._done = True
        if self._op is not None:
            self._assoc._release_operation(self._op)
        if self._holds_window:
            self._holds_window = False
            self._assoc._window.release()

    def _cancel_nowait(self) -> None:
        """Queue C-CANCEL-RQ (PS3.7 9.3.2.3) and stop listening; the rest is bookkeeping."""
        op, assoc = self._op, self._assoc
        self._done = True
        if op is None or op.final:
            self._finish()
            return
        assoc._send_nowait(
            self._context.context_id or 0, CCancelRQ(message_id_being_responded_to=op.message_id)
        )
        op.abandoned = True
        op.responses.clear()
        if self._holds_window:
            self._holds_window = False
            assoc._window.release()

    async def _cancel(self, *, wait: bool, timeout: float | None = None) -> None:
        op, assoc = self._op, self._assoc
        if self._done or op is None:
            self._finish()
            return
        self._cancel_nowait()
        if not wait:
            return
        with anyio.CancelScope(shield=True):
            try:
                await assoc._flush()
                limit = assoc.timeouts.cancel if timeout is None else timeout
                with anyio.move_on_after(limit) as scope:
                    while op.message_id in assoc._ops:
                        if assoc._failure is not None:
                            return
                        if assoc._background_reader and not assoc._reader_busy:
                            op.wakeup = anyio.Event()
                            await op.wakeup.wait()
                            continue
                        async with assoc._read_lock:
                            if op.message_id in assoc._ops:
                                await assoc._read_once()
                if scope.cancelled_caught:
                    assoc.log.warning("no final response after C-CANCEL: aborting")
                    await assoc.abort()
            except errors.DicomioError:
                pass

    async def aclose(self) -> None:
        """Cancel the operation if it is still running, and wait for its final response."""
        await self._cancel(wait=True)

    def __del__(self) -> None:
        # ``break`` out of ``async for`` drops the last reference here (CPython refcounting):
        # queue the C-CANCEL now; it leaves with the association's next write.
        if not self._done and self._op is not None:
            with contextlib.suppress(Exception):
                self._cancel_nowait()
