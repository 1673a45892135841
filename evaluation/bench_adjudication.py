"""Benchmark of the rule module: claim lines adjudicated per second on one core against a
SQLite store holding 1,000,000 historical lines (target: at least 5,000 lines/s).

The store is built once under ``data/bench/`` (100,000 synthetic members with ten lines
of history each) and reused; each run decides on a fresh copy of it, so runs compare.
Claims carry no radiographs, so the validation layer runs its documentation and site
rules and the claim-history rules do the rest; each claim is decided in full: member
lock, snapshot, every rule, ledger, history, audit record.

    python -m evaluation.bench_adjudication [--claims 3000] [--batch 500] [--repeat 3] [--warmup 500] [--rebuild]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import sqlite3
import time
from decimal import Decimal

import numpy as np
from sqlalchemy import func, insert, select

from evaluation.machine_speed import describe as machine_reference
from models.paths import data_dir
from serving.adjudication import RuleTables, adjudicate, adjudicate_batch
from serving.catalogue import Catalogue
from serving.claims import Claim
from serving.plans import load_plans
from serving.runtime import tune_gc
from serving.store import repository
from serving.store.database import Store
from serving.store.schema import ClaimLineRow, EnrolmentRow, MemberRow, ProviderRow

MEMBERS = 100_000
LINES_PER_MEMBER = 10
HISTORY_CODES = [("D1110", None, 95.0), ("D0274", None, 70.0), ("D2391", 36, 150.0), ("D2392", 46, 190.0),
                 ("D0220", None, 30.0), ("D2750", 16, 1100.0), ("D3320", 25, 800.0), ("D7140", 38, 180.0)]
CLAIM_CODES = [("D1110", None, None, 95.0), ("D0274", None, None, 70.0), ("D9215", None, None, 40.0),
               ("D2391", "30", "O", 150.0), ("D2392", "19", "MO", 190.0), ("D4910", None, None, 140.0),
               ("D3330", "3", None, 1200.0), ("D2950", "14", None, 250.0)]
NOW = dt.datetime(2026, 6, 1, 12, 0)


def build(url: str, catalogue: Catalogue) -> None:
    rng = np.random.default_rng(0)
    store = Store.open(url)
    with store.transaction() as session:
        repository.save_plans(session, load_plans(), NOW)
        session.execute(insert(ProviderRow), [{"provider_id": f"P{i:04d}", "tenant": "bench", "specialty": "general",
                                               "region": "north"} for i in range(200)])
        births = rng.integers(0, 365 * 60, MEMBERS)
        session.execute(insert(MemberRow), [{"member_id": f"M{i:06d}", "tenant": "bench",
                                             "birth_date": dt.date(1950, 1, 1) + dt.timedelta(days=int(b))}
                                            for i, b in enumerate(births)])
        session.execute(insert(EnrolmentRow), [{"member_id": f"M{i:06d}", "plan_id": "standard-dental",
                                                "start_date": dt.date(2024, 1, 1)} for i in range(MEMBERS)])
    concepts = {code: catalogue.codes["CDT"][code][0] for code, _, _ in HISTORY_CODES}
    categories = {code: catalogue.concepts[concepts[code]].category for code in concepts}
    chunk = 20_000
    for start in range(0, MEMBERS, chunk):
        rows = []
        for m in range(start, start + chunk):
            days = rng.integers(0, 880, LINES_PER_MEMBER)
            for k, d in enumerate(days):
                code, fdi, fee = HISTORY_CODES[int(rng.integers(0, len(HISTORY_CODES)))]
                rows.append({"tenant": "bench", "claim_id": f"H{m:06d}-{k}", "line_id": "1", "mode": "claim",
                             "member_id": f"M{m:06d}", "provider_id": f"P{int(rng.integers(0, 200)):04d}",
                             "date_of_service": dt.date(2024, 1, 1) + dt.timedelta(days=int(d)), "code": code,
                             "code_system": "CDT", "concept_id": concepts[code], "category": categories[code], "fdi": fdi,
                             "quadrant": fdi // 10 if fdi else None, "fee": Decimal(str(fee)),
                             "approved_amount": Decimal(str(fee)), "status": "approved", "action": "pass",
                             "decided_at": NOW})
        with store.transaction() as session:
            session.execute(insert(ClaimLineRow), rows)
        print(f"  history: {start + chunk:,} members, {(start + chunk) * LINES_PER_MEMBER:,} lines", flush=True)
    store.close()


def claims(n: int, seed: int) -> list[Claim]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        member = int(rng.integers(0, MEMBERS))
        picks = rng.choice(len(CLAIM_CODES), size=int(rng.integers(2, 5)), replace=False)
        lines = [{"line_id": str(j + 1), "code": CLAIM_CODES[p][0], "tooth": CLAIM_CODES[p][1],
                  "surfaces": CLAIM_CODES[p][2], "fee": CLAIM_CODES[p][3]} for j, p in enumerate(picks)]
        out.append(Claim.model_validate({
            "claim_id": f"B{seed}-{i:06d}", "tenant": "bench",
            # Members of every adult age (16 to 76): lines without radiographs are validated once per
            # (line, age, narrative) and reused, so one shared birth date would flatter the figure.
            "member": {"member_id": f"M{member:06d}",
                       "birth_date": (dt.date(1950, 1, 1) + dt.timedelta(days=member * 7919 % (365 * 60))).isoformat()},
            "provider": {"provider_id": f"P{int(rng.integers(0, 200)):04d}"},
            "date_of_service": (dt.date(2026, 6, 1) + dt.timedelta(days=int(rng.integers(0, 20)))).isoformat(),
            "lines": lines}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (fresh claims each); the median is reported")
    parser.add_argument("--single", type=int, default=200, help="claims decided one transaction each, for latency")
    parser.add_argument("--warmup", type=int, default=500,
                        help="claims decided before the timed runs (a replica is long-running: caches warm, code paths hot)")
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    path = data_dir() / "bench" / "state-1m.db"
    url = f"sqlite:///{path}"
    tables = RuleTables.load()
    if args.rebuild and path.exists():
        path.unlink()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"building {path} ({MEMBERS:,} members, {MEMBERS * LINES_PER_MEMBER:,} history lines) ...", flush=True)
        t = time.perf_counter()
        build(url, tables.validation.catalogue)
        print(f"  built in {time.perf_counter() - t:.0f} s")
    # Every run starts from the same 1,000,000 lines: it decides on a copy, so the claims of
    # earlier runs (more history per member, more ledgers) never change the figure.
    run_path = path.with_name("state-1m.run.db")
    for stale in (run_path, run_path.with_name(run_path.name + "-wal"), run_path.with_name(run_path.name + "-shm")):
        stale.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as connection:  # the WAL folded into the file, then copied
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copyfile(path, run_path)
    store = Store.open(f"sqlite:///{run_path}", checkpoint_in_background=True)  # as a service replica does
    tune_gc()  # as a service replica does after start-up
    with store.transaction() as session:
        history = session.execute(select(func.count()).select_from(ClaimLineRow)).scalar_one()
    run_seed = int(time.time())  # fresh claim ids on every run: nothing is replayed
    if args.warmup:
        adjudicate_batch([(c, ()) for c in claims(args.warmup, run_seed - 1)], store, tables, now=NOW)
    rates, cpus, lines = [], [], 0
    actions: dict[str, int] = {}
    for repetition in range(args.repeat):  # this machine's speed drifts: the median of a few runs
        batch = claims(args.claims, run_seed + 1000 * repetition)
        lines = sum(len(c.lines) for c in batch)
        t, cpu = time.perf_counter(), time.process_time()
        actions = {}
        for start in range(0, len(batch), args.batch):
            for decision in adjudicate_batch([(c, ()) for c in batch[start:start + args.batch]], store, tables, now=NOW):
                for line in decision.lines:
                    actions[line.action.value] = actions.get(line.action.value, 0) + 1
        elapsed = time.perf_counter() - t
        rates.append(lines / elapsed)
        cpus.append(time.process_time() - cpu)
    single = claims(args.single, run_seed + 1)
    latencies = []
    for c in single:
        s = time.perf_counter()
        adjudicate(c, (), store, tables, now=NOW)
        latencies.append(time.perf_counter() - s)
    store.close()
    ms = np.array(latencies) * 1000
    print(machine_reference())
    print(f"store: a copy of {path} ({history:,} claim lines before this run)")
    print(f"batches of {args.batch}: {args.repeat} runs of {args.claims:,} claims (~{lines:,} lines): "
          f"{', '.join(f'{r:,.0f}' for r in rates)} lines/s; median {float(np.median(rates)):,.0f} lines/s on one core "
          f"(target >= 5,000; CPU time / wall time {sum(cpus) / sum(lines / r for r in rates):.2f}); "
          f"actions in the last run {actions}")
    print(f"one claim per transaction: p50 {np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms "
          f"({args.single} claims, {sum(len(c.lines) for c in single)} lines)")


if __name__ == "__main__":
    main()



