"""DICOM waveform objects to :class:`telenet.ecg.EcgWaveform`: pick the ECG multiplex group, label, scale.

Pure mapping, no I/O: the C-STORE handler and the API read the file, this turns the dataset into
millivolts per lead. DICOM keywords are kept verbatim (PS3.3 C.10.9 Waveform module, CID 3001 leads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from telenet.ecg import STANDARD_LEADS, EcgWaveform, normalize_lead_label

TwelveLeadECGWaveformStorage: Final = UID("1.2.840.10008.5.1.4.1.1.9.1.1")
GeneralECGWaveformStorage: Final = UID("1.2.840.10008.5.1.4.1.1.9.1.2")
ECG_SOP_CLASSES: Final[tuple[UID, ...]] = (TwelveLeadECGWaveformStorage, GeneralECGWaveformStorage)

# CID 3001 "ECG Leads": SCPECG code values 5.6.3-9-N and MDC 2:N share the lead number N.
_LEAD_NUMBERS: Final[dict[str, str]] = {
    "1": "I",
    "2": "II",
    "61": "III",
    "62": "aVR",
    "63": "aVL",
    "64": "aVF",
    **{str(2 + v): f"V{v}" for v in range(1, 7)},
}
_CODE_PREFIXES: Final[dict[str, str]] = {"SCPECG": "5.6.3-9-", "MDC": "2:"}

# UCUM voltage units (ChannelSensitivityUnitsSequence CodeValue) to millivolts.
_TO_MILLIVOLT: Final[dict[str, float]] = {
    "V": 1000.0,
    "mV": 1.0,
    "uV": 1e-3,
    "µV": 1e-3,
    "μV": 1e-3,
    "nV": 1e-6,
}


@dataclass(frozen=True)
class _Channel:
    label: str
    standard: bool
    to_mv: float | None  # None: not a voltage channel, or its unit is unknown


def is_ecg(ds: Dataset) -> bool:
    """True when the dataset's SOP class is one of the ECG waveform storage classes."""
    return str(ds.get("SOPClassUID", "")) in ECG_SOP_CLASSES


def read_ecg(ds: Dataset) -> EcgWaveform:
    """The ECG leads of a waveform object in millivolts, from its best ECG multiplex group.

    The group with the most recognised leads wins, ORIGINAL before DERIVED (a 12-lead object carries a
    10 s rhythm group and a derived median beat), then the longer one. ``ds.waveform_array`` already
    applies ChannelSensitivity × ChannelSensitivityCorrectionFactor + ChannelBaseline (pydicom 3
    ``multiplex_array(as_raw=False)``), so only the sensitivity unit is converted here. Raises
    ``ValueError`` when there is no waveform or no ECG lead in it.
    """
    sop = ds.get("SOPClassUID", "unknown SOP class")
    groups = list(ds.get("WaveformSequence") or [])
    if not groups:
        raise ValueError(f"dataset ({sop}) has no waveform: Waveform Sequence (5400,0100) is missing or empty")

    candidates: list[tuple[tuple[int, int, int, int], int, list[_Channel]]] = []
    for index, group in enumerate(groups):
        channels = [_channel(definition) for definition in group.get("ChannelDefinitionSequence") or []]
        n_standard = sum(channel.standard for channel in channels)
        group_label = str(group.get("MultiplexGroupLabel", "")).upper()
        if n_standard == 0 and "ECG" not in group_label:
            continue
        score = (
            n_standard,
            int(str(group.get("WaveformOriginality", "")).upper() == "ORIGINAL"),
            int("RHYTHM" in group_label),
            int(group.get("NumberOfWaveformSamples", 0)),
        )
        candidates.append((score, index, channels))
    if not candidates:
        raise ValueError(f"dataset ({sop}) has a waveform but no multiplex group with ECG leads")
    _, index, channels = max(candidates, key=lambda candidate: candidate[0])
    group = groups[index]

    frequency = group.get("SamplingFrequency")
    if frequency is None or float(frequency) <= 0:
        raise ValueError(f"ECG multiplex group {index} has no valid Sampling Frequency (003A,001A)")
    try:
        samples = ds.waveform_array(index)
    except (AttributeError, KeyError, ValueError) as exc:
        raise ValueError(f"ECG multiplex group {index} cannot be decoded: {exc}") from exc
    if samples.ndim != 2 or samples.shape[1] != len(channels):
        raise ValueError(
            f"ECG multiplex group {index} has {len(channels)} channel definitions "
            f"but data for {samples.shape[1] if samples.ndim == 2 else '?'} channels"
        )

    leads: dict[str, np.ndarray] = {}
    for column, channel in enumerate(channels):
        if channel.to_mv is None:
            if channel.standard:
                raise ValueError(
                    f"lead {channel.label} has no voltage Channel Sensitivity Units; cannot express it in mV"
                )
            continue  # e.g. a respiration or pacing channel multiplexed with the leads
        if channel.label in leads:
            continue
        leads[channel.label] = samples[:, column] * channel.to_mv
    if not leads:
        raise ValueError(f"ECG multiplex group {index} has no channel in volts")
    return EcgWaveform(sampling_hz=float(frequency), leads=leads)


def _channel(definition: Dataset) -> _Channel:
    label = _lead_label(definition)
    return _Channel(label=label, standard=label in STANDARD_LEADS, to_mv=_millivolts_per_unit(definition))


def _lead_label(definition: Dataset) -> str:
    """CodeMeaning ("Lead I (Einthoven)"), else the CID 3001 code value, else ChannelLabel."""
    sources = definition.get("ChannelSourceSequence") or []
    source = sources[0] if sources else Dataset()
    meaning = normalize_lead_label(str(source.get("CodeMeaning", "")))
    if meaning in STANDARD_LEADS:
        return meaning
    prefix = _CODE_PREFIXES.get(str(source.get("CodingSchemeDesignator", "")).upper())
    code = str(source.get("CodeValue", ""))
    if prefix and code.startswith(prefix) and code[len(prefix) :] in _LEAD_NUMBERS:
        return _LEAD_NUMBERS[code[len(prefix) :]]
    channel_label = normalize_lead_label(str(definition.get("ChannelLabel", "")))
    if channel_label in STANDARD_LEADS:
        return channel_label
    return meaning or channel_label or code or "unlabelled"


def _millivolts_per_unit(definition: Dataset) -> float | None:
    if "ChannelSensitivity" not in definition:
        return None  # raw counts: waveform_array leaves them unscaled and unitless
    units = definition.get("ChannelSensitivityUnitsSequence") or []
    if not units:
        return None
    return _TO_MILLIVOLT.get(str(units[0].get("CodeValue", "")).strip())
