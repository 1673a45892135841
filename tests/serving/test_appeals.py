"""Appeals at the store level (hand-made readings, SQLite and PostgreSQL): a refused line
re-adjudicated with the versions of the original decision plus the new evidence, the
outcome linked to the original, the history and ledger moved with it, and every appeal
that cannot be taken refused with a reason."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from serving.adjudication import adjudicate
from serving.appeals import AppealError, AppealIn, AppealInputError, AppealOutcome, appeal, appeal_by_id, appeals_of, line_outcome
from serving.claims import Claim
from serving.decisions import Action, combine_hits, make_hit
from serving.evidence_matrix import Thresholds
from serving.store import audit, repository, reviews, table_versions
from serving.store.schema import AppealDocumentRow, AuditRow, ClaimLineRow, ReviewItemRow
from tests.serving.builders import finding, reading, tooth
from tests.serving.conftest import NOW

LATER = NOW + dt.timedelta(days=3)


def _claim(claim_id: str = "AP-1", fee: float = 600.0) -> Claim:
    return Claim.model_validate({
        "claim_id": claim_id, "tenant": "demo", "member": {"member_id": "MBR-0003", "birth_date": "1962-11-30"},
        "provider": {"provider_id": "PRV-001"}, "date_of_service": "2026-04-20",
        "lines": [{"line_id": "1", "code": "D3330", "tooth": "47", "tooth_system": "FDI", "fee": fee},
                  {"line_id": "2", "code": "D0220", "fee": 30}],
        "attachments": [{"radiograph_id": "img-1", "kind": "periapical"}]})


def _single_rooted() -> tuple:
    """Tooth 47 read as single-rooted: a molar root canal on it is downcoded."""
    return (reading([44, 45, 46, tooth(47, roots=1, roots_score=0.85), 48], [finding("periapical_lesion", 47, "apex")]),)


def _two_roots(image_id: str = "img-2", score: float = 0.9):
    new = reading([44, 45, 46, tooth(47, roots=2, roots_score=score), 48], [finding("periapical_lesion", 47, "apex")],
                  image_id=image_id)
    return new.__class__(**{**new.__dict__, "model_versions": (("tooth-numbering", "t2"), ("findings", "f1"))})


@pytest.fixture
def decided(seeded_store, rule_tables):
    with seeded_store.transaction() as session:
        table_versions.register_tables(session, rule_tables.parts(), NOW)
    decision = adjudicate(_claim(), _single_rooted(), seeded_store, rule_tables, now=NOW, files={"img-1": b"original"})
    assert decision.line("1").action is Action.DOWNCODE and decision.line("1").suggested_code == "D3320"
    return decision


def _appeal(store, tables, audit_id, *, narrative="", new=(), documents=(), line_ids=("1",)):
    body = AppealIn(line_ids=line_ids, narrative=narrative,
                    attachments=tuple({"radiograph_id": r.image_id, "kind": "periapical"} for r in new),
                    documents=documents)
    return appeal(store, tables, "demo", audit_id, body, {r.image_id: r for r in new},
                  {r.image_id: f"file {r.image_id}".encode() for r in new}, (), actor="key-adj", now=LATER)


def test_a_new_radiograph_overturns_the_downcode_and_the_history_and_ledger_follow(seeded_store, rule_tables, decided):
    result = _appeal(seeded_store, rule_tables, decided.audit_id, narrative="a second angle shows both roots",
                     new=(_two_roots(),))
    [line] = result.lines
    assert result.outcome is AppealOutcome.OVERTURNED and line.outcome is AppealOutcome.OVERTURNED
    assert line.before.action is Action.DOWNCODE and line.standing.action is Action.PASS
    assert result.original_audit_id == decided.audit_id and result.audit_id > decided.audit_id
    # the original versions, and the new image's model version beside them
    assert {k: v for k, v in result.decision.versions.items() if not k.startswith("appeal_")} == decided.versions
    assert result.decision.versions["appeal_model:tooth-numbering"] == "t2"
    assert [(r.image_id, r.source) for r in result.readings] == [("img-1", "original"), ("img-2", "appeal")]
    assert result.decision.line("2") == decided.line("2")  # not appealed: as it stood
    with seeded_store.transaction() as session:
        row = _history_line(session)
        assert (row.status, row.action, float(row.approved_amount)) == ("approved", "pass", line.standing.approved_amount)
        held = repository.line_consumption(session, "demo", "AP-1", ["1"])
        assert held["1"]["endodontics"] == line.standing.approved_amount
        record = session.execute(select(AuditRow).where(AuditRow.seq == result.audit_id)).scalar_one()
        assert (record.kind, record.actor, record.subject) == ("appeal", "key-adj", "AP-1")
        assert audit.verify(session).ok
        # the appeal's decision reads back by its audit id, and the appeal by its id
        assert repository.claim_decision_by_audit_id(session, "demo", result.audit_id) is not None
    assert appeal_by_id(seeded_store, "demo", result.appeal_id) == result
    assert appeals_of(seeded_store, "demo", decided.audit_id) == [
        {"appeal_id": result.appeal_id, "audit_id": result.audit_id, "outcome": "overturned",
         "created_at": LATER.isoformat(), "lines": [{"line_id": "1", "outcome": "overturned"}]}]
    # an overturned line stands as passed: appealing it again is refused
    with pytest.raises(AppealError, match="stands as pass"):
        _appeal(seeded_store, rule_tables, decided.audit_id, narrative="again")


def test_the_appeal_runs_with_the_original_thresholds_not_the_ones_in_effect_now(seeded_store, rule_tables, decided):
    strict = rule_tables.validation.thresholds.model_dump()
    strict.update(version="2026.12.strict", root_count={"support": 0.99})
    now_tables = rule_tables.with_parts({"thresholds": Thresholds.model_validate(strict)})
    # with today's thresholds a 0.9 root count is not clear: the line would go to a person
    today = adjudicate(_claim("AP-2"), (_two_roots("img-9"),), seeded_store, now_tables, now=NOW)
    assert today.line("1").needs_review
    result = _appeal(seeded_store, now_tables, decided.audit_id, narrative="two roots", new=(_two_roots(),))
    assert result.lines[0].outcome is AppealOutcome.OVERTURNED
    assert result.decision.versions["thresholds"] == rule_tables.validation.thresholds.version


def test_an_original_table_version_never_stored_cannot_be_re_run(seeded_store, rule_tables):
    decision = adjudicate(_claim(), _single_rooted(), seeded_store, rule_tables, now=NOW, files={"img-1": b"x"})
    original = rule_tables.validation.thresholds.version
    other = rule_tables.validation.thresholds.model_copy(update={"version": "2027.1"})
    with pytest.raises(AppealError, match=rf"thresholds version {re.escape(original)} is not stored"):
        _appeal(seeded_store, rule_tables.with_parts({"thresholds": other}), decision.audit_id, narrative="please")


def test_no_better_evidence_upholds_and_changes_nothing(seeded_store, rule_tables, decided):
    with seeded_store.transaction() as session:
        before = repository.line_consumption(session, "demo", "AP-1", ["1"])
    result = _appeal(seeded_store, rule_tables, decided.audit_id, narrative="the patient was in pain",
                     new=(_two_roots(score=0.5),))  # no clearer than the original: the best reading stays 1 root
    assert result.outcome is AppealOutcome.UPHELD
    assert result.lines[0].standing == decided.line("1")
    with seeded_store.transaction() as session:
        assert repository.line_consumption(session, "demo", "AP-1", ["1"]) == before
        row = _history_line(session)
        assert row.action == "downcode"
    # upheld: the line may be appealed again with other evidence
    again = _appeal(seeded_store, rule_tables, decided.audit_id, new=(_two_roots("img-3"),))
    assert again.outcome is AppealOutcome.OVERTURNED


def test_a_document_only_a_person_can_read_refers_the_line_to_review(seeded_store, rule_tables, decided):
    letter = {"name": "letter.pdf", "media_type": "application/pdf", "content_base64": "JVBERi0xLjQK"}
    result = _appeal(seeded_store, rule_tables, decided.audit_id, documents=(letter,))
    assert result.outcome is AppealOutcome.REFERRED and result.lines[0].standing == decided.line("1")
    assert result.documents[0].name == "letter.pdf" and result.documents[0].size_bytes == 9
    with seeded_store.transaction() as session:
        [item] = session.execute(select(ReviewItemRow).where(ReviewItemRow.audit_seq == result.audit_id)).scalars().all()
        assert item.line_id == "1" and item.status == "open"
        case = reviews.case_detail(session, "demo", item.id, LATER, _weights())
        assert [i["radiograph_id"] for i in case["images"]] == ["img-1"]
        assert case["decision"]["audit_id"] == result.audit_id
        [document] = case["appeal"]["documents"]
        assert case["appeal"]["original_audit_id"] == decided.audit_id and document["size_bytes"] == 9
        assert reviews.appeal_document(session, "demo", item.id, document["document_id"]) == (
            "letter.pdf", "application/pdf", b"%PDF-1.4\n")
        with pytest.raises(reviews.ReviewNotFoundError):
            reviews.appeal_document(session, "other", item.id, document["document_id"])
        stored = session.execute(select(AppealDocumentRow)).scalar_one()
        assert stored.content == b"%PDF-1.4\n"
    with pytest.raises(AppealError, match="waiting for a reviewer"):
        _appeal(seeded_store, rule_tables, decided.audit_id, narrative="and another thing")


def _history_line(session, claim_id: str = "AP-1") -> ClaimLineRow:
    return session.execute(select(ClaimLineRow).where(ClaimLineRow.claim_id == claim_id, ClaimLineRow.line_id == "1")
                           ).scalar_one()


def _weights():
    from serving.review.queue import ReviewPriority

    return ReviewPriority()


def test_appeals_that_cannot_be_taken_are_refused(seeded_store, rule_tables, decided):
    with pytest.raises(AppealError, match="stands as pass"):
        _appeal(seeded_store, rule_tables, decided.audit_id, narrative="x", line_ids=("2",))
    with pytest.raises(AppealInputError, match="no line '9'"):
        _appeal(seeded_store, rule_tables, decided.audit_id, narrative="x", line_ids=("9",))
    with pytest.raises(AppealInputError, match="already an attachment"):
        _appeal(seeded_store, rule_tables, decided.audit_id, new=(_two_roots("img-1"),))
    with pytest.raises(reviews.ReviewNotFoundError):
        appeal(seeded_store, rule_tables, "other", decided.audit_id, AppealIn(line_ids=("1",), narrative="x"), {}, {}, (),
               actor="k", now=LATER)
    result = _appeal(seeded_store, rule_tables, decided.audit_id, narrative="x")
    with pytest.raises(AppealError, match="appeal the original decision"):
        _appeal(seeded_store, rule_tables, result.audit_id, narrative="x")
    with pytest.raises(ValidationError, match="needs new evidence"):
        AppealIn(line_ids=("1",))
    with pytest.raises(AppealInputError, match="not valid base64"):
        _appeal(seeded_store, rule_tables, decided.audit_id,
                documents=({"name": "a", "media_type": "text/plain", "content_base64": "%%%"},))


def test_line_outcome_at_its_boundaries() -> None:
    def line(action: Action, paid: float, review: bool = False):
        hits = (make_hit("R", action, "x"),) + ((make_hit("F", Action.FLAG, "y"),) if review else ())
        return combine_hits("1", hits, approved_amount=paid)

    assert line_outcome(line(Action.REJECT, 0), line(Action.PASS, 100), False) is AppealOutcome.OVERTURNED
    assert line_outcome(line(Action.REJECT, 0), line(Action.DOWNCODE, 80), False) is AppealOutcome.MODIFIED
    assert line_outcome(line(Action.DOWNCODE, 80), line(Action.DOWNCODE, 80), False) is AppealOutcome.UPHELD
    assert line_outcome(line(Action.DOWNCODE, 80), line(Action.DOWNCODE, 80), True) is AppealOutcome.REFERRED
    assert line_outcome(line(Action.DOWNCODE, 80), line(Action.REJECT, 0), False) is AppealOutcome.UPHELD  # never worse
    assert line_outcome(line(Action.DOWNCODE, 80), line(Action.DOWNCODE, 90), False) is AppealOutcome.MODIFIED
    assert line_outcome(line(Action.REJECT, 0), line(Action.REJECT, 0, review=True), False) is AppealOutcome.REFERRED
    # a reviewer's decision is turned round only by a person
    assert line_outcome(line(Action.REJECT, 0), line(Action.PASS, 100), False, True) is AppealOutcome.REFERRED
    assert line_outcome(line(Action.REJECT, 0), line(Action.REJECT, 0), False, True) is AppealOutcome.UPHELD


def test_a_line_a_reviewer_decided_goes_back_to_a_person_and_their_decision_then_stands(seeded_store, rule_tables):
    from serving.review.dispositions import DispositionIn

    with seeded_store.transaction() as session:
        table_versions.register_tables(session, rule_tables.parts(), NOW)
    unclear = reading([44, 45, 46, tooth(47, roots=1, roots_score=0.6), 48], [finding("periapical_lesion", 47, "apex")])
    decision = adjudicate(_claim("AP-R"), (unclear,), seeded_store, rule_tables, now=NOW, files={"img-1": b"x"})
    assert decision.line("1").needs_review

    def dispose(audit_seq: int, outcome: str, at: dt.datetime) -> None:
        with seeded_store.transaction() as session:
            item = session.execute(select(ReviewItemRow).where(ReviewItemRow.audit_seq == audit_seq,
                                                               ReviewItemRow.line_id == "1")).scalar_one()
            reviews.record_disposition(session, "demo", item.id, "key-rev",
                                       DispositionIn.model_validate({"outcome": outcome, "reason": "looked at it"}), at)

    dispose(decision.audit_id, "confirm", NOW + dt.timedelta(days=1))  # ends as reject: no lower code was suggested
    result = appeal(seeded_store, rule_tables, "demo", decision.audit_id,
                    AppealIn(line_ids=("1",), attachments=({"radiograph_id": "img-2", "kind": "periapical"},)),
                    {"img-2": _two_roots(score=0.97)}, {"img-2": b"y"}, (), actor="key-adj", now=LATER)
    [line] = result.lines
    assert line.before.action is Action.REJECT and line.readjudicated.action is Action.PASS
    assert line.outcome is AppealOutcome.REFERRED and line.standing == line.before
    with seeded_store.transaction() as session:
        assert _history_line(session, "AP-R").status == "denied"  # the reviewer's reject stands meanwhile
    with seeded_store.transaction() as session:
        assert repository.line_consumption(session, "demo", "AP-R", ["1"]) == {}  # refused: it holds nothing
    dispose(result.audit_id, "override_pass", LATER + dt.timedelta(hours=1))
    with seeded_store.transaction() as session:
        row = _history_line(session, "AP-R")
        assert (row.status, float(row.approved_amount)) == ("approved", 600.0)
        # paid by the reviewer: the line now holds its fee in the member's ledgers
        assert repository.line_consumption(session, "demo", "AP-R", ["1"]) == {
            "1": {"endodontics": 600.0, "annual_maximum": 600.0}}
    with pytest.raises(AppealError, match="stands as pass"):
        _appeal(seeded_store, rule_tables, decision.audit_id, narrative="once more")


def _printed(rid: str, seed: int):
    from datasets.synth.generator import generate_case
    from models.radiographs import RadiographKind
    from serving.fingerprints import fingerprint
    from serving.rules.recycled import ImagePrint

    return (ImagePrint(rid, "periapical", fingerprint(generate_case(RadiographKind.PERIAPICAL, seed, 0).pixels_unit)),)


def _recycled(line) -> dict:
    """The line's recycled-radiograph hit ({} where none was recorded)."""
    return next((h for h in line.model_dump(mode="json")["rule_hits"] if h["rule_id"] == "R1.recycled_image"), {})


def _another_members(claim_id: str) -> Claim:
    return Claim.model_validate({**_claim(claim_id).model_dump(mode="json"),
                                 "member": {"member_id": "MBR-0001", "birth_date": "1980-05-17"}})


def _appeal_with(store, tables, audit_id, rid: str, seed: int):
    body = AppealIn(line_ids=("1",), narrative="a second angle shows both roots",
                    attachments=({"radiograph_id": rid, "kind": "periapical"},))
    return appeal(store, tables, "demo", audit_id, body, {rid: _two_roots(rid)}, {rid: b"file"}, _printed(rid, seed),
                  actor="key-adj", now=LATER)


def test_an_appeals_new_radiograph_is_searched_among_the_tenants(seeded_store, rule_tables, decided):
    """A radiograph an appeal adds that another member's claim carried is flagged: a
    recycled image documents nothing, so the downcode is not overturned."""
    adjudicate(_another_members("ELSEWHERE-1"), _single_rooted(), seeded_store, rule_tables, now=NOW,
               prints=_printed("pa-elsewhere", 81))
    result = _appeal_with(seeded_store, rule_tables, decided.audit_id, "img-2", 81)
    hit = _recycled(result.lines[0].readjudicated)
    assert hit["fired"] and "ELSEWHERE-1" in hit["reason"]
    assert result.lines[0].outcome is not AppealOutcome.OVERTURNED


def test_an_appeals_new_radiograph_joins_the_tenants(seeded_store, rule_tables, decided):
    """A radiograph an appeal adds is kept like a claim's: a later claim of another member
    carrying it is flagged, citing the appealed claim."""
    result = _appeal_with(seeded_store, rule_tables, decided.audit_id, "img-3", 82)
    assert not _recycled(result.lines[0].readjudicated).get("fired")
    decision = adjudicate(_another_members("LATER-1"), _single_rooted(), seeded_store, rule_tables, now=LATER,
                          prints=_printed("pa-later", 82))
    hit = _recycled(decision.line("1"))
    assert hit["fired"] and "AP-1" in hit["reason"] and "img-3" in hit["evidence"][0]["description"]
