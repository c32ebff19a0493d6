"""Simulated township modalities: worklist query, C-STORE of the study (or the ECG), MPPS — on threads,
because pynetdicom's associations are blocking."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from functools import cache

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import TwelveLeadECGWaveformStorage  # type: ignore[attr-defined]

from gateways.dicom.modality_sim import ModalityError, ModalitySim, associate


@cache
def _ecg_template() -> Dataset:
    path = get_testdata_file("waveform_ecg.dcm")
    assert path is not None
    return dcmread(path)


def perform_imaging(
    ae_title: str,
    host: str,
    port: int,
    called_ae: str,
    accession: str,
    images: int = 2,
    *,
    retry_pauses: Sequence[float] = (),
    on_retry: Callable[[], None] | None = None,
) -> str:
    """Find the order on the worklist by accession number, then acquire, C-STORE and MPPS it; an association
    the node refuses is tried again after each of ``retry_pauses``."""
    sim = ModalitySim(ae_title, host, port, called_ae=called_ae, retry_pauses=retry_pauses, on_retry=on_retry)
    items = sim.worklist(accession_number=accession)
    if not items:
        raise ModalityError(f"{accession} is not on {ae_title}'s worklist")
    done = sim.perform(items[0], count=images)
    if any(status != 0x0000 for status in done.store_statuses):
        raise ModalityError(f"C-STORE statuses {done.store_statuses}")
    return done.study_instance_uid


def send_ecg(
    ae_title: str,
    host: str,
    port: int,
    called_ae: str,
    accession: str,
    patient_id: str,
    patient_name: str,
    *,
    retry_pauses: Sequence[float] = (),
    on_retry: Callable[[], None] | None = None,
) -> str:
    """pydicom's bundled 12-lead ECG, re-identified for this order, sent with C-STORE."""
    ds = copy.deepcopy(_ecg_template())
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    # The sample patient's birth date and sex are not this order's: left out rather than contradicting it.
    ds.PatientBirthDate = ds.PatientSex = ""
    ds.AccessionNumber = accession
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(TwelveLeadECGWaveformStorage, ds.file_meta.TransferSyntaxUID)
    assoc = associate(ae, host, port, called_ae, retry_pauses=retry_pauses, on_retry=on_retry)
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    if code != 0x0000:
        raise ModalityError(f"ECG C-STORE status {code}")
    return str(ds.StudyInstanceUID)
