"""``adjudicate(claim, readings) -> ClaimDecision``: the validation layer (rules 1 and 2)
and the claim-history rules (3 to 7) in a declared order, combined by a stated policy,
recorded in the audit trail.

Policy: for each line the most severe action of all rules wins (pass < flag < downcode <
reject); a line not rejected is then apportioned against the ledger (rule 7), which may
approve part of it or put it out of limit. Every rule evaluated is recorded, fired or
not, with the rule-library version; the decision carries the versions of the tables, the
plan version in force on the date of service and the models.

Concurrency: the member's snapshot, the ledger rows and the audit chain head are read and
written in one transaction that holds the write lock (SQLite ``BEGIN IMMEDIATE``,
PostgreSQL ``SELECT ... FOR UPDATE``), so two claims for one member never spend the same
balance. A claim already decided (same tenant, claim id and mode) gets its stored
decision back and consumes nothing again."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import cast

from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from models.detections import ImageReading
from serving import outbox
from serving.catalogue import Catalogue, UnknownCodeError
from serving.claims import Claim
from serving.decisions import Action, LineDecision, RuleHit, assemble, combine_hits, make_hit
from serving.evidence_matrix import EvidenceMatrix, Thresholds
from serving.plans import PlanVersion
from serving.review.queue import ReviewPriority
from serving.rules.frequency import check_duplicate, check_frequency
from serving.rules.history import CurrentLine, MemberSnapshot, ProviderStanding
from serving.rules.ledger import Balance, apportion, buckets_drawn_on
from serving.rules.preauthorization import check_preauthorization
from serving.rules.preexisting import check_preexisting
from serving.rules.provider import check_provider
from serving.rules.recycled import ImageMatch, ImagePrint, StoredPrint, check_recycled, find_matches
from serving.rules.tables import RULES_DIR, BundleLibrary, FrequencyTable, load_bundles, load_frequency
from serving.rules.unbundling import check_unbundling
from serving.service_config import ServingConfig, Webhook
from serving.store import audit, repository, reviews
from serving.store.database import Store
from serving.validation.context import Tables
from serving.validation.engine import load_tables, validate_claim

ELIGIBILITY = "R0.eligibility"



@dataclass(frozen=True)
class RuleTables:
    validation: Tables
    frequency: FrequencyTable
    bundles: BundleLibrary

    @classmethod
    def load(cls, rules_dir: Path = RULES_DIR) -> RuleTables:
        validation = load_tables()
        return cls(validation, load_frequency(rules_dir / "frequency.yaml", validation.catalogue),
                   load_bundles(rules_dir / "bundles.yaml", validation.catalogue))

    @classmethod
    def from_config(cls, config: ServingConfig) -> RuleTables:
        """The tables the serving config names (paths relative to the project)."""
        validation = load_tables(config.resolve(config.tables.catalogue), config.resolve(config.tables.evidence_matrix),
                                 config.resolve(config.tables.thresholds))
        rules_dir = config.resolve(config.tables.rules)
        return cls(validation, load_frequency(rules_dir / "frequency.yaml", validation.catalogue),
                   load_bundles(rules_dir / "bundles.yaml", validation.catalogue))

    def versions(self) -> dict[str, str]:
        return dict(self._versions)

    @cached_property  # the tables never change: worked out once, copied for every decision
    def _versions(self) -> dict[str, str]:
        return {**self.validation.versions(), "frequency_table": self.frequency.version,
                "bundle_library": self.bundles.version}

    def parts(self) -> dict[str, BaseModel]:
        """The versioned tables by the names ``versions()`` gives them."""
        return {"catalogue": self.validation.catalogue, "evidence_matrix": self.validation.matrix,
                "thresholds": self.validation.thresholds, "frequency_table": self.frequency,
                "bundle_library": self.bundles}

    def with_parts(self, parts: Mapping[str, BaseModel]) -> RuleTables:
        """These tables with some replaced (e.g. another thresholds version)."""
        chosen = {**self.parts(), **parts}
        validation = Tables(catalogue=cast(Catalogue, chosen["catalogue"]), matrix=cast(EvidenceMatrix,
                            chosen["evidence_matrix"]), thresholds=cast(Thresholds, chosen["thresholds"]))
        return RuleTables(validation, cast(FrequencyTable, chosen["frequency_table"]),
                          cast(BundleLibrary, chosen["bundle_library"]))


class ClaimDecision(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    claim_id: str
    tenant: str
    mode: str
    lines: tuple[LineDecision, ...]
    decision_time: str
    versions: dict[str, str]
    audit_id: int
    replayed: bool = False  # True: the stored decision of an earlier identical request

    def line(self, line_id: str) -> LineDecision:
        return next(x for x in self.lines if x.line_id == line_id)


def _current_lines(claim: Claim, tables: RuleTables) -> dict[str, CurrentLine]:
    lines = {}
    for order, line in enumerate(claim.lines):
        try:
            resolved = tables.validation.catalogue.resolve(line)
        except UnknownCodeError:
            continue  # the validation layer flags it; history rules cannot place it
        tooth = line.fdi_tooth
        quadrant = line.quadrant or (tooth.quadrant if tooth is not None and tooth.quadrant <= 4 else None)
        lines[line.line_id] = CurrentLine(line_id=line.line_id, code=line.code, concept_id=resolved.concept_id,
                                          category=resolved.concept.category, fdi=tooth.fdi if tooth else None,
                                          quadrant=quadrant, fee=line.fee, order=order)
    return lines


def _ineligible(claim: Claim, why: str) -> tuple[LineDecision, ...]:
    hit = make_hit(ELIGIBILITY, Action.REJECT, why)
    return tuple(combine_hits(line.line_id, (hit,)) for line in claim.lines)


def history_hits(current: CurrentLine, earlier: tuple[CurrentLine, ...], everything: tuple[CurrentLine, ...],
                 claim: Claim, member: MemberSnapshot, plan: PlanVersion, tables: RuleTables,
                 standing: ProviderStanding) -> tuple[RuleHit, ...]:
    """Rules 3 to 6 for one line, in their declared order (pure)."""
    day, age = claim.date_of_service, claim.member.age_on(claim.date_of_service)
    catalogue = tables.validation.catalogue
    return (
        check_duplicate(current, earlier, day, member, claim.claim_id),
        check_frequency(current, earlier, day, age, member, plan, tables.frequency, catalogue),
        check_unbundling(current, everything, day, member, plan, tables.bundles, catalogue),
        check_provider(standing),
        check_preexisting(current, day, member, plan),
        check_preauthorization(current, day, member, plan, claim.mode),
    )


def input_digest(claim_text: str, readings_text: str, files: Mapping[str, bytes]) -> str:
    """SHA-256 over the claim as stored (``reviews.claim_json``: pydantic's JSON, fields in
    contract order, the attachments without their contents), the readings the models
    produced as the claim record keeps them (``reviews.readings_json``: canonical JSON),
    and the SHA-256 of each attached file as received: it can be recomputed from a claim
    record and its files (records written before session 21 kept the readings with
    spaces: ``audit.canonical_json(json.loads(...))`` of their text gives what was hashed).
    The files are hashed as bytes, not as the base64 text of a JSON request, so the same
    claim sent as JSON or multipart has the same digest, and a megabyte of base64 is not
    serialised again to be hashed."""
    files_digest = {rid: hashlib.sha256(data).hexdigest() for rid, data in files.items()}
    text = claim_text + readings_text + audit.canonical_json(files_digest)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Decided:
    lines: tuple[LineDecision, ...]
    consumed: dict[str, dict[str, float]]  # line id -> ledger bucket -> amount
    current: dict[str, CurrentLine]


def decide_lines(claim: Claim, validated: tuple[LineDecision, ...], member: MemberSnapshot, plan: PlanVersion,
                 standing: ProviderStanding, balances: dict[str, Balance], year_start: dt.date,
                 tables: RuleTables, claim_hits: tuple[RuleHit, ...] = (),
                 fixed: Mapping[str, LineDecision] | None = None,
                 current: dict[str, CurrentLine] | None = None) -> Decided:
    """The declared order for each line: validation hits (rules 1-2), the claim-wide hits
    (recycled radiographs), then rules 3-6, all combined (most severe wins); a line not
    rejected is apportioned against the ledger (rule 7). Lines in ``fixed`` (an appeal's
    lines not appealed) keep that decision and consume nothing here, but count as earlier
    lines of the claim for those after them. ``current``: the claim's lines as
    ``_current_lines`` resolves them, where the caller has them already. Pure: ``balances``
    is not modified."""
    current = current if current is not None else _current_lines(claim, tables)
    balances = dict(balances)
    accepted: list[CurrentLine] = []
    consumed: dict[str, dict[str, float]] = {}
    everything = tuple(current.values())
    decisions = []
    for line, validated_line in zip(claim.lines, validated, strict=True):
        this = current.get(line.line_id)
        if fixed is not None and line.line_id in fixed:
            kept = fixed[line.line_id]
            decisions.append(kept)
            if this is not None and kept.action is not Action.REJECT:
                accepted.append(this)
            continue
        later = claim_hits + (history_hits(this, tuple(accepted), everything, claim, member, plan, tables, standing)
                              if this is not None else ())
        hits = validated_line.rule_hits + later
        # The validation layer's own action is a reject exactly when one of its hits rejects (the most severe wins).
        if this is None or validated_line.action is Action.REJECT \
                or any(h.fired and h.action is Action.REJECT for h in later):
            decisions.append(combine_hits(line.line_id, hits, approved_amount=0.0))
            continue
        share = apportion(this, line.fee, balances, plan, year_start)
        hits += (share.hit,)
        paid = share.hit.action is not Action.REJECT
        decisions.append(combine_hits(line.line_id, hits, approved_amount=share.approved if paid else 0.0,
                                      member_notice=share.member_notice))
        if paid:
            accepted.append(this)
            for bucket, amount in share.consumed.items():
                balances[bucket] = dataclasses.replace(balances[bucket], used=balances[bucket].used + amount)
            consumed[line.line_id] = share.consumed
    return Decided(tuple(decisions), consumed, current)


Readings = Mapping[str, ImageReading] | tuple[ImageReading, ...]


@dataclass(frozen=True)
class RecycledSearch:
    """What a claim's radiographs matched among the tenant's earlier ones, as far as the
    store went when the search ran: ``seen_through`` is the highest fingerprint row id it
    considered, per kind (the radiographs stored since are compared where the claim is
    decided)."""

    prints: tuple[ImagePrint, ...]
    matches: tuple[ImageMatch, ...]
    seen_through: Mapping[str, int]


def search_recycled(store: Store, claims: Sequence[Claim], prints: Sequence[tuple[ImagePrint, ...]]
                    ) -> list[RecycledSearch | None]:
    """The recycled-radiograph search of each claim that has radiographs (None for one
    without): candidates read in one short read-only transaction (it neither takes nor
    waits for the write lock), compared outside it."""
    if not any(prints):
        return [None for _ in claims]
    with store.reading() as session:
        found: list[tuple[dict[str, int], tuple[StoredPrint, ...]] | None] = []
        for claim, printed in zip(claims, prints, strict=True):
            if not printed:
                found.append(None)
                continue
            # How far the store goes, read first: a radiograph committed meanwhile is left to the catch-up.
            through = repository.last_fingerprint_ids(session, claim.tenant, sorted({p.kind for p in printed}))
            found.append((through, repository.fingerprint_candidates(session, claim, printed, store.likeness, through)))
    return [RecycledSearch(printed, find_matches(printed, read[1]), read[0]) if read is not None else None
            for printed, read in zip(prints, found, strict=True)]


def recycled_hit(session: Session, claim: Claim, search: RecycledSearch | None) -> tuple[RuleHit, ...]:
    """The claim's recycled-radiograph hit where it is decided (the write lock held): the
    search's matches and those among the radiographs stored since it ran (another claim
    decided meanwhile, an earlier claim of the same batch), so that two claims carrying one
    radiograph never both pass because each was searched before the other was stored."""
    if search is None:
        return ()
    later = find_matches(search.prints, repository.fingerprints_after(session, claim, search.seen_through))
    return (check_recycled(claim.date_of_service, search.matches + later),)


class SearchAhead:
    """A claim's recycled-radiograph search started as soon as its fingerprints are known
    (``start``, given to a reader as ``on_printed``: where the models read in this process,
    before they do), on ``executor``: its store read and comparisons run while the models
    read instead of after them. ``result`` waits for it; None where it never started (the
    models in another process). ``adjudicate`` uses it only for the prints it was made for."""

    def __init__(self, store: Store, claim: Claim, executor: Executor) -> None:
        self.store, self.claim, self.executor = store, claim, executor
        self._started: Future[list[RecycledSearch | None]] | None = None

    def start(self, prints: tuple[ImagePrint, ...]) -> None:
        self._started = self.executor.submit(search_recycled, self.store, [self.claim], [prints])

    def result(self) -> RecycledSearch | None:
        return self._started.result()[0] if self._started is not None else None


def adjudicate(claim: Claim, readings: Readings, store: Store, tables: RuleTables, *, now: dt.datetime,
               actor: str = "system", webhooks: tuple[Webhook, ...] = (),
               prints: tuple[ImagePrint, ...] = (), files: Mapping[str, bytes] | None = None,
               review: ReviewPriority | None = None, searched: RecycledSearch | None = None) -> ClaimDecision:
    return adjudicate_batch([(claim, readings)], store, tables, now=now, actor=actor, webhooks=webhooks,
                            prints=[prints], files=[files or {}], review=review, searched=[searched])[0]


def adjudicate_batch(items: list[tuple[Claim, Readings]], store: Store, tables: RuleTables, *, now: dt.datetime,
                     actor: str = "system", webhooks: tuple[Webhook, ...] = (),
                     prints: Sequence[tuple[ImagePrint, ...]] | None = None,
                     files: Sequence[Mapping[str, bytes]] | None = None,
                     review: ReviewPriority | None = None,
                     searched: Sequence[RecycledSearch | None] | None = None) -> list[ClaimDecision]:
    """Decide many claims in one transaction, in order (a later claim of the same member
    sees the lines and balances of the earlier ones). The validation layer runs first,
    outside the lock; snapshots are loaded, and decisions written, in bulk. ``prints``
    (one tuple per claim) are the radiographs' fingerprints: compared with the tenant's
    earlier radiographs (recycled images) before the lock is taken, since the comparison
    is the costly part (``searched``: a claim's search already made for these prints, e.g.
    while the models read; the others are searched here), and stored with the decision;
    the radiographs stored since a search are compared under the lock. ``files`` (one mapping of radiograph
    id -> file as received per claim) are kept for claims a person may look at; lines
    that need review go to the tenant's queue, ordered by ``review`` priorities."""
    weights = review or ReviewPriority()
    prepared = []
    for claim, readings in items:
        images = tuple(readings.values()) if isinstance(readings, Mapping) else tuple(readings)
        prepared.append((claim, images, validate_claim(claim, images, tables.validation)))
    printed: list[tuple[ImagePrint, ...]] = list(prints) if prints else [() for _ in items]
    # A search made for other prints (or none) is made here.
    searches = [s if s is not None and s.prints == p else None
                for s, p in zip(searched or [None] * len(items), printed, strict=True)]
    missing = [i for i, s in enumerate(searches) if s is None and printed[i]]
    made = search_recycled(store, [prepared[i][0] for i in missing], [printed[i] for i in missing])
    for i, found in zip(missing, made, strict=True):
        searches[i] = found
    results: list[ClaimDecision] = []
    with store.transaction() as session, session.no_autoflush:
        member_ids = [c.member.member_id for c, _, _ in prepared]
        repository.lock_members(session, member_ids)
        stored = repository.stored_decisions(session, [(c.tenant, c.claim_id, c.mode) for c, _, _ in prepared])
        members = repository.load_members(session, member_ids)
        plans = repository.all_plan_versions(session)
        standings = repository.provider_standings(session, [c.provider.provider_id for c, _, _ in prepared])
        # Where each claim stands: the member's enrolment and the plan version on its date of service.
        places: list[tuple[PlanVersion, dt.date, dict[str, CurrentLine]] | str] = []
        wanted: dict[repository.LedgerKey, dict[str, float]] = {}
        for claim, _, _ in prepared:
            data = members.get(claim.member.member_id)
            enrolment = data.enrolment_on(claim.date_of_service) if data else None
            plan = next((v for v in plans.get(enrolment[0], []) if v.in_force(claim.date_of_service)), None) \
                if enrolment else None
            if enrolment is None or plan is None:
                places.append("the member has no enrolment in force on the date of service" if enrolment is None
                              else f"plan {enrolment[0]} has no version in force on {claim.date_of_service.isoformat()}")
                continue
            year_start = plan.policy_year_start(claim.date_of_service, enrolment[1])
            current = _current_lines(claim, tables)
            places.append((plan, year_start, current))
            wanted.setdefault((claim.member.member_id, enrolment[0], year_start), {}).update(
                buckets_drawn_on([c.category for c in current.values()], plan))
        ledgers = repository.lock_ledgers(session, wanted, {m: d.history for m, d in members.items()})
        writes = repository.PendingWrites()
        # The audit chain's head, locked until commit: decisions write one at a time from here
        # (on PostgreSQL too), so each compares the radiographs stored since its search
        # (``recycled_hit``) with every other decision's committed.
        chain = audit.ChainWriter(session)
        for index, ((claim, images, validation), place) in enumerate(zip(prepared, places, strict=True)):
            key = (claim.tenant, claim.claim_id, claim.mode)
            if key in stored:
                results.append(ClaimDecision.model_validate_json(stored[key]).model_copy(update={"replayed": True}))
                continue
            versions = {**tables.versions(), **{k: v for k, v in validation.versions.items() if k.startswith("model:")}}
            if isinstance(place, str):
                decided = _ineligible(claim, place)
            else:
                plan, year_start, current = place
                data = members[claim.member.member_id]
                member = data.snapshot_on(claim.date_of_service)  # with the lines of earlier claims in this batch
                assert member is not None
                versions[f"plan:{member.plan_id}"] = plan.version
                ledger = ledgers[(member.member_id, member.plan_id, year_start)]
                outcome = decide_lines(claim, validation.lines, member, plan, standings[claim.provider.provider_id],
                                       repository.balances_of(ledger), year_start, tables,
                                       recycled_hit(session, claim, searches[index]), current=current)
                decided = outcome.lines
                if claim.mode != "preauthorization":
                    for line_id, consumed in outcome.consumed.items():
                        writes.consume(ledger, consumed, tenant=claim.tenant, claim_id=claim.claim_id, line_id=line_id,
                                       now=now)
                    data.history.extend(repository.past_lines(claim, decided, outcome.current))
                else:
                    data.preauthorizations.extend(repository.past_lines(claim, decided, outcome.current))
                writes.lines += repository.line_rows(claim, decided, outcome.current, now)
            repository.save_fingerprints(session, claim, printed[index], now)
            # The audit record holds the decision as returned, in its compact JSON (null fields left
            # out; it reads back to the same object), hashed as stored; it is the only stored copy.
            seq = chain.next_seq
            # Built without re-validation: every field is produced here with its type.
            result = assemble(ClaimDecision, {"claim_id": claim.claim_id, "tenant": claim.tenant, "mode": claim.mode,
                                              "lines": decided, "decision_time": now.isoformat(), "versions": versions,
                                              "audit_id": seq, "replayed": False})
            as_json = result.model_dump_json(exclude_none=True)
            claim_text = reviews.claim_json(claim)  # stored with the record, and what the digest covers
            stored_readings = reviews.StoredReadings.of(images)  # the same
            received = files[index] if files else {}
            chain.add(tenant=claim.tenant, kind=claim.mode, subject=claim.claim_id, actor=actor,
                      input_digest=input_digest(claim_text, stored_readings.text, received), versions=versions,
                      payload_text=as_json,
                      created_at=now.isoformat())
            writes.decisions.append(repository.decision_row(claim, seq, now))
            record, kept, queued = reviews.decision_rows(claim, decided, images, received, seq, now, weights, claim_text,
                                                         stored_readings)
            writes.records += record
            writes.images += kept
            writes.review_items += queued
            if webhooks and claim.mode == "claim" and not any(d.needs_review for d in decided):
                # A final decision goes out through the outbox, in this same transaction.
                outbox.enqueue(session, webhooks, claim.tenant, "decision.final", as_json, now)
            stored[key] = as_json
            results.append(result)
        chain.flush()
        writes.flush(session)
    return results
