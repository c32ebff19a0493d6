"""ECG: DICOM waveform → mV leads, heart rate by Pan–Tompkins, the 12-lead SVG, the viewer JSON."""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from gateways.dicom.waveform import ECG_SOP_CLASSES, is_ecg, read_ecg
from telenet.ecg import (
    MM_PER_MV,
    MM_PER_S,
    STANDARD_LEADS,
    EcgWaveform,
    downsample,
    measure_heart_rate,
    normalize_lead_label,
    render_svg,
)

SVG = "{http://www.w3.org/2000/svg}"


def pydicom_file(name: str) -> str:
    path = get_testdata_file(name)
    assert isinstance(path, str), f"pydicom test file {name} is missing"
    return path


@pytest.fixture(scope="module")
def ecg_ds() -> pydicom.Dataset:
    return pydicom.dcmread(pydicom_file("waveform_ecg.dcm"))


@pytest.fixture(scope="module")
def ecg(ecg_ds: pydicom.Dataset) -> EcgWaveform:
    return read_ecg(ecg_ds)


# --- lead labels and the waveform value ----------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("Lead I (Einthoven)", "I"),
        ("Lead II", "II"),
        ("Lead III (Einthoven)", "III"),
        ("Lead aVR", "aVR"),
        ("Lead aVL (Goldberger)", "aVL"),
        ("AVF", "aVF"),
        ("Lead V1", "V1"),
        ("v6", "V6"),
        ("MDC_ECG_LEAD_V3", "V3"),
        (" Respiration ", "Respiration"),
        ("Lead -aVR", "Lead -aVR"),
    ],
)
def test_lead_labels_are_normalised_when_recognisable(label: str, expected: str) -> None:
    assert normalize_lead_label(label) == expected


def test_waveform_normalises_orders_and_freezes_leads() -> None:
    wave = EcgWaveform(sampling_hz=500, leads={"Lead V1": np.zeros(1000), "Lead I (Einthoven)": np.ones(1000)})
    assert list(wave.leads) == ["I", "V1"]
    assert wave.duration_s == pytest.approx(2.0)
    assert wave.leads["I"].dtype == np.float64
    with pytest.raises(ValueError):
        wave.leads["I"][0] = 5.0


@pytest.mark.parametrize(
    ("sampling_hz", "leads"),
    [
        (0, {"I": np.zeros(10)}),
        (500, {}),
        (500, {"I": np.zeros(10), "II": np.zeros(11)}),
        (500, {"I": np.zeros(10), "Lead I": np.zeros(10)}),
        (500, {"I": np.array([0.0, np.nan])}),
    ],
)
def test_waveform_rejects_inconsistent_input(sampling_hz: float, leads: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError):
        EcgWaveform(sampling_hz=sampling_hz, leads=leads)


# --- DICOM waveform → EcgWaveform ----------------------------------------------------------------


def test_read_ecg_gives_twelve_labelled_leads_at_the_sampling_rate(ecg_ds: pydicom.Dataset, ecg: EcgWaveform) -> None:
    assert ecg_ds.SOPClassUID in ECG_SOP_CLASSES
    assert is_ecg(ecg_ds)
    assert list(ecg.leads) == list(STANDARD_LEADS)
    assert ecg.sampling_hz == 1000.0
    # the 10 s RHYTHM group (ORIGINAL), not the 1.2 s derived MEDIAN BEAT group
    assert ecg.duration_s == pytest.approx(10.0)


def test_read_ecg_scales_once_to_millivolts(ecg_ds: pydicom.Dataset, ecg: EcgWaveform) -> None:
    """Raw 16-bit counts × ChannelSensitivity (1.25 uV) × correction (1) / 1000 = mV, not scaled twice."""
    group = ecg_ds.WaveformSequence[0]
    raw = np.frombuffer(group.WaveformData, dtype="<i2")[: 10000 * 12].reshape(10000, 12)
    for column, name in enumerate(STANDARD_LEADS):
        definition = group.ChannelDefinitionSequence[column]
        assert definition.ChannelSensitivityUnitsSequence[0].CodeValue == "uV"
        factor = float(definition.ChannelSensitivity) * float(definition.ChannelSensitivityCorrectionFactor)
        np.testing.assert_allclose(ecg.leads[name], raw[:, column] * factor / 1000.0)
    assert 0.5 < np.ptp(ecg.leads["II"]) < 5.0  # a plausible QRS amplitude in mV


def test_read_ecg_falls_back_to_the_lead_code(ecg_ds: pydicom.Dataset) -> None:
    ds = copy.deepcopy(ecg_ds)
    for definition in ds.WaveformSequence[0].ChannelDefinitionSequence:
        del definition.ChannelSourceSequence[0].CodeMeaning  # only SCPECG 5.6.3-9-N code values remain
    assert list(read_ecg(ds).leads) == list(STANDARD_LEADS)


def test_read_ecg_converts_millivolt_units(ecg_ds: pydicom.Dataset, ecg: EcgWaveform) -> None:
    ds = copy.deepcopy(ecg_ds)
    for definition in ds.WaveformSequence[0].ChannelDefinitionSequence:
        definition.ChannelSensitivity = 0.00125
        definition.ChannelSensitivityUnitsSequence[0].CodeValue = "mV"
    np.testing.assert_allclose(read_ecg(ds).leads["V6"], ecg.leads["V6"])


def test_read_ecg_refuses_a_dataset_without_waveform() -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    with pytest.raises(ValueError, match="no waveform"):
        read_ecg(ds)


def test_read_ecg_refuses_a_waveform_without_ecg_leads(ecg_ds: pydicom.Dataset) -> None:
    ds = copy.deepcopy(ecg_ds)
    for group in ds.WaveformSequence:
        group.MultiplexGroupLabel = "RESPIRATION"
        for definition in group.ChannelDefinitionSequence:
            definition.ChannelSourceSequence[0].CodeMeaning = "Thoracic impedance"
            definition.ChannelSourceSequence[0].CodeValue = "X-1"
    with pytest.raises(ValueError, match="no multiplex group with ECG leads"):
        read_ecg(ds)


# --- heart rate -----------------------------------------------------------------------------------


def independent_r_peaks(signal: np.ndarray, sampling_hz: float) -> list[int]:
    """R peaks by amplitude alone: |x − median| local maxima above 60 % of the maximum, 250 ms apart.

    Independent of the implementation: no band-pass, no derivative, no squaring, no integration and no
    adaptive thresholds; a fixed threshold on the raw amplitude, greedy largest-first selection with its
    own 250 ms refractory window (Pan–Tompkins uses 200 ms, sequential and adaptive).
    """
    x = np.abs(signal - np.median(signal))
    threshold = 0.6 * x.max()
    candidates = [i for i in range(1, x.size - 1) if x[i] >= threshold and x[i] >= x[i - 1] and x[i] >= x[i + 1]]
    refractory = int(0.25 * sampling_hz)
    chosen: list[int] = []
    for i in sorted(candidates, key=lambda i: -x[i]):
        if all(abs(i - j) >= refractory for j in chosen):
            chosen.append(i)
    return sorted(chosen)


def test_heart_rate_of_the_sample_ecg_agrees_with_an_independent_count(ecg: EcgWaveform) -> None:
    """Pan–Tompkins on lead II against :func:`independent_r_peaks` on the same samples: same beats, ±3 bpm."""
    measured = measure_heart_rate(ecg)
    assert measured.lead == "II"
    assert "Pan-Tompkins" in measured.method
    reference = independent_r_peaks(ecg.leads["II"], ecg.sampling_hz)
    reference_bpm = 60.0 * (len(reference) - 1) / ((reference[-1] - reference[0]) / ecg.sampling_hz)
    assert measured.bpm is not None
    assert abs(measured.bpm - reference_bpm) <= 3.0
    assert len(measured.r_peaks) == len(reference)
    assert all(abs(a - b) <= 0.02 * ecg.sampling_hz for a, b in zip(measured.r_peaks, reference, strict=True))
    assert measured.rr_ms_mean == pytest.approx(60_000.0 / measured.bpm)


def test_every_lead_of_the_sample_gives_the_same_rate(ecg: EcgWaveform) -> None:
    rates = {name: measure_heart_rate(ecg, lead=name).bpm for name in ecg.leads}
    assert all(rate is not None and abs(rate - rates["II"]) <= 1.0 for rate in rates.values())  # type: ignore[operator]


def synthetic_ecg(bpm: float, sampling_hz: float = 500.0, seconds: float = 10.0, seed: int = 7) -> np.ndarray:
    """P-QRS-T complexes of Gaussians at a fixed rate, with baseline wander, 50 Hz hum and white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_hz)) / sampling_hz
    rr = 60.0 / bpm
    x = 0.3 * np.sin(2 * np.pi * 0.25 * t + 1.0) + 0.1 * np.sin(2 * np.pi * 0.6 * t)
    x += 0.05 * np.sin(2 * np.pi * 50 * t) + rng.normal(0.0, 0.03, t.size)
    for beat in np.arange(0.4, seconds, rr):
        t_wave = 0.4 * np.sqrt(rr) - 0.1  # the QT interval shortens with the rate
        for offset, amplitude, width in (
            (-0.16, 0.15, 0.025),  # P
            (-0.025, -0.1, 0.008),  # Q
            (0.0, 1.2, 0.010),  # R
            (0.025, -0.25, 0.010),  # S
            (t_wave, 0.3, 0.040),  # T
        ):
            x += amplitude * np.exp(-0.5 * ((t - beat - offset) / width) ** 2)
    return x


@pytest.mark.parametrize("bpm", [40, 50, 60, 72, 90, 110, 130, 150, 180])
def test_heart_rate_of_a_synthetic_ecg(bpm: int) -> None:
    wave = EcgWaveform(sampling_hz=500, leads={"II": synthetic_ecg(bpm)})
    measured = measure_heart_rate(wave)
    assert measured.bpm == pytest.approx(bpm, abs=2.0)
    assert len(measured.r_peaks) == len(np.arange(0.4, 10.0, 60.0 / bpm))


@settings(max_examples=30, deadline=None)
@given(
    bpm=st.floats(min_value=40, max_value=180),
    sampling_hz=st.sampled_from([250.0, 500.0, 1000.0]),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_heart_rate_holds_across_rates_sampling_and_noise(bpm: float, sampling_hz: float, seed: int) -> None:
    wave = EcgWaveform(sampling_hz=sampling_hz, leads={"V5": synthetic_ecg(bpm, sampling_hz, seed=seed)})
    measured = measure_heart_rate(wave)
    assert measured.lead == "V5"
    assert measured.bpm == pytest.approx(bpm, abs=2.0)


def test_rhythm_lead_without_ii_is_the_best_quality_lead() -> None:
    rng = np.random.default_rng(1)
    wave = EcgWaveform(
        sampling_hz=500, leads={"I": rng.normal(0, 0.2, 5000), "V2": synthetic_ecg(72), "V3": np.zeros(5000)}
    )
    measured = measure_heart_rate(wave)
    assert measured.lead == "V2"
    assert measured.bpm == pytest.approx(72, abs=2.0)


def beats(
    times: list[float], seconds: float, sampling_hz: float = 500.0, p_waves: tuple[float, ...] = ()
) -> np.ndarray:
    """P-QRS-T at the given R times, optional P waves without QRS (blocked beats), white noise."""
    t = np.arange(int(seconds * sampling_hz)) / sampling_hz
    x = np.random.default_rng(0).normal(0.0, 0.03, t.size)
    for r in times:
        x += 1.2 * np.exp(-0.5 * ((t - r) / 0.01) ** 2) + 0.3 * np.exp(-0.5 * ((t - r - 0.28) / 0.05) ** 2)
        x += 0.15 * np.exp(-0.5 * ((t - r + 0.16) / 0.025) ** 2)
    for p in p_waves:
        x += 0.15 * np.exp(-0.5 * ((t - p) / 0.025) ** 2)
    return x


def test_p_waves_of_a_pause_are_not_beats() -> None:
    """2nd-degree AV block: four blocked P waves in a 3.8 s pause must not be counted as QRS."""
    r_times = [0.3, 1.1, 1.9, 2.7, *(6.5 + 0.8 * k for k in range(11))]
    x = beats(r_times, 15.0, p_waves=(3.34, 4.14, 4.94, 5.74))
    measured = measure_heart_rate(EcgWaveform(sampling_hz=500, leads={"II": x}))
    assert [round(t, 1) for t in measured.r_peak_times_s] == [round(t, 1) for t in r_times]


def test_detection_recovers_after_a_loss_of_gain() -> None:
    """The lead drops to 30 % amplitude halfway: thresholds are re-learnt and no beat is lost."""
    r_times = [0.3 + 0.8 * k for k in range(13)]
    x = beats(r_times, 10.0)
    x[2500:] *= 0.3
    measured = measure_heart_rate(EcgWaveform(sampling_hz=500, leads={"II": x}))
    assert len(measured.r_peaks) == len(r_times)
    assert measured.bpm == pytest.approx(75.0, abs=1.0)


def test_flat_line_has_no_rate() -> None:
    measured = measure_heart_rate(EcgWaveform(sampling_hz=500, leads={"II": np.full(5000, 0.2)}))
    assert measured.bpm is None
    assert measured.rr_ms_mean is None
    assert measured.r_peaks == ()


def test_a_single_beat_has_no_rate() -> None:
    x = synthetic_ecg(20, seconds=3.0)  # one beat at 0.4 s, the next would be at 3.4 s
    measured = measure_heart_rate(EcgWaveform(sampling_hz=500, leads={"II": x}))
    assert len(measured.r_peaks) == 1
    assert measured.bpm is None


# --- SVG ------------------------------------------------------------------------------------------


def path_points(d: str) -> list[tuple[float, float]]:
    """Absolute points of a path made of M, l, h, v, H and V commands (what render_svg writes)."""
    points: list[tuple[float, float]] = []
    x = y = 0.0
    for command, args in re.findall(r"([MlhvHV])([^MlhvHV]*)", d):
        numbers = [float(n) for n in args.replace(",", " ").split()]
        if command in "Ml":
            for dx, dy in zip(numbers[::2], numbers[1::2], strict=True):
                x, y = (dx, dy) if command == "M" else (x + dx, y + dy)
                points.append((x, y))
        else:
            for n in numbers:
                x = {"h": x + n, "H": n}.get(command, x)
                y = {"v": y + n, "V": n}.get(command, y)
                points.append((x, y))
    return points


@pytest.fixture(scope="module")
def sheet(ecg: EcgWaveform) -> str:
    return render_svg(ecg)


def test_svg_is_well_formed_with_mm_units(sheet: str) -> None:
    root = ET.fromstring(sheet)
    assert root.tag == f"{SVG}svg"
    width, height = root.get("width"), root.get("height")
    assert width is not None and height is not None
    assert width.endswith("mm") and height.endswith("mm")
    assert root.get("viewBox") == f"0 0 {width[:-2]} {height[:-2]}"
    assert len(sheet.encode()) < 150_000


def test_svg_has_twelve_labelled_leads_and_a_rhythm_strip(sheet: str) -> None:
    root = ET.fromstring(sheet)
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "lead-label"]
    assert sorted(labels) == sorted(STANDARD_LEADS)  # type: ignore[type-var]
    traces = [p for p in root.iter(f"{SVG}path") if p.get("class") == "trace"]
    leads = [p.get("data-lead") for p in traces if p.get("data-role") == "lead"]
    assert sorted(leads) == sorted(STANDARD_LEADS)  # type: ignore[type-var]
    rhythm = [p.get("data-lead") for p in traces if p.get("data-role") == "rhythm"]
    assert rhythm == ["II"]
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "25 mm/s 10 mm/mV" in texts


def test_svg_layout_runs_at_25_mm_per_second_and_10_mm_per_mv(ecg: EcgWaveform, sheet: str) -> None:
    root = ET.fromstring(sheet)
    traces = {
        (p.get("data-role"), p.get("data-lead")): path_points(p.get("d", ""))
        for p in root.iter(f"{SVG}path")
        if p.get("class") == "trace"
    }
    step = MM_PER_S / 250.0
    rhythm = traces[("rhythm", "II")]
    assert rhythm[-1][0] - rhythm[0][0] == pytest.approx(MM_PER_S * ecg.duration_s, abs=step + 1e-6)
    starts: dict[str, float] = {}
    for row in (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6")):
        xs = [traces[("lead", name)][0][0] for name in row]
        assert np.diff(xs) == pytest.approx([2.5 * MM_PER_S] * 3)  # each panel 2.5 s
        starts.update(zip(row, xs, strict=True))
        for name in row:
            points = traces[("lead", name)]
            assert points[-1][0] - points[0][0] == pytest.approx(2.5 * MM_PER_S, abs=step + 1e-6)
    assert starts["I"] == starts["II"] == starts["III"] == rhythm[0][0]
    # the calibration pulse is 1 mV tall; the rhythm strip's R waves are 10 mm per mV
    pulses = [path_points(p.get("d", "")) for p in root.iter(f"{SVG}path") if p.get("class") == "calibration"]
    assert len(pulses) == 4
    assert all(max(y for _, y in pulse) - min(y for _, y in pulse) == pytest.approx(MM_PER_MV) for pulse in pulses)
    ii = ecg.leads["II"]
    expected_mm = (ii.max() - np.median(ii)) * MM_PER_MV
    baseline_y = float(np.median([y for _, y in rhythm]))
    drawn_mm = baseline_y - min(y for _, y in rhythm)
    assert drawn_mm == pytest.approx(expected_mm, rel=0.1)
    width = float(root.get("width", "0mm")[:-2])
    assert width == pytest.approx(2 * 5 + 10 + 4 * 2.5 * MM_PER_S)  # margins + calibration zone + 10 s


def test_svg_grid_has_minor_lines_every_mm_and_major_every_5_mm(sheet: str) -> None:
    root = ET.fromstring(sheet)
    grids = {p.get("class"): p.get("d", "") for p in root.iter(f"{SVG}path") if "grid" in (p.get("class") or "")}
    major_x = sorted({float(x) for x in re.findall(r"M([\d.]+) [\d.]+V", grids["grid-major"])})
    major_y = sorted({float(y) for y in re.findall(r"M[\d.]+ ([\d.]+)H", grids["grid-major"])})
    assert len(major_x) > 40 and len(major_y) > 25
    assert set(np.diff(major_x)) == {5.0}
    assert set(np.diff(major_y)) == {5.0}
    minor_x = {float(x) for x in re.findall(r"M([\d.]+) [\d.]+V", grids["grid-minor"])}
    assert set(np.diff(sorted(minor_x | set(major_x)))) == {1.0}
    assert not minor_x & set(major_x)


def test_svg_title_is_escaped(ecg: EcgWaveform) -> None:
    title = 'Zhang San <&> "ECG" 心电图'
    svg = render_svg(ecg, title=title)
    assert "&lt;&amp;&gt;" in svg
    root = ET.fromstring(svg)
    assert title in [t.text for t in root.iter(f"{SVG}text")]
    assert root.find(f"{SVG}title") is not None and root.find(f"{SVG}title").text == title  # type: ignore[union-attr]


def test_svg_keeps_the_layout_when_leads_are_missing() -> None:
    wave = EcgWaveform(sampling_hz=500, leads={"I": synthetic_ecg(60), "III": synthetic_ecg(60, seed=2)})
    root = ET.fromstring(render_svg(wave))
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "lead-label"]
    assert sorted(labels) == sorted(STANDARD_LEADS)  # type: ignore[type-var]
    traces = [(p.get("data-role"), p.get("data-lead")) for p in root.iter(f"{SVG}path") if p.get("class") == "trace"]
    assert sorted(traces) == [("lead", "I"), ("lead", "III"), ("rhythm", "I")]


# --- JSON for viewers -----------------------------------------------------------------------------


def test_downsample_sizes_and_json(ecg: EcgWaveform) -> None:
    out = downsample(ecg)
    assert out["sampling_hz"] == 100.0
    assert out["duration_s"] == pytest.approx(10.0)
    assert list(out["leads"]) == list(STANDARD_LEADS)
    assert {len(values) for values in out["leads"].values()} == {1000}
    assert all(round(v, 3) == v for v in out["leads"]["II"])
    assert json.loads(json.dumps(out)) == out
    assert {len(values) for values in downsample(ecg, target_hz=250)["leads"].values()} == {2500}


def test_downsample_never_upsamples(ecg: EcgWaveform) -> None:
    out = downsample(ecg, target_hz=5000)
    assert out["sampling_hz"] == 1000.0
    assert len(out["leads"]["I"]) == 10000
    with pytest.raises(ValueError):
        downsample(ecg, target_hz=0)
