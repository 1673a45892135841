"""Monitoring commands: ``dxv report drift`` (model drift per tenant and model version
against the release baseline, HTML and JSON) and ``dxv monitor baseline`` (set a
version's release baseline to a window of its own traffic). The store URL is ``--url``,
else ``$DXV_STATE_URL``, else ``data/state/dxv.db``; the bounds come from the serving
config (``monitoring``)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from rich.console import Console

from serving.service_config import DEFAULT_SERVING_CONFIG

_out = Console()


def register(commands: Any, report_commands: Any) -> None:
    report = report_commands.add_parser("drift", help="model drift per tenant and model version against the release "
                                                      "baseline (HTML with plots, signals as JSON)")
    report.add_argument("--at", type=dt.datetime.fromisoformat, default=None,
                        help="end of the window (default: now); the window is monitoring.window_days long")
    report.add_argument("--tenant", default=None)
    report.add_argument("--weeks", type=int, default=8, help="weeks of trend before --at")
    report.add_argument("--out", type=Path, default=Path("data/reports/drift.html"))
    _common(report)
    report.set_defaults(handler=_report)

    monitor = commands.add_parser("monitor", help="model monitoring")
    msub = monitor.add_subparsers(dest="monitor_command", required=True)
    baseline = msub.add_parser("baseline", help="set a model version's release baseline to a window of its traffic")
    baseline.add_argument("--tenant", required=True)
    baseline.add_argument("--model", required=True, choices=["findings", "tooth-numbering"])
    baseline.add_argument("--version", required=True)
    baseline.add_argument("--from", dest="start", type=dt.date.fromisoformat, required=True)
    baseline.add_argument("--to", dest="end", type=dt.date.fromisoformat, required=True, help="last day, inclusive")
    baseline.add_argument("--actor", default="cli")
    _common(baseline)
    baseline.set_defaults(handler=_baseline)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_SERVING_CONFIG, help="the serving config (its monitoring)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--url", default=None)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _report(args: argparse.Namespace) -> int:
    from evaluation.drift_report import write_drift_report
    from serving.service_config import load_serving_config
    from serving.store.database import Store

    settings = load_serving_config(args.config, tuple(args.overrides)).monitoring
    store = Store.open(args.url)
    try:
        assessed = write_drift_report(store, args.out, args.at or _now(), settings, args.tenant, args.weeks)
    finally:
        store.close()
    for a in assessed:
        raised = [s for s in a.signals if s.alert]
        _out.print(f"{a.key[1]} {a.key[2]} (tenant {a.key[0]}): {a.current.images} radiographs, {len(raised)} alert(s)")
        for s in raised:
            _out.print(f"  [bold red]ALERT[/] {s.text}")
    _out.print(f"-> {args.out}")
    return 0


def _baseline(args: argparse.Namespace) -> int:
    from models.errors import DxvError
    from serving.service_config import load_serving_config
    from serving.store import drift
    from serving.store.database import Store

    if args.end < args.start:
        raise DxvError(f"--to {args.end} is before --from {args.start}")
    settings = load_serving_config(args.config, tuple(args.overrides)).monitoring
    start = dt.datetime.combine(args.start, dt.time.min)
    end = dt.datetime.combine(args.end + dt.timedelta(days=1), dt.time.min)
    store = Store.open(args.url)
    try:
        with store.transaction() as session:
            kept = drift.set_baseline(session, (args.tenant, args.model, args.version), start, end, settings, args.actor,
                                      _now())
    finally:
        store.close()
    _out.print(f"baseline of {args.model} {args.version} (tenant {args.tenant}): {kept.stats.images} radiographs, "
               f"{kept.stats.lines} lines")
    return 0
