"""The 12-lead sheet of ``telenet.ecg.render_svg`` as a raster (Pillow lines), for WADO-RS ``rendered``:
the same paper (25 mm/s, 10 mm/mV, 1 mm and 5 mm squares), the same 3×4 layout with a lead II rhythm strip
and a 1 mV calibration pulse per row."""

from __future__ import annotations

from typing import Final

import numpy as np
from PIL import Image, ImageDraw

from telenet import ecg
from telenet.ecg import LAYOUT, MM_PER_MV, MM_PER_S, PAGE_S, PANEL_S, EcgWaveform

PX_PER_MM: Final = 4
_MARGIN, _TOP, _CAL_W, _ROW_H, _BASELINE = 5, 15, 10, 40, 25
_GRID_W = _CAL_W + int(PAGE_S * MM_PER_S)
_GRID_H = _ROW_H * (len(LAYOUT) + 1)
WIDTH_MM: Final = _MARGIN + _GRID_W + _MARGIN
HEIGHT_MM: Final = _TOP + _GRID_H + 15


def _px(mm: float) -> int:
    return round(mm * PX_PER_MM)


def _trace(draw: ImageDraw.ImageDraw, points_mv: np.ndarray, x0_mm: float, baseline_mm: float) -> None:
    if points_mv.size < 2:
        return
    step_mm = MM_PER_S / ecg.DRAW_HZ
    xs = x0_mm + np.arange(points_mv.size) * step_mm
    ys = baseline_mm - points_mv * MM_PER_MV
    draw.line([(x * PX_PER_MM, y * PX_PER_MM) for x, y in zip(xs.tolist(), ys.tolist(), strict=True)], fill=0, width=2)


def render_ecg(wave: EcgWaveform, *, title: str | None = None) -> Image.Image:
    """The ECG sheet as an RGB image, 4 pixels per millimetre."""
    image = Image.new("RGB", (_px(WIDTH_MM), _px(HEIGHT_MM)), "white")
    draw = ImageDraw.Draw(image)
    gx, gy = _MARGIN, _TOP
    for i in range(_GRID_W + 1):
        major = i % 5 == 0
        draw.line(
            [(_px(gx + i), _px(gy)), (_px(gx + i), _px(gy + _GRID_H))],
            fill=(229, 128, 128) if major else (246, 198, 198),
        )
    for j in range(_GRID_H + 1):
        major = j % 5 == 0
        draw.line(
            [(_px(gx), _px(gy + j)), (_px(gx + _GRID_W), _px(gy + j))],
            fill=(229, 128, 128) if major else (246, 198, 198),
        )
    if title:
        draw.text((_px(gx), _px(4)), title, fill="black")
    trace_x0 = gx + _CAL_W
    for row in range(len(LAYOUT) + 1):
        base = gy + row * _ROW_H + _BASELINE
        pulse = [
            (gx + 1, base),
            (gx + 3, base),
            (gx + 3, base - MM_PER_MV),
            (gx + 8, base - MM_PER_MV),
            (gx + 8, base),
            (gx + 10, base),
        ]
        draw.line([(_px(x), _px(y)) for x, y in pulse], fill="black", width=2)
    fs = wave.sampling_hz
    for row, names in enumerate(LAYOUT):
        base = gy + row * _ROW_H + _BASELINE
        for column, name in enumerate(names):
            x0 = trace_x0 + column * PANEL_S * MM_PER_S
            if column:
                draw.line([(_px(x0), _px(base - 4)), (_px(x0), _px(base + 4))], fill="black", width=1)
            draw.text((_px(x0 + 1), _px(gy + row * _ROW_H + 3)), name, fill="black")
            samples = wave.leads.get(name)
            if samples is not None:
                _trace(draw, ecg._segment(samples, fs, column * PANEL_S, (column + 1) * PANEL_S), x0, base)
    rhythm = "II" if "II" in wave.leads else next(iter(wave.leads))
    top = gy + len(LAYOUT) * _ROW_H
    draw.text((_px(trace_x0 + 1), _px(top + 3)), rhythm, fill="black")
    _trace(draw, ecg._segment(wave.leads[rhythm], fs, 0.0, PAGE_S), trace_x0, top + _BASELINE)
    draw.text((_px(gx), _px(gy + _GRID_H + 4)), f"25 mm/s 10 mm/mV   {fs:g} Hz, {wave.duration_s:.1f} s", fill="black")
    return image
