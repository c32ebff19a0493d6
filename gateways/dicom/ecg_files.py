"""ECG on arrival: read the waveform, measure the heart rate (Pan–Tompkins) and write the downsampled viewer
JSON next to the stored file. Runs on the association thread; failures are recorded, never fatal (the
instance is stored all the same). The 12-lead SVG is rendered once, on its first view (:func:`render_svg_file`,
off the event loop), so drawing it never holds the GIL while associations are ingesting."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from gateways.dicom.storage import FileStore
from gateways.dicom.waveform import read_ecg
from telenet.ecg import PAN_TOMPKINS, downsample, measure_heart_rate, render_svg
from telenet.services.studies import EcgSummary

log = logging.getLogger(__name__)


def ecg_paths(final: Path) -> tuple[Path, Path]:
    return final.with_suffix(".ecg.svg"), final.with_suffix(".ecg.json")


def process_ecg(ds: Dataset, store: FileStore, final: Path) -> EcgSummary:
    svg_path, json_path = ecg_paths(final)
    try:
        wave = read_ecg(ds)
        rate = measure_heart_rate(wave)
        store.write_bytes(json_path, json.dumps(downsample(wave)).encode("utf-8"))
    except (ValueError, KeyError, AttributeError, TypeError, IndexError) as exc:
        log.warning("ECG %s could not be measured: %s", ds.get("SOPInstanceUID"), exc)
        store.remove(svg_path, json_path)
        return EcgSummary(None, None, 0, None, PAN_TOMPKINS, None, None, [], None, None, error=str(exc)[:500])
    return EcgSummary(
        heart_rate_bpm=rate.bpm,
        rr_ms_mean=rate.rr_ms_mean,
        r_peak_count=len(rate.r_peaks),
        lead=rate.lead,
        method=rate.method,
        sampling_hz=wave.sampling_hz,
        duration_s=wave.duration_s,
        leads=list(wave.leads),
        svg_path=str(svg_path),
        json_path=str(json_path),
    )


def _title(ds: Dataset) -> str:
    return f"ECG {ds.get('AcquisitionDateTime') or ds.get('StudyDate') or ''}".strip()


def render_svg_file(instance_path: str, svg_path: str) -> bool:
    """Render the SVG of the stored ECG at ``instance_path`` into ``svg_path`` (atomically) unless it is
    there already; False when the waveform cannot be read. Blocking: call it on a worker thread."""
    target = Path(svg_path)
    if target.is_file():
        return True
    try:
        ds = dcmread(instance_path)
        svg = render_svg(read_ecg(ds), title=_title(ds))
    except (OSError, ValueError, KeyError, AttributeError, TypeError, IndexError) as exc:
        log.warning("ECG %s could not be rendered: %s", instance_path, exc)
        return False
    FileStore.write_derived(target, svg.encode("utf-8"))
    return True
