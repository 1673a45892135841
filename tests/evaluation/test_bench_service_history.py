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
