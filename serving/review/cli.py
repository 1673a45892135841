"""Review commands: ``dxv data export-corrections`` (reviewer corrections as a COCO
dataset for ``dxv train``) and ``dxv report fp`` (the false-positive report). The store
URL is ``--url``, else ``$DXV_STATE_URL``, else the SQLite file ``data/state/dxv.db``."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from rich.console import Console

_out = Console()


def register(commands: Any, data_commands: Any) -> None:
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
    from serving.store.database import Store

    if args.end < args.start:
        from models.errors import DxvError

        raise DxvError(f"--to {args.end} is before --from {args.start}")
    store = Store.open(args.url)
    try:
        figures = write_report(store, args.out, args.start, args.end, args.tenant)
    finally:
        store.close()
    _out.print(f"{figures.lines} lines, {figures.flagged} flagged; {figures.disposed} dispositions: agreement "
               f"{figures.agreement_rate:.1%}, override {figures.override_rate:.1%} -> {args.out}")
    return 0
