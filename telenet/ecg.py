"""ECG as data: heart rate by Pan–Tompkins R-peak detection, the 12-lead sheet as SVG, a light JSON form.

Pure numpy and no I/O: ``gateways/dicom/waveform.py`` turns a DICOM waveform object into an
:class:`EcgWaveform`, the API serves what this module computes. Signals are in millivolts.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, TypedDict
from xml.sax.saxutils import escape

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

STANDARD_LEADS: Final[tuple[str, ...]] = (
    "I",
    "II",
    "III",
    "aVR",
    "aVL",
    "aVF",
    "V1",
    "V2",
    "V3",
    "V4",
    "V5",
    "V6",
)
_CANONICAL: Final[dict[str, str]] = {name.lower(): name for name in STANDARD_LEADS}
_PARENTHESISED = re.compile(r"\([^)]*\)")
# No "-" among the separators: "Lead -aVR" (Cabrera's inverted aVR) is another signal than aVR.
_LEAD_PREFIX = re.compile(r"^(?:mdc_ecg_)?lead[\s_:]*", re.IGNORECASE)


def normalize_lead_label(label: str) -> str:
    """Map a lead label to I, II, III, aVR, aVL, aVF or V1..V6 when recognisable, else return it stripped.

    Accepts the DICOM code meanings ("Lead I (Einthoven)", "Lead aVR"), bare names in any case ("AVR")
    and MDC reference ids ("MDC_ECG_LEAD_V1").
    """
    text = _LEAD_PREFIX.sub("", _PARENTHESISED.sub(" ", label).strip())
    return _CANONICAL.get(re.sub(r"\s+", "", text).lower(), label.strip())


@dataclass(frozen=True, eq=False)
class EcgWaveform:
    """One multiplex group of ECG leads sampled together: read-only float64 arrays in millivolts.

    Labels are normalised on construction and the standard leads come first in standard order, so two
    sources that spell "Lead II" differently give the same waveform. ``eq=False`` because arrays have no
    single truth value; compare leads with numpy.
    """

    sampling_hz: float
    leads: dict[str, FloatArray]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sampling_hz) and self.sampling_hz > 0):
            raise ValueError(f"sampling_hz must be a positive number, got {self.sampling_hz!r}")
        if not self.leads:
            raise ValueError("an ECG waveform needs at least one lead")
        normalised: dict[str, FloatArray] = {}
        length: int | None = None
        for raw_label, samples in self.leads.items():
            label = normalize_lead_label(raw_label)
            if label in normalised:
                raise ValueError(f"lead {raw_label!r} duplicates lead {label!r}")
            array = np.array(samples, dtype=np.float64)
            if array.ndim != 1 or array.size == 0:
                raise ValueError(f"lead {label!r} must be a non-empty 1-D array, got shape {array.shape}")
            if length is not None and array.size != length:
                raise ValueError(f"lead {label!r} has {array.size} samples, the others {length}")
            if not np.all(np.isfinite(array)):
                raise ValueError(f"lead {label!r} has non-finite samples")
            length = array.size
            array.flags.writeable = False
            normalised[label] = array
        ordered = {name: normalised[name] for name in STANDARD_LEADS if name in normalised}
        ordered.update((name, array) for name, array in normalised.items() if name not in ordered)
        object.__setattr__(self, "sampling_hz", float(self.sampling_hz))
        object.__setattr__(self, "leads", ordered)

    @property
    def n_samples(self) -> int:
        """Samples per lead."""
        return next(iter(self.leads.values())).size

    @property
    def duration_s(self) -> float:
        """Recording length in seconds (samples / sampling rate)."""
        return self.n_samples / self.sampling_hz


# --------------------------------------------------------------------------------------------------
# Heart rate: Pan–Tompkins R-peak detection
# --------------------------------------------------------------------------------------------------

PAN_TOMPKINS: Final = (
    "Pan-Tompkins 1985: 5-15 Hz band-pass, derivative, squaring, 150 ms moving-window integration, "
    "adaptive thresholds with search-back, 200 ms refractory period; levels re-learnt after max(3 s, 2 RR) "
    "without a beat"
)
_MIN_SAMPLING_HZ: Final = 50.0  # the 15 Hz band edge and the 5-point derivative need room below Nyquist
_REFRACTORY_S: Final = 0.200
_T_WAVE_WINDOW_S: Final = 0.360
_INTEGRATION_S: Final = 0.150
_LEARNING_S: Final = 2.0
_SEARCH_BACK_RR: Final = 1.66
_RELEARN_S: Final = 3.0
_RELEARN_MIN_SLOPE: Final = 0.2  # of the recent QRS slopes; P waves are ~0.05, a lead at 30 % gain 0.3


@dataclass(frozen=True)
class HeartRateMeasurement:
    """Mean ventricular rate over the detected R peaks of one lead, with what it was measured from."""

    bpm: float | None
    r_peaks: tuple[int, ...]
    lead: str
    method: str
    rr_ms_mean: float | None
    sampling_hz: float

    @property
    def r_peak_times_s(self) -> tuple[float, ...]:
        """R-peak times in seconds from the start of the recording."""
        return tuple(index / self.sampling_hz for index in self.r_peaks)


def measure_heart_rate(wave: EcgWaveform, *, lead: str | None = None) -> HeartRateMeasurement:
    """Detect R peaks with the Pan–Tompkins algorithm (IEEE Trans Biomed Eng 1985) and derive the rate.

    The rhythm lead is ``lead`` if given, else II when present and not flat, else the lead with the
    highest signal quality (kurtosis of the QRS band). ``bpm`` is 60 / mean RR, ``None`` below two peaks.
    """
    fs = wave.sampling_hz
    if fs < _MIN_SAMPLING_HZ:
        raise ValueError(f"Pan-Tompkins needs at least {_MIN_SAMPLING_HZ:g} Hz, the ECG has {fs:g} Hz")
    if lead is None:
        lead = _rhythm_lead(wave)
    else:
        lead = normalize_lead_label(lead)
        if lead not in wave.leads:
            raise ValueError(f"lead {lead!r} is not in the ECG (it has {', '.join(wave.leads)})")
    peaks = detect_r_peaks(wave.leads[lead], fs)
    rr_ms_mean: float | None = None
    bpm: float | None = None
    if len(peaks) >= 2:
        rr_ms_mean = float(np.mean(np.diff(np.asarray(peaks)))) / fs * 1000.0
        bpm = 60_000.0 / rr_ms_mean
    return HeartRateMeasurement(
        bpm=bpm, r_peaks=peaks, lead=lead, method=PAN_TOMPKINS, rr_ms_mean=rr_ms_mean, sampling_hz=fs
    )


def detect_r_peaks(signal: FloatArray, sampling_hz: float) -> tuple[int, ...]:
    """R-peak sample indices of one lead by Pan–Tompkins (1985).

    Band-pass 5–15 Hz (windowed-sinc FIR, zero phase), five-point derivative, squaring, 150 ms
    moving-window integration; then the adaptive signal/noise peak levels SPKI/NPKI with threshold
    NPKI + 0.25 (SPKI − NPKI), a 200 ms refractory period, T-wave discrimination by slope within 360 ms,
    and search-back at half the threshold when no beat came for 166 % of the mean of the last 8 RR
    intervals (see :class:`_AdaptiveThresholds` for our one addition, re-learning). Each detection is
    placed on the largest deflection of the baseline-corrected lead within ±100 ms.
    """
    fs = float(sampling_hz)
    x = np.asarray(signal, dtype=np.float64)
    if x.size < 3 or not np.any(x != x[0]):
        return ()
    filtered = _bandpass(x, fs, 5.0, 15.0)
    slope = _derivative(filtered, fs)
    integrated = _moving_average(slope * slope, _odd(_INTEGRATION_S * fs))
    qrs = _AdaptiveThresholds(integrated, np.abs(slope), fs).run(
        _local_maxima(integrated, _odd(_INTEGRATION_S * fs) // 2)
    )
    return _locate_r_peaks(x, qrs, fs)


def signal_quality(signal: FloatArray, sampling_hz: float) -> float:
    """Kurtosis of the 5–15 Hz band: sharp QRS complexes score high, noise ≈ 3, a flat line 0."""
    band = _bandpass(np.asarray(signal, dtype=np.float64), float(sampling_hz), 5.0, 15.0)
    centred = band - band.mean()
    variance = float(np.mean(centred**2))
    if variance <= 1e-18:
        return 0.0
    return float(np.mean(centred**4)) / variance**2


def _rhythm_lead(wave: EcgWaveform) -> str:
    ii = wave.leads.get("II")
    if ii is not None and np.ptp(ii) > 0:
        return "II"
    fs = wave.sampling_hz
    return max(wave.leads, key=lambda name: signal_quality(wave.leads[name], fs))


def _odd(n: float) -> int:
    return max(1, round(n) | 1)


def _convolve_same(x: FloatArray, kernel: FloatArray) -> FloatArray:
    """Centred convolution via FFT, edges padded with the end values (no step at the borders)."""
    half = kernel.size // 2
    padded = np.pad(x, half, mode="edge")
    full_length = padded.size + kernel.size - 1
    nfft = 1 << (full_length - 1).bit_length()
    full = np.fft.irfft(np.fft.rfft(padded, nfft) * np.fft.rfft(kernel, nfft), nfft)[:full_length]
    start = kernel.size - 1
    return np.asarray(full[start : start + x.size], dtype=np.float64)


def _bandpass(x: FloatArray, fs: float, low_hz: float, high_hz: float) -> FloatArray:
    """Hamming-windowed sinc band-pass of 0.5 s, symmetric hence zero phase, unit gain mid-band."""
    taps = _odd(0.5 * fs)
    n = np.arange(taps) - (taps - 1) / 2

    def lowpass(cutoff: float) -> FloatArray:
        return np.asarray(2 * cutoff / fs * np.sinc(2 * cutoff / fs * n), dtype=np.float64)

    kernel = (lowpass(high_hz) - lowpass(low_hz)) * np.hamming(taps)
    centre = math.sqrt(low_hz * high_hz)
    gain = abs(np.sum(kernel * np.exp(-2j * np.pi * centre / fs * n)))
    return _convolve_same(x, kernel / gain)


def _derivative(x: FloatArray, fs: float) -> FloatArray:
    """Pan–Tompkins five-point derivative, taps spaced as at their 200 Hz so its band is rate-independent."""
    k = max(1, round(fs / 200.0))
    p = np.pad(x, 2 * k, mode="edge")
    n = x.size
    return np.asarray(
        (2.0 * (p[3 * k : 3 * k + n] - p[k : k + n]) + (p[4 * k : 4 * k + n] - p[:n])) * fs / (8.0 * k),
        dtype=np.float64,
    )


def _moving_average(x: FloatArray, width: int) -> FloatArray:
    return _convolve_same(x, np.full(width, 1.0 / width))


def _local_maxima(x: FloatArray, radius: int) -> list[int]:
    """Indices of positive local maxima that are the largest within ±radius (first of a plateau)."""
    padded = np.pad(x, radius, mode="constant", constant_values=-np.inf)
    window_max = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1).max(axis=1)
    candidates = np.flatnonzero((x >= window_max) & (x > 0))
    kept: list[int] = []
    for index in candidates.tolist():
        if not kept or index - kept[-1] > radius:
            kept.append(index)
    return kept


class _AdaptiveThresholds:
    """Pan–Tompkins decision rules on the integrated signal (its section on "adjusting the thresholds").

    SPKI and NPKI are running estimates of the signal and noise peak levels; a peak above threshold I
    (NPKI + 0.25 (SPKI − NPKI)) is a QRS unless it falls in the 200 ms refractory period, or within
    360 ms of the last QRS with less than half its slope (a T wave). When no QRS came for 166 % of
    the mean RR, the largest skipped peak above threshold II (half of I) is taken (search-back).

    Our addition: with nothing found for max(3 s, 2 RR) the levels are learnt again from the peaks
    since the last QRS, so an artefact in the learning phase or a sudden loss of gain cannot hide the
    rest of the recording; until the next QRS a candidate then also needs a fifth of the recent QRS
    slope, so the P waves of a pause (AV block, sinus arrest) are not counted as beats.
    """

    def __init__(self, integrated: FloatArray, abs_slope: FloatArray, fs: float) -> None:
        self.integrated = integrated
        self.abs_slope = abs_slope
        self.refractory = round(_REFRACTORY_S * fs)
        self.t_wave_window = round(_T_WAVE_WINDOW_S * fs)
        self.half_window = _odd(_INTEGRATION_S * fs) // 2
        self.learning = max(1, int(_LEARNING_S * fs))
        self.relearn_gap = _RELEARN_S * fs
        self.accepted: list[int] = []
        self.slopes: list[float] = []
        self.rr_recent: deque[int] = deque(maxlen=8)
        self.skipped: list[int] = []  # candidates since the last QRS, for search-back
        self.slope_floor = 0.0  # set by relearning, so that P waves in a pause do not pass as QRS
        self.spki = 0.0
        self.npki = 0.0
        self.learn(0, self.learning)
        self.learned_at = 0  # the first learning looks ahead; later ones look back from where they happen

    def learn(self, start: int, stop: int) -> None:
        window = self.integrated[start:stop]
        self.spki = float(window.max()) / 3.0
        self.npki = float(window.mean()) / 2.0
        self.learned_at = stop

    @property
    def threshold_1(self) -> float:
        return self.npki + 0.25 * (self.spki - self.npki)

    def slope(self, index: int) -> float:
        return float(self.abs_slope[max(0, index - 2 * self.half_window) : index + self.half_window + 1].max())

    def accept(self, index: int) -> None:
        if self.accepted:
            self.rr_recent.append(index - self.accepted[-1])
        self.accepted.append(index)
        self.slopes.append(self.slope(index))
        self.skipped = [i for i in self.skipped if i > index]

    def consider(self, index: int) -> None:
        level = float(self.integrated[index])
        since_last = index - self.accepted[-1] if self.accepted else None
        if since_last is not None and since_last < self.refractory:
            self.npki = 0.125 * level + 0.875 * self.npki
            return
        is_t_wave = (
            since_last is not None and since_last < self.t_wave_window and self.slope(index) < 0.5 * self.slopes[-1]
        )
        if level > self.threshold_1 and not is_t_wave and self.slope(index) >= self.slope_floor:
            self.accept(index)
            self.slope_floor = 0.0
            self.spki = 0.125 * level + 0.875 * self.spki
        else:
            self.skipped.append(index)
            self.npki = 0.125 * level + 0.875 * self.npki

    def search_back(self, until: int) -> bool:
        """Take the largest skipped peak above threshold II once a beat is overdue."""
        if not self.accepted or not self.rr_recent:
            return False
        if until - self.accepted[-1] <= _SEARCH_BACK_RR * float(np.mean(self.rr_recent)):
            return False
        threshold_2 = 0.5 * self.threshold_1
        eligible = [
            i
            for i in self.skipped
            if i - self.accepted[-1] >= self.refractory
            and self.integrated[i] > threshold_2
            and self.slope(i) >= self.slope_floor
        ]
        if not eligible:
            return False
        best = max(eligible, key=lambda i: float(self.integrated[i]))
        self.accept(best)
        self.slope_floor = 0.0
        self.spki = 0.25 * float(self.integrated[best]) + 0.75 * self.spki
        return True

    def relearn_if_lost(self, until: int) -> None:
        """Learn the levels again from the peaks since the last QRS when none came for max(3 s, 2 RR)."""
        last = self.accepted[-1] if self.accepted else 0
        gap = max(self.relearn_gap, 2.0 * float(np.mean(self.rr_recent)) if self.rr_recent else 0.0)
        if until - max(last, self.learned_at) <= gap:
            return
        start = last + self.refractory if self.accepted else 0
        self.learn(start, until)
        if len(self.slopes) >= 2:
            self.slope_floor = _RELEARN_MIN_SLOPE * float(np.median(self.slopes[-8:]))
        replay, self.skipped = self.skipped, []
        for index in replay:
            if index >= start:
                self.consider(index)

    def run(self, candidates: Iterable[int]) -> list[int]:
        if self.spki <= 0:
            return []
        for index in candidates:
            while self.search_back(index):
                pass
            self.relearn_if_lost(index)
            self.consider(index)
        end = self.integrated.size
        while self.search_back(end):
            pass
        return sorted(self.accepted)


def _locate_r_peaks(x: FloatArray, detections: Iterable[int], fs: float) -> tuple[int, ...]:
    """Put each detection on the lead's largest deflection within ±100 ms, against a ±0.5 s median."""
    search = max(1, round(0.1 * fs))
    baseline_half = max(1, round(0.5 * fs))
    refractory = round(_REFRACTORY_S * fs)
    peaks: list[int] = []
    for index in sorted(detections):
        baseline = float(np.median(x[max(0, index - baseline_half) : index + baseline_half + 1]))
        lo = max(0, index - search)
        segment = np.abs(x[lo : index + search + 1] - baseline)
        peak = lo + int(np.argmax(segment))
        if not peaks or peak - peaks[-1] >= refractory:
            peaks.append(peak)
    return tuple(peaks)


# --------------------------------------------------------------------------------------------------
# JSON for viewers
# --------------------------------------------------------------------------------------------------


class EcgJson(TypedDict):
    """The JSON shape of :func:`downsample`."""

    sampling_hz: float
    duration_s: float
    leads: dict[str, list[float]]


def _resample(x: FloatArray, fs: float, target_hz: float, start_s: float, stop_s: float) -> FloatArray:
    """Linear interpolation at ``start_s + k / target_hz`` up to ``stop_s`` (inclusive) and the last sample.

    Sampling, not filtering: an anti-alias low-pass would flatten QRS peaks more than the sampling does.
    """
    last = min(stop_s, (x.size - 1) / fs)
    if last < start_s:
        return np.empty(0, dtype=np.float64)
    count = math.floor((last - start_s) * target_hz + 1e-9) + 1
    times = start_s + np.arange(count) / target_hz
    return np.asarray(np.interp(times, np.arange(x.size) / fs, x), dtype=np.float64)


def downsample(wave: EcgWaveform, target_hz: float = 100.0) -> EcgJson:
    """JSON-ready leads at ``target_hz`` (never above the recording's rate), values in mV to 1 µV."""
    if not (math.isfinite(target_hz) and target_hz > 0):
        raise ValueError(f"target_hz must be a positive number, got {target_hz!r}")
    rate = min(float(target_hz), wave.sampling_hz)
    leads: dict[str, list[float]] = {}
    for name, samples in wave.leads.items():
        values = samples if rate == wave.sampling_hz else _resample(samples, wave.sampling_hz, rate, 0, math.inf)
        leads[name] = [round(value, 3) for value in values.tolist()]
    return {"sampling_hz": rate, "duration_s": wave.duration_s, "leads": leads}


# --------------------------------------------------------------------------------------------------
# SVG: the standard 12-lead sheet
# --------------------------------------------------------------------------------------------------

MM_PER_S: Final = 25.0
MM_PER_MV: Final = 10.0
PANEL_S: Final = 2.5
PAGE_S: Final = 4 * PANEL_S
DRAW_HZ: Final = 250.0  # 0.1 mm per point at 25 mm/s, finer than the trace's stroke
LAYOUT: Final[tuple[tuple[str, str, str, str], ...]] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)
_MARGIN = 5
_TOP = 15  # room for the title above the grid
_CAL_W = 10  # calibration pulse zone left of the traces
_ROW_H = 40
_BASELINE_IN_ROW = 25
_GRID_W = _CAL_W + int(PAGE_S * MM_PER_S)
_GRID_H = _ROW_H * (len(LAYOUT) + 1)
SVG_WIDTH_MM: Final = _MARGIN + _GRID_W + _MARGIN
SVG_HEIGHT_MM: Final = _TOP + _GRID_H + 15


def _hundredths(value: int) -> str:
    """An integer count of 0.01 mm as the shortest decimal ("-.25", "3", "12.5")."""
    sign = "-" if value < 0 else ""
    whole, fraction = divmod(abs(value), 100)
    if fraction == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole or ''}.{f'{fraction:02d}'.rstrip('0')}"


def _trace_path(values_mv: FloatArray, x0_mm: float, baseline_mm: float) -> str:
    """Relative path at 0.1 mm steps; deltas come from rounded absolute points, so rounding never drifts."""
    ys = np.rint((baseline_mm - values_mv * MM_PER_MV) * 100).astype(np.int64).tolist()
    dx = _hundredths(round(MM_PER_S / DRAW_HZ * 100))
    parts = [f"M{_hundredths(round(x0_mm * 100))} {_hundredths(ys[0])}"]
    if len(ys) > 1:
        parts.append("l" + " ".join(f"{dx} {_hundredths(b - a)}" for a, b in itertools.pairwise(ys)))
    return "".join(parts)


def _segment(x: FloatArray, fs: float, start_s: float, stop_s: float) -> FloatArray:
    """The drawn points of one panel, centred on the panel's median so each trace sits on its baseline."""
    points = _resample(x, fs, DRAW_HZ, start_s, stop_s)
    return points - float(np.median(points)) if points.size else points


def _grid_path(major_every: int, *, major: bool) -> str:
    x0, y0 = _MARGIN, _TOP
    commands = [f"M{x0 + i} {y0}V{y0 + _GRID_H}" for i in range(_GRID_W + 1) if (i % major_every == 0) == major]
    commands += [f"M{x0} {y0 + j}H{x0 + _GRID_W}" for j in range(_GRID_H + 1) if (j % major_every == 0) == major]
    return "".join(commands)


def _attr(value: str) -> str:
    return escape(value, {'"': "&quot;"})


def _text(x: float, y: float, content: str, **attributes: str) -> str:
    """A <text> element; keyword names map to attributes (``class_`` → class, ``font_size`` → font-size)."""
    extra = "".join(f' {key.rstrip("_").replace("_", "-")}="{_attr(value)}"' for key, value in attributes.items())
    return f'<text x="{x:g}" y="{y:g}"{extra}>{escape(content)}</text>'


def render_svg(wave: EcgWaveform, *, title: str | None = None) -> str:
    """The ECG as a 12-lead sheet in SVG, with millimetres as the user unit.

    Standard paper: 25 mm/s, 10 mm/mV, 1 mm minor and 5 mm major squares; leads in the 3×4 layout (I,
    aVR, V1, V4 / II, aVL, V2, V5 / III, aVF, V3, V6), 2.5 s each from consecutive quarters of the first
    10 s, under them a 10 s rhythm strip of lead II (or the first lead when II is missing), a 1 mV
    calibration pulse on every row. A standard lead absent from the recording keeps its label and an
    empty panel; non-standard leads are not drawn.
    """
    fs = wave.sampling_hz
    gx, gy = _MARGIN, _TOP
    trace_x0 = gx + _CAL_W
    heading = title if title is not None else "12-lead ECG"
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH_MM}mm" height="{SVG_HEIGHT_MM}mm" '
        f'viewBox="0 0 {SVG_WIDTH_MM} {SVG_HEIGHT_MM}" data-mm-per-s="{MM_PER_S:g}" '
        f'data-mm-per-mv="{MM_PER_MV:g}" font-family="sans-serif">',
        f"<title>{escape(heading)}</title>",
        f'<rect x="0" y="0" width="{SVG_WIDTH_MM}" height="{SVG_HEIGHT_MM}" fill="#ffffff"/>',
        f'<path class="grid-minor" d="{_grid_path(5, major=False)}" stroke="#f6c6c6" stroke-width="0.05" fill="none"/>',
        f'<path class="grid-major" d="{_grid_path(5, major=True)}" stroke="#e58080" stroke-width="0.15" fill="none"/>',
    ]
    if title is not None:
        out.append(_text(gx, 9, title, font_size="5", class_="title"))

    trace_attrs = 'fill="none" stroke="#000000" stroke-width="0.25" stroke-linejoin="round"'
    for row in range(len(LAYOUT) + 1):
        baseline = gy + row * _ROW_H + _BASELINE_IN_ROW
        out.append(
            f'<path class="calibration" data-mv="1" '
            f'd="M{gx + 1} {baseline}h2v-{MM_PER_MV:g}h5v{MM_PER_MV:g}h2" {trace_attrs}/>'
        )

    for row, names in enumerate(LAYOUT):
        baseline = gy + row * _ROW_H + _BASELINE_IN_ROW
        for column, name in enumerate(names):
            x0 = trace_x0 + column * PANEL_S * MM_PER_S
            if column:
                out.append(
                    f'<path class="separator" d="M{x0:g} {baseline - 4}v8" stroke="#000000" stroke-width="0.25"/>'
                )
            out.append(_text(x0 + 1, gy + row * _ROW_H + 6, name, font_size="4", class_="lead-label", data_lead=name))
            samples = wave.leads.get(name)
            if samples is None:
                continue
            points = _segment(samples, fs, column * PANEL_S, (column + 1) * PANEL_S)
            if points.size:
                out.append(
                    f'<path class="trace" data-lead="{name}" data-role="lead" '
                    f'd="{_trace_path(points, x0, baseline)}" {trace_attrs}/>'
                )

    rhythm = "II" if "II" in wave.leads else next(iter(wave.leads))
    rhythm_top = gy + len(LAYOUT) * _ROW_H
    rhythm_points = _segment(wave.leads[rhythm], fs, 0.0, PAGE_S)
    out.append(_text(trace_x0 + 1, rhythm_top + 6, rhythm, font_size="4", class_="rhythm-label", data_lead=rhythm))
    out.append(
        f'<path class="trace" data-lead="{_attr(rhythm)}" data-role="rhythm" '
        f'd="{_trace_path(rhythm_points, trace_x0, rhythm_top + _BASELINE_IN_ROW)}" {trace_attrs}/>'
    )

    caption_y = gy + _GRID_H + 7
    out.append(_text(gx, caption_y, "25 mm/s 10 mm/mV", font_size="3.5", class_="caption"))
    out.append(
        _text(
            gx + _GRID_W,
            caption_y,
            f"{fs:g} Hz, {wave.duration_s:.1f} s",
            font_size="3.5",
            class_="info",
            text_anchor="end",
        )
    )
    out.append("</svg>")
    return "\n".join(out)
