"""``dxv appeal packet DECISION_ID``: what a provider or an appeals team needs about one
decision, as one HTML file (images inside): each billed line with its action, suggested
code, approved amount and the reasons of every rule that fired (rule id and version); the
radiographs with the numbered teeth and the cited evidence boxes drawn; the versions the
decision used; the audit record's hash; and every appeal of it (the new evidence, the
re-adjudicated reasons, each line's outcome). An appeal's decision id gives the packet of
the decision it appealed. No member identifier is written; radiographs are named by their
position in the claim."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from evaluation.evidence_overlay import cited_evidence, evidence_png_base64
from models.errors import DxvError
from serving.claims import ClaimLine
from serving.store.database import Store
from serving.store.schema import AppealDocumentRow, AppealRow, AuditRow, ClaimImageRow, ClaimRecordRow

IMAGE_SIDE = 640


class PacketError(DxvError):
    code = "packet.not_found"


@dataclass(frozen=True)
class Packet:
    decision_id: int
    claim_id: str
    appeals: int
    images: int


def _reasons(line: dict[str, Any], names: dict[str, str]) -> str:
    fired = [h for h in line.get("rule_hits", []) if h.get("fired", True) and h["action"] != "pass"]
    if not fired:
        return "all rules passed"
    items = []
    for h in fired:
        evidence = "; ".join(_rename(e["description"], names) for e in h.get("evidence", []))
        items.append(f"<li><b>{html.escape(h['rule_id'])}</b> (v{html.escape(h['rule_version'])}, {h['action']}): "
                     f"{html.escape(_rename(h['reason'], names))}"
                     + (f"<br><small>evidence: {html.escape(evidence)}</small>" if evidence else "") + "</li>")
    return f"<ul>{''.join(items)}</ul>"


def _rename(text: str, names: dict[str, str]) -> str:
    for rid, name in names.items():
        text = text.replace(rid, name)
    return text


def _tooth_text(billed: dict[str, Any]) -> str:
    """The tooth as billed and, where the claim numbers another way, its FDI number (the
    reasons speak FDI)."""
    if not billed.get("tooth"):
        return ""
    try:
        fdi = ClaimLine.model_validate(billed).fdi_tooth
    except (ValueError, DxvError):
        return str(billed["tooth"])
    if fdi is None or str(fdi.fdi) == str(billed["tooth"]):
        return str(billed["tooth"])
    return f"{billed['tooth']} (FDI {fdi.fdi})"


def _lines_table(decision: dict[str, Any], claim: dict[str, Any], names: dict[str, str]) -> str:
    billed = {x["line_id"]: x for x in claim.get("lines", [])}
    rows = []
    for line in decision["lines"]:
        b = billed.get(line["line_id"], {})
        paid = 0.0 if line["action"] == "reject" else line.get("approved_amount") or 0.0
        rows.append(f"<tr><td>{html.escape(line['line_id'])}</td><td>{html.escape(b.get('code', ''))}</td>"
                    f"<td>{html.escape(_tooth_text(b))}</td><td>{html.escape(b.get('surfaces') or '')}</td>"
                    f"<td>{b.get('fee', 0):,.2f}</td><td class='{line['action']}'><b>{line['action']}</b></td>"
                    f"<td>{html.escape(line.get('suggested_code') or '')}</td><td>{paid:,.2f}</td>"
                    f"<td>{_reasons(line, names)}</td></tr>")
    return ("<table><tr><th>line</th><th>code</th><th>tooth</th><th>surfaces</th><th>fee</th><th>action</th>"
            "<th>suggested</th><th>approved</th><th>reasons</th></tr>" + "".join(rows) + "</table>")


def _images(store: Store, audit_seq: int, decision: dict[str, Any], names: dict[str, str],
            skip: frozenset[str] = frozenset()) -> list[str]:
    """A figure per radiograph kept with the decision (``skip``: radiograph ids already shown)."""
    with store.transaction() as session:
        record = session.get(ClaimRecordRow, audit_seq)
        files = session.execute(select(ClaimImageRow.radiograph_id, ClaimImageRow.kind, ClaimImageRow.media)
                                .where(ClaimImageRow.audit_seq == audit_seq).order_by(ClaimImageRow.id)).all()
    readings = {r["image_id"]: r for r in json.loads(record.readings)} if record else {}
    evidence = [e for line in decision["lines"] for e in cited_evidence(line)]
    out = []
    for rid, kind, media in files:
        if rid in skip:
            continue
        name = names.setdefault(rid, f"image {len(names) + 1}")
        reading = readings.get(rid)
        models = ", ".join(f"{k} {v}" for k, v in (reading or {}).get("model_versions", {}).items())
        png = evidence_png_base64(media, kind, rid, reading, evidence, IMAGE_SIDE)
        out.append(f"<figure><img alt='{html.escape(name)} with the teeth and the cited evidence' "
                   f"src='data:image/png;base64,{png}'><figcaption>{html.escape(name)} ({html.escape(kind)}); read by "
                   f"{html.escape(models or 'no model')}</figcaption></figure>")
    return out


def _versions(versions: dict[str, str]) -> str:
    return "<table>" + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                               for k, v in sorted(versions.items())) + "</table>"


def write_packet(store: Store, decision_id: int, out: Path, tenant: str | None = None) -> Packet:
    with store.transaction() as session:
        first = session.execute(select(AppealRow.original_audit_seq).where(AppealRow.audit_seq == decision_id)
                                ).scalar_one_or_none()
        seq = first if first is not None else decision_id
        row = session.execute(select(AuditRow).where(AuditRow.seq == seq)).scalar_one_or_none()
        if row is None or row.kind != "claim" or (tenant is not None and row.tenant != tenant):
            raise PacketError(f"no claim decision {decision_id}" + (f" for tenant {tenant}" if tenant else ""))
        decision = json.loads(row.payload)
        record = session.get(ClaimRecordRow, seq)
        appeals = [(a, json.loads(session.execute(select(AuditRow.payload).where(AuditRow.seq == a.audit_seq))
                                  .scalar_one()),
                    session.execute(select(AppealDocumentRow.name, AppealDocumentRow.media_type, AppealDocumentRow.sha256)
                                    .where(AppealDocumentRow.appeal_id == a.id)).all())
                   for a in session.execute(select(AppealRow).where(AppealRow.original_audit_seq == seq)
                                            .order_by(AppealRow.id)).scalars()]
        audit_hash = row.hash
    claim = json.loads(record.claim) if record else {"lines": []}
    names: dict[str, str] = {}
    images = _images(store, seq, decision, names)
    sections = []
    for appeal, payload, documents in appeals:
        new_images = _images(store, appeal.audit_seq, payload["decision"], names, skip=frozenset(names))
        outcomes = "".join(f"<tr><td>{html.escape(x['line_id'])}</td><td>{x['before']['action']}</td>"
                           f"<td>{x['readjudicated']['action']}</td><td class='{x['outcome']}'><b>{x['outcome']}</b></td>"
                           f"<td>{_reasons(x['readjudicated'], names)}</td></tr>" for x in payload["lines"])
        docs = "".join(f"<li>{html.escape(n)} ({html.escape(m)}), sha256 {s}</li>" for n, m, s in documents)
        sections.append(
            f"<section><h3>Appeal {appeal.id}, {appeal.created_at.date().isoformat()}: {appeal.outcome} "
            f"(decision {appeal.audit_seq})</h3>"
            + (f"<p>Narrative: {html.escape(appeal.narrative)}</p>" if appeal.narrative else "")
            + (f"<p>Documents:</p><ul>{docs}</ul>" if docs else "")
            + "<table><tr><th>line</th><th>before</th><th>re-adjudicated</th><th>outcome</th><th>reasons</th></tr>"
            + outcomes + "</table>"
            + (f"<div class='images'>{''.join(new_images)}</div>" if new_images else "")
            + f"<details><summary>versions</summary>{_versions(payload['decision']['versions'])}</details></section>")
    title = f"Decision {seq} on claim {decision['claim_id']}"
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem;max-width:72rem}}table{{border-collapse:collapse;margin:.5rem 0}}
td,th{{border-bottom:1px solid #ddd;padding:.25rem .6rem;text-align:left;vertical-align:top}}
.images{{display:flex;gap:1rem;flex-wrap:wrap}}figure{{margin:0}}.pass,.overturned{{color:#176f2c}}
.flag,.referred{{color:#a66200}}.reject,.upheld{{color:#b3261e}}.downcode,.modified{{color:#5a3fb0}}
section{{border-top:1px solid #ccc;margin-top:1rem}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Decided {html.escape(decision['decision_time'])}; date of service {html.escape(str(claim.get('date_of_service', '')))};
provider {html.escape(str(claim.get('provider', {}).get('provider_id', '')))}.</p>
<h2>Lines</h2>{_lines_table(decision, claim, names)}
<h2>Radiographs and evidence</h2><p>Teeth with their FDI numbers (green); the boxes the reasons cite, by finding class.</p>
<div class='images'>{''.join(images) or '<p>No radiograph was kept with this decision.</p>'}</div>
<h2>Versions used</h2>{_versions(decision['versions'])}
<p><small>Audit record {seq}, hash {audit_hash}: <code>dxv audit verify</code> checks the chain it belongs to.</small></p>
<h2>Appeals</h2>{''.join(sections) or '<p>None.</p>'}
</body></html>"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return Packet(decision_id=seq, claim_id=decision["claim_id"], appeals=len(appeals), images=len(names))
