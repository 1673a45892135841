"""Review commands: ``dxv data export-corrections`` (reviewer corrections as a COCO
dataset for ``dxv train``), ``dxv report fp`` (the false-positive report), ``dxv appeal
packet`` (one decision and its appeals for a provider or an appeals team), ``dxv
calibrate`` (score bands proposed from reviewer corrections, stored as a thresholds
version) and ``dxv thresholds list|promote`` (promoting a version puts it in effect). The
store URL is ``--url``, else ``$DXV_STATE_URL``, else the SQLite file ``data/state/dxv.db``."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from rich.console import Console

_out = Console()


def register(commands: Any, data_commands: Any) -> Any:
    """Adds the review commands; returns the ``dxv report`` subcommands (others add theirs)."""
    export = data_commands.add_parser("export-corrections",
                                      help="reviewer finding corrections as a COCO dataset that dxv train reads")
    export.add_argument("--out", type=Path, required=True, help="folder for annotations.json and images/")
    export.add_argument("--tenant", default=None)
    export.add_argument("--from", dest="start", type=dt.date.fromisoformat, default=None, help="first disposition day")
    export.add_argument("--to", dest="end", type=dt.date.fromisoformat, default=None, help="last disposition day")
    export.add_argument("--min-score", type=float, default=0.3,
                        help="the models' detections kept as labels (the case view's default)")
    export.add_argument("--url", default=None)
    export.set_defaults(handler=_export)

    report = commands.add_parser("report", help="reports for clinicians")
    rsub = report.add_subparsers(dest="report_command", required=True)
    fp = rsub.add_parser("fp", help="false-positive report: flag rates, reviewer agreement and overrides, trend, "
                                    "worst examples (HTML with the plots inside, figures as JSON beside it)")
    fp.add_argument("--from", dest="start", type=dt.date.fromisoformat, required=True)
    fp.add_argument("--to", dest="end", type=dt.date.fromisoformat, required=True)
    fp.add_argument("--tenant", default=None)
    fp.add_argument("--out", type=Path, default=Path("data/reports/fp.html"))
    fp.add_argument("--url", default=None)
    fp.set_defaults(handler=_fp_report)


    appeal = commands.add_parser("appeal", help="appeals of decisions")
    asub = appeal.add_subparsers(dest="appeal_command", required=True)
    packet = asub.add_parser("packet", help="one decision and its appeals as HTML: lines, reasons, radiographs with the "
                                            "evidence drawn, versions")
    packet.add_argument("decision_id", type=int, help="the decision's audit id (an appeal's id gives its original)")
    packet.add_argument("--out", type=Path, default=None, help="default: data/reports/appeal-<decision id>.html")
    packet.add_argument("--tenant", default=None, help="refuse a decision of another tenant")
    packet.add_argument("--url", default=None)
    packet.set_defaults(handler=_packet)

    thresholds = commands.add_parser("thresholds", help="thresholds versions: list, promote (admins)")
    tsub = thresholds.add_subparsers(dest="thresholds_command", required=True)
    tlist = tsub.add_parser("list", help="every thresholds version, which is in effect, and proposals")
    tlist.add_argument("--url", default=None)
    tlist.set_defaults(handler=_thresholds_list)
    tpromote = tsub.add_parser("promote", help="put a thresholds version in effect (replicas pick it up within "
                                               "thresholds_refresh_s); promoting an older one rolls back")
    tpromote.add_argument("version")
    tpromote.add_argument("--actor", default="cli", help="who promotes it (recorded in the audit trail)")
    tpromote.add_argument("--url", default=None)
    tpromote.set_defaults(handler=_thresholds_promote)
    calibrate = commands.add_parser("calibrate", help="propose per-class score bands from reviewer corrections, stored "
                                                      "as a new thresholds version that an admin promotes")
    calibrate.add_argument("--from", dest="start", type=dt.date.fromisoformat, required=True, help="first disposition day")
    calibrate.add_argument("--to", dest="end", type=dt.date.fromisoformat, required=True, help="last disposition day")
    calibrate.add_argument("--tenant", default=None)
    calibrate.add_argument("--target-precision", type=float, default=0.9, help="of detections at or above support")
    calibrate.add_argument("--max-miss-rate", type=float, default=0.05, help="of true findings below absent")
    calibrate.add_argument("--min-labels", type=int, default=30, help="per class, else its band is kept")
    calibrate.add_argument("--min-score", type=float, default=0.3, help="what the case view showed reviewers")
    calibrate.add_argument("--dry-run", action="store_true", help="report only; store nothing")
    calibrate.add_argument("--out", type=Path, default=None, help="the per-class report as JSON")
    calibrate.add_argument("--actor", default="cli")
    calibrate.add_argument("--url", default=None)
    calibrate.set_defaults(handler=_calibrate)
    return rsub


def _calibrate(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from rich.table import Table

    from serving.evidence_matrix import load_thresholds
    from serving.review.calibration import CalibrationPolicy, labels_of, propose_thresholds
    from serving.review.export import reviewed_images
    from serving.store import table_versions
    from serving.store.database import Store

    policy = CalibrationPolicy(target_precision=args.target_precision, max_miss_rate=args.max_miss_rate,
                               min_labels=args.min_labels, min_score=args.min_score)
    now = _now()
    store = Store.open(args.url)
    try:
        with store.transaction() as session:
            images, dispositions = reviewed_images(session, tenant=args.tenant, start=args.start, end=args.end)
            effective = table_versions.effective_thresholds_version(session)
            base = table_versions.load_thresholds_version(session, effective) if effective \
                else load_thresholds()
            labels = [x for image in images for x in labels_of(image.reading, image.corrections, policy.min_score)]
            proposed, report = propose_thresholds(base, labels, policy, f"{base.version}-cal.{now:%Y%m%d%H%M%S}")
            changed = [p for p in report if p.proposed != p.current]
            if changed and not args.dry_run:
                note = {"from": args.start.isoformat(), "to": args.end.isoformat(), "tenant": args.tenant,
                        "base": base.version, "dispositions": dispositions, "images": len(images),
                        "policy": dataclasses.asdict(policy)}
                table_versions.propose_thresholds(session, proposed, note, args.actor, now)
    finally:
        store.close()
    table = Table("class", "labels", "true", "false", "band now", "proposed", "precision now -> then",
                  "miss rate now -> then", "note")

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    for p in report:
        table.add_row(p.finding_class.value, str(p.labels), str(p.true), str(p.false),
                      f"{p.current.absent:.2f}-{p.current.support:.2f}", f"{p.proposed.absent:.2f}-{p.proposed.support:.2f}",
                      f"{pct(p.precision_current)} -> {pct(p.precision_proposed)}",
                      f"{pct(p.miss_rate_current)} -> {pct(p.miss_rate_proposed)}", p.note)
    _out.print(f"{len(images)} corrected radiograph(s) from {dispositions} disposition(s), {len(labels)} labels; "
               f"base thresholds {base.version}")
    _out.print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"base": base.version, "proposed": proposed.version, "classes": [
            {**dataclasses.asdict(p), "current": p.current.model_dump(), "proposed": p.proposed.model_dump()}
            for p in report]}, indent=1, default=str), encoding="utf-8")
    if not changed:
        _out.print("no band changes: nothing proposed")
    elif args.dry_run:
        _out.print(f"dry run: {proposed.version} not stored")
    else:
        _out.print(f"proposed thresholds {proposed.version} (not in effect); put it in effect with "
                   f"[bold]dxv thresholds promote {proposed.version}[/]")
    return 0


def _packet(args: argparse.Namespace) -> int:
    from evaluation.appeal_packet import write_packet
    from serving.store.database import Store

    out = args.out or Path("data/reports") / f"appeal-{args.decision_id}.html"
    store = Store.open(args.url)
    try:
        packet = write_packet(store, args.decision_id, out, args.tenant)
    finally:
        store.close()
    _out.print(f"decision {packet.decision_id} (claim {packet.claim_id}): {packet.images} radiograph(s), "
               f"{packet.appeals} appeal(s) -> {out}")
    return 0


def _thresholds_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from serving.store import table_versions
    from serving.store.database import Store

    store = Store.open(args.url)
    try:
        with store.transaction() as session:
            versions = table_versions.list_versions(session)
    finally:
        store.close()
    table = Table("version", "source", "created", "promoted", "in effect")
    for v in versions:
        table.add_row(v["version"], v["source"], v["created_at"][:19], (v["promoted_at"] or "")[:19],
                      "yes" if v["effective"] else "")
    _out.print(table if versions else "no thresholds version stored yet (the service registers its own when it starts)")
    return 0


def _thresholds_promote(args: argparse.Namespace) -> int:
    from serving.store import table_versions
    from serving.store.database import Store

    store = Store.open(args.url)
    try:
        with store.transaction() as session:
            done = table_versions.promote(session, table_versions.THRESHOLDS, args.version, args.actor, _now())
    finally:
        store.close()
    _out.print(f"thresholds {done['version']} in effect (was {done['previous']})")
    return 0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _export(args: argparse.Namespace) -> int:
    from serving.review.export import export_corrections
    from serving.store.database import Store

    store = Store.open(args.url)
    try:
        summary = export_corrections(store, args.out, tenant=args.tenant, start=args.start, end=args.end,
                                     min_score=args.min_score)
    finally:
        store.close()
    applied = ", ".join(f"{k} {v}" for k, v in sorted(summary.applied.items()) if v) or "none"
    _out.print(f"{summary.images} image(s) from {summary.dispositions} disposition(s) with corrections -> "
               f"{args.out / 'annotations.json'}; applied: {applied}")
    for why in summary.skipped:
        _out.print(f"  skipped: {why}")
    _out.print(f"train on it with a coco source: data.sources=[{{format: coco, path: {args.out / 'annotations.json'}}}]")
    return 0


def _fp_report(args: argparse.Namespace) -> int:
    from evaluation.fp_report import write_report
    from serving.service_config import load_serving_config
    from serving.store.database import Store

    if args.end < args.start:
        from models.errors import DxvError

        raise DxvError(f"--to {args.end} is before --from {args.start}")
    store = Store.open(args.url)
    try:
        figures = write_report(store, args.out, args.start, args.end, args.tenant, load_serving_config().monitoring)
    finally:
        store.close()
    _out.print(f"{figures.lines} lines, {figures.flagged} flagged; {figures.disposed} dispositions: agreement "
               f"{figures.agreement_rate:.1%}, override {figures.override_rate:.1%} -> {args.out}")
    return 0
