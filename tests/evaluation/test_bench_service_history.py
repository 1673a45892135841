"""The service benchmark's optional history: earlier radiographs stored before the first
claim, of other members and providers, that the recycled-image lookup ranks by likeness."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from evaluation.bench_service import ClaimFactory, store_earlier_radiographs
from evaluation.service_demo import prepare_store, state_url
from serving.claims import Claim
from serving.fingerprints import fingerprint
from serving.rules.recycled import ImagePrint
from serving.store import repository
from serving.store.database import Store
from serving.store.schema import FingerprintRow


def test_earlier_radiographs_fill_the_likeness_pool_and_never_match(tmp_path) -> None:
    from datasets.synth.generator import generate_case
    from models.radiographs import RadiographKind

    url = state_url(tmp_path)
    prepare_store(url, dt.datetime(2026, 5, 1), extra_members=3)
    store_earlier_radiographs(url, 300)
    claim = Claim.model_validate({**ClaimFactory(members=3).make(1), "attachments": []})
    prints = (ImagePrint("q", "periapical", fingerprint(generate_case(RadiographKind.PERIAPICAL, 808, 0).pixels_unit)),)
    store = Store.open(url)
    try:
        with store.reading() as session:
            assert session.execute(select(func.count()).select_from(FingerprintRow)).scalar_one() == 300
            found = repository.fingerprint_candidates(session, claim, prints, store.likeness)
        assert len(found) == repository.CANDIDATES_BY_LIKENESS  # ranked from the history alone
        assert all(c.claim_id.startswith("EARLIER-") and not c.same_member for c in found)
    finally:
        store.close()


def test_benchmark_claims_are_coded_as_clean_traffic(tmp_path) -> None:
    """D0220 for the first periapical and D0230 for each additional one, each on a tooth its
    image shows: every line passes (two D0220 lines would reject the second as a duplicate and
    keep the files for review, which is not the clean claim the overhead target is about)."""
    from serving.adjudication import RuleTables, adjudicate
    from tests.serving.builders import reading

    url = state_url(tmp_path)
    prepare_store(url, dt.datetime(2026, 5, 1), extra_members=3)
    body = ClaimFactory(members=3).make(4)
    assert [line["code"] for line in body["lines"]] == ["D0220", "D0230", "D0230", "D0230"]
    assert len({line["tooth"] for line in body["lines"]}) == 4
    claim = Claim.model_validate(body)
    readings = tuple(reading([int(line["tooth"])], image_id=a["radiograph_id"])
                     for line, a in zip(body["lines"], body["attachments"], strict=True))
    store = Store.open(url)
    try:
        decided = adjudicate(claim, readings, store, RuleTables.load(), now=dt.datetime(2026, 5, 5))
    finally:
        store.close()
    assert [(d.line_id, d.action.value) for d in decided.lines] == [("1", "pass"), ("2", "pass"), ("3", "pass"),
                                                                   ("4", "pass")]
