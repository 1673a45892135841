"""``dxv eval-claims``: line-level precision and recall of the validation layer's flags
and downcodes on synthetic claims with known outcomes.

A problem line is caught when its action is anything but pass; a clean line that does not
pass is a false flag. Readings come from the ONNX models (the served path) or, with
``oracle``, from the images' truth: the oracle run measures the rules alone, the model
run the whole chain."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.claim_generator import SyntheticClaim, truth_reading
from models.detections import ImageReading
from serving.decisions import Action
from serving.validation.context import Tables
from serving.validation.engine import validate_claim

Reader = Callable[[SyntheticClaim], ImageReading]


@dataclass
class ClaimsReport:
    source: str
    tables: dict[str, str] = field(default_factory=dict)  # the table versions decided with (thresholds' among them)
    claims: int = 0
    lines: int = 0
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (truth, action) -> lines
    exact_downcodes: int = 0
    downcode_problems: int = 0
    false_flag_reasons: Counter[str] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)

    def _count(self, clean: bool | None = None, caught: bool | None = None) -> int:
        return sum(n for (truth, action), n in self.outcomes.items()
                   if (clean is None or (truth == "clean") == clean) and (caught is None or (action != "pass") == caught))

    @property
    def problem_recall(self) -> float:
        problems = self._count(clean=False)
        return self._count(clean=False, caught=True) / problems if problems else float("nan")

    @property
    def false_flag_rate(self) -> float:
        clean = self._count(clean=True)
        return self._count(clean=True, caught=True) / clean if clean else float("nan")

    @property
    def precision(self) -> float:
        caught = self._count(caught=True)
        return self._count(clean=False, caught=True) / caught if caught else float("nan")

    def per_problem(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for (truth, action), n in sorted(self.outcomes.items()):
            table.setdefault(truth, {})[action] = n
        return table

    @property
    def exact_downcode_rate(self) -> float:
        """Of the upcodes with a known right code, the share downcoded to exactly it."""
        return self.exact_downcodes / self.downcode_problems if self.downcode_problems else float("nan")

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source, "tables": self.tables, "claims": self.claims, "lines": self.lines,
            "problem_recall": round(self.problem_recall, 4), "false_flag_rate": round(self.false_flag_rate, 4),
            "precision": round(self.precision, 4),
            "exact_downcode_rate": round(self.exact_downcode_rate, 4) if self.downcode_problems else None,
            "outcomes_by_truth": self.per_problem(),
            "false_flag_reasons": dict(self.false_flag_reasons.most_common(15)),
            "missed_problems": dict(self.missed.most_common(15)),
        }


def _rule_family(reason: str) -> str:
    """The start of a reason, before tooth-specific details, for counting."""
    return reason.split(":")[0][:90]


def evaluate_claims(items: Iterable[SyntheticClaim], tables: Tables, reader: Reader | None = None,
                    on_claim: Callable[[], None] | None = None) -> ClaimsReport:
    report = ClaimsReport(source="oracle (image truth)" if reader is None else "ONNX models", tables=tables.versions())
    for item in items:
        reading = truth_reading(item.case) if reader is None else reader(item)
        result = validate_claim(item.claim, (reading,), tables)
        report.claims += 1
        for decision in result.lines:
            truth = item.truth_of(decision.line_id)
            report.lines += 1
            label = "clean" if truth.clean else str(truth.problem)
            report.outcomes[(label, decision.action.value)] += 1
            code = item.claim.line(decision.line_id).code
            if truth.clean and decision.action is not Action.PASS:
                first = next((h for h in decision.rule_hits if h.fired and h.action is decision.action), None)
                report.false_flag_reasons[f"{code} {first.rule_id if first else ''}: "
                                          f"{_rule_family(first.reason) if first else ''}"] += 1
            if not truth.clean and decision.action is Action.PASS:
                report.missed[f"{truth.problem} {code}"] += 1
            if truth.expected_code is not None:
                report.downcode_problems += 1
                report.exact_downcodes += int(decision.action is Action.DOWNCODE
                                              and decision.suggested_code == truth.expected_code)
        if on_claim:
            on_claim()
    return report


def markdown(report: ClaimsReport) -> str:
    data = report.to_json()
    lines = [f"# Synthetic claims: {report.source}", "",
             f"{report.claims} claims, {report.lines} lines.", "",
             "| figure | value | target |", "|---|---|---|",
             f"| recall of injected problems | {data['problem_recall']} | >= 0.95 |",
             f"| false flags on clean lines | {data['false_flag_rate']} | <= 0.05 |",
             f"| precision of flags/downcodes | {data['precision']} | |",
             f"| upcodes downcoded to the right code | {data['exact_downcode_rate']} | |", "",
             "| truth | " + " | ".join(a.value for a in Action) + " |", "|---|" + "---|" * len(Action)]
    for truth, actions in report.per_problem().items():
        lines.append(f"| {truth} | " + " | ".join(str(actions.get(a.value, 0)) for a in Action) + " |")
    if report.false_flag_reasons:
        lines += ["", "Most common reasons on clean lines that did not pass:", ""]
        lines += [f"- {n} x {reason}" for reason, n in report.false_flag_reasons.most_common(8)]
    return "\n".join(lines) + "\n"


def write_claims_report(report: ClaimsReport, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "claims_report.json").write_text(json.dumps(report.to_json(), indent=2), "utf-8")
    (out_dir / "claims_summary.md").write_text(markdown(report), "utf-8")
