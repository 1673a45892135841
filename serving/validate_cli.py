"""``dxv validate CLAIM.json --images DIR``: run the ONNX detectors and the validation layer
locally (no service) and print a table and the JSON decision. ``dxv claims synth`` writes
synthetic claims with their radiographs and the truth of every line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from models.errors import DxvError

_out = Console()
if not _out.is_terminal:  # logs and CI: wide enough that the reasons stay readable
    _out = Console(width=160)
_IMAGE_SUFFIXES = (".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


class ClaimFileError(DxvError):
    code = "claim.invalid"


def register(commands: Any) -> None:
    val = commands.add_parser("validate", help="check a claim against its radiographs (models + validation rules)")
    val.add_argument("claim", type=Path, help="claim JSON (the Claim data contract)")
    val.add_argument("--images", type=Path, required=True, help="folder holding the attached radiographs")
    val.add_argument("--models", type=Path, default=None, help="model folder (default: models/shipped)")
    val.add_argument("--catalogue", type=Path, default=None, help="procedure catalogue YAML")
    val.add_argument("--matrix", type=Path, default=None, help="evidence matrix YAML")
    val.add_argument("--thresholds", type=Path, default=None, help="score bands YAML")
    val.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    val.add_argument("--json", action="store_true", help="print only the JSON decision")
    val.set_defaults(handler=_validate)

    claims = commands.add_parser("claims", help="synthetic claims")
    sub = claims.add_subparsers(dest="claims_command", required=True)
    synth = sub.add_parser("synth", help="write synthetic claims, their radiographs (DICOM) and the truth of every line")
    synth.add_argument("--n", type=int, default=10)
    synth.add_argument("--seed", type=int, default=1)
    synth.add_argument("--problem-rate", type=float, default=0.35)
    synth.add_argument("--out", type=Path, required=True)
    synth.set_defaults(handler=_synth)


def load_claim(path: Path):
    from serving.claims import InvalidClaimError, claim_from_json

    try:
        text = path.read_text("utf-8")
    except FileNotFoundError as exc:
        raise ClaimFileError(f"claim file not found: {path}") from exc
    try:
        return claim_from_json(text)
    except InvalidClaimError as exc:
        raise ClaimFileError(f"{path}: {exc.message}") from exc


def _image_file(folder: Path, radiograph_id: str, content: str | None) -> Path:
    if content:
        path = folder / content
        if path.is_file():
            return path
        raise ClaimFileError(f"attachment {radiograph_id}: {path} not found")
    for suffix in _IMAGE_SUFFIXES:
        if (folder / f"{radiograph_id}{suffix}").is_file():
            return folder / f"{radiograph_id}{suffix}"
    raise ClaimFileError(f"attachment {radiograph_id}: no file {radiograph_id}.* ({', '.join(_IMAGE_SUFFIXES)}) in {folder}")


def read_attachments(claim, images: Path | None, models: Path | None, threads: int | None = None) -> dict:
    """Run the models on every attached radiograph (files under ``images``)."""
    from datasets.readers import read_radiograph
    from models.inference import DentalReader
    from models.model_card import SHIPPED_DIR

    if images is None:
        raise ClaimFileError("the claim has attachments: give the folder holding them with --images")
    reader = DentalReader.from_directory(models or SHIPPED_DIR, threads=threads)
    readings = {}
    for attachment in claim.attachments:
        path = _image_file(images, attachment.radiograph_id, attachment.content)
        radiograph = read_radiograph(path, kind_hint=attachment.kind)
        pixels = radiograph.pixels_unit
        readings[attachment.radiograph_id] = reader.read(attachment.radiograph_id, pixels,
                                                         radiograph.kind_or_guess(attachment.kind), operating_point=False)
    return readings


def _validate(args: argparse.Namespace) -> int:
    from serving.validation.engine import load_tables, validate_claim

    claim = load_claim(args.claim)
    tables = load_tables(**{k: v for k, v in (("catalogue", args.catalogue), ("matrix", args.matrix),
                                               ("thresholds", args.thresholds)) if v is not None})
    readings = read_attachments(claim, args.images, args.models, args.threads) if claim.attachments else {}
    result = validate_claim(claim, readings, tables)
    if not args.json:
        print_decision_table(claim, result)
    print(result.model_dump_json(indent=2))
    return 0


def print_decision_table(claim, result) -> None:
    table = Table("line", "code", "tooth (FDI)", "action", "suggested", "approved", "conf.", "reason",
                  title=f"claim {claim.claim_id}")
    styles = {"pass": "green", "flag": "yellow", "downcode": "magenta", "reject": "red"}
    for decision in result.lines:
        line = claim.line(decision.line_id)
        # The deciding reason; for a pass, the last rule that found supporting evidence.
        reasons = [h.reason for h in decision.rule_hits if h.fired and h.action is decision.action] or \
            [h.reason for h in decision.rule_hits if not h.fired and h.evidence][-1:] or \
            [h.reason for h in decision.rule_hits][:1]
        tooth = line.fdi_tooth
        quadrant = f"Q{line.quadrant}" if line.quadrant else ""
        site = f"{tooth.fdi} (U{tooth.universal}) {line.surfaces or ''}" if tooth else quadrant
        table.add_row(line.line_id, f"{line.code_system} {line.code}", site,
                      f"[{styles[decision.action.value]}]{decision.action.value}[/]", decision.suggested_code or "",
                      "" if decision.approved_amount is None else f"{decision.approved_amount:,.2f}",
                      f"{decision.confidence:.2f}", reasons[0] if reasons else "")
    _out.print(table)
    _out.print("versions: " + ", ".join(f"{k} {v}" for k, v in result.versions.items()))


def _synth(args: argparse.Namespace) -> int:
    from datasets.synth.generator import case_dicom_bytes
    from evaluation.claim_generator import generate_claims

    images = args.out / "images"
    images.mkdir(parents=True, exist_ok=True)
    truth = []
    for item in generate_claims(args.n, args.seed, problem_rate=args.problem_rate):
        (images / f"{item.case.image_id}.dcm").write_bytes(case_dicom_bytes(item.case))
        (args.out / f"{item.claim.claim_id}.json").write_text(item.claim.model_dump_json(indent=2), "utf-8")
        truth += [{"claim_id": item.claim.claim_id, "line_id": t.line_id, "problem": t.problem, "expected_code": t.expected_code}
                  for t in item.truth]
    (args.out / "truth.jsonl").write_text("".join(json.dumps(t) + "\n" for t in truth), "utf-8")
    _out.print(f"{args.n} claims in {args.out} (images in {images}, line truth in truth.jsonl)")
    return 0
