"""``dxv report drift``: model drift per tenant and model version against the release
baseline, as HTML (plots inside) and the signals as JSON beside it. For each (tenant,
model, version) seen in the window ending at ``--at``: the baseline's source and window,
each class's finding rate and score-distribution PSI, the flag rate, and every alert; and
the rates week by week over the last ``weeks`` weeks against the baseline."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
from pathlib import Path

import numpy as np

from evaluation.plots import figure_png_base64, plt
from serving.drift import BINS, MonitoringSettings, WindowStats
from serving.store import drift
from serving.store.database import Store


def _rates_plot(baseline: WindowStats, current: WindowStats, title: str) -> str | None:
    classes = sorted(set(baseline.counts) | set(current.counts) | set(baseline.histograms) | set(current.histograms))
    if not classes:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(classes) + 1.3))
    y = np.arange(len(classes))
    ax.barh(y - 0.2, [baseline.rate(c) for c in classes], height=0.4, label="baseline", color="#9aa7b8")
    ax.barh(y + 0.2, [current.rate(c) for c in classes], height=0.4, label="current", color="#1f5fbf")
    ax.set_yticks(y, classes)
    ax.invert_yaxis()
    ax.set_xlabel("detections per radiograph")
    ax.set_title(title)
    ax.legend()
    return figure_png_base64(fig)


def _scores_plot(baseline: WindowStats, current: WindowStats, classes: list[str], title: str) -> str | None:
    if not classes:
        return None
    fig, axes = plt.subplots(1, len(classes), figsize=(3.2 * len(classes), 2.6), squeeze=False)
    edges = np.linspace(0, 1, BINS + 1)[:-1]
    for ax, cls in zip(axes[0], classes, strict=True):
        for stats, label, colour in ((baseline, "baseline", "#9aa7b8"), (current, "current", "#1f5fbf")):
            counts = np.asarray(stats.histograms.get(cls, [0] * BINS), dtype=float)
            ax.step(edges, counts / max(counts.sum(), 1.0), where="post", label=label, color=colour)
        ax.set_title(cls, fontsize=9)
        ax.set_xlabel("score")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, y=1.04)
    return figure_png_base64(fig)


Weekly = dict[drift.Key, list[tuple[dt.datetime, WindowStats]]]


def weekly_stats(store: Store, at: dt.datetime, weeks: int, settings: MonitoringSettings, tenant: str | None) -> Weekly:
    """Each (tenant, model, version)'s figures week by week, the last week ending at ``at``."""
    out: Weekly = {}
    with store.transaction() as session:
        for back in range(weeks, 0, -1):
            start = at - dt.timedelta(weeks=back)
            for key, stats in drift.window_stats(session, start, start + dt.timedelta(weeks=1), settings, tenant).items():
                out.setdefault(key, []).append((start, stats))
    return out


def _trend_plot(series: list[tuple[dt.datetime, WindowStats]], baseline: WindowStats, title: str) -> str | None:
    if len(series) < 2:
        return None
    classes = sorted({c for _, s in series for c, n in s.counts.items() if n} | {c for c, n in baseline.counts.items() if n})
    fig, (rates, flags) = plt.subplots(1, 2, figsize=(11, 3))
    days = [start for start, _ in series]
    for index, cls in enumerate(classes):
        colour = f"C{index % 10}"
        rates.plot(days, [s.rate(cls) for _, s in series], marker="o", color=colour, label=cls)
        rates.axhline(baseline.rate(cls), color=colour, linestyle="--", linewidth=0.8)
    rates.set_title("Detections per radiograph by week (dashed: baseline)", fontsize=9)
    if classes:
        rates.legend(fontsize=7)
    flags.plot(days, [s.flag_rate * 100 for _, s in series], marker="o", color="#a66200")
    flags.axhline(baseline.flag_rate * 100, color="#a66200", linestyle="--", linewidth=0.8)
    flags.set_title("Lines flagged, % by week", fontsize=9)
    for ax in (rates, flags):
        ax.tick_params(axis="x", rotation=45, labelsize=7)
    fig.suptitle(title, y=1.04)
    return figure_png_base64(fig)


def drift_section(assessed: list[drift.Assessment], weekly: Weekly | None = None) -> str:
    """The HTML of the assessments (also embedded in the false-positive report)."""
    if not assessed:
        return "<p>No radiograph was read in the window.</p>"
    parts = []
    for a in assessed:
        tenant, model, version = a.key
        title = f"{model} {version}, tenant {tenant}"
        raised = [s for s in a.signals if s.alert]
        if a.baseline is None:
            parts.append(f"<section><h3>{html.escape(title)}</h3><p>No baseline yet.</p></section>")
            continue
        rows = "".join(f"<tr class='{'alert' if s.alert else ''}'><td>{s.kind}</td><td>{html.escape(s.subject)}</td>"
                       f"<td>{s.baseline:g}</td><td>{s.current:g}</td><td>{'ALERT' if s.alert else ''}</td>"
                       f"<td>{html.escape(s.text)}</td></tr>" for s in a.signals)
        plots = [p for p in (_trend_plot((weekly or {}).get(a.key, []), a.baseline.stats, "Over time"),
                             _rates_plot(a.baseline.stats, a.current, "Finding rates"),
                             _scores_plot(a.baseline.stats, a.current, sorted({s.subject for s in raised
                                                                                if s.kind == "score_psi"}),
                                          "Score distributions with an alert")) if p]
        parts.append(
            f"<section><h3>{html.escape(title)}: {len(raised)} alert(s)</h3>"
            f"<p>Baseline: {html.escape(a.baseline.source)}, {a.baseline.start:%Y-%m-%d} to {a.baseline.end:%Y-%m-%d}, "
            f"{a.baseline.stats.images} radiographs; current window: {a.current.images} radiographs, "
            f"{a.current.lines} lines.</p>"
            "<table><tr><th>signal</th><th>class</th><th>baseline</th><th>current</th><th></th><th>detail</th></tr>"
            f"{rows}</table>" + "".join(f"<img alt='drift plot' src='data:image/png;base64,{p}'>" for p in plots)
            + "</section>")
    return "".join(parts)


def write_drift_report(store: Store, out: Path, at: dt.datetime, settings: MonitoringSettings,
                       tenant: str | None, weeks: int = 8) -> list[drift.Assessment]:
    with store.transaction() as session:
        assessed = drift.assess(session, at, settings, tenant)
    weekly = weekly_stats(store, at, weeks, settings, tenant)
    alerts = sum(s.alert for a in assessed for s in a.signals)
    title = f"Model drift, window of {settings.window_days} days to {at:%Y-%m-%d %H:%M}" + (f", tenant {tenant}" if tenant
                                                                                             else "")
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem;max-width:72rem}}table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:.2rem .5rem;text-align:left}}tr.alert td{{color:#b3261e;font-weight:600}}
section{{border-top:1px solid #ccc;margin-top:1rem}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{alerts} alert(s). Bounds: finding rate x{settings.bounds.rate_ratio} either way, score PSI
{settings.bounds.psi}, flag rate &plusmn;{settings.bounds.flag_rate_delta:.0%}; at least {settings.min_images} radiographs
on each side. Rates count detections scoring at least {settings.finding_score}.</p>
{drift_section(assessed, weekly)}
</body></html>"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(
        [{"tenant": a.key[0], "model": a.key[1], "version": a.key[2],
          "baseline": None if a.baseline is None else {"source": a.baseline.source, "from": a.baseline.start.isoformat(),
                                                       "to": a.baseline.end.isoformat(), **a.baseline.stats.to_json()},
          "current": a.current.to_json(), "signals": [dataclasses.asdict(s) for s in a.signals],
          "weekly": [{"week_from": start.isoformat(), **stats.to_json()} for start, stats in weekly.get(a.key, [])]}
         for a in assessed],
        indent=1), encoding="utf-8")
    return assessed
