"""Rule 4: unbundling. A component billed beside the procedure that includes it is
downcoded to that procedure (denied as included, with the reason a provider reads);
billed on its own it passes. Recode bundles (a panoramic image with bitewings within 30
days paid as a full-mouth series) apply where the plan version switches them on."""

from __future__ import annotations

import datetime as dt

from serving.catalogue import Catalogue
from serving.decisions import Action, EvidenceRef, RuleHit, make_hit
from serving.plans import PlanVersion
from serving.rules.history import CurrentLine, MemberSnapshot
from serving.rules.tables import BundleLibrary, IncludedBundle, RecodeBundle

UNBUNDLING = "R4.unbundling"


def _included(bundle: IncludedBundle, line: CurrentLine, claim_lines: tuple[CurrentLine, ...],
              catalogue: Catalogue) -> RuleHit | None:
    if line.concept_id not in catalogue.concepts_of(bundle.component):
        return None
    hosts = catalogue.concepts_of(bundle.with_)
    for other in claim_lines:
        if other.line_id == line.line_id or other.concept_id not in hosts:
            continue
        if bundle.same_tooth and (line.fdi is None or other.fdi != line.fdi):
            continue
        return make_hit(UNBUNDLING, Action.REJECT,
                        f"{line.code} is included in {other.code} on line {other.line_id}: {bundle.reason} "
                        f"(bundle {bundle.id})", suggested=other.code, system="CDT",
                        evidence=(EvidenceRef(source="claim", description=f"line {other.line_id}: {other.code}"
                                              + (f" on tooth {other.fdi}" if other.fdi else "")),))
    return None


def _recode(bundle: RecodeBundle, line: CurrentLine, claim_lines: tuple[CurrentLine, ...], day: dt.date,
            member: MemberSnapshot, plan: PlanVersion, catalogue: Catalogue) -> RuleHit | None:
    if bundle.option is not None and not plan.bundle_options.get(bundle.option, False):
        return None
    groups = [catalogue.concepts_of(g) for g in bundle.components]
    mine = next((i for i, g in enumerate(groups) if line.concept_id in g), None)
    if mine is None:
        return None
    since = day - dt.timedelta(days=bundle.window_days)
    found: list[str] = []
    for i, group in enumerate(groups):
        if i == mine:
            continue
        here = [c for c in claim_lines if c.concept_id in group and c.line_id != line.line_id]
        earlier = [p for p in member.history if p.counts and p.concept_id in group and since <= p.date_of_service <= day]
        if here:
            found.append(f"line {here[0].line_id} ({here[0].code})")
        elif earlier:
            found.append(f"claim {earlier[0].claim_id} ({earlier[0].code}, {earlier[0].date_of_service.isoformat()})")
        else:
            return None
    # The first component of the set in this claim carries the bundle code; the others are included in it.
    in_claim = sorted((c for c in claim_lines if any(c.concept_id in g for g in groups)), key=lambda c: c.order)
    carrier = in_claim[0]
    bundle_code = bundle.bundle
    if carrier.line_id == line.line_id:
        return make_hit(UNBUNDLING, Action.DOWNCODE, f"{line.code} with {', '.join(found)}: {bundle.reason}; recoded as "
                        f"{bundle_code}, less what the other components were paid (bundle {bundle.id}, plan "
                        f"{plan.version})", suggested=bundle_code, system="CDT",
                        evidence=tuple(EvidenceRef(source="claim", description=f) for f in found))
    return make_hit(UNBUNDLING, Action.REJECT, f"{line.code} is part of the {bundle_code} on line {carrier.line_id}: "
                    f"{bundle.reason} (bundle {bundle.id}, plan {plan.version})", suggested=bundle_code, system="CDT",
                    evidence=(EvidenceRef(source="claim", description=f"line {carrier.line_id}: {carrier.code}"),))


def check_unbundling(line: CurrentLine, claim_lines: tuple[CurrentLine, ...], day: dt.date, member: MemberSnapshot,
                     plan: PlanVersion, library: BundleLibrary, catalogue: Catalogue) -> RuleHit:
    for bundle in library.bundles:
        hit = (_included(bundle, line, claim_lines, catalogue) if isinstance(bundle, IncludedBundle)
               else _recode(bundle, line, claim_lines, day, member, plan, catalogue))
        if hit is not None:
            return hit
    return make_hit(UNBUNDLING, Action.PASS, "not billed beside a procedure that includes it", fired=False)
