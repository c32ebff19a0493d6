"""Rendered frames (PS3.18 8.3.5, 10.4.1.1.3): a stored image as JPEG or PNG through the modality LUT and a
VOI window (the ``window`` parameter, else the dataset's first window, else the frame's range), fitted into
``viewport``; ECG waveforms as the 12-lead sheet. Runs on a worker thread: only the asked frame is decoded."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut
from pydicom.pixels.utils import pixel_array

from gateways.dicom.waveform import ECG_SOP_CLASSES, read_ecg
from gateways.dicomweb.ecg_raster import render_ecg
from gateways.dicomweb.media import BadRequest

THUMBNAIL_SIDE: Final = 128
MAX_VIEWPORT: Final = 4096


class FrameMissing(LookupError):
    """The asked frame number is beyond the instance's frames."""


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    window: tuple[float, float, str] | None = None
    viewport: tuple[int, int] | None = None
    quality: int = 90


def parse_options(query: dict[str, str], media_type: str, *, thumbnail: bool) -> RenderOptions:
    """``window=center,width[,linear|linear-exact|sigmoid]``, ``viewport=vw,vh[,sx,sy,sw,sh]``,
    ``quality=1..100``; 400 for anything malformed."""
    window = None
    if query.get("window"):
        parts = query["window"].split(",")
        try:
            center, width = float(parts[0]), float(parts[1])
        except (IndexError, ValueError):
            raise BadRequest("window is center,width[,function]", code="bad-parameter") from None
        if not (math.isfinite(center) and math.isfinite(width)):
            raise BadRequest("window center and width are finite numbers", code="bad-parameter")
        function = parts[2].strip().lower() if len(parts) > 2 else "linear"
        if width <= 0 or function not in ("linear", "linear-exact", "sigmoid"):
            raise BadRequest(
                "window width must be positive, function linear|linear-exact|sigmoid", code="bad-parameter"
            )
        window = (center, width, function)
    viewport = (THUMBNAIL_SIDE, THUMBNAIL_SIDE) if thumbnail else None
    if query.get("viewport"):
        try:
            numbers = [int(float(v)) for v in query["viewport"].split(",")[:2]]
            vw, vh = numbers[0], numbers[1]
        except (IndexError, ValueError, OverflowError):  # OverflowError: inf
            raise BadRequest("viewport is vw,vh", code="bad-parameter") from None
        if not (0 < vw <= MAX_VIEWPORT and 0 < vh <= MAX_VIEWPORT):
            raise BadRequest(f"viewport sides must be 1..{MAX_VIEWPORT}", code="bad-parameter")
        viewport = (vw, vh)
    quality = 90
    if query.get("quality"):
        try:
            quality = int(query["quality"])
        except ValueError:
            raise BadRequest("quality is 1..100", code="bad-parameter") from None
        if not 1 <= quality <= 100:
            raise BadRequest("quality is 1..100", code="bad-parameter")
    return RenderOptions(media_type, window, viewport, quality)


def _first(value: object) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        items = list(value)  # type: ignore[call-overload]
        return float(items[0]) if items else None
    return float(value)  # type: ignore[arg-type]


def _voi(values: np.ndarray, ds: Dataset, window: tuple[float, float, str] | None) -> np.ndarray:
    """Window to 0..255 as PS3.3 C.11.2.1.2 says; the frame's range when no window is known."""
    if window is None:
        center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
        function = str(ds.get("VOILUTFunction", "LINEAR")).lower().replace("_", "-")
        if center is not None and width is not None and width > 0:
            window = (center, width, function if function in ("linear", "linear-exact", "sigmoid") else "linear")
    if window is None:
        low, high = float(values.min()), float(values.max())
        center, width = (low + high) / 2, max(high - low, 1.0)
        window = (center + 0.5, width + 1.0, "linear")
    center, width, function = window
    if function == "sigmoid":
        out = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif function == "linear-exact":
        out = ((values - center) / width + 0.5) * 255.0
    else:
        out = ((values - (center - 0.5)) / (width - 1.0 if width > 1 else 1.0) + 0.5) * 255.0
    return np.clip(out, 0, 255).astype(np.uint8)


def _image(ds: Dataset, frame: np.ndarray, options: RenderOptions) -> Image.Image:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1))
    if samples == 3:
        if frame.dtype != np.uint8:
            top = float(frame.max()) or 1.0
            frame = (frame.astype(np.float64) * (255.0 / top)).astype(np.uint8)
        return Image.fromarray(frame, "RGB")
    values = apply_modality_lut(frame, ds).astype(np.float64)
    grey = _voi(values, ds, options.window)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(grey, "L")


def _fit(image: Image.Image, viewport: tuple[int, int] | None) -> Image.Image:
    if viewport is None:
        return image
    scale = min(viewport[0] / image.width, viewport[1] / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)


def encode(image: Image.Image, options: RenderOptions) -> bytes:
    buffer = io.BytesIO()
    if options.media_type == "image/png":
        image.save(buffer, format="PNG", optimize=False)
    else:
        image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(
            buffer, format="JPEG", quality=options.quality
        )
    return buffer.getvalue()


def render_file(path: str, sop_class_uid: str, frame_number: int, options: RenderOptions) -> bytes:
    """Frame ``frame_number`` (1-based) of the stored instance, rendered."""
    if sop_class_uid in ECG_SOP_CLASSES:
        ds = dcmread(path)
        title = f"ECG {ds.get('AcquisitionDateTime') or ds.get('StudyDate') or ''}".strip()
        return encode(_fit(render_ecg(read_ecg(ds), title=title), options.viewport), options)
    ds = dcmread(path, stop_before_pixels=True)
    if "Rows" not in ds or "Columns" not in ds:
        raise FrameMissing("the instance has no image to render")
    frames = int(ds.get("NumberOfFrames") or 1)
    if not 1 <= frame_number <= frames:
        raise FrameMissing(f"frame {frame_number} is beyond the instance's {frames} frames")
    frame = pixel_array(path, index=frame_number - 1)
    return encode(_fit(_image(ds, frame, options), options.viewport), options)
