"""Thresholds proposed from reviewer corrections: labels from a corrected radiograph, the
bands moving in the expected direction on seeded labels, classes without enough labels
kept, and ``dxv calibrate`` end to end storing a version that is not in effect until
promoted."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
from sqlalchemy import select

from models.findings import FindingClass
from serving.adjudication import adjudicate
from serving.claims import Claim
from serving.evidence_matrix import Band, load_thresholds
from serving.review.calibration import CalibrationPolicy, Label, labels_of, propose_band, propose_thresholds
from serving.review.dispositions import DispositionIn
from serving.store import reviews, table_versions
from serving.store.schema import ReviewItemRow
from tests.serving.builders import finding, part, reading
from tests.serving.conftest import NOW

CARIES, LESION = FindingClass.CARIES, FindingClass.PERIAPICAL_LESION


def _wrong(cls: FindingClass, fdi: int, where: str) -> dict:
    return {"type": "finding_wrong", "image_id": "img-1", "finding_class": cls.value, "box_xyxy_px": list(part(fdi, where))}


def test_labels_of_a_corrected_radiograph() -> None:
    image = reading([44, 45, 46, 47], [finding(CARIES, 44, "occlusal", 0.8), finding(CARIES, 45, "occlusal", 0.5),
                                       finding(LESION, 46, "apex", 0.06), finding(CARIES, 47, "occlusal", 0.1)])
    missed_lesion = {"type": "missed_finding", "image_id": "img-1", "finding_class": "periapical_lesion",
                     "box_xyxy_px": [v + 4 for v in part(46, "apex")]}
    missed_caries = {"type": "missed_finding", "image_id": "img-1", "finding_class": "caries",
                     "box_xyxy_px": list(part(46, "mesial"))}
    corrections = DispositionIn.model_validate({"outcome": "confirm", "reason": "see marks", "corrections": [
        _wrong(CARIES, 45, "occlusal"), missed_lesion, missed_caries,
        {**_wrong(CARIES, 44, "occlusal"), "image_id": "another"}]}).corrections
    labels = labels_of(image, corrections, min_score=0.3)
    assert sorted((x.finding_class.value, x.score, x.true) for x in labels) == [
        ("caries", 0.0, True),  # drawn where the models saw nothing
        ("caries", 0.5, False),  # marked wrong
        ("caries", 0.8, True),  # shown, not marked wrong (the other image's correction does not apply)
        ("periapical_lesion", 0.06, True),  # missed, but weakly seen under the drawn box
    ]  # the caries at 0.1 was not shown and not named: no label


def _seeded(n_true: int, true_scores: tuple[float, float], n_false: int, false_scores: tuple[float, float],
            cls: FindingClass, extra: list[Label] = ()) -> list[Label]:  # type: ignore[assignment]
    trues = [Label(cls, float(s), True) for s in np.linspace(*true_scores, n_true)]
    falses = [Label(cls, float(s), False) for s in np.linspace(*false_scores, n_false)]
    return trues + falses + list(extra)


def test_false_positives_above_support_raise_it() -> None:
    labels = _seeded(40, (0.65, 0.95), 20, (0.45, 0.6), CARIES)
    proposal = propose_band(CARIES, labels, Band(support=0.45, absent=0.10), CalibrationPolicy())
    assert 0.55 < proposal.proposed.support <= 0.6  # the lowest score at 90 % precision
    assert proposal.proposed.absent == 0.3  # no true finding was seen below: up to what reviewers were shown, no further
    assert proposal.precision_current is not None and proposal.precision_current < 0.9
    assert proposal.precision_proposed is not None and proposal.precision_proposed >= 0.9


def test_weakly_seen_misses_lower_absent() -> None:
    weak = [Label(LESION, 0.06, True)] * 10
    labels = _seeded(40, (0.5, 0.95), 10, (0.3, 0.4), LESION, weak)
    proposal = propose_band(LESION, labels, Band(support=0.45, absent=0.10), CalibrationPolicy())
    assert proposal.proposed.absent == 0.06  # below it, no true lesion: above it 20 % would be read as "nothing seen"
    assert proposal.miss_rate_current == 0.2 and proposal.miss_rate_proposed == 0.0


def test_findings_the_models_never_saw_are_reported_not_tuned_away() -> None:
    unseen = [Label(LESION, 0.0, True)] * 10
    proposal = propose_band(LESION, _seeded(40, (0.5, 0.95), 10, (0.3, 0.4), LESION, unseen),
                            Band(support=0.45, absent=0.10), CalibrationPolicy())
    assert "no detection at all" in proposal.note and proposal.proposed.absent == 0.01


def test_a_class_without_enough_labels_keeps_its_band() -> None:
    current = load_thresholds()
    labels = _seeded(40, (0.65, 0.95), 20, (0.45, 0.6), CARIES) + _seeded(3, (0.5, 0.9), 1, (0.3, 0.3), LESION)
    proposed, report = propose_thresholds(current, labels, CalibrationPolicy(), "v-test")
    assert proposed.version == "v-test"
    assert proposed.findings[LESION] == current.findings[LESION]
    assert proposed.findings[CARIES].support > current.findings[CARIES].support
    lesion = next(p for p in report if p.finding_class is LESION)
    assert lesion.note.startswith("kept: 4 labels")
    assert proposed.tooth_presence == current.tooth_presence and proposed.root_count == current.root_count


def _flagged_claim(i: int) -> Claim:
    return Claim.model_validate({
        "claim_id": f"CAL-{i}", "tenant": "demo", "member": {"member_id": "MBR-0003", "birth_date": "1962-11-30"},
        "provider": {"provider_id": "PRV-001"}, "date_of_service": (dt.date(2026, 1, 5) + dt.timedelta(days=i)).isoformat(),
        "lines": [{"line_id": "1", "code": "D2391", "tooth": "47", "tooth_system": "FDI", "surfaces": "O", "fee": 150}],
        "attachments": [{"radiograph_id": "img-1", "kind": "periapical"}]})


def test_dxv_calibrate_stores_a_proposal_that_is_not_in_effect_until_promoted(seeded_store, rule_tables, tmp_path,
                                                                                 capsys) -> None:
    from serving.cli import main

    with seeded_store.transaction() as session:
        table_versions.register_tables(session, rule_tables.parts(), NOW)
    for i in range(24):
        # caries on 47 too faint to tell (the line is flagged); a clear one on 44, a false one on 45
        image = reading([44, 45, 46, 47], [finding(CARIES, 44, "occlusal", 0.7 + 0.01 * i),
                                           finding(CARIES, 45, "occlusal", 0.45 + 0.005 * i),
                                           finding(CARIES, 47, "occlusal", 0.35)])
        decision = adjudicate(_flagged_claim(i), (image,), seeded_store, rule_tables, now=NOW, files={"img-1": b"x"})
        assert decision.line("1").needs_review
        with seeded_store.transaction() as session:
            item = session.execute(select(ReviewItemRow).where(ReviewItemRow.audit_seq == decision.audit_id)).scalar_one()
            body = DispositionIn.model_validate({"outcome": "override_pass", "reason": "no caries on 47", "corrections": [
                _wrong(CARIES, 45, "occlusal"), _wrong(CARIES, 47, "occlusal")]})
            reviews.record_disposition(session, "demo", item.id, "key-rev", body, NOW + dt.timedelta(days=1))

    url = str(seeded_store.engine.url)
    report = tmp_path / "calibration.json"
    assert main(["calibrate", "--from", "2026-05-01", "--to", "2026-05-31", "--min-labels", "20", "--url", url,
                 "--out", str(report), "--actor", "ops"]) == 0
    figures = json.loads(report.read_text())
    caries = next(c for c in figures["classes"] if c["finding_class"] == "caries")
    assert caries["labels"] == 72 and caries["true"] == 24 and caries["false"] == 48
    assert caries["proposed"]["support"] >= 0.55 > caries["current"]["support"]  # above nearly all the false caries
    with seeded_store.transaction() as session:
        versions = table_versions.list_versions(session)
    [proposal] = [v for v in versions if v["source"] == "calibration"]
    assert proposal["version"] == figures["proposed"] and not proposal["effective"]
    assert proposal["created_by"] == "ops" and proposal["note"]["dispositions"] == 24
    # nothing in the period: nothing changes, nothing is stored
    assert main(["calibrate", "--from", "2025-01-01", "--to", "2025-01-31", "--url", url]) == 0
    assert "nothing proposed" in capsys.readouterr().out
    assert main(["thresholds", "promote", proposal["version"], "--url", url]) == 0
    with seeded_store.transaction() as session:
        assert table_versions.effective_thresholds_version(session) == proposal["version"]
        assert table_versions.load_thresholds_version(session, proposal["version"]).findings[CARIES].support >= 0.55
