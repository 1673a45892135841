"""COCO JSON in the DENTEX hierarchical shape, read and written.

What we write (readable by generic COCO tools through the flat ``categories``):
- ``categories``: flat list, one per canonical label ('tooth-36', 'caries-dentin', ...);
- ``categories_1`` quadrants '1'-'8', ``categories_2`` positions '1'-'8', ``categories_3``
  diagnoses, starting with DENTEX's four ('Impacted', 'Caries', 'Periapical Lesion',
  'Deep Caries') and extended with our evidence classes;
- each annotation has ``category_id`` (flat), ``category_id_1``/``_2`` when it belongs to
  a tooth, ``category_id_3`` for findings, and a ``dxv`` block with what COCO cannot say:
  tooth or finding, root count, caries depth, surfaces.

What we read: our own files, DENTEX files (quadrant-enumeration with or without
diagnosis; a DENTEX diagnosis box is the box of the affected tooth), and plain COCO whose
category names map onto our labels (``models.findings.resolve_label`` plus an optional
map). Categories that map to nothing are counted in ``AnnotatedDataset.unmapped``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from datasets.annotations import AnnotatedDataset, FindingAnnotation, ImageAnnotations, ToothAnnotation
from datasets.errors import DatasetFormatError
from models.errors import VocabularyError
from models.findings import CANONICAL_LABELS, CariesDepth, FindingClass, Label, resolve_label
from models.radiographs import RadiographKind
from models.teeth import Surface, Tooth, format_surfaces, parse_surfaces

FORMAT_VERSION = "dxv-coco-1"
_DIAGNOSES: tuple[str, ...] = (
    "Impacted", "Caries", "Periapical Lesion", "Deep Caries",
    "Restoration", "Crown", "Root Canal Filling", "Implant",
)
_FLAT_IDS: dict[str, int] = {name: i + 1 for i, name in enumerate(CANONICAL_LABELS)}


def _diagnosis_name(finding: FindingAnnotation) -> str:
    if finding.finding_class is FindingClass.CARIES:
        return "Deep Caries" if finding.caries_depth is CariesDepth.NEAR_PULP else "Caries"
    return {
        FindingClass.IMPACTED_TOOTH: "Impacted", FindingClass.PERIAPICAL_LESION: "Periapical Lesion",
        FindingClass.RESTORATION: "Restoration", FindingClass.CROWN: "Crown",
        FindingClass.ROOT_CANAL_FILLING: "Root Canal Filling", FindingClass.IMPLANT: "Implant",
    }[finding.finding_class]


def _finding_label(finding: FindingAnnotation) -> Label:
    return Label(finding=finding.finding_class, caries_depth=finding.caries_depth)


def _xywh(box: tuple[float, float, float, float]) -> list[float]:
    x0, y0, x1, y1 = box
    return [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)]


def to_coco(images: list[ImageAnnotations] | tuple[ImageAnnotations, ...], description: str = "") -> dict[str, Any]:
    coco: dict[str, Any] = {
        "info": {"description": description, "version": FORMAT_VERSION},
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": name, "supercategory": "tooth" if name.startswith("tooth-") else "finding"}
                       for name, i in _FLAT_IDS.items()],
        "categories_1": [{"id": q - 1, "name": str(q), "supercategory": str(q)} for q in range(1, 9)],
        "categories_2": [{"id": p - 1, "name": str(p), "supercategory": str(p)} for p in range(1, 9)],
        "categories_3": [{"id": i, "name": name, "supercategory": name} for i, name in enumerate(_DIAGNOSES)],
    }
    next_id = 1
    for image_number, image in enumerate(images, start=1):
        entry: dict[str, Any] = {"id": image_number, "file_name": image.file_name, "width": image.width_px,
                                 "height": image.height_px, "dxv_image_id": image.image_id}
        if image.kind is not None:
            entry["dxv_kind"] = image.kind.value
        coco["images"].append(entry)
        for tooth in image.teeth:
            t = Tooth.fdi_of(tooth.fdi)
            coco["annotations"].append({
                "id": next_id, "image_id": image_number, "iscrowd": 0, "segmentation": [],
                "bbox": _xywh(tooth.box_xyxy_px), "area": _area(tooth.box_xyxy_px),
                "category_id": _FLAT_IDS[f"tooth-{t.fdi}"],
                "category_id_1": t.quadrant - 1, "category_id_2": t.position - 1,
                "dxv": {"type": "tooth", "fdi": t.fdi, "root_count": tooth.root_count,
                        "roots_visible": tooth.roots_visible, "truncated": tooth.truncated},
            })
            next_id += 1
        for finding in image.findings:
            record: dict[str, Any] = {
                "id": next_id, "image_id": image_number, "iscrowd": 0, "segmentation": [],
                "bbox": _xywh(finding.box_xyxy_px), "area": _area(finding.box_xyxy_px),
                "category_id": _FLAT_IDS[_finding_label(finding).name],
                "category_id_3": _DIAGNOSES.index(_diagnosis_name(finding)),
                "dxv": {"type": "finding", "class": finding.finding_class.value, "fdi": finding.fdi,
                        "caries_depth": finding.caries_depth.value if finding.caries_depth else None,
                        "surfaces": format_surfaces(finding.surfaces, Tooth.fdi_of(finding.fdi))
                        if finding.fdi is not None and finding.surfaces else ""},
            }
            if finding.fdi is not None:
                t = Tooth.fdi_of(finding.fdi)
                record["category_id_1"], record["category_id_2"] = t.quadrant - 1, t.position - 1
            coco["annotations"].append(record)
            next_id += 1
    return coco


def _area(box: tuple[float, float, float, float]) -> float:
    return round((box[2] - box[0]) * (box[3] - box[1]), 3)


def write_coco(path: str | Path, images: list[ImageAnnotations] | tuple[ImageAnnotations, ...],
               description: str = "") -> None:
    Path(path).write_text(json.dumps(to_coco(images, description), indent=1), encoding="utf-8")


# --- reading -------------------------------------------------------------------------


def read_coco(path: str | Path, category_map: dict[str, str] | None = None) -> AnnotatedDataset:
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DatasetFormatError(f"annotation file not found: {source}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{source.name} is not valid JSON: {exc}") from exc
    return from_coco(data, category_map, source_name=source.name)


def _names(data: dict[str, Any], key: str) -> dict[int, str]:
    return {int(c["id"]): str(c["name"]) for c in data.get(key, []) or []}


def from_coco(data: Any, category_map: dict[str, str] | None = None, source_name: str = "COCO") -> AnnotatedDataset:
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
            data.get("annotations"), list):
        raise DatasetFormatError(f"{source_name}: a COCO file needs 'images' and 'annotations' lists")
    try:
        flat, quadrants, positions, diagnoses = (
            _names(data, "categories"), _names(data, "categories_1"),
            _names(data, "categories_2"), _names(data, "categories_3"))
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetFormatError(f"{source_name}: malformed category list: {exc}") from exc
    unmapped: Counter[str] = Counter()
    teeth: dict[int, list[ToothAnnotation]] = {}
    findings: dict[int, list[FindingAnnotation]] = {}
    images: dict[int, dict[str, Any]] = {}
    for image in data["images"]:
        try:
            images[int(image["id"])] = image
            int(image["width"]), int(image["height"]), str(image["file_name"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetFormatError(f"{source_name}: image entry {image!r:.80} lacks id/width/height/file_name") from exc
    for ann in data["annotations"]:
        try:
            image_id = int(ann["image_id"])
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetFormatError(f"{source_name}: annotation {ann.get('id')!r} lacks image_id or a 4-number bbox") from exc
        if image_id not in images:
            raise DatasetFormatError(f"{source_name}: annotation {ann.get('id')!r} refers to unknown image {image_id}")
        if w <= 0 or h <= 0:
            unmapped["(empty box)"] += 1
            continue
        box = (x, y, x + w, y + h)
        parsed = _parse_annotation(ann, box, flat, quadrants, positions, diagnoses, category_map, unmapped)
        for item in parsed:
            target = teeth if isinstance(item, ToothAnnotation) else findings
            target.setdefault(image_id, []).append(item)
    result = []
    for number, image in images.items():
        kind = image.get("dxv_kind")
        result.append(ImageAnnotations(
            image_id=str(image.get("dxv_image_id") or Path(str(image["file_name"])).stem),
            file_name=str(image["file_name"]),
            width_px=int(image["width"]),
            height_px=int(image["height"]),
            kind=RadiographKind(kind) if kind else None,
            teeth=tuple(_dedupe_teeth(teeth.get(number, []))),
            findings=tuple(findings.get(number, [])),
        ))
    return AnnotatedDataset(images=tuple(result), unmapped=unmapped, source_format="coco")


def _dedupe_teeth(items: list[ToothAnnotation]) -> list[ToothAnnotation]:
    """DENTEX boxes one tooth once per diagnosis; keep one tooth per (number, box)."""
    seen: set[tuple[int, tuple[float, ...]]] = set()
    kept = []
    for item in items:
        key = (item.fdi, tuple(round(v, 1) for v in item.box_xyxy_px))
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def _parse_annotation(ann, box, flat, quadrants, positions, diagnoses, category_map, unmapped):
    extension = ann.get("dxv")
    if isinstance(extension, dict):
        return [_from_extension(extension, box)]
    fdi = _hierarchical_fdi(ann, quadrants, positions)
    if "category_id_3" in ann and ann["category_id_3"] is not None:
        name = diagnoses.get(int(ann["category_id_3"]), str(ann["category_id_3"]))
        try:
            label = resolve_label(name, category_map)
        except VocabularyError:
            unmapped[f"diagnosis:{name}"] += 1
            return [ToothAnnotation(fdi=fdi, box_xyxy_px=box)] if fdi is not None else []
        items: list[object] = []
        if fdi is not None:
            items.append(ToothAnnotation(fdi=fdi, box_xyxy_px=box))
        if label.finding is not None:
            items.append(FindingAnnotation(label.finding, box, fdi, label.caries_depth))
        return items
    if fdi is not None:
        return [ToothAnnotation(fdi=fdi, box_xyxy_px=box)]
    if "category_id_1" in ann and "category_id_2" not in ann:
        unmapped["quadrant-only (no tooth number)"] += 1
        return []
    if "category_id" not in ann:
        unmapped["(no category)"] += 1
        return []
    name = flat.get(int(ann["category_id"]), str(ann["category_id"]))
    try:
        label = resolve_label(name, category_map)
    except VocabularyError:
        unmapped[name] += 1
        return []
    if label.tooth is not None:
        return [ToothAnnotation(fdi=label.tooth.fdi, box_xyxy_px=box)]
    return [FindingAnnotation(label.finding, box, None, label.caries_depth)]  # type: ignore[arg-type]


def _hierarchical_fdi(ann: dict[str, Any], quadrants: dict[int, str], positions: dict[int, str]) -> int | None:
    if ann.get("category_id_1") is None or ann.get("category_id_2") is None:
        return None
    quadrant = quadrants.get(int(ann["category_id_1"]), str(int(ann["category_id_1"]) + 1))
    position = positions.get(int(ann["category_id_2"]), str(int(ann["category_id_2"]) + 1))
    try:
        return Tooth.fdi_of(f"{quadrant}{position}").fdi
    except VocabularyError:
        return None


def _from_extension(ext: dict[str, Any], box: tuple[float, float, float, float]) -> ToothAnnotation | FindingAnnotation:
    try:
        if ext.get("type") == "tooth":
            return ToothAnnotation(fdi=int(ext["fdi"]), box_xyxy_px=box, root_count=ext.get("root_count"),
                                   roots_visible=ext.get("roots_visible"), truncated=bool(ext.get("truncated", False)))
        fdi = ext.get("fdi")
        surfaces: frozenset[Surface] = frozenset()
        if fdi is not None and ext.get("surfaces"):
            surfaces = parse_surfaces(str(ext["surfaces"]), Tooth.fdi_of(fdi))
        depth = ext.get("caries_depth")
        return FindingAnnotation(
            finding_class=FindingClass(ext["class"]), box_xyxy_px=box, fdi=None if fdi is None else int(fdi),
            caries_depth=CariesDepth(depth) if depth else None, surfaces=surfaces)
    except (KeyError, ValueError, TypeError) as exc:
        raise DatasetFormatError(f"malformed dxv annotation block {ext!r:.120}: {exc}") from exc
