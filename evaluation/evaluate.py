"""End-to-end evaluation of the exported models (ONNX Runtime, the serving code path) on
an annotated dataset: JSON report, Markdown summary and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.samples import Sample
from evaluation.detection_metrics import (
    FALSE_POSITIVE_PLACES,
    Box,
    ImageBoxes,
    coco_ap,
    confusion_matrix,
    false_positive_places,
    froc,
    match_boxes,
    match_teeth,
    operating_point,
)
from models.detections import ImageReading, ToothDetection
from models.findings import FindingClass
from models.inference import DentalReader
from models.radiographs import RadiographKind
from models.tasks import ROOT_COUNT_CLASSES

LESION_CLASSES = (FindingClass.CARIES, FindingClass.PERIAPICAL_LESION)


@dataclass(frozen=True)
class EvaluationResult:
    report: dict[str, Any]
    readings: tuple[ImageReading, ...]


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def read_all(reader: DentalReader, images: Sequence[Sample],
             on_progress: Callable[[int], None] | None = None) -> list[ImageReading]:
    readings = []
    for i, image in enumerate(images):
        ann = image.annotations
        given = None
        if reader.teeth is None and reader.roots is not None:
            # Root counts alone: classify the true tooth boxes.
            given = [ToothDetection(t.fdi, t.box_xyxy_px, 1.0) for t in ann.teeth]
        readings.append(reader.read(ann.image_id, image.load(), image.kind, operating_point=False, given_teeth=given))
        if on_progress:
            on_progress(i + 1)
    return readings


def _tooth_threshold(reader: DentalReader) -> float:
    card = reader.teeth.model.card if reader.teeth else None
    return card.decode.operating_threshold if card and card.decode else 0.0


def _teeth_section(reader: DentalReader, images: Sequence[Sample], readings: Sequence[ImageReading]) -> dict[str, Any]:
    threshold = _tooth_threshold(reader)
    section: dict[str, Any] = {"operating_threshold": threshold}
    for scope, chosen in _scopes(images):
        gt = [(images[i].annotations.image_id, [(t.box_xyxy_px, t.fdi) for t in images[i].annotations.teeth])
              for i in chosen]
        pred = {readings[i].image_id: [(t.box_xyxy_px, t.fdi) for t in readings[i].teeth if t.score >= threshold]
                for i in chosen}
        matching, _ = match_teeth(gt, pred)
        section[scope] = {
            "images": len(chosen), "gt_teeth": matching.gt_teeth, "tooth_recall": _round(matching.recall),
            "numbering_accuracy": _round(matching.numbering_accuracy),
            "false_positives_per_image": _round(matching.false_positives / max(len(chosen), 1)),
        }
        if scope == "all":
            section["fdi_pairs"] = matching.pairs
    gt_boxes = [ImageBoxes(im.annotations.image_id, im.annotations.width_px, im.annotations.height_px,
                           tuple(Box(t.box_xyxy_px, str(t.fdi)) for t in im.annotations.teeth)) for im in images]
    pred_boxes = [ImageBoxes(r.image_id, r.width_px, r.height_px,
                             tuple(Box(t.box_xyxy_px, str(t.fdi), t.score) for t in r.teeth)) for r in readings]
    names = sorted({b.label for g in gt_boxes for b in g.boxes}, key=int)
    aps = coco_ap(gt_boxes, pred_boxes, names)
    ap50s = [a.ap50 for a in aps.values() if a.ap50 is not None]
    aps_ = [a.ap for a in aps.values() if a.ap is not None]
    section["coco"] = {"mean_ap50_over_fdi": _round(float(np.mean(ap50s))) if ap50s else None,
                       "mean_ap_over_fdi": _round(float(np.mean(aps_))) if aps_ else None}
    return section


def _scopes(images: Sequence[Sample]) -> list[tuple[str, list[int]]]:
    scopes = [("all", list(range(len(images))))]
    for kind in RadiographKind:
        chosen = [i for i, im in enumerate(images) if im.kind is kind]
        if chosen:
            scopes.append((kind.value, chosen))
    return scopes


def _findings_section(reader: DentalReader, images: Sequence[Sample], readings: Sequence[ImageReading]
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    assert reader.findings is not None and reader.findings.model.card.decode is not None
    decode = reader.findings.model.card.decode
    threshold = decode.operating_threshold
    # The thresholds in effect: a verified class's is the verifier's (its scores are the verified ones).
    thresholds = {c.value: reader.finding_threshold(c) for c in FindingClass}
    own = {**decode.class_thresholds, **(reader.verifier.verify.class_thresholds if reader.verifier else {})}
    section: dict[str, Any] = {"operating_threshold": threshold, "class_thresholds": own}
    if reader.verifier is not None:
        card = reader.verifier.model.card
        section["verified_by"] = {"model": f"{card.key.value} {reader.verifier.model.version}", "verifies": list(card.classes)}
    curves: dict[str, Any] = {}
    names = [c.value for c in FindingClass]
    for scope, chosen in _scopes(images):
        gt = [ImageBoxes(images[i].annotations.image_id, images[i].annotations.width_px, images[i].annotations.height_px,
                         tuple(Box(f.box_xyxy_px, f.finding_class.value) for f in images[i].annotations.findings))
              for i in chosen]
        pred = [ImageBoxes(readings[i].image_id, readings[i].width_px, readings[i].height_px,
                           tuple(Box(f.box_xyxy_px, f.finding_class.value, f.score) for f in readings[i].findings))
                for i in chosen]
        aps = coco_ap(gt, pred, names)
        per_class = {}
        for name, ap in aps.items():
            if ap.gt_count == 0:
                continue
            op = operating_point(gt, pred, name, thresholds[name])
            per_class[name] = {"gt": ap.gt_count, "ap": _round(ap.ap), "ap50": _round(ap.ap50), "ar100": _round(ap.ar100),
                               "sensitivity": _round(op.sensitivity), "ppv": _round(op.ppv)}
            if scope == "all":
                curves[f"pr_{name}"] = ap.pr_curve_50
        entry: dict[str, Any] = {"images": len(chosen), "classes": per_class}
        if scope == "all":
            entry["false_positive_places"] = {name: false_positive_places(gt, pred, name, thresholds[name])
                                              for name in per_class}
            entry["froc"] = {c.value: {str(k): _round(v) for k, v in froc(gt, pred, c.value).items()}
                             for c in LESION_CLASSES}
            curves["froc"] = entry["froc"]
        section[scope] = entry
    section["caries_depth_accuracy"] = _round(_caries_depth_accuracy(images, readings, thresholds[FindingClass.CARIES.value]))
    return section, curves


def _caries_depth_accuracy(images: Sequence[Sample], readings: Sequence[ImageReading], threshold: float) -> float | None:
    """Among true caries found (IoU >= 0.5 at the operating point), the share with the right depth."""
    right = total = 0
    for image, reading in zip(images, readings, strict=True):
        gt = [(f.box_xyxy_px, f.caries_depth) for f in image.annotations.findings
              if f.finding_class is FindingClass.CARIES and f.caries_depth is not None]
        pred = [f for f in reading.findings if f.finding_class is FindingClass.CARIES and f.score >= threshold]
        if not gt or not pred:
            continue
        for gi, pi in match_boxes([b for b, _ in gt], [p.box_xyxy_px for p in pred]):
            total += 1
            right += int(pred[pi].caries_depth == gt[gi][1])
    return right / total if total else None


def _roots_section(reader: DentalReader, images: Sequence[Sample], readings: Sequence[ImageReading]) -> dict[str, Any]:
    """Root count on true teeth whose apices are in the image, through the detected tooth
    that matches each (or the true box when there is no tooth detector)."""
    threshold = _tooth_threshold(reader)
    truth: list[int] = []
    predicted: list[int] = []
    for image, reading in zip(images, readings, strict=True):
        if image.kind is RadiographKind.BITEWING:
            continue
        gt = [t for t in image.annotations.teeth if t.root_count and t.roots_visible is not False and not t.truncated]
        teeth = [t for t in reading.teeth if t.score >= threshold and t.root_count is not None]
        if not gt or not teeth:
            continue
        for gi, pi in match_boxes([t.box_xyxy_px for t in gt], [t.box_xyxy_px for t in teeth]):
            truth.append(int(gt[gi].root_count or 0))
            predicted.append(int(teeth[pi].root_count or 0))
    matrix = confusion_matrix(truth, predicted, ROOT_COUNT_CLASSES)
    accuracy = float(np.trace(matrix) / matrix.sum()) if matrix.sum() else None
    return {"teeth": int(matrix.sum()), "root_count_accuracy": _round(accuracy),
            "confusion_matrix": {"classes": list(ROOT_COUNT_CLASSES), "rows_true_cols_predicted": matrix.tolist()}}


def evaluate(reader: DentalReader, images: Sequence[Sample], dataset_name: str,
             on_progress: Callable[[int], None] | None = None) -> EvaluationResult:
    readings = read_all(reader, images, on_progress)
    report: dict[str, Any] = {"dataset": dataset_name, "images": len(images),
                              "images_per_kind": {k: sum(1 for im in images if im.kind.value == k)
                                                  for k in sorted({im.kind.value for im in images})},
                              "models": dict(reader.model_versions())}
    curves: dict[str, Any] = {}
    if reader.teeth is not None:
        report["teeth"] = _teeth_section(reader, images, readings)
    if reader.findings is not None:
        report["findings"], curves = _findings_section(reader, images, readings)
    if reader.roots is not None:
        report["root_count"] = _roots_section(reader, images, readings)
    report["_curves"] = curves
    return EvaluationResult(report, tuple(readings))


def headline_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The figures the targets are stated in (flat names, for MLflow and model cards)."""
    out: dict[str, float] = {}
    teeth = report.get("teeth", {}).get("all")
    if teeth:
        out["tooth_recall"] = teeth["tooth_recall"]
        out["numbering_accuracy"] = teeth["numbering_accuracy"]
    findings = report.get("findings", {}).get("all")
    if findings:
        for name, values in findings["classes"].items():
            for key in ("ap50", "ap", "sensitivity", "ppv"):
                if values.get(key) is not None:
                    out[f"{key}_{name}"] = values[key]
        if report["findings"].get("caries_depth_accuracy") is not None:
            out["caries_depth_accuracy"] = report["findings"]["caries_depth_accuracy"]
    roots = report.get("root_count")
    if roots and roots.get("root_count_accuracy") is not None:
        out["root_count_accuracy"] = roots["root_count_accuracy"]
    return {k: float(v) for k, v in out.items() if v is not None}


def write_report(result: EvaluationResult, out_dir: str | Path) -> list[Path]:
    from evaluation.plots import write_plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {k: v for k, v in result.report.items() if k != "_curves"}
    if "teeth" in report:
        report["teeth"] = {k: v for k, v in report["teeth"].items() if k != "fdi_pairs"}
    files = [out / "report.json", out / "summary.md"]
    files[0].write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    files[1].write_text(markdown_summary(report), "utf-8")
    files += write_plots(result.report, out)
    return files


def _fmt(v: Any) -> str:
    return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def markdown_summary(report: dict[str, Any]) -> str:
    lines = [f"# Evaluation on {report['dataset']}", "",
             f"{report['images']} images ({', '.join(f'{k}: {v}' for k, v in report['images_per_kind'].items())}); "
             f"models: {', '.join(f'{k} {v}' for k, v in report['models'].items())}.", ""]
    if "teeth" in report:
        lines += ["## Teeth", "", "| scope | images | teeth | recall | numbering accuracy | FP / image |",
                  "|---|---|---|---|---|---|"]
        for scope, v in report["teeth"].items():
            if isinstance(v, dict) and "tooth_recall" in v:
                lines.append(f"| {scope} | {v['images']} | {v['gt_teeth']} | {_fmt(v['tooth_recall'])} | "
                             f"{_fmt(v['numbering_accuracy'])} | {_fmt(v['false_positives_per_image'])} |")
        lines.append("")
    if "findings" in report:
        f = report["findings"]
        own = ", ".join(f"{k} {v}" for k, v in f.get("class_thresholds", {}).items())
        by = f.get("verified_by")
        verified = f"; {', '.join(by['verifies'])} re-scored by {by['model']}" if by else ""
        lines += [f"## Findings (operating threshold {f['operating_threshold']}{'; ' + own if own else ''}{verified})", "",
                  "| scope | class | n | AP | AP50 | AR100 | sensitivity | PPV |", "|---|---|---|---|---|---|---|---|"]
        for scope, v in f.items():
            if isinstance(v, dict) and "classes" in v:
                for name, c in v["classes"].items():
                    lines.append(f"| {scope} | {name} | {c['gt']} | {_fmt(c['ap'])} | {_fmt(c['ap50'])} | "
                                 f"{_fmt(c['ar100'])} | {_fmt(c['sensitivity'])} | {_fmt(c['ppv'])} |")
        lines += ["", f"Caries depth accuracy (found caries): {_fmt(f.get('caries_depth_accuracy'))}", ""]
        places = f.get("all", {}).get("false_positive_places", {})
        if places:
            lines += ["False positives at the operating threshold, by where they lie:", "",
                      "| class | " + " | ".join(p.replace("_", " ") for p in FALSE_POSITIVE_PLACES) + " |",
                      "|---|" + "---|" * len(FALSE_POSITIVE_PLACES)]
            for name, counts in places.items():
                lines.append(f"| {name} | " + " | ".join(str(counts[p]) for p in FALSE_POSITIVE_PLACES) + " |")
            lines.append("")
        froc_all = f.get("all", {}).get("froc", {})
        if froc_all:
            rates = list(next(iter(froc_all.values())).keys())
            lines += ["FROC (sensitivity at false positives per image):", "",
                      "| class | " + " | ".join(rates) + " |", "|---|" + "---|" * len(rates)]
            for name, values in froc_all.items():
                lines.append(f"| {name} | " + " | ".join(_fmt(values[r]) for r in rates) + " |")
            lines.append("")
    if "root_count" in report:
        r = report["root_count"]
        lines += ["## Root count", "", f"Accuracy {_fmt(r['root_count_accuracy'])} on {r['teeth']} teeth "
                  "(true teeth with apices in view, matched to a detected tooth).", ""]
    return "\n".join(lines) + "\n"

