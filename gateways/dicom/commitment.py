"""Storage Commitment Push Model SCP (IHE RAD-10): an N-ACTION asks the hub to commit instances; the answer
is an N-EVENT-REPORT listing what is durably stored and indexed (ReferencedSOPSequence) and what is not,
with the reason (FailedSOPSequence, FailureReason).

The report goes back on the modality's association while it is open (sent from a thread once the N-ACTION
response is out: the standard wants the response first); otherwise the hub opens a new association to the
node the registry gives for the modality's AE title (``dicom_nodes``), proposing itself as SCP by role
selection, and tries a few times. A report that still cannot be delivered is logged; the modality asks
again after its own timeout (nothing commits that is not stored, so a repeated question is harmless).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, build_role, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from gateways.dicom.status import SUCCESS, BadDataset, Op, failure
from telenet.services import commitment
from telenet.services.commitment import CommitmentResult, Failed, Reference

if TYPE_CHECKING:
    from gateways.dicom.handlers import Handlers

log = logging.getLogger(__name__)

#: The well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.2).
PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
REPORT_ATTEMPTS = 3
SAME_ASSOCIATION_TIMEOUT_S = 2.0
PLAIN = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


def references(info: Dataset | None) -> tuple[str, list[Reference]]:
    """TransactionUID and the ReferencedSOPSequence of an N-ACTION's Action Information."""
    if info is None:
        raise BadDataset("N-ACTION without Action Information")
    transaction = str(info.get("TransactionUID", "") or "").strip()
    if not transaction or len(transaction) > 64:
        raise BadDataset("Transaction UID (0008,1195) missing or longer than 64 characters")
    refs = []
    for item in info.get("ReferencedSOPSequence") or []:
        cls = str(item.get("ReferencedSOPClassUID", "") or "").strip()
        uid = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
        if not cls or not uid:
            raise BadDataset("a ReferencedSOPSequence item lacks its SOP Class or Instance UID")
        refs.append(Reference(cls, uid))
    if not refs:
        raise BadDataset("Referenced SOP Sequence (0008,1199) is empty")
    return transaction, refs


def event_information(result: CommitmentResult, retrieve_ae: str) -> tuple[int, Dataset]:
    """(Event Type ID, Event Information): 1 when every instance is committed, 2 when some failed."""
    ds = Dataset()
    ds.TransactionUID = result.transaction_uid
    ds.RetrieveAETitle = retrieve_ae
    ok = []
    for stored in result.stored:
        item = Dataset()
        item.ReferencedSOPClassUID = stored.reference.sop_class_uid
        item.ReferencedSOPInstanceUID = stored.reference.sop_instance_uid
        ok.append(item)
    if ok:
        ds.ReferencedSOPSequence = Sequence(ok)
    bad = []
    for failed in result.failed:
        item = Dataset()
        item.ReferencedSOPClassUID = failed.reference.sop_class_uid
        item.ReferencedSOPInstanceUID = failed.reference.sop_instance_uid
        item.FailureReason = failed.reason
        bad.append(item)
    if bad:
        ds.FailedSOPSequence = Sequence(bad)
    return (2 if bad else 1), ds


class StorageCommitment:
    """The N-ACTION handler and the report sender, bound to the node's handlers."""

    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers
        self.node = handlers.node
        self.reports: list[tuple[str, str]] = []  # (transaction UID, "same" | "new" | "undelivered"), for ops

    def on_n_action(self, event: Event) -> tuple[int | Dataset, Dataset | None]:
        try:
            if str(getattr(event.request, "RequestedSOPClassUID", "")) != StorageCommitmentPushModel:
                raise BadDataset("N-ACTION is only supported for Storage Commitment Push Model")
            if event.action_type != 1:
                raise BadDataset(f"Action Type ID {event.action_type}: only 1 (request storage commitment)")
            actor = self.handlers.actor(event)
            transaction, refs = references(event.action_information)
            result = self.node.bridge.call(commitment.check, self.node.hub, actor, transaction, refs)
            result = self._on_disk(result)
        except Exception as exc:
            return failure(Op.N_ACTION, exc), None
        calling = str(event.assoc.requestor.ae_title).strip()
        threading.Thread(
            target=self._report, args=(event.assoc, calling, result), name=f"commit-{transaction[-12:]}", daemon=True
        ).start()
        return SUCCESS, None

    def _on_disk(self, result: CommitmentResult) -> CommitmentResult:
        """An index row whose file is gone is not committed (processing failure)."""
        stored, failed = [], list(result.failed)
        for item in result.stored:
            path = Path(item.path)
            if not path.is_absolute():
                path = self.node.store.root / path
            if path.is_file():
                stored.append(item)
            else:
                log.error("storage commitment: %s is indexed but %s is missing", item.reference.sop_instance_uid, path)
                failed.append(Failed(item.reference, commitment.PROCESSING_FAILURE))
        return CommitmentResult(result.transaction_uid, tuple(stored), tuple(failed))

    def _report(self, assoc: Any, calling: str, result: CommitmentResult) -> None:
        event_type, info = event_information(result, self.node.settings.dicom_ae_title)
        deadline = time.monotonic() + 5
        while getattr(assoc, "_is_paused", False) and assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.005)  # the N-ACTION response is being sent
        if assoc.is_established:
            # A modality that releases right after the N-ACTION response ignores a report that crosses its
            # release: wait briefly for its answer, then use a new association.
            previous, assoc.dimse_timeout = assoc.dimse_timeout, SAME_ASSOCIATION_TIMEOUT_S
            try:
                if self._send(assoc, event_type, info):
                    self.reports.append((result.transaction_uid, "same"))
                    return
            finally:
                assoc.dimse_timeout = previous
        for attempt in range(REPORT_ATTEMPTS):
            if self._send_new(calling, event_type, info):
                self.reports.append((result.transaction_uid, "new"))
                return
            time.sleep(min(0.5 * 2**attempt, 4.0))
        self.reports.append((result.transaction_uid, "undelivered"))
        log.error("storage commitment report %s to %s could not be delivered", result.transaction_uid, calling)

    @staticmethod
    def _send(assoc: Any, event_type: int, info: Dataset) -> bool:
        try:
            status, _ = assoc.send_n_event_report(info, event_type, StorageCommitmentPushModel, PUSH_MODEL_INSTANCE)
        except Exception as exc:  # released or aborted meanwhile
            log.info("storage commitment report on the open association failed: %s", exc)
            return False
        return bool(status) and int(status.Status) == SUCCESS

    def _send_new(self, calling: str, event_type: int, info: Dataset) -> bool:
        node = self.node.bridge.call(commitment.node_of, self.node.hub, calling)
        if node is None:
            log.warning("storage commitment: no registered node for %s to report to", calling)
            return False
        ae = AE(ae_title=self.node.settings.dicom_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        ae.add_requested_context(StorageCommitmentPushModel, PLAIN)
        # The hub is the SCP of the SOP class on an association it requests: say so by role selection.
        role = build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        handlers: list[Any] = [(evt.EVT_CONN_OPEN, self.node.on_conn_open)]
        assoc = ae.associate(node[0], node[1], ae_title=calling, ext_neg=[role], evt_handlers=handlers)
        if not assoc.is_established:
            return False
        try:
            return self._send(assoc, event_type, info)
        finally:
            assoc.release()
