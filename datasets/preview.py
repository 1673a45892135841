"""Overlay drawings: radiographs with tooth boxes, FDI numbers and findings, for people
to check data by eye (``dxv synth --preview``) and for reports."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from datasets.annotations import ImageAnnotations
from models.findings import FindingClass

FINDING_COLOURS: dict[FindingClass, tuple[int, int, int]] = {
    FindingClass.CARIES: (255, 64, 64),
    FindingClass.PERIAPICAL_LESION: (255, 160, 0),
    FindingClass.IMPACTED_TOOTH: (200, 80, 255),
    FindingClass.RESTORATION: (64, 160, 255),
    FindingClass.CROWN: (0, 220, 220),
    FindingClass.ROOT_CANAL_FILLING: (255, 255, 0),
    FindingClass.IMPLANT: (160, 255, 160),
}
TOOTH_COLOUR = (80, 255, 80)
_SHORT = {
    FindingClass.CARIES: "car", FindingClass.PERIAPICAL_LESION: "PA", FindingClass.IMPACTED_TOOTH: "imp",
    FindingClass.RESTORATION: "rest", FindingClass.CROWN: "crn", FindingClass.ROOT_CANAL_FILLING: "rcf",
    FindingClass.IMPLANT: "impl",
}


def png_8bit(pixels_unit: np.ndarray) -> bytes:
    """Unit pixels as an 8-bit greyscale PNG (for display)."""
    grey = np.clip(np.asarray(pixels_unit, dtype=np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(grey, mode="L").save(out, format="PNG", compress_level=3)
    return out.getvalue()


def png_16bit(pixels_unit: np.ndarray) -> bytes:
    """Unit pixels as a 16-bit greyscale PNG (lossless enough for training data)."""
    wide = np.clip(np.asarray(pixels_unit, dtype=np.float64) * 65535.0 + 0.5, 0, 65535).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(wide).save(out, format="PNG", compress_level=3)
    return out.getvalue()


def overlay_png_base64(pixels_unit: np.ndarray, annotations: ImageAnnotations, max_side: int = 640) -> str:
    """``draw_overlay`` as a base64 PNG, for an ``<img src="data:...">`` in an HTML report."""
    out = io.BytesIO()
    draw_overlay(pixels_unit, annotations, max_side).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def draw_overlay(pixels_unit: np.ndarray, annotations: ImageAnnotations, max_side: int = 640) -> Image.Image:
    """The radiograph (display-windowed) with teeth and findings drawn on it."""
    low, high = np.percentile(pixels_unit, [0.5, 99.5])
    grey = np.clip((pixels_unit - low) / max(high - low, 1e-6), 0, 1)
    image = Image.fromarray((grey * 255).astype(np.uint8)).convert("RGB")
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    font_size = max(10, image.width // 45)
    for tooth in annotations.teeth:
        box = [c * scale for c in tooth.box_xyxy_px]
        draw.rectangle(box, outline=TOOTH_COLOUR, width=1)
        label = f"{tooth.fdi}" + (f"r{tooth.root_count}" if tooth.root_count else "")
        draw.text((box[0] + 2, box[1] + 1), label, fill=TOOTH_COLOUR, font_size=font_size)
    for finding in annotations.findings:
        box = [c * scale for c in finding.box_xyxy_px]
        colour = FINDING_COLOURS[finding.finding_class]
        draw.rectangle(box, outline=colour, width=2)
        label = _SHORT[finding.finding_class]
        if finding.caries_depth is not None:
            label += f"-{finding.caries_depth.value[:3]}"
        draw.text((box[0], max(0, box[1] - font_size - 1)), label, fill=colour, font_size=font_size)
    return image


def write_preview(path: str | Path, cases: list[tuple[np.ndarray, ImageAnnotations]], columns: int = 4,
                  tile: int = 480) -> None:
    """A grid of overlays, at most ``columns`` wide."""
    if not cases:
        return
    tiles = [draw_overlay(pixels, annotations, max_side=tile) for pixels, annotations in cases]
    columns = min(columns, len(tiles))
    rows = (len(tiles) + columns - 1) // columns
    cell_w = max(t.width for t in tiles)
    cell_h = max(t.height for t in tiles)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (24, 24, 24))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % columns) * cell_w, (i // columns) * cell_h))
    sheet.save(path)
