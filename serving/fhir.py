"""FHIR R4 at the edge: a ``Claim`` resource in, a ``ClaimResponse`` out.

Resources are parsed and built with ``fhir.resources`` (its R4B models: Claim and
ClaimResponse are the same as in R4), so a malformed resource is refused with the
library's own account of what is wrong. The mapping onto our claim contract:

- ``Claim.patient`` -> a contained ``Patient`` (identifier or id, birthDate) = the member;
- ``Claim.provider`` -> provider id (reference or identifier);
- ``Claim.insurance[0].coverage.display`` -> plan id; ``Claim.billablePeriod.start`` or the
  items' ``servicedDate`` -> date of service;
- ``Claim.item[]``: ``sequence`` -> line id, ``productOrService.coding[0]`` -> code and
  code system (``http://www.ada.org/cdt`` is CDT), ``bodySite`` -> tooth (FDI with the
  ``ex-tooth`` system, else Universal), ``subSite`` -> surfaces, ``net`` or ``unitPrice``
  -> fee;
- ``Claim.supportingInfo[]``: category ``attachment`` with ``valueAttachment`` (base64
  ``data``, ``title`` = radiograph id, ``code`` = radiograph kind), category ``info`` with
  ``valueString`` -> the narrative.

The ClaimResponse carries per item the submitted and approved amounts, the action as an
adjudication reason and a process note with the reasons and evidence."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fhir.resources.R4B.claim import Claim as FhirClaim
from fhir.resources.R4B.claimresponse import ClaimResponse as FhirClaimResponse
from pydantic import ValidationError

from models.config_loading import validation_problems
from models.errors import DxvError
from serving.claims import Attachment, Claim, ClaimLine, Member, Provider

CDT_SYSTEM = "http://www.ada.org/cdt"
ADJUDICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/adjudication"
ACTION_SYSTEM = "https://dental-xray-validation.example/fhir/CodeSystem/line-action"


class FhirError(DxvError):
    code = "fhir.invalid"


def _problems(exc: ValidationError) -> str:
    return validation_problems(exc, "Claim")


def _contained_types(resource: dict[str, Any]) -> str:
    contained = resource.get("contained")
    if not isinstance(contained, list):
        return "Claim.contained is not a list"
    kinds = [f"[{i}] {item.get('resourceType')!r}" if isinstance(item, dict) else f"[{i}] not an object"
             for i, item in enumerate(contained)]
    return "Claim.contained: " + ", ".join(kinds)


def claim_from_fhir(resource: dict[str, Any], tenant: str) -> tuple[Claim, FhirClaim, dict[str, bytes]]:
    """The claim, the resource as parsed (for the ClaimResponse) and the attached files by
    radiograph id, as bytes (the claim's attachments carry no content: the files are here)."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Claim":
        raise FhirError("expected a FHIR Claim resource (resourceType 'Claim')")
    try:
        fhir = FhirClaim.model_validate(resource)
    except ValidationError as exc:
        raise FhirError(f"not a valid FHIR Claim: {_problems(exc)}") from exc
    except (TypeError, KeyError) as exc:
        # fhir.resources looks a contained resource's model up by its resourceType without
        # checking it: a missing, non-text or unknown one raises these, not a ValidationError.
        raise FhirError(f"not a valid FHIR Claim: a resource in it has no known resourceType ({_contained_types(resource)})"
                        ) from exc
    contained = {f"#{r.id}": r for r in (fhir.contained or []) if getattr(r, "id", None)}
    patient: Any = contained.get(fhir.patient.reference or "") if fhir.patient else None
    if patient is None or getattr(patient, "birthDate", None) is None:
        raise FhirError("Claim.patient must reference a contained Patient with a birthDate")
    identifiers = getattr(patient, "identifier", None) or []
    member_id = identifiers[0].value if identifiers and identifiers[0].value else patient.id
    provider_id = (fhir.provider.identifier.value if fhir.provider.identifier and fhir.provider.identifier.value
                   else (fhir.provider.reference or "").split("/")[-1])
    if not provider_id:
        raise FhirError("Claim.provider needs a reference or an identifier")
    items = fhir.item or []
    if not items:
        raise FhirError("the Claim has no item")
    day = (fhir.billablePeriod.start if fhir.billablePeriod and fhir.billablePeriod.start else None) or \
        next((i.servicedDate for i in items if i.servicedDate), None)
    if day is None:
        raise FhirError("no date of service: give Claim.billablePeriod.start or item.servicedDate")
    day = day.date() if isinstance(day, dt.datetime) else day
    lines = []
    for item in items:
        coding = item.productOrService.coding[0] if item.productOrService.coding else None
        if coding is None or not coding.code:
            raise FhirError(f"item {item.sequence}: productOrService needs a coding with a code")
        system = "CDT" if coding.system in (None, CDT_SYSTEM) else coding.system.rstrip("/").split("/")[-1].upper()
        tooth, tooth_system = None, "UNIVERSAL"
        if item.bodySite and item.bodySite.coding:
            site = item.bodySite.coding[0]
            tooth = site.code
            tooth_system = "FDI" if site.system and "ex-tooth" in site.system else "UNIVERSAL"
        surfaces = "".join(s.coding[0].code for s in (item.subSite or []) if s.coding and s.coding[0].code) or None
        money = item.net or item.unitPrice
        try:
            lines.append(ClaimLine(line_id=str(item.sequence), code=coding.code, code_system=system, tooth=tooth,
                                   tooth_system=tooth_system, surfaces=surfaces,
                                   fee=float(money.value) if money and money.value is not None else 0.0))
        except ValidationError as exc:
            raise FhirError(f"item {item.sequence}: {_problems(exc)}") from exc
    attachments, narrative = [], []
    files: dict[str, bytes] = {}
    for info in fhir.supportingInfo or []:
        category = info.category.coding[0] if info.category.coding else None
        kind_code = info.code.coding[0].code if info.code and info.code.coding else None
        if category is not None and category.code == "attachment" and info.valueAttachment is not None:
            att = info.valueAttachment
            radiograph_id = att.title or f"attachment-{info.sequence}"
            attachments.append(Attachment(radiograph_id=radiograph_id,
                                          kind=kind_code if kind_code in ("periapical", "bitewing", "panoramic") else None))
            # fhir.resources has decoded (and checked) the base64Binary: the file's bytes, kept as they are.
            files[radiograph_id] = att.data or b""
        elif info.valueString:
            narrative.append(info.valueString)
    coverage = fhir.insurance[0].coverage if fhir.insurance else None
    try:
        claim = Claim(claim_id=fhir.id or (fhir.identifier[0].value if fhir.identifier else "") or "",
                      tenant=tenant, member=Member(member_id=member_id, birth_date=patient.birthDate),
                      provider=Provider(provider_id=provider_id), plan_id=(coverage.display if coverage and coverage.display
                                                                           else "default"),
                      date_of_service=day, lines=tuple(lines), narrative=" ".join(narrative),
                      attachments=tuple(attachments), mode="preauthorization" if fhir.use == "preauthorization" else "claim")
    except ValidationError as exc:
        raise FhirError(f"the Claim does not make a valid claim: {_problems(exc)}") from exc
    return claim, fhir, files


def claim_response(decision: Any, fhir: FhirClaim, created: dt.datetime) -> dict[str, Any]:
    """A ClaimResponse for a ClaimDecision (serving.adjudication), validated before it goes out."""
    fees: dict[str, float] = {}
    for i in fhir.item or []:
        money = i.net or i.unitPrice
        fees[str(i.sequence)] = float(money.value) if money is not None and money.value is not None else 0.0
    items, notes = [], []
    for number, line in enumerate(decision.lines, start=1):
        reasons = [h.reason for h in line.rule_hits if h.fired] or ["no rule objected"]
        notes.append({"number": number, "type": "display", "text": f"line {line.line_id}: {line.action.value}"
                      + (f" (suggested {line.suggested_code})" if line.suggested_code else "") + ": " + " | ".join(reasons)})
        adjudication = [
            {"category": {"coding": [{"system": ADJUDICATION_SYSTEM, "code": "submitted"}]},
             "amount": {"value": fees.get(line.line_id, 0.0), "currency": "USD"}},
            {"category": {"coding": [{"system": ADJUDICATION_SYSTEM, "code": "benefit"}]},
             "reason": {"coding": [{"system": ACTION_SYSTEM, "code": line.action.value}]},
             "amount": {"value": line.approved_amount or 0.0, "currency": "USD"}},
        ]
        items.append({"itemSequence": int(line.line_id) if line.line_id.isdigit() else number, "noteNumber": [number],
                      "adjudication": adjudication})
    partial = any(line.action.value != "pass" for line in decision.lines)
    response = {
        "resourceType": "ClaimResponse", "status": "active", "type": fhir.type.model_dump(mode="json", exclude_none=True),
        "use": fhir.use, "patient": {"reference": fhir.patient.reference},
        "created": created.replace(microsecond=0).isoformat() + "Z",
        "insurer": {"display": "dental-xray-validation"}, "request": {"reference": f"Claim/{decision.claim_id}"},
        "outcome": "partial" if partial else "complete",
        "disposition": f"decision {decision.audit_id}: "
                       + ", ".join(f"line {x.line_id} {x.action.value}" for x in decision.lines),
        "item": items, "processNote": notes,
        "identifier": [{"system": "https://dental-xray-validation.example/decision", "value": str(decision.audit_id)}],
    }
    try:
        return FhirClaimResponse.model_validate(response).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:  # our own output: a bug, not bad input
        raise AssertionError(f"ClaimResponse does not validate: {_problems(exc)}") from exc
