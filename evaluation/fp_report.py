"""``dxv report fp``: the false-positive report clinicians read. For a period (and a tenant):

- flag rates per rule and per finding class: of all decided claim lines, the share a rule
  flagged; of all flagged lines, the share whose flag rests on each finding class;
- reviewer agreement and override rates per rule and per finding class: of the flagged
  lines reviewers disposed of, the share confirmed (agreement), overridden to pass (the
  false-positive rate as reviewers judge it) and changed;
- the trend by ISO week (flag rate, override rate);
- the worst examples: overridden lines with the most at stake, with the radiograph and the
  evidence boxes drawn.

Written as one HTML file with the PNG plots inside, and the figures as JSON beside it.
The aggregation (``fp_figures``) is pure; ``collect`` reads the store."""

from __future__ import annotations

import datetime as dt
import html
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no screen on servers and in CI
import matplotlib.pyplot as plt
import numpy as np
from sqlalchemy import select

from evaluation.drift_report import drift_section
from evaluation.evidence_overlay import cited_evidence, evidence_png_base64
from evaluation.plots import figure_png_base64
from serving.drift import MonitoringSettings
from serving.store import drift
from serving.store.database import Store
from serving.store.schema import AuditRow, ClaimImageRow, ClaimRecordRow, ReviewItemRow, ReviewRow

WORST_EXAMPLES = 8
THUMB_SIDE = 360


@dataclass(frozen=True)
class DecidedLine:
    audit_id: int
    day: dt.date
    line_id: str
    flag_rules: tuple[str, ...]  # rules that fired with a flag
    flag_classes: tuple[str, ...]  # finding classes the flags cite as evidence


@dataclass(frozen=True)
class Disposed:
    audit_id: int
    day: dt.date
    line_id: str
    code: str
    fee: float
    outcome: str  # confirm, override_pass, change
    reason: str


@dataclass
class FpFigures:
    lines: int = 0
    flagged: int = 0
    flag_rate_by_rule: dict[str, float] = field(default_factory=dict)
    flag_share_by_class: dict[str, float] = field(default_factory=dict)
    disposed: int = 0
    agreement_rate: float = 0.0
    override_rate: float = 0.0
    change_rate: float = 0.0
    by_rule: dict[str, dict[str, float]] = field(default_factory=dict)  # rule -> n, agreement, override, change
    by_class: dict[str, dict[str, float]] = field(default_factory=dict)
    weekly: list[dict[str, Any]] = field(default_factory=list)  # week, lines, flag_rate, disposed, override_rate
    drift_alerts: list[str] = field(default_factory=list)  # the model-drift alerts at the end of the period


def _rates(outcomes: list[str]) -> dict[str, float]:
    n = len(outcomes)
    counts = Counter(outcomes)
    return {"n": n, "agreement": counts["confirm"] / n if n else 0.0, "override": counts["override_pass"] / n if n else 0.0,
            "change": counts["change"] / n if n else 0.0}


def fp_figures(lines: list[DecidedLine], disposed: list[Disposed]) -> FpFigures:
    """The report's figures from the decided lines and the dispositions of the period."""
    figures = FpFigures(lines=len(lines), flagged=sum(1 for x in lines if x.flag_rules), disposed=len(disposed))
    rule_counts = Counter(r for x in lines for r in x.flag_rules)
    figures.flag_rate_by_rule = {r: n / len(lines) for r, n in sorted(rule_counts.items())} if lines else {}
    class_counts = Counter(c for x in lines for c in x.flag_classes)
    figures.flag_share_by_class = {c: n / figures.flagged for c, n in sorted(class_counts.items())} if figures.flagged else {}
    overall = _rates([d.outcome for d in disposed])
    figures.agreement_rate, figures.override_rate, figures.change_rate = overall["agreement"], overall["override"], \
        overall["change"]
    by_line = {(x.audit_id, x.line_id): x for x in lines}
    per_rule: dict[str, list[str]] = defaultdict(list)
    per_class: dict[str, list[str]] = defaultdict(list)
    for d in disposed:
        decided = by_line.get((d.audit_id, d.line_id))
        if decided is None:
            continue
        for rule in decided.flag_rules:
            per_rule[rule].append(d.outcome)
        for cls in decided.flag_classes:
            per_class[cls].append(d.outcome)
    figures.by_rule = {r: _rates(o) for r, o in sorted(per_rule.items())}
    figures.by_class = {c: _rates(o) for c, o in sorted(per_class.items())}
    weeks: dict[str, dict[str, Any]] = {}

    def week(day: dt.date) -> dict[str, Any]:
        year, number, _ = day.isocalendar()
        key = f"{year}-W{number:02d}"
        return weeks.setdefault(key, {"week": key, "lines": 0, "flagged": 0, "disposed": 0, "overridden": 0})

    for x in lines:
        w = week(x.day)
        w["lines"] += 1
        w["flagged"] += bool(x.flag_rules)
    for d in disposed:
        w = week(d.day)
        w["disposed"] += 1
        w["overridden"] += d.outcome == "override_pass"
    figures.weekly = [{**w, "flag_rate": w["flagged"] / w["lines"] if w["lines"] else None,
                       "override_rate": w["overridden"] / w["disposed"] if w["disposed"] else None}
                      for _, w in sorted(weeks.items())]
    return figures


def decided_lines(audit_id: int, day: dt.date, decision: dict[str, Any]) -> list[DecidedLine]:
    out = []
    for line in decision["lines"]:
        flags = [h for h in line.get("rule_hits", []) if h.get("fired", True) and h["action"] == "flag"]
        classes = {e["finding_class"] for h in flags for e in h.get("evidence", []) if e.get("finding_class")}
        out.append(DecidedLine(audit_id, day, line["line_id"], tuple(dict.fromkeys(h["rule_id"] for h in flags)),
                               tuple(sorted(classes))))
    return out


@dataclass
class Collected:
    lines: list[DecidedLine]
    disposed: list[Disposed]
    decisions: dict[int, dict[str, Any]]


def collect(store: Store, start: dt.date, end: dt.date, tenant: str | None) -> Collected:
    """Claim decisions made, and dispositions recorded, from ``start`` to ``end`` inclusive."""
    first, last = start.isoformat(), (end + dt.timedelta(days=1)).isoformat()
    lines: list[DecidedLine] = []
    decisions: dict[int, dict[str, Any]] = {}
    with store.transaction() as session:
        query = select(AuditRow.seq, AuditRow.created_at, AuditRow.payload).where(
            AuditRow.kind == "claim", AuditRow.created_at >= first, AuditRow.created_at < last)
        if tenant:
            query = query.where(AuditRow.tenant == tenant)
        for seq, created, payload in session.execute(query.order_by(AuditRow.seq)):
            decision = json.loads(payload)
            decisions[seq] = decision
            lines += decided_lines(seq, dt.datetime.fromisoformat(created).date(), decision)
        reviews = select(ReviewRow, ReviewItemRow).join(ReviewItemRow, ReviewItemRow.id == ReviewRow.review_item_id).where(
            ReviewRow.created_at >= dt.datetime.combine(start, dt.time.min),
            ReviewRow.created_at < dt.datetime.combine(end + dt.timedelta(days=1), dt.time.min))
        if tenant:
            reviews = reviews.where(ReviewRow.tenant == tenant)
        disposed = [Disposed(item.audit_seq, review.created_at.date(), item.line_id, item.code, float(item.fee),
                             review.disposition, review.reason)
                    for review, item in session.execute(reviews.order_by(ReviewRow.id)).all()]
    return Collected(lines, disposed, decisions)


# ---- rendering -------------------------------------------------------------------------------


def _bars(values: dict[str, float], title: str, xlabel: str) -> str | None:
    if not values:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(values) + 1.2))
    names = list(values)
    ax.barh(names, [values[n] * 100 for n in names], color="#1f5fbf")
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return figure_png_base64(fig)


def _trend(weekly: list[dict[str, Any]]) -> str | None:
    if not weekly:
        return None
    fig, ax = plt.subplots(figsize=(7, 3))
    weeks = [w["week"] for w in weekly]
    for key, label in (("flag_rate", "flag rate (of lines)"), ("override_rate", "override rate (of disposed)")):
        ys = [np.nan if w[key] is None else w[key] * 100 for w in weekly]
        ax.plot(weeks, ys, marker="o", label=label)
    ax.set_ylabel("%")
    ax.set_title("Trend by week")
    ax.legend()
    ax.tick_params(axis="x", rotation=45)
    return figure_png_base64(fig)


def _thumbnail(store: Store, audit_id: int, decision: dict[str, Any], line_id: str) -> list[tuple[str, str]]:
    """(caption, base64 PNG) per radiograph of the line's decision, its flag evidence drawn."""
    line = next(x for x in decision["lines"] if x["line_id"] == line_id)
    evidence = cited_evidence(line, ("flag",))
    with store.transaction() as session:
        record = session.get(ClaimRecordRow, audit_id)
        files = session.execute(select(ClaimImageRow.radiograph_id, ClaimImageRow.kind, ClaimImageRow.media)
                                .where(ClaimImageRow.audit_seq == audit_id)).all()
    readings = {r["image_id"]: r for r in json.loads(record.readings)} if record else {}
    # the client's radiograph id can carry anything: the caption names the image by position
    return [(f"image {position} ({kind})", evidence_png_base64(media, kind, rid, readings.get(rid), evidence, THUMB_SIDE))
            for position, (rid, kind, media) in enumerate(files, start=1)]


def _table(rows: dict[str, dict[str, float]], label: str) -> str:
    if not rows:
        return "<p>No dispositions in the period.</p>"
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{int(v['n'])}</td><td>{v['agreement']:.0%}</td>"
                   f"<td>{v['override']:.0%}</td><td>{v['change']:.0%}</td></tr>" for k, v in rows.items())
    return (f"<table><tr><th>{label}</th><th>disposed</th><th>agreement</th><th>override (false positive)</th>"
            f"<th>changed</th></tr>{body}</table>")


def write_report(store: Store, out: Path, start: dt.date, end: dt.date, tenant: str | None,
                 monitoring: MonitoringSettings | None = None) -> FpFigures:
    """Write ``out`` (HTML) and ``out`` with ``.json`` (the figures); returns the figures.
    The model-drift section is the drift assessment at the end of the period."""
    collected = collect(store, start, end, tenant)
    figures = fp_figures(collected.lines, collected.disposed)
    with store.transaction() as session:
        assessed = drift.assess(session, dt.datetime.combine(end + dt.timedelta(days=1), dt.time.min),
                                monitoring or MonitoringSettings(), tenant)
    figures.drift_alerts = [s.text for a in assessed for s in a.signals if s.alert]
    plots = [p for p in (
        _bars(figures.flag_rate_by_rule, "Flag rate per rule", "% of decided lines"),
        _bars(figures.flag_share_by_class, "Flags per finding class", "% of flagged lines citing the class"),
        _bars({r: v["override"] for r, v in figures.by_rule.items()}, "Override rate per rule", "% of disposed lines"),
        _trend(figures.weekly)) if p]
    worst = sorted((d for d in collected.disposed if d.outcome == "override_pass"), key=lambda d: -d.fee)[:WORST_EXAMPLES]
    examples = []
    for d in worst:
        decision = collected.decisions.get(d.audit_id)
        if decision is None:  # decided before the period: read it from the audit trail
            with store.transaction() as session:
                decision = json.loads(session.execute(select(AuditRow.payload).where(AuditRow.seq == d.audit_id))
                                      .scalar_one())
        line = next(x for x in decision["lines"] if x["line_id"] == d.line_id)
        reasons = "".join(f"<li>{html.escape(h['rule_id'])}: {html.escape(h['reason'])}</li>"
                          for h in line.get("rule_hits", []) if h.get("fired", True) and h["action"] == "flag")
        images = "".join(f"<figure><img alt='{html.escape(c)} with the flag evidence' src='data:image/png;base64,{b}'>"
                         f"<figcaption>{html.escape(c)}</figcaption></figure>"
                         for c, b in _thumbnail(store, d.audit_id, decision, d.line_id))
        examples.append(f"<section class='example'><h3>Decision {d.audit_id}, line {html.escape(d.line_id)}: "
                        f"{html.escape(d.code)}, {d.fee:,.2f}</h3><ul>{reasons}</ul>"
                        f"<p>Reviewer: {html.escape(d.reason)}</p><div class='images'>{images}</div></section>")
    out.parent.mkdir(parents=True, exist_ok=True)
    title = f"False-positive report, {start.isoformat()} to {end.isoformat()}" + (f", tenant {tenant}" if tenant else "")
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem;max-width:70rem}}table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:.25rem .6rem;text-align:left}}.images{{display:flex;gap:1rem;flex-wrap:wrap}}
figure{{margin:0}}.example{{border-top:1px solid #ccc;margin-top:1rem}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{figures.lines} decided lines, {figures.flagged} flagged ({figures.flagged / figures.lines if figures.lines else 0:.1%}).
{figures.disposed} dispositions: agreement {figures.agreement_rate:.1%}, override to pass (false positive)
{figures.override_rate:.1%}, changed {figures.change_rate:.1%}.</p>
<h2>Reviewer agreement per rule</h2>{_table(figures.by_rule, "rule")}
<h2>Reviewer agreement per finding class</h2>{_table(figures.by_class, "finding class")}
<h2>Plots</h2>{"".join(f"<img alt='plot' src='data:image/png;base64,{p}'>" for p in plots)}
<h2>Worst examples (overridden, most at stake)</h2>{"".join(examples) or "<p>None in the period.</p>"}
<h2>Model drift at the end of the period</h2>{drift_section(assessed)}
</body></html>"""
    out.write_text(page, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(figures.__dict__, indent=1, default=str), encoding="utf-8")
    return figures
