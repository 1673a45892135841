"""YOLO txt datasets: ``images/`` beside ``labels/`` (optionally with split sub-folders),
one ``<stem>.txt`` per image with ``class cx cy w h`` normalised to the image size, and the
class names in ``data.yaml`` (``names``) or ``classes.txt``.

Class names are mapped onto our labels by ``models.findings.resolve_label`` and an optional
map; names that map to nothing are counted, never silently dropped. YOLO has no tooth
assignment for findings, root counts or surfaces: those come back empty."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import yaml
from PIL import Image

from datasets.annotations import AnnotatedDataset, FindingAnnotation, ImageAnnotations, ToothAnnotation
from datasets.errors import DatasetFormatError
from models.errors import VocabularyError
from models.findings import CANONICAL_LABELS, Label, resolve_label

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def read_class_names(root: Path) -> list[str]:
    data_yaml = root / "data.yaml"
    if data_yaml.is_file():
        data = yaml.safe_load(data_yaml.read_text(encoding="utf-8")) or {}
        names = data.get("names")
        if isinstance(names, dict):
            return [str(names[k]) for k in sorted(names, key=int)]
        if isinstance(names, list):
            return [str(n) for n in names]
        raise DatasetFormatError(f"{data_yaml}: 'names' must be a list or an id->name mapping")
    classes_txt = root / "classes.txt"
    if classes_txt.is_file():
        return [line.strip() for line in classes_txt.read_text(encoding="utf-8").splitlines() if line.strip()]
    raise DatasetFormatError(f"{root}: no data.yaml or classes.txt naming the classes")


def read_yolo(root: str | Path, category_map: dict[str, str] | None = None,
              class_names: list[str] | None = None) -> AnnotatedDataset:
    base = Path(root)
    images_dir, labels_dir = base / "images", base / "labels"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise DatasetFormatError(f"{base}: a YOLO dataset needs 'images/' and 'labels/' folders")
    names = class_names if class_names is not None else read_class_names(base)
    labels: list[Label | None] = []
    unmapped: Counter[str] = Counter()
    for name in names:
        try:
            labels.append(resolve_label(name, category_map))
        except VocabularyError:
            labels.append(None)
    images = []
    for image_path in sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        relative = image_path.relative_to(images_dir)
        label_path = (labels_dir / relative).with_suffix(".txt")
        with Image.open(image_path) as im:  # reads the header only
            width, height = im.size
        teeth: list[ToothAnnotation] = []
        findings: list[FindingAnnotation] = []
        if label_path.is_file():
            for line_number, line in enumerate(label_path.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                parts = line.split()
                try:
                    class_id = int(parts[0])
                    cx, cy, w, h = (float(v) for v in parts[1:5])
                except (ValueError, IndexError) as exc:
                    raise DatasetFormatError(f"{label_path.name}:{line_number}: expected 'class cx cy w h'") from exc
                if not 0 <= class_id < len(names):
                    raise DatasetFormatError(f"{label_path.name}:{line_number}: class {class_id} has no name")
                label = labels[class_id]
                if label is None:
                    unmapped[names[class_id]] += 1
                    continue
                box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
                if label.tooth is not None:
                    teeth.append(ToothAnnotation(fdi=label.tooth.fdi, box_xyxy_px=box))
                else:
                    findings.append(FindingAnnotation(label.finding, box, None, label.caries_depth))  # type: ignore[arg-type]
        images.append(ImageAnnotations(
            image_id=relative.with_suffix("").as_posix().replace("/", "_"),
            file_name=f"images/{relative.as_posix()}",
            width_px=width, height_px=height, teeth=tuple(teeth), findings=tuple(findings)))
    return AnnotatedDataset(images=tuple(images), unmapped=unmapped, source_format="yolo")


def _label_name(item: ToothAnnotation | FindingAnnotation) -> str:
    if isinstance(item, ToothAnnotation):
        return f"tooth-{item.fdi}"
    return Label(finding=item.finding_class, caries_depth=item.caries_depth).name


def _items(image: ImageAnnotations) -> list[ToothAnnotation | FindingAnnotation]:
    return [*image.teeth, *image.findings]


def write_yolo(dataset: AnnotatedDataset, source_root: str | Path, out_root: str | Path) -> list[str]:
    """Write labels, data.yaml and copies of the images; returns the class names used
    (our canonical names, in canonical order)."""
    src, out = Path(source_root), Path(out_root)
    used = {_label_name(item) for image in dataset.images for item in _items(image)}
    names = [name for name in CANONICAL_LABELS if name in used]
    index = {name: i for i, name in enumerate(names)}
    for image in dataset.images:
        relative = Path(image.file_name)
        if relative.parts and relative.parts[0] == "images":
            relative = Path(*relative.parts[1:])
        target_image = out / "images" / relative
        target_image.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / image.file_name, target_image)
        lines = []
        for item in _items(image):
            x0, y0, x1, y1 = item.box_xyxy_px
            w, h = image.width_px, image.height_px
            lines.append(f"{index[_label_name(item)]} {(x0 + x1) / 2 / w:.8f} {(y0 + y1) / 2 / h:.8f} "
                         f"{(x1 - x0) / w:.8f} {(y1 - y0) / h:.8f}")
        label_file = (out / "labels" / relative).with_suffix(".txt")
        label_file.parent.mkdir(parents=True, exist_ok=True)
        label_file.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    (out / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images", "names": names}, sort_keys=False),
                                   encoding="utf-8")
    return names
