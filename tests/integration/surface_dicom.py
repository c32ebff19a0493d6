"""The DICOM rows of the surface table executed by pynetdicom SCUs against the hub's node: each operation as
one association, its outcome as ``surface_table.DicomOp`` spells it (``rejected``, ``ok:N``, ``status:0xNNNN``).
Every call blocks; the caller runs it on a thread (the node answers from the event loop)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from tests.dicom_fixtures import instance

ECG_CLASS = "1.2.840.10008.5.1.4.1.1.9.1.1"  # 12-lead ECG Waveform Storage
SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


@contextlib.contextmanager
def _association(port: int, calling: str, contexts: list[str], **kwargs: Any) -> Iterator[Any]:
    ae = AE(ae_title=calling)
    for uid in contexts:
        ae.add_requested_context(uid, SYNTAXES)
    assoc = ae.associate("127.0.0.1", port, ae_title="TELENET", **kwargs)
    if not assoc.is_established:
        yield None
        return
    try:
        yield assoc
    finally:
        assoc.release()


def _outcome(statuses: list[Any], count: int) -> str:
    codes = [int(getattr(s, "Status", -1)) for s in statuses if s is not None]
    final = codes[-1] if codes else -1
    return f"ok:{count}" if final == 0 else f"status:0x{final & 0xFFFF:04X}"


def echo(port: int, calling: str) -> str:
    with _association(port, calling, [Verification]) as assoc:
        if assoc is None:
            return "rejected"
        return _outcome([assoc.send_c_echo()], 0)


def store(port: int, calling: str) -> str:
    """A fresh ECG of nobody's order (it lands in reconciliation)."""
    ds = instance("waveform_ecg.dcm")
    with _association(port, calling, [ECG_CLASS]) as assoc:
        if assoc is None:
            return "rejected"
        return _outcome([assoc.send_c_store(ds)], 1)


def _study_query(study_uid: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    query.PatientID = ""
    query.AccessionNumber = ""
    return query


def find_study(port: int, calling: str, study_uid: str) -> str:
    with _association(port, calling, [StudyRootQueryRetrieveInformationModelFind]) as assoc:
        if assoc is None:
            return "rejected"
        statuses, matches = [], 0
        for status, identifier in assoc.send_c_find(
            _study_query(study_uid), StudyRootQueryRetrieveInformationModelFind
        ):
            statuses.append(status)
            if identifier is not None and int(getattr(status, "Status", -1)) in (0xFF00, 0xFF01):
                matches += 1
        return _outcome(statuses, matches)


def worklist(port: int, calling: str, accession_number: str) -> str:
    query = Dataset()
    query.PatientName = ""
    query.PatientID = ""
    query.AccessionNumber = accession_number
    step = Dataset()
    step.Modality = ""
    step.ScheduledStationAETitle = ""
    query.ScheduledProcedureStepSequence = DicomSequence([step])
    with _association(port, calling, [ModalityWorklistInformationFind]) as assoc:
        if assoc is None:
            return "rejected"
        statuses, matches = [], 0
        for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind):
            statuses.append(status)
            if identifier is not None and int(getattr(status, "Status", -1)) in (0xFF00, 0xFF01):
                matches += 1
        return _outcome(statuses, matches)


def get(port: int, calling: str, study_uid: str) -> str:
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0

    ae = AE(ae_title=calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet, SYNTAXES)
    ae.add_requested_context(ECG_CLASS, SYNTAXES)
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="TELENET",
        ext_neg=[build_role(ECG_CLASS, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    if not assoc.is_established:
        return "rejected"
    try:
        statuses = [s for s, _ in assoc.send_c_get(_study_query(study_uid), StudyRootQueryRetrieveInformationModelGet)]
    finally:
        assoc.release()
    return _outcome(statuses, len(received))


class StorageSCP:
    """The move destination: a storage SCP on a free loopback port that counts what it receives."""

    def __init__(self, ae_title: str) -> None:
        self.received: list[str] = []
        self.ae = AE(ae_title=ae_title)
        self.ae.supported_contexts = StoragePresentationContexts
        self.server: Any = None

    def _on_store(self, event: Any) -> int:
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        return 0

    def start(self) -> int:
        self.server = self.ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return int(self.server.server_address[1])

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


def move(port: int, calling: str, study_uid: str, destination: StorageSCP, destination_ae: str) -> str:
    before = len(destination.received)
    with _association(port, calling, [StudyRootQueryRetrieveInformationModelMove]) as assoc:
        if assoc is None:
            return "rejected"
        statuses = [
            s
            for s, _ in assoc.send_c_move(
                _study_query(study_uid), destination_ae, StudyRootQueryRetrieveInformationModelMove
            )
        ]
    return _outcome(statuses, len(destination.received) - before)


def _mpps_create_dataset(accession_number: str, calling: str) -> Dataset:
    ds = Dataset()
    scheduled = Dataset()
    scheduled.StudyInstanceUID = generate_uid()
    scheduled.AccessionNumber = accession_number
    scheduled.RequestedProcedureID = ""
    scheduled.ScheduledProcedureStepID = ""
    scheduled.ReferencedStudySequence = DicomSequence([])
    ds.ScheduledStepAttributesSequence = DicomSequence([scheduled])
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PerformedProcedureStepID = "1"
    ds.PerformedStationAETitle = calling
    ds.PerformedProcedureStepStartDate = "20260302"
    ds.PerformedProcedureStepStartTime = "100000"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "DX"
    ds.PerformedSeriesSequence = DicomSequence([])
    return ds


def mpps_create(port: int, calling: str, accession_number: str, uid: str) -> str:
    with _association(port, calling, [ModalityPerformedProcedureStep]) as assoc:
        if assoc is None:
            return "rejected"
        status, _ = assoc.send_n_create(
            _mpps_create_dataset(accession_number, calling), ModalityPerformedProcedureStep, uid
        )
        return _outcome([status], 0)


def mpps_set(port: int, calling: str, uid: str) -> str:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "DISCONTINUED"
    ds.PerformedProcedureStepEndDate = "20260302"
    ds.PerformedProcedureStepEndTime = "100500"
    with _association(port, calling, [ModalityPerformedProcedureStep]) as assoc:
        if assoc is None:
            return "rejected"
        status, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, uid)
        return _outcome([status], 0)


def commit(port: int, calling: str, sop_class_uid: str, sop_instance_uid: str) -> str:
    """Storage commitment (N-ACTION) of one stored instance, the report awaited on the open association:
    ``ok:N`` with N the instances the hub committed, ``status:...`` for a failed N-ACTION, ``report:none``."""
    from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

    reports: list[Dataset] = []
    arrived = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        reports.append(event.event_information)
        arrived.set()
        return 0x0000, None

    request = Dataset()
    request.TransactionUID = generate_uid()
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class_uid, sop_instance_uid
    request.ReferencedSOPSequence = DicomSequence([item])
    ae = AE(ae_title=calling)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", port, ae_title="TELENET", evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    if not assoc.is_established:
        return "rejected"
    try:
        status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1")
        if int(getattr(status, "Status", -1)) != 0:
            return f"status:0x{int(getattr(status, 'Status', -1)) & 0xFFFF:04X}"
        if not arrived.wait(10):
            return "report:none"
    finally:
        assoc.release()
    return f"ok:{len(getattr(reports[0], 'ReferencedSOPSequence', []))}"
