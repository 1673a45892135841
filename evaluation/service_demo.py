"""``dxv demo-service`` (``make demo``): the service end to end, in one command.

It prepares a state store (plans, the synthetic demo members and history, an adjudicator
key), starts ``dxv serve`` on the local Ray in a child process, waits until the models are
loaded, submits the sample synthetic claims over HTTP (clean, upcoded, unsupported, over
the sub-limit, too frequent, a recycled radiograph), prints the decision table, writes an
HTML summary with the radiographs and the detected boxes drawn, and stops the service.
Member identifiers appear nowhere in the output (the cases are named by what they show)."""

from __future__ import annotations

import base64
import datetime as dt
import html
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.annotations import FindingAnnotation, ImageAnnotations, ToothAnnotation
from datasets.preview import overlay_png_base64, png_8bit
from datasets.synth.generator import SyntheticCase, case_dicom_bytes
from models.errors import DxvError
from models.findings import CariesDepth, FindingClass
from models.paths import PROJECT_ROOT
from models.radiographs import RadiographKind

SEED_FILE = PROJECT_ROOT / "configs" / "seed" / "demo.yaml"
CLAIM_SEED = 11  # synthetic claims of evaluation.claim_generator with this seed
DRAW_MIN_SCORE = 0.5


class DemoError(DxvError):
    code = "demo.failed"


@dataclass(frozen=True)
class DemoCase:
    label: str  # what the case shows
    index: int  # which generated claim (image and lines) it starts from
    member_id: str
    birth_date: str
    provider_id: str
    day: str
    lines: tuple[tuple[str, str | None, float], ...] | None = None  # (code, tooth, fee); None: as generated
    recycled_from: int | None = None  # send the image of that case again, cropped and re-encoded


CASES: tuple[DemoCase, ...] = (
    DemoCase("clean", 17, "MBR-0003", "1962-11-30", "PRV-002", "2026-05-04"),
    DemoCase("upcoded: surgical extraction of an erupted tooth", 49, "MBR-0004", "1975-02-11", "PRV-002", "2026-05-05"),
    DemoCase("unsupported: root canal without an indication", 24, "MBR-0005", "1990-08-23", "PRV-001", "2026-05-06"),
    DemoCase("over the endodontics sub-limit", 5, "MBR-0001", "1980-05-17", "PRV-001", "2026-05-07"),
    DemoCase("too frequent: a second set of bitewings this year", 2, "MBR-0001", "1980-05-17", "PRV-001", "2026-05-08",
             lines=(("D0274", None, 70.0), ("D1110", None, 95.0))),
    DemoCase("recycled radiograph from another member's claim", 17, "MBR-0002", "2015-09-02", "PRV-003", "2026-05-11",
             lines=(("D0220", None, 30.0),), recycled_from=0),
)


@dataclass(frozen=True)
class PreparedClaim:
    case: DemoCase
    body: dict[str, Any]
    images: dict[str, tuple[RadiographKind, np.ndarray]]  # radiograph id -> kind, pixels as sent


def build_claims() -> list[PreparedClaim]:
    """The demo claims as request bodies (base64 attachments), with the pixels sent."""
    from evaluation.claim_generator import generate_claims

    generated = list(generate_claims(max(c.index for c in CASES) + 1, CLAIM_SEED))
    prepared: list[PreparedClaim] = []
    for number, case in enumerate(CASES, start=1):
        item = generated[case.index]
        source: SyntheticCase = item.case
        if case.recycled_from is not None:
            original = prepared[case.recycled_from]
            rid, (kind, pixels) = next(iter(original.images.items()))
            h, w = pixels.shape
            sent = pixels[int(h * 0.03): h - int(h * 0.02), int(w * 0.04):]  # a small crop, 8-bit PNG
            radiograph_id, content = f"{rid}-again", png_8bit(sent)
        else:
            kind, sent, radiograph_id = source.kind, source.pixels_unit, source.image_id
            content = case_dicom_bytes(source)
        if case.lines is None:
            lines = [line.model_dump(mode="json", exclude_none=True) for line in item.claim.lines]
        else:
            lines = [{"line_id": str(i), "code": code, "fee": fee, **({"tooth": tooth} if tooth else {})}
                     for i, (code, tooth, fee) in enumerate(case.lines, start=1)]
        body = {"claim_id": f"DEMO-SVC-{number:02d}", "tenant": "demo",
                "member": {"member_id": case.member_id, "birth_date": case.birth_date},
                "provider": {"provider_id": case.provider_id}, "date_of_service": case.day, "lines": lines,
                "attachments": [{"radiograph_id": radiograph_id, "kind": kind.value,
                                 "content": base64.b64encode(content).decode("ascii")}]}
        prepared.append(PreparedClaim(case, body, {radiograph_id: (kind, sent)}))
    return prepared


def submit(client: Any, key: str, claims: list[PreparedClaim]) -> list[tuple[dict, dict[str, dict]]]:
    """Each claim's decision and, per radiograph, the detections (``/v1/images:analyze``).
    ``client`` is an httpx client (or FastAPI's TestClient) pointed at the service."""
    headers = {"X-API-Key": key}
    results = []
    for claim in claims:
        answer = client.post("/v1/claims:validate", json=claim.body, headers=headers)
        if answer.status_code != 200:
            raise DemoError(f"{claim.body['claim_id']}: the service answered {answer.status_code}: {answer.text[:300]}")
        images = [{"image_id": a["radiograph_id"], "kind": a["kind"], "content_base64": a["content"]}
                  for a in claim.body["attachments"]]
        analysed = client.post("/v1/images:analyze", json={"images": images}, headers=headers)
        if analysed.status_code != 200:
            raise DemoError(f"{claim.body['claim_id']}: analyze answered {analysed.status_code}: {analysed.text[:300]}")
        results.append((answer.json(), {i["image_id"]: i for i in analysed.json()["images"]}))
    return results


def _overlay_png(pixels: np.ndarray, kind: RadiographKind, reading: dict) -> str:
    teeth = tuple(ToothAnnotation(t["fdi"], tuple(t["box_xyxy_px"]), t.get("root_count"))
                  for t in reading["teeth"] if t["score"] >= DRAW_MIN_SCORE)
    findings = tuple(FindingAnnotation(FindingClass(f["class"]), tuple(f["box_xyxy_px"]), f.get("tooth_fdi"),
                                       CariesDepth(f["caries_depth"]) if f.get("caries_depth") else None)
                     for f in reading["findings"] if f["score"] >= DRAW_MIN_SCORE)
    h, w = pixels.shape
    return overlay_png_base64(pixels, ImageAnnotations(reading["image_id"], "", w, h, kind, teeth, findings), max_side=720)


def decision_rows(claims: list[PreparedClaim], results: list[tuple[dict, dict[str, dict]]]) -> list[list[str]]:
    rows = []
    for claim, (decision, _) in zip(claims, results, strict=True):
        billed = {line["line_id"]: line for line in claim.body["lines"]}
        for line in decision["lines"]:
            fired = [h for h in line["rule_hits"] if h.get("fired", True) and h["action"] != "pass"]
            rows.append([claim.case.label, decision["claim_id"], line["line_id"], billed[line["line_id"]]["code"],
                         str(billed[line["line_id"]].get("tooth", "")), line["action"], line.get("suggested_code") or "",
                         f"{line.get('approved_amount') or 0:.2f}",
                         "; ".join([*(f"{h['rule_id']}: {h['reason']}" for h in fired),
                                    *([f"member notice: {line['member_notice']}"] if line.get("member_notice") else [])])
                         or "all rules passed"])
    return rows


def write_html(path: Path, claims: list[PreparedClaim], results: list[tuple[dict, dict[str, dict]]]) -> None:
    rows = decision_rows(claims, results)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Claim decisions (synthetic demo)</title>",
             "<style>body{font-family:sans-serif;margin:2em;background:#fafafa}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:14px}"
             ".pass{color:#176f2c}.flag{color:#a66200}.reject{color:#b3261e}.downcode{color:#5a3fb0}"
             "section{background:#fff;border:1px solid #ddd;padding:1em;margin:1em 0}</style></head><body>",
             "<h1>Claim decisions from the running service</h1>",
             "<p>Synthetic data only, not for clinical use. Boxes: green teeth (FDI number, r = roots), "
             "red caries, orange periapical lesions, purple impactions, blue restorations, cyan crowns, "
             f"yellow root fillings (detections scoring at least {DRAW_MIN_SCORE}).</p>"]
    for claim, (decision, readings) in zip(claims, results, strict=True):
        parts.append(f"<section><h2>{html.escape(claim.case.label)} &mdash; {html.escape(decision['claim_id'])}</h2>")
        parts.append("<table><tr><th>line</th><th>code</th><th>tooth</th><th>action</th><th>suggested</th>"
                     "<th>approved</th><th>reasons and evidence</th></tr>")
        for row in (r for r in rows if r[1] == decision["claim_id"]):
            parts.append(f"<tr><td>{row[2]}</td><td>{row[3]}</td><td>{html.escape(row[4])}</td>"
                         f"<td class='{row[5]}'><b>{row[5]}</b></td><td>{row[6]}</td><td>{row[7]}</td>"
                         f"<td>{html.escape(row[8])}</td></tr>")
        parts.append("</table>")
        for rid, (kind, pixels) in claim.images.items():
            parts.append(f"<p>{html.escape(rid)} ({kind.value})</p><img alt='{html.escape(rid)} with detections' "
                         f"src='data:image/png;base64,{_overlay_png(pixels, kind, readings[rid])}'>")
        parts.append(f"<p><small>audit id {decision['audit_id']}, versions: "
                     f"{html.escape(', '.join(f'{k} {v}' for k, v in sorted(decision['versions'].items())))}</small></p>"
                     "</section>")
    parts.append("</body></html>")
    path.write_text("".join(parts), encoding="utf-8")


def prepare_store(url: str, now: dt.datetime, extra_members: int = 0) -> str:
    """Plans, demo members and history (and ``extra_members`` synthetic members without
    history, ``SYN-00001``...), and an adjudicator key (returned, shown nowhere)."""
    from serving.adjudication import RuleTables
    from serving.plans import load_plans
    from serving.store import repository
    from serving.store.api_keys import Role, create_key
    from serving.store.database import Store

    store = Store.open(url)
    try:
        with store.transaction() as session:
            repository.save_plans(session, load_plans(), now)
            catalogue = RuleTables.load().validation.catalogue
            repository.seed(session, repository.load_seed_file(SEED_FILE), catalogue, now)
            if extra_members:
                more = repository.SeedFile.model_validate({"tenant": "demo", "members": [
                    {"member_id": f"SYN-{i:05d}", "birth_date": f"{1950 + i % 50}-06-15",
                     "enrolments": [{"plan_id": "standard-dental", "start": "2024-01-01"}]}
                    for i in range(1, extra_members + 1)]})
                repository.seed(session, more, catalogue, now)
            return create_key(session, tenant="demo", role=Role.ADJUDICATOR, label="demo-service", now=now)[1]
    finally:
        store.close()


def _wait_ready(base_url: str, process: subprocess.Popen, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"dxv serve exited with {process.returncode} before it was ready (see its output above)")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2.0)
    raise DemoError(f"the service was not ready within {timeout_s:.0f} s")


def _stop(process: subprocess.Popen) -> None:
    """Ctrl-C (dxv serve shuts Serve and Ray down), a second one if Serve's graceful
    shutdown hangs (Ray still goes down), and a kill as the last resort."""
    for wait_s in (120, 60):
        if process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
    process.kill()
    process.wait()


def state_url(out: Path) -> str:
    """The demo service's state store (a fresh SQLite file under ``out``)."""
    return f"sqlite:///{(out / 'service-state.db').resolve()}"


def reviewer_key(url: str, now: dt.datetime) -> str:
    from serving.store.api_keys import Role, create_key
    from serving.store.database import Store

    store = Store.open(url)
    try:
        with store.transaction() as session:
            return create_key(session, tenant="demo", role=Role.REVIEWER, label="demo-reviewer", now=now)[1]
    finally:
        store.close()


def appeal_example(client: Any, adjudicator: str, reviewer: str, claims: list[PreparedClaim],
                   results: list[tuple[dict, dict[str, dict]]]) -> dict[str, Any]:
    """The provider of the upcoded claim appeals its downcode with an operative note: the
    reviewer first disposes of the line if it was queued, then the appeal is submitted.
    Returns the appeal's decision."""
    index = next(i for i, c in enumerate(claims) if c.case.label.startswith("upcoded"))
    decision = results[index][0]
    line = next(x for x in decision["lines"] if x["action"] == "downcode")
    if line["needs_review"]:
        queue = client.get("/v1/reviews", params={"limit": 500}, headers={"X-API-Key": reviewer}).json()["items"]
        item = next(i for i in queue if i["audit_id"] == decision["audit_id"] and i["line_id"] == line["line_id"])
        client.post(f"/v1/reviews/{item['item_id']}/disposition", headers={"X-API-Key": reviewer},
                    json={"outcome": "confirm", "reason": "erupted on the image; simple extraction"})
    note = b"Operative note (synthetic): flap raised, bone removed distally, tooth sectioned."
    answer = client.post(f"/v1/decisions/{decision['audit_id']}/appeals", headers={"X-API-Key": adjudicator}, json={
        "line_ids": [line["line_id"]], "narrative": "Partially bony impacted; surgical removal with sectioning.",
        "documents": [{"name": "operative-note.txt", "media_type": "text/plain",
                       "content_base64": base64.b64encode(note).decode("ascii")}]})
    if answer.status_code != 201:
        raise DemoError(f"the appeal was answered {answer.status_code}: {answer.text[:300]}")
    return dict(answer.json())


@contextmanager
def running_service(out: Path, port: int, overrides: tuple[str, ...] = (), ready_timeout_s: float = 420.0,
                    extra_members: int = 0, prepare: Callable[[str], None] | None = None) -> Iterator[tuple[str, str]]:
    """``dxv serve`` in a child process on a fresh state store under ``out``, ready; yields
    (base URL, adjudicator key) and stops the service on the way out. ``prepare`` is called
    with the store's URL before the service starts (e.g. to load history)."""
    from rich.console import Console

    console = Console()
    out.mkdir(parents=True, exist_ok=True)
    url = state_url(out)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{url.removeprefix('sqlite:///')}{suffix}").unlink(missing_ok=True)
    key = prepare_store(url, dt.datetime.now(dt.UTC).replace(tzinfo=None), extra_members)
    if prepare is not None:
        prepare(url)
    console.print(f"starting the service on the local Ray (port {port}) ...")
    settings = [arg for item in (f"state_url={url}", f"http.port={port}", *overrides) for arg in ("--set", item)]
    process = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", *settings],
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        base_url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        _wait_ready(base_url, process, ready_timeout_s)
        console.print(f"service ready after {time.monotonic() - started:.0f} s")
        yield base_url, key
    finally:
        console.print("stopping the service ...")
        _stop(process)


def run(out: Path, port: int = 8765) -> list[list[str]]:
    import httpx
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(150, Console().width))  # the decision table needs room, also under make
    claims = build_claims()
    with running_service(out, port) as (base_url, key), httpx.Client(base_url=base_url, timeout=120) as client:
        console.print(f"submitting {len(claims)} claims")
        results = submit(client, key, claims)
        reviewer = reviewer_key(state_url(out), dt.datetime.now(dt.UTC).replace(tzinfo=None))
        appealed = appeal_example(client, key, reviewer, claims, results)
        waiting = client.get("/v1/reviews", headers={"X-API-Key": reviewer}).json()["total"]
    rows = decision_rows(claims, results)
    table = Table(title="Decisions (synthetic demo claims)", show_lines=True)
    for name in ("case", "claim", "line", "code", "tooth", "action", "suggested", "approved", "why"):
        table.add_column(name, overflow="fold", max_width=70 if name == "why" else None)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    write_html(out / "summary.html", claims, results)
    console.print(f"HTML summary with the radiographs and boxes: {out / 'summary.html'}")
    console.print(f"{waiting} line(s) wait in the review queue (the workbench is at /review while the service runs)")
    console.print(f"appeal {appealed['appeal_id']} of the upcoded claim's downcode: {appealed['outcome']} "
                  f"(decision {appealed['audit_id']})")
    from evaluation.appeal_packet import write_packet
    from serving.store.database import Store

    store = Store.open(state_url(out))
    try:
        write_packet(store, appealed["original_audit_id"], out / "appeal-packet.html")
    finally:
        store.close()
    console.print(f"appeal packet: {out / 'appeal-packet.html'}")
    return rows
