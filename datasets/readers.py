"""Read a radiograph from DICOM (pydicom) or PNG/JPEG/TIFF (Pillow) into a ``Radiograph``.

Every failure a caller can cause raises a specific ``RadiographError`` (datasets.errors);
the limits are checked before any pixel data is decoded."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.pixels import pixel_array as decode_pixel_array

from datasets.errors import (
    EmptyImageError,
    ImageTooLargeError,
    MissingPixelDataError,
    NotAnImageError,
    RadiographError,
    TruncatedImageError,
    UnsupportedModalityError,
    UnsupportedPhotometricError,
    UnsupportedTransferSyntaxError,
)
from datasets.radiograph import Radiograph, RadiographMetadata, ReaderLimits
from models.radiographs import RadiographKind

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*")
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) in little-endian byte order
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")

# Acquisition facts that are safe to show and log: no names, identifiers or dates.
_SAFE_HEADER_KEYWORDS = (
    "Modality", "SOPClassUID", "Manufacturer", "ManufacturerModelName", "ImageType",
    "PresentationIntentType", "BodyPartExamined", "ImageLaterality", "DetectorType",
    "PositionerType", "Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth",
    "PixelSpacing", "ImagerPixelSpacing", "KVP", "ExposureTime", "XRayTubeCurrent", "NumberOfFrames",
)
_KIND_WORDS: tuple[tuple[str, RadiographKind], ...] = (
    ("bitewing", RadiographKind.BITEWING), ("bite-wing", RadiographKind.BITEWING),
    ("bite wing", RadiographKind.BITEWING), ("periapical", RadiographKind.PERIAPICAL),
    ("peri-apical", RadiographKind.PERIAPICAL), ("panoram", RadiographKind.PANORAMIC),
    ("orthopantomo", RadiographKind.PANORAMIC),
)


def read_radiograph(
    source: str | Path | bytes,
    *,
    limits: ReaderLimits = ReaderLimits(),
    kind_hint: RadiographKind | None = None,
    with_header: bool = False,
) -> Radiograph:
    """Read one radiograph from a path or from the file's bytes. ``with_header``: a DICOM
    file's de-identified header summary in ``metadata.header`` (``dxv inspect``); reading
    its two dozen elements costs about a quarter of a periapical's decoding, which the
    service and training do not need."""
    data = _read_bytes(source, limits)
    if len(data) == 0:
        raise NotAnImageError("the file is empty (0 bytes)")
    if len(data) >= 132 and data[128:132] == b"DICM":
        return _read_dicom(data, limits, kind_hint, with_header)
    if data.startswith(_PNG_MAGIC):
        return _read_pillow(data, "png", limits, kind_hint)
    if data.startswith(_JPEG_MAGIC):
        return _read_pillow(data, "jpeg", limits, kind_hint)
    if data.startswith(_TIFF_MAGICS):
        return _read_pillow(data, "tiff", limits, kind_hint)
    raise NotAnImageError(
        "not a radiograph file: expected DICOM (Part 10, 'DICM' at byte 128), PNG, JPEG or TIFF"
    )


def _read_bytes(source: str | Path | bytes, limits: ReaderLimits) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise NotAnImageError(f"no such file: {path.name}")
        if path.stat().st_size > limits.max_bytes:
            raise ImageTooLargeError(
                f"file is {path.stat().st_size} bytes, above the limit of {limits.max_bytes}"
            )
        data = path.read_bytes()
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"file is {len(data)} bytes, above the limit of {limits.max_bytes}")
    return data


def _check_size(rows: int, columns: int, frames: int, limits: ReaderLimits) -> None:
    if rows <= 0 or columns <= 0:
        raise EmptyImageError(f"image has zero size ({columns}x{rows} pixels)")
    if rows * columns * frames > limits.max_pixels:
        raise ImageTooLargeError(
            f"image has {rows * columns * frames} pixels ({columns}x{rows}x{frames}), "
            f"above the limit of {limits.max_pixels}"
        )


# --- DICOM ---------------------------------------------------------------------------


def _read_dicom(data: bytes, limits: ReaderLimits, kind_hint: RadiographKind | None, with_header: bool) -> Radiograph:
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError as exc:
        raise NotAnImageError(f"not a valid DICOM file: {exc}") from exc
    except (EOFError, struct.error, OSError) as exc:
        raise TruncatedImageError(f"DICOM file ends unexpectedly: {exc}") from exc
    except Exception as exc:  # pydicom raises many kinds of error on corrupt headers
        raise NotAnImageError(f"DICOM header cannot be parsed: {type(exc).__name__}: {exc}") from exc
    try:
        return _dicom_radiograph(ds, data, limits, kind_hint, with_header)
    except RadiographError:
        raise
    except (NotImplementedError, LookupError, AttributeError, TypeError, ValueError, OverflowError) as exc:
        # pydicom converts an element's value when it is first read, so a corrupt element
        # (an unknown VR, a value of the wrong form) fails here rather than in dcmread.
        raise NotAnImageError(f"DICOM header element cannot be read: {type(exc).__name__}: {exc}") from exc


def _dicom_radiograph(ds: Dataset, data: bytes, limits: ReaderLimits, kind_hint: RadiographKind | None,
                      with_header: bool) -> Radiograph:
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise UnsupportedPhotometricError("float pixel data is not a radiograph format we read")
        if data.find(_PIXEL_DATA_TAG, 132) != -1:
            # pydicom drops an element cut off by the end of the file, with only a warning.
            raise TruncatedImageError("DICOM pixel data is cut off before its declared length")
        raise MissingPixelDataError("the DICOM file has no pixel data (PixelData is absent)")

    modality = str(ds.get("Modality", "") or "").upper() or None
    if modality is not None and modality not in limits.allowed_modalities:
        raise UnsupportedModalityError(
            f"DICOM modality {modality!r} is not a dental radiograph "
            f"(accepted: {', '.join(sorted(limits.allowed_modalities))})"
        )
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        bits_stored = int(ds.get("BitsStored", ds.BitsAllocated))
        photometric = str(ds.PhotometricInterpretation).strip().upper()
    except (AttributeError, TypeError, ValueError) as exc:
        raise NotAnImageError(f"DICOM image attributes missing or invalid: {exc}") from exc
    _check_size(rows, columns, frames, limits)
    if photometric not in _MONOCHROME + _COLOUR:
        raise UnsupportedPhotometricError(
            f"photometric interpretation {photometric!r} is not supported "
            "(MONOCHROME1, MONOCHROME2 or RGB/YBR colour)"
        )

    transfer_syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if transfer_syntax is None:
        raise NotAnImageError("DICOM file meta has no Transfer Syntax UID")
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError as exc:
        raise UnsupportedTransferSyntaxError(
            f"no decoder for transfer syntax {transfer_syntax.name} ({transfer_syntax})"
        ) from exc
    if not decoder.is_available:
        raise UnsupportedTransferSyntaxError(
            f"transfer syntax {transfer_syntax.name} needs a decoder plugin that is not installed"
        )

    try:
        stored = decode_pixel_array(ds, index=0 if frames > 1 else None)
    except (ValueError, EOFError, struct.error) as exc:
        message = str(exc)
        lowered = message.lower()
        if any(w in lowered for w in ("length", "end of", "less than expected")) or isinstance(exc, EOFError):
            raise TruncatedImageError(f"DICOM pixel data is truncated or corrupt: {message}") from exc
        raise RadiographError(f"DICOM pixel data cannot be decoded: {message}") from exc
    except Exception as exc:  # decoder plugins raise their own error types on corrupt streams
        raise TruncatedImageError(
            f"DICOM pixel data cannot be decoded ({type(exc).__name__}): {exc}"
        ) from exc

    pixels, voi_applied = _dicom_to_unit(stored, ds, photometric, bits_stored)
    kind, kind_source = _dicom_kind(ds, modality, kind_hint)
    metadata = RadiographMetadata(
        source_format="dicom",
        width_px=columns,
        height_px=rows,
        bits_stored=bits_stored,
        photometric_interpretation=photometric,
        kind=kind,
        kind_source=kind_source,
        pixel_spacing_mm=_dicom_spacing(ds),
        modality=modality,
        transfer_syntax_uid=str(transfer_syntax),
        transfer_syntax_name=transfer_syntax.name,
        number_of_frames=frames,
        voi_applied=voi_applied,
        header=_safe_header(ds, transfer_syntax.name) if with_header else (),
    )
    return Radiograph(pixels_unit=pixels, metadata=metadata)


def _stored_value_range(ds: Dataset, bits_stored: int) -> tuple[float, float]:
    """Range of the values after the modality LUT / rescale (DICOM PS3.3 C.11.1)."""
    if ds.get("ModalityLUTSequence"):
        bit_depth = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bit_depth - 1)
    if int(ds.get("PixelRepresentation", 0)) == 0:
        low, high = 0.0, float(2**bits_stored - 1)
    else:
        low, high = float(-(2 ** (bits_stored - 1))), float(2 ** (bits_stored - 1) - 1)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return ends[0], ends[1]


def _dicom_to_unit(
    stored: np.ndarray, ds: Dataset, photometric: str, bits_stored: int
) -> tuple[np.ndarray, str]:
    if photometric in _COLOUR:
        # pydicom hands YBR data over as RGB; take the luminance (ITU-R BT.601).
        rgb = stored.astype(np.float32)
        grey = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        top = float(2 ** int(ds.BitsAllocated) - 1)
        return np.clip(grey / top, 0.0, 1.0).astype(np.float32), "none"

    low, high = _stored_value_range(ds, bits_stored)
    if not ds.get("ModalityLUTSequence") and not ds.get("VOILUTSequence") \
            and not ("WindowCenter" in ds and "WindowWidth" in ds):
        # Rescale only (the common case): the same mapping as below in one float32 pass over
        # the pixels instead of four float64 ones (3.5 -> 1.3 ms for a periapical here).
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        span = high - low if high > low else 1.0
        unit = stored.astype(np.float32)
        unit *= np.float32(slope / span)
        unit += np.float32((intercept - low) / span)
        np.clip(unit, 0.0, 1.0, out=unit)
        if photometric == "MONOCHROME1":
            np.subtract(np.float32(1.0), unit, out=unit)
        return unit, "none"

    values = apply_modality_lut(stored, ds)
    voi_applied = "none"
    if ds.get("VOILUTSequence"):
        values = apply_voi_lut(values, ds, prefer_lut=True)
        low, high = 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
        voi_applied = "voi-lut"
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        values = apply_voi_lut(values, ds, prefer_lut=False)
        voi_applied = "window"
    span = high - low if high > low else 1.0
    unit = np.clip((values.astype(np.float64) - low) / span, 0.0, 1.0).astype(np.float32)
    if photometric == "MONOCHROME1":  # MONOCHROME1: low values are bright
        unit = 1.0 - unit
    return unit, voi_applied


def _dicom_kind(
    ds: Dataset, modality: str | None, kind_hint: RadiographKind | None
) -> tuple[RadiographKind | None, str]:
    if modality == "PX":
        return RadiographKind.PANORAMIC, "dicom-modality"
    texts = [str(ds.get(k, "") or "") for k in ("SeriesDescription", "ProtocolName", "StudyDescription",
                                                 "ImageComments", "AcquisitionDeviceProcessingDescription")]
    for sequence in ("ViewCodeSequence", "AnatomicRegionSequence"):
        for item in ds.get(sequence, []) or []:
            texts.append(str(item.get("CodeMeaning", "") or ""))
    text = " ".join(texts).lower()
    for word, kind in _KIND_WORDS:
        if word in text:
            return kind, "dicom-description"
    if kind_hint is not None:
        return kind_hint, "caller"
    return None, "unknown"


def _dicom_spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            try:
                row, col = float(value[0]), float(value[1])
            except (TypeError, ValueError):
                continue
            if row > 0 and col > 0:
                return row, col
    return None


def _safe_header(ds: Dataset, transfer_syntax_name: str) -> tuple[tuple[str, str], ...]:
    items = [("TransferSyntax", transfer_syntax_name)]
    for keyword in _SAFE_HEADER_KEYWORDS:
        if keyword in ds:
            value = ds.get(keyword)
            if keyword == "SOPClassUID":
                value = getattr(value, "name", value)
            items.append((keyword, str(value)))
    return tuple(items)


# --- PNG / JPEG / TIFF -------------------------------------------------------------


def _read_pillow(
    data: bytes, source_format: str, limits: ReaderLimits, kind_hint: RadiographKind | None
) -> Radiograph:
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise NotAnImageError(f"{source_format.upper()} header cannot be read: {exc}") from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc)) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise TruncatedImageError(f"{source_format.upper()} file is corrupt: {exc}") from exc
    width, height = image.size
    _check_size(height, width, 1, limits)
    try:
        image.load()
        if source_format == "jpeg":
            image = ImageOps.exif_transpose(image)  # type: ignore[assignment]
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc)) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise TruncatedImageError(f"{source_format.upper()} file is truncated or corrupt: {exc}") from exc

    pixels, bits = _pillow_to_unit(image)
    metadata = RadiographMetadata(
        source_format=source_format,
        width_px=pixels.shape[1],
        height_px=pixels.shape[0],
        bits_stored=bits,
        photometric_interpretation="MONOCHROME2" if image.mode in ("L", "I;16", "I", "F") else image.mode,
        kind=kind_hint,
        kind_source="caller" if kind_hint is not None else "unknown",
        pixel_spacing_mm=_pillow_spacing(image),
        header=(("Format", source_format.upper()), ("Mode", image.mode)),
    )
    return Radiograph(pixels_unit=pixels, metadata=metadata)


def _pillow_to_unit(image: Image.Image) -> tuple[np.ndarray, int]:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L"):
        return (np.asarray(image, dtype=np.float32) / 65535.0), 16
    if mode == "I":  # 32-bit integer container; PNG 16-bit greyscale can arrive this way
        values = np.asarray(image, dtype=np.float64)
        if values.min() < 0:
            raise UnsupportedPhotometricError("signed integer images are not supported")
        bits = 16 if values.max() <= 65535 else 32
        return (values / float(2**bits - 1)).astype(np.float32), bits
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        top = float(values.max()) or 1.0
        return np.clip(values / top, 0, 1).astype(np.float32), 32
    if mode == "1":
        return np.asarray(image, dtype=np.float32), 1
    if mode not in ("L", "LA", "RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB"):
        raise UnsupportedPhotometricError(f"image mode {mode!r} is not supported")
    grey = image if mode == "L" else image.convert("L")  # luminance (ITU-R 601-2)
    return np.asarray(grey, dtype=np.float32) / 255.0, 8


def _pillow_spacing(image: Image.Image) -> tuple[float, float] | None:
    dpi = image.info.get("dpi")
    if not dpi:
        return None
    try:
        x_dpi, y_dpi = float(dpi[0]), float(dpi[1])
    except (TypeError, ValueError, IndexError):
        return None
    # 72 dpi and 96 dpi are encoder defaults, not a measured spacing.
    if x_dpi <= 0 or y_dpi <= 0 or round(x_dpi) in (72, 96):
        return None
    return 25.4 / y_dpi, 25.4 / x_dpi
