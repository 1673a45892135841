"""``dxv data export-corrections``: the reviewers' finding corrections as a COCO dataset
that ``dxv train`` reads (a ``coco`` source in a training config) for fine-tuning.

Each radiograph that received at least one correction becomes an image: the file as
received is decoded and written as a 16-bit PNG (DICOM headers, and whatever patient data
they hold, stay behind), named by the decision's audit id and the image's position
rather than by the client's radiograph id. Its labels are the models' detections at or
above ``min_score`` with every correction applied (``serving.review.corrections``)."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session

from datasets.annotations import ImageAnnotations
from datasets.coco import write_coco
from datasets.preview import png_16bit
from datasets.readers import read_radiograph
from models.detections import ImageReading
from serving.review.corrections import corrected_annotations
from serving.review.dispositions import Correction
from serving.store.database import Store
from serving.store.schema import ClaimImageRow, ClaimRecordRow, ReviewItemRow, ReviewRow

_CORRECTIONS = TypeAdapter(list[Correction])


@dataclass
class ExportSummary:
    images: int = 0
    dispositions: int = 0
    applied: Counter[str] = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)  # why an image could not be exported


@dataclass(frozen=True)
class ReviewedImage:
    """A radiograph a reviewer corrected: its reading and the corrections on it."""

    audit_seq: int
    position: int  # 1-based, in the claim
    reading: ImageReading
    corrections: tuple[Correction, ...]


def reviewed_images(session: Session, *, tenant: str | None = None, start: dt.date | None = None,
                    end: dt.date | None = None) -> tuple[list[ReviewedImage], int]:
    """Every radiograph with at least one reviewer correction among the dispositions made
    from ``start`` to ``end`` (inclusive), and the number of those dispositions."""
    query = select(ReviewRow, ReviewItemRow.audit_seq).join(ReviewItemRow, ReviewItemRow.id == ReviewRow.review_item_id) \
        .where(ReviewRow.corrections != "[]")
    if tenant:
        query = query.where(ReviewRow.tenant == tenant)
    if start:
        query = query.where(ReviewRow.created_at >= dt.datetime.combine(start, dt.time.min))
    if end:
        query = query.where(ReviewRow.created_at < dt.datetime.combine(end + dt.timedelta(days=1), dt.time.min))
    by_decision: dict[int, list[Correction]] = {}
    dispositions = 0
    for review, audit_seq in session.execute(query.order_by(ReviewRow.id)).all():
        by_decision.setdefault(audit_seq, []).extend(_CORRECTIONS.validate_json(review.corrections))
        dispositions += 1
    images = []
    for audit_seq, corrections in sorted(by_decision.items()):
        record = session.get(ClaimRecordRow, audit_seq)
        readings = [ImageReading.from_json(r) for r in json.loads(record.readings)] if record else []
        for position, reading in enumerate(readings, start=1):
            mine = tuple(c for c in corrections if c.image_id == reading.image_id)
            if mine:
                images.append(ReviewedImage(audit_seq, position, reading, mine))
    return images, dispositions


def export_corrections(store: Store, out: Path, *, tenant: str | None = None, start: dt.date | None = None,
                       end: dt.date | None = None, min_score: float = 0.3) -> ExportSummary:
    """Write ``out/annotations.json`` and ``out/images/*.png``; ``start``/``end`` bound the
    disposition dates (inclusive)."""
    summary = ExportSummary()
    (out / "images").mkdir(parents=True, exist_ok=True)
    annotations: list[ImageAnnotations] = []
    with store.transaction() as session:
        images, summary.dispositions = reviewed_images(session, tenant=tenant, start=start, end=end)
        for image in images:
            audit_seq, position, reading = image.audit_seq, image.position, image.reading
            media = session.execute(select(ClaimImageRow.media).where(
                ClaimImageRow.audit_seq == audit_seq, ClaimImageRow.radiograph_id == reading.image_id)).scalar_one_or_none()
            if media is None:
                summary.skipped.append(f"decision {audit_seq}, image {position}: the file was not kept")
                continue
            name = f"images/d{audit_seq}-{position}.png"
            (out / name).write_bytes(png_16bit(read_radiograph(media).pixels_unit))
            labelled, applied = corrected_annotations(reading, image.corrections, name, min_score)
            annotations.append(ImageAnnotations(
                image_id=f"d{audit_seq}-{position}", file_name=name, width_px=labelled.width_px,
                height_px=labelled.height_px, kind=labelled.kind, teeth=labelled.teeth, findings=labelled.findings))
            summary.applied.update(applied)
            summary.images += 1
    write_coco(out / "annotations.json", annotations,
               description=f"reviewer corrections (tenant {tenant or 'all'}, models' detections >= {min_score} corrected)")
    return summary
