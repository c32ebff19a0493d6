"""A simulated township modality (pynetdicom SCU): it asks the hub's worklist for its orders, "acquires" a
study for an order (small synthetic images carrying the order's patient, accession number and
StudyInstanceUID), sends it with C-STORE and reports it with MPPS (N-CREATE IN PROGRESS, N-SET COMPLETED
listing every instance). Used by the tests, and by the network simulator as its modality."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
)

from gateways.dicom.node import nodelay

# Storage class of the images each modality produces (anything else: Secondary Capture).
IMAGE_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


class ModalityError(Exception):
    pass


class AssociationRefused(ModalityError):
    """The node did not accept the association (nothing was sent on it): a modality tries again later."""


def associate(
    ae: Any, host: str, port: int, called_ae: str, *, retry_pauses: Sequence[float] = (), on_retry: Any = None
) -> Any:
    """An association from ``ae``, tried again after each pause of ``retry_pauses`` (each drawn from half to one
    and a half times it) while the node refuses it, as a modality's send queue does (pynetdicom's node refuses
    past its association limit, A-ASSOCIATE-RJ transient); :class:`AssociationRefused` after the last."""
    for pause in (*retry_pauses, None):
        assoc = ae.associate(host, port, ae_title=called_ae, evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)])
        if assoc.is_established:
            return assoc
        if pause is None:
            raise AssociationRefused(f"{called_ae} at {host}:{port} refused the association of {ae.ae_title}")
        if on_retry is not None:
            on_retry()
        time.sleep(pause * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


@dataclass
class Performed:
    """What one simulated exam produced."""

    accession_number: str
    study_instance_uid: str
    mpps_uid: str
    images: list[Dataset] = field(default_factory=list)
    store_statuses: list[int] = field(default_factory=list)


class ModalitySim:
    def __init__(
        self,
        ae_title: str,
        host: str,
        port: int,
        *,
        called_ae: str = "TELENET",
        modality: str = "DX",
        retry_pauses: Sequence[float] = (),
        on_retry: Any = None,
    ) -> None:
        self.ae_title = ae_title
        self.host = host
        self.port = port
        self.called_ae = called_ae
        self.modality = modality
        self.retry_pauses = retry_pauses
        self.on_retry = on_retry

    def _associate(self, contexts: Sequence[Any]) -> Any:
        ae = AE(ae_title=self.ae_title)
        ae.requested_contexts = list(contexts)
        return associate(
            ae, self.host, self.port, self.called_ae, retry_pauses=self.retry_pauses, on_retry=self.on_retry
        )

    def worklist(self, *, accession_number: str = "", date: str = "") -> list[Dataset]:
        """C-FIND on the Modality Worklist for this station's scheduled steps."""
        query = Dataset()
        query.SpecificCharacterSet = "ISO_IR 192"
        query.PatientName = ""
        query.PatientID = ""
        query.PatientBirthDate = ""
        query.PatientSex = ""
        query.AccessionNumber = accession_number
        query.StudyInstanceUID = ""
        query.RequestedProcedureDescription = ""
        query.RequestedProcedureID = ""
        step = Dataset()
        step.Modality = ""
        step.ScheduledStationAETitle = self.ae_title
        step.ScheduledProcedureStepStartDate = date
        step.ScheduledProcedureStepID = ""
        query.ScheduledProcedureStepSequence = DicomSequence([step])
        assoc = self._associate([build_context(ModalityWorklistInformationFind)])
        items: list[Dataset] = []
        try:
            for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind):
                code = getattr(status, "Status", None)
                if code in (0xFF00, 0xFF01) and identifier is not None:
                    items.append(identifier)
                elif code is None or code != 0x0000:
                    raise ModalityError(f"worklist query failed: {status}")
        finally:
            assoc.release()
        return items

    def acquire(self, item: Dataset, count: int = 3) -> list[Dataset]:
        """Synthetic images for a worklist item: its patient, accession and StudyInstanceUID, one series."""
        step = item.ScheduledProcedureStepSequence[0] if "ScheduledProcedureStepSequence" in item else Dataset()
        modality = str(step.get("Modality") or self.modality)
        sop_class = IMAGE_CLASSES.get(modality, SECONDARY_CAPTURE)
        series_uid = generate_uid()
        now = dt.datetime.now()
        rng = np.random.default_rng(count)
        images = []
        for number in range(1, count + 1):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.StudyInstanceUID = str(item.get("StudyInstanceUID") or generate_uid())
            ds.SeriesInstanceUID = series_uid
            ds.AccessionNumber = str(item.get("AccessionNumber", ""))
            ds.PatientName = item.get("PatientName", "")
            ds.PatientID = str(item.get("PatientID", ""))
            ds.PatientBirthDate = str(item.get("PatientBirthDate", ""))
            ds.PatientSex = str(item.get("PatientSex", ""))
            ds.Modality = modality
            ds.StudyDate = ds.SeriesDate = now.strftime("%Y%m%d")
            ds.StudyTime = now.strftime("%H%M%S")
            ds.StudyID = "1"
            ds.SeriesNumber = 1
            ds.InstanceNumber = number
            ds.StationName = self.ae_title
            ds.Rows = ds.Columns = 64
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.PixelData = rng.integers(0, 4096, size=(64, 64), dtype=np.uint16).tobytes()
            images.append(ds)
        return images

    def store(self, images: Sequence[Dataset]) -> list[int]:
        classes = dict.fromkeys(str(ds.SOPClassUID) for ds in images)
        assoc = self._associate([build_context(uid, [ExplicitVRLittleEndian]) for uid in classes])
        try:
            return [int(getattr(assoc.send_c_store(ds), "Status", -1)) for ds in images]
        finally:
            assoc.release()

    def mpps_in_progress(self, item: Dataset, study_uid: str) -> str:
        """N-CREATE an MPPS IN PROGRESS for the worklist item; returns its SOP Instance UID."""
        uid = generate_uid()
        now = dt.datetime.now()
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        scheduled = Dataset()
        scheduled.StudyInstanceUID = study_uid
        scheduled.AccessionNumber = str(item.get("AccessionNumber", ""))
        scheduled.RequestedProcedureID = str(item.get("RequestedProcedureID", ""))
        steps = item.get("ScheduledProcedureStepSequence") or [Dataset()]
        scheduled.ScheduledProcedureStepID = str(steps[0].get("ScheduledProcedureStepID", ""))
        scheduled.ReferencedStudySequence = DicomSequence([])
        ds.ScheduledStepAttributesSequence = DicomSequence([scheduled])
        ds.PatientName = item.get("PatientName", "")
        ds.PatientID = str(item.get("PatientID", ""))
        ds.PerformedProcedureStepID = uid[-16:]
        ds.PerformedStationAETitle = self.ae_title
        ds.PerformedProcedureStepStartDate = now.strftime("%Y%m%d")
        ds.PerformedProcedureStepStartTime = now.strftime("%H%M%S")
        ds.PerformedProcedureStepStatus = "IN PROGRESS"
        ds.Modality = self.modality
        ds.PerformedSeriesSequence = DicomSequence([])
        self._n(lambda assoc: assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid), "N-CREATE")
        return uid

    def mpps_completed(self, mpps_uid: str, images: Sequence[Dataset]) -> None:
        """N-SET the MPPS to COMPLETED, listing every instance of every series."""
        now = dt.datetime.now()
        ds = Dataset()
        ds.PerformedProcedureStepStatus = "COMPLETED"
        ds.PerformedProcedureStepEndDate = now.strftime("%Y%m%d")
        ds.PerformedProcedureStepEndTime = now.strftime("%H%M%S")
        series: dict[str, list[Dataset]] = {}
        for image in images:
            series.setdefault(str(image.SeriesInstanceUID), []).append(image)
        performed = []
        for series_uid, members in series.items():
            entry = Dataset()
            entry.SeriesInstanceUID = series_uid
            entry.PerformingPhysicianName = ""
            entry.ProtocolName = self.modality
            entry.OperatorsName = ""
            entry.SeriesDescription = ""
            entry.RetrieveAETitle = ""
            refs = []
            for image in members:
                ref = Dataset()
                ref.ReferencedSOPClassUID = image.SOPClassUID
                ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
                refs.append(ref)
            entry.ReferencedImageSequence = DicomSequence(refs)
            entry.ReferencedNonImageCompositeSOPInstanceSequence = DicomSequence([])
            performed.append(entry)
        ds.PerformedSeriesSequence = DicomSequence(performed)
        self._n(lambda assoc: assoc.send_n_set(ds, ModalityPerformedProcedureStep, mpps_uid), "N-SET")

    def _n(self, send: Any, what: str) -> None:
        assoc = self._associate([build_context(ModalityPerformedProcedureStep)])
        try:
            status, _ = send(assoc)
        finally:
            assoc.release()
        code = getattr(status, "Status", None)
        if code != 0x0000:
            raise ModalityError(f"{what} failed: 0x{code or 0:04X} {getattr(status, 'ErrorComment', '')}")

    def perform(self, item: Dataset, count: int = 3) -> Performed:
        """The whole exam for one worklist item: acquire, C-STORE, MPPS IN PROGRESS, MPPS COMPLETED."""
        images = self.acquire(item, count)
        study_uid = str(images[0].StudyInstanceUID)
        done = Performed(str(item.get("AccessionNumber", "")), study_uid, "", images)
        done.store_statuses = self.store(images)
        done.mpps_uid = self.mpps_in_progress(item, study_uid)
        self.mpps_completed(done.mpps_uid, images)
        return done
