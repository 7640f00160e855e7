"""C-GET and C-MOVE as the service provider (PS3.4 C.4.2, C.4.3; PS3.7 9.1.3, 9.1.4).

The handler yields the number of sub-operations, then the instances (Datasets or Part 10
paths). Each becomes a C-STORE sub-operation: on this association for a C-GET, on a new
association to the move destination for a C-MOVE. ``send_c_store`` picks the transfer
syntax (converting to one the destination accepted, see docs/transcoding.md); a
sub-operation that fails is counted, its instance listed in the Failed SOP Instance UID
List, and its cause given in the final response's Error Comment, and the others go on.
Pending responses carry the counts (PS3.4 C.4.2.1.5, C.4.3.1.4); a C-CANCEL ends the loop
with Cancel (FE00H).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicomio import errors
from dicomio._scp import C_FAILURE, MOVE_DESTINATION_UNKNOWN, _handler_items
from dicomio.dataset import read_file_info
from dicomio.dimse import CMoveRQ
from dicomio.events import EVT_C_GET, EVT_C_MOVE, AnyEventType, Event
from dicomio.status import CANCEL, PENDING, PENDING_CODES, SUCCESS

if TYPE_CHECKING:
    from dicomio.ae import AE
    from dicomio.association import Association

__all__ = ["RetrieveProviderMixin"]

#: "Sub-operations complete - one or more failures or warnings" (PS3.4 C.4.2.1.5).
SUBOPS_WARNING = 0xB000
#: "Refused: Out of resources - unable to perform sub-operations".
SUBOPS_REFUSED = 0xA702
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
#: Stands for "any uncompressed syntax" when C-MOVE contexts are grouped by SOP class.
_UNCOMPRESSED_KEY = ""


class RetrieveProviderMixin:
    """C-GET and C-MOVE SCP; mixed into ``Association``."""

    if TYPE_CHECKING:
        # Provided by Association, which this class is mixed into.
        ae: AE
        log: logging.LoggerAdapter[logging.Logger]
        remote_ae_title: str
        _failure: errors.DicomioError | None
        _running: dict[int, anyio.CancelScope]

        def _handler(self, event: AnyEventType) -> tuple[Any, tuple[Any, ...]] | None: ...
        async def _respond(
            self, context: Any, response: Any, dataset: Dataset | None = None
        ) -> None: ...

    async def _on_retrieve(
        self, event: Event, context: Any, command: Any, rsp_class: type
    ) -> None:
        is_move = isinstance(command, CMoveRQ)
        counts = {"remaining": 0, "completed": 0, "failed": 0, "warning": 0}
        failed_uids: list[str] = []
        #: Why sub-operations failed, first first (the Failed SOP Instance UID List names them).
        causes: list[str] = []

        def response(status: int, *, final: bool = False) -> Any:
            return rsp_class(
                message_id_being_responded_to=command.message_id,
                affected_sop_class_uid=command.affected_sop_class_uid,
                status=status,
                has_dataset=final and bool(failed_uids),
                number_of_remaining_sub_operations=None
                if final and status != CANCEL
                else counts["remaining"],
                number_of_completed_sub_operations=counts["completed"],
                number_of_failed_sub_operations=counts["failed"],
                number_of_warning_sub_operations=counts["warning"],
                # Error Comment (LO, 64 characters) names the first failure's instance and
                # cause; the log has them all.
                error_comment=_error_comment(causes) if final and causes else None,
            )

        async def final(status: int | None = None) -> None:
            if status is None:
                if counts["failed"] and not counts["completed"] and not counts["warning"]:
                    status = SUBOPS_REFUSED
                elif counts["failed"] or counts["warning"]:
                    status = SUBOPS_WARNING
                else:
                    status = SUCCESS
            identifier = None
            if failed_uids:
                identifier = Dataset()
                identifier.FailedSOPInstanceUIDList = failed_uids
            await self._respond(context, response(status, final=True), identifier)

        def bare(status: int, **fields: Any) -> Any:
            """A final response that ends the operation before any sub-operation."""
            return rsp_class(
                message_id_being_responded_to=command.message_id,
                affected_sop_class_uid=command.affected_sop_class_uid,
                status=status,
                has_dataset=False,
                **fields,
            )

        found = self._handler(EVT_C_MOVE if is_move else EVT_C_GET)
        if found is None:
            await self._respond(context, bare(C_FAILURE, error_comment="no handler"))
            return
        try:
            with anyio.CancelScope() as scope:
                self._running[command.message_id] = scope
                async with _handler_items(found, event) as gen:
                    first = await anext(gen, None)
                    destination = None
                    if is_move:
                        if (
                            isinstance(first, tuple)
                            and len(first) >= 2
                            and isinstance(first[1], int)
                            and not isinstance(first[0], int)
                        ):
                            destination = first
                            first = await anext(gen, None)
                        else:
                            destination = self.ae.move_destinations.get(command.move_destination)
                        if destination is None:
                            self.log.warning(
                                "unknown move destination %r", command.move_destination
                            )
                            await self._respond(context, bare(MOVE_DESTINATION_UNKNOWN))
                            return
                    if isinstance(first, tuple) and first and isinstance(first[0], int):
                        # A handler that cannot start (bad identifier, out of resources)
                        # yields its failure status instead of a count (PS3.4 C.4.2.1.5).
                        if first[0] in PENDING_CODES:
                            raise TypeError(
                                "a C-GET/C-MOVE handler must first yield the number of "
                                "sub-operations, or a final status"
                            )
                        await final(first[0])
                        return
                    if first is None:
                        first = 0
                    if not isinstance(first, int):
                        raise TypeError(
                            "a C-GET/C-MOVE handler must first yield the number of sub-operations"
                        )
                    counts["remaining"] = first
                    items = [item async for item in gen] if is_move else None
                    if is_move:
                        assert items is not None and destination is not None
                        await self._move(
                            context,
                            command,
                            destination,
                            items,
                            (counts, failed_uids, causes),
                            response,
                        )
                    else:
                        async for status, ds in gen:
                            if status not in PENDING_CODES:
                                await final(status)
                                return
                            await self._sub_store(
                                cast("Association", self),
                                command,
                                ds,
                                counts,
                                failed_uids,
                                causes,
                                originator=False,
                            )
                            await self._respond(context, response(PENDING))
            if scope.cancelled_caught:
                if self._failure is None:
                    await final(CANCEL)
                return
        except Exception as exc:
            if isinstance(exc, errors.DicomioError) and self._failure is not None:
                raise
            self.log.exception("%s handler raised", "C-MOVE" if is_move else "C-GET")
            await final(C_FAILURE)
            return
        await final()

    async def _sub_store(
        self,
        target: Association,
        command: Any,
        ds: Any,
        counts: dict[str, int],
        failed_uids: list[str],
        causes: list[str],
        *,
        originator: bool,
    ) -> None:
        """One C-STORE sub-operation (PS3.4 C.4.2.3, C.4.3.3), counted.

        A data set that cannot be sent in a syntax the destination accepted (no context, a
        conversion that would be lossy, a codec missing or failing on a corrupt stream)
        fails this sub-operation only: its instance goes to the Failed SOP Instance UID
        List and its cause to the log and the final response's Error Comment.
        """
        counts["remaining"] = max(0, counts["remaining"] - 1)
        uid = _instance_uid(ds)
        try:
            status = await target.send_c_store(
                ds,
                originator_aet=self.remote_ae_title if originator else None,
                originator_id=command.message_id if originator else None,
            )
            code = int(status.Status)
            if code not in (SUCCESS,) and "ErrorComment" in status:
                causes.append(f"status {code:04X}H, {status.ErrorComment}")
        except (errors.NoPresentationContext, errors.TranscodeError, OSError, ValueError) as exc:
            self.log.warning("sub-operation for %s failed: %s", uid or ds, exc)
            causes.append(_cause(exc))
            code = C_FAILURE
        if code == SUCCESS:
            counts["completed"] += 1
        elif (code & 0xF000) == 0xB000 or code in (0x0001, 0x0107, 0x0116):
            counts["warning"] += 1
        else:
            counts["failed"] += 1
            if uid:
                failed_uids.append(uid)

    async def _move(
        self,
        context: Any,
        command: CMoveRQ,
        destination: Any,
        items: list[Any],
        tally: tuple[dict[str, int], list[str], list[str]],
        response: Callable[..., Any],
    ) -> None:
        """Open the sub-association to the move destination and send every instance.

        One presentation context per SOP class lists Explicit and Implicit VR Little Endian,
        as DCMTK and pynetdicom propose, and carries every uncompressed instance of the
        class (converted, if need be, to the syntax the acceptor chose, PS3.8 9.3.3.2). Some
        C-STORE SCPs look the transfer syntax up by SOP class rather than by context ID, and
        decode an Explicit VR data set as Implicit when one class has several uncompressed
        contexts. A compressed syntax gets a context of its own for the class, and the
        uncompressed one is proposed beside it: if the destination refuses the compressed
        syntax, ``send_c_store`` decompresses the instance (PS3.5 A.4, losslessly).
        """
        counts, failed_uids, causes = tally
        from dicomio.dataset import UNCOMPRESSED
        from dicomio.presentation import MAX_PRESENTATION_CONTEXTS, build_context

        host, port = destination[0], destination[1]
        datasets = [ds for status, ds in items if status in PENDING_CODES]
        if not datasets:
            return
        wanted: dict[str, dict[str, None]] = {}
        for ds in datasets:
            sop_class, ts = await anyio.to_thread.run_sync(_class_and_syntax, ds)
            syntaxes = wanted.setdefault(sop_class, {})
            syntaxes[_UNCOMPRESSED_KEY] = None
            if UID(ts) not in UNCOMPRESSED:
                syntaxes[ts] = None
        contexts = [
            build_context(
                sop_class,
                [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN]
                if ts == _UNCOMPRESSED_KEY
                else [ts],
            )
            for sop_class, syntaxes in wanted.items()
            for ts in sorted(syntaxes, key=lambda ts: ts != _UNCOMPRESSED_KEY)
        ]
        contexts = contexts[:MAX_PRESENTATION_CONTEXTS]
        try:
            async with self.ae.associate(
                host, port, ae_title=command.move_destination, contexts=contexts
            ) as sub:
                for ds in datasets:
                    await self._sub_store(
                        sub, command, ds, counts, failed_uids, causes, originator=True
                    )
                    await self._respond(context, response(PENDING))
        except (
            errors.AssociationRejected,
            errors.AssociationAborted,
            errors.ConnectionClosed,
            errors.TimeoutError,
            OSError,
        ) as exc:
            self.log.warning(
                "move sub-association to %s failed: %s", command.move_destination, exc
            )
            for ds in datasets[counts["completed"] + counts["failed"] + counts["warning"] :]:
                counts["failed"] += 1
                counts["remaining"] = max(0, counts["remaining"] - 1)
                uid = _instance_uid(ds)
                if uid:
                    failed_uids.append(uid)


def _cause(exc: Exception) -> str:
    """A failed sub-operation's cause, its kind first: the Error Comment keeps 64 characters."""
    if isinstance(exc, errors.LossyTranscodeRefused):
        return f"lossy conversion not allowed: {exc}"
    if isinstance(exc, errors.CodecUnavailable):
        return f"no codec installed: {exc}"
    if isinstance(exc, errors.NoPresentationContext):
        return f"no presentation context: {exc}"
    return str(exc)


def _error_comment(causes: list[str]) -> str:
    """The first failure's cause as an Error Comment: LO, at most 64 characters (PS3.5 6.2).

    The instances are in the Failed SOP Instance UID List; the comment gives the cause,
    which a user otherwise finds only in the server's log.
    """
    text = causes[0] if len(causes) == 1 else f"{len(causes)} failed, first: {causes[0]}"
    # The default repertoire only, and no backslash: it would split an LO value in two.
    text = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text)
    return text if len(text) <= 64 else text[:61] + "..."


def _instance_uid(ds: Any) -> str:
    if isinstance(ds, Dataset):
        return str(ds.get("SOPInstanceUID", ""))
    if isinstance(ds, (str, Path)):
        info = read_file_info(ds)
        return str(info.sop_instance_uid) if info else ""
    return ""


def _class_and_syntax(ds: Any) -> tuple[str, str]:
    if isinstance(ds, (str, Path)):
        info = read_file_info(ds)
        if info is not None:
            return str(info.sop_class_uid), str(info.transfer_syntax)
        from pydicom import dcmread

        ds = dcmread(ds)
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return str(ds.SOPClassUID), str(ts or UID("1.2.840.10008.1.2.1"))
