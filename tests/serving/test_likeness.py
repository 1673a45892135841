"""The likeness pool of the recycled-radiograph lookup, kept in memory and read
incrementally: the same candidates as reading the pool whole, the latest rows only, rows
committed late below the highest id seen, and never the claim's own earlier submission."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sqlalchemy import text

from serving.claims import Claim
from serving.fingerprints import Fingerprint
from serving.rules.recycled import ImagePrint
from serving.store import repository
from serving.store.database import Store
from serving.store.likeness import LikenessPools

NOW = dt.datetime(2026, 3, 1)


def _print(rng: np.random.Generator, near: np.ndarray | None = None) -> Fingerprint:
    coarse = rng.standard_normal(64).astype(np.float32) if near is None else near + 0.05 * rng.standard_normal(64)
    return Fingerprint(rng.integers(0, 255, (48, 48), dtype=np.uint8), (coarse / np.linalg.norm(coarse)).astype(np.float32))


def _claim(number: int, provider: str = "P-1", member: str | None = None) -> Claim:
    return Claim.model_validate({"claim_id": f"C-{number}", "tenant": "t", "provider": {"provider_id": provider},
                                 "member": {"member_id": member or f"M-{number}", "birth_date": "1980-01-01"},
                                 "date_of_service": "2026-03-01", "lines": [{"line_id": "1", "code": "D0220"}]})


@pytest.fixture()
def store(store_url):  # SQLite and PostgreSQL (tests/serving/conftest.py)
    opened = Store.open(store_url)
    yield opened
    opened.close()


def _save(store: Store, rng: np.random.Generator, first: int, count: int) -> None:
    with store.transaction() as session:
        for number in range(first, first + count):
            # Another provider and member each time: only the likeness pool can find them.
            repository.save_fingerprints(session, _claim(number, provider=f"P-{number}"),
                                         (ImagePrint(f"r-{number}", "periapical", _print(rng)),), NOW)


def _ids_of(store: Store, numbers: range) -> list[int]:
    with store.engine.connect() as connection:
        rows = connection.execute(text("SELECT id, claim_id FROM image_fingerprints ORDER BY id")).all()
    wanted = {f"C-{n}" for n in numbers}
    return [row_id for row_id, claim_id in rows if claim_id in wanted]


def _candidates(store: Store, claim: Claim, prints: tuple[ImagePrint, ...], pools: LikenessPools | None) -> list[int]:
    with store.reading() as session:
        return sorted(int(c.claim_id[2:]) for c in repository.fingerprint_candidates(session, claim, prints, pools))


def test_pools_read_incrementally_give_the_candidates_of_the_pool_read_whole(store, monkeypatch) -> None:
    import serving.store.repository as repo

    rng = np.random.default_rng(1)
    pools = LikenessPools(size=40, reread=5)
    # Without pools, the whole pool is read for each claim; both at 40 latest radiographs.
    monkeypatch.setattr(repo, "LikenessPools", lambda: LikenessPools(size=40))
    _save(store, rng, 0, 60)
    for batch in range(4):
        queries = [(ImagePrint("q", "periapical", _print(rng)),) for _ in range(3)]
        for query in queries:
            claim = _claim(999, provider="P-query")
            incremental, whole = _candidates(store, claim, query, pools), _candidates(store, claim, query, None)
            assert incremental == whole and len(whole) == 8
            assert min(whole) >= 60 + 7 * batch - 40  # only the latest 40 are ranked
        _save(store, rng, 60 + 7 * batch, 7)
    with store.reading() as session:
        held = pools.latest(session.connection(), "t", "periapical")
    assert len(held.ids) == 40 and list(held.ids) == sorted(held.ids)
    assert list(held.ids) == _ids_of(store, range(48, 88))


def test_a_radiograph_committed_late_below_the_highest_id_seen_is_picked_up(store) -> None:
    rng = np.random.default_rng(2)
    _save(store, rng, 0, 20)
    pools = LikenessPools(size=100, reread=8)
    with store.engine.begin() as connection:
        late = connection.execute(text("SELECT * FROM image_fingerprints WHERE claim_id = 'C-16'")).mappings().one()
        connection.execute(text("DELETE FROM image_fingerprints WHERE claim_id = 'C-16'"))  # not committed yet
    with store.reading() as session:
        assert late["id"] not in pools.latest(session.connection(), "t", "periapical").ids
    with store.engine.begin() as connection:  # another writer's transaction commits it, with its lower id
        connection.execute(text(f"INSERT INTO image_fingerprints ({', '.join(late)}) VALUES "
                                f"({', '.join(':' + k for k in late)})"), dict(late))
    _save(store, rng, 20, 2)
    with store.reading() as session:
        held = pools.latest(session.connection(), "t", "periapical")
    assert late["id"] in held.ids and len(held.ids) == 22 and list(held.ids) == sorted(held.ids)
    # And the most alike of the pool is found through it.
    query = (ImagePrint("q", "periapical", Fingerprint(np.zeros((48, 48), np.uint8),
                                                       np.frombuffer(late["coarse"], np.float16).astype(np.float32))),)
    assert 16 in _candidates(store, _claim(999, provider="P-query"), query, pools)


def test_a_store_reads_rows_again_only_where_commits_can_come_out_of_id_order(store) -> None:
    """SQLite's writers commit one at a time, in id order: the last row held is read again
    and nothing more (256 rows read again cost a claim about 0.3 ms). PostgreSQL's can
    commit out of order, so the last REREAD_ROWS are."""
    from serving.store.likeness import REREAD_ROWS

    assert store.likeness.reread == (1 if store.is_sqlite else REREAD_ROWS)


def test_the_claims_own_earlier_submission_is_never_a_candidate_even_the_most_alike(store) -> None:
    rng = np.random.default_rng(3)
    base = rng.standard_normal(64).astype(np.float32)
    with store.transaction() as session:
        # The claim's own earlier submission: three radiographs, the most alike of all.
        repository.save_fingerprints(session, _claim(500, provider="P-own"), tuple(
            ImagePrint(f"own-{k}", "periapical", _print(rng, near=base)) for k in range(3)), NOW)
    _save(store, rng, 0, 30)
    pools = LikenessPools()
    query = (ImagePrint("q", "periapical", _print(rng, near=base)),)
    resubmitted = _claim(500, provider="P-other")
    found = _candidates(store, resubmitted, query, pools)
    assert 500 not in found and len(found) == 8
    assert 500 in _candidates(store, _claim(501, provider="P-other"), query, pools)  # another claim finds them


def test_lookups_from_several_threads_while_radiographs_arrive_end_complete(store) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(4)
    _save(store, rng, 0, 30)
    pools = store.likeness  # as the store sets them up: on SQLite, one row read again

    def look(_: int) -> int:
        with store.reading() as session:
            return len(pools.latest(session.connection(), "t", "periapical").ids)

    with ThreadPoolExecutor(max_workers=4) as workers:
        pending = [workers.submit(look, k) for k in range(40)]
        for batch in range(5):
            _save(store, rng, 30 + 3 * batch, 3)
        seen = [p.result() for p in pending]
    assert min(seen) >= 30 and max(seen) <= 45
    with store.reading() as session:
        held = pools.latest(session.connection(), "t", "periapical")
    assert list(held.ids) == _ids_of(store, range(45))


def test_at_most_max_pools_are_held_the_least_recently_used_let_go(store) -> None:
    rng = np.random.default_rng(5)
    with store.transaction() as session:
        for number, kind in enumerate(("periapical", "bitewing", "panoramic")):
            repository.save_fingerprints(session, _claim(number), (ImagePrint(f"r-{kind}", kind, _print(rng)),), NOW)
    pools = LikenessPools(max_pools=2)
    with store.reading() as session:
        for kind in ("periapical", "bitewing", "periapical", "panoramic"):
            assert len(pools.latest(session.connection(), "t", kind).ids) == 1
    assert pools.held() == [("t", "periapical"), ("t", "panoramic")]  # bitewing, least recently used, let go
    with store.reading() as session:
        assert len(pools.latest(session.connection(), "t", "bitewing").ids) == 1  # read whole again
    assert pools.held() == [("t", "panoramic"), ("t", "bitewing")]
