
"""Synthetic claims with known outcomes, the claims report, and the CLI around them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from evaluation.claim_generator import Problem, generate_claims, truth_reading
from evaluation.claims_eval import ClaimsReport, evaluate_claims
from serving.cli import main
from serving.validation.engine import load_tables


def test_generation_is_seeded_and_truth_is_consistent() -> None:
    first = list(generate_claims(12, seed=5, problem_rate=0.6))
    again = list(generate_claims(12, seed=5, problem_rate=0.6))
    assert [c.claim for c in first] == [c.claim for c in again]
    problems = [t for c in first for t in c.truth if not t.clean]
    assert problems, "a 0.6 problem rate over 12 claims injects problems"
    for item in first:
        assert {t.line_id for t in item.truth} == {x.line_id for x in item.claim.lines}
        for truth in item.truth:
            if truth.problem in (Problem.UPCODE_TOOTH_TYPE, Problem.SURGICAL_ON_ERUPTED, Problem.EXTRA_SURFACES):
                assert truth.expected_code is not None
    assert not [t for c in generate_claims(8, seed=5, problem_rate=0.0) for t in c.truth if not t.clean]


def test_truth_reading_is_the_images_truth() -> None:
    item = next(iter(generate_claims(1, seed=2)))
    reading = truth_reading(item.case)
    assert {t.fdi for t in reading.teeth} == {t.fdi for t in item.case.annotations.teeth}
    assert len(reading.findings) == len(item.case.annotations.findings)
    assert all(t.score == 1.0 for t in reading.teeth)


def test_rules_alone_meet_the_targets_on_the_images_truth() -> None:
    """With perfect findings (the oracle) the rules catch the injected problems and leave
    clean lines alone; the model run is the benchmark (make bench-claims)."""
    report = evaluate_claims(generate_claims(60, seed=11, problem_rate=0.5), load_tables())
    assert report._count(clean=False) >= 15
    assert report.problem_recall >= 0.95
    assert report.false_flag_rate <= 0.05


def test_report_arithmetic() -> None:
    report = ClaimsReport(source="hand", outcomes=Counter({
        ("clean", "pass"): 18, ("clean", "flag"): 2, ("wrong_tooth", "flag"): 9, ("wrong_tooth", "pass"): 1}))
    assert report.problem_recall == pytest.approx(0.9)
    assert report.false_flag_rate == pytest.approx(0.1)
    assert report.precision == pytest.approx(9 / 11)


def test_eval_claims_cli_writes_the_report(tmp_path, capsys) -> None:
    assert main(["eval-claims", "--oracle", "--n", "8", "--seed", "3", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "oracle" / "claims_report.json").read_text())
    assert data["claims"] == 8 and data["lines"] > 8
    assert "recall of injected problems" in (tmp_path / "oracle" / "claims_summary.md").read_text()


def test_eval_claims_decides_with_the_score_bands_it_is_given(tmp_path, capsys) -> None:
    import yaml

    bands = yaml.safe_load(Path("configs/validation/thresholds.yaml").read_text())
    bands["version"] = "band-search-1"
    bands["findings"]["caries"] = {"support": 0.6, "absent": 0.2}
    candidate = tmp_path / "bands.yaml"
    candidate.write_text(yaml.safe_dump(bands))
    out = tmp_path / "out"
    assert main(["eval-claims", "--oracle", "--n", "4", "--seed", "3", "--thresholds", str(candidate), "--out", str(out)]) == 0
    assert json.loads((out / "oracle" / "claims_report.json").read_text())["tables"]["thresholds"] == "band-search-1"
    bands["findings"]["caries"] = {"support": 0.2, "absent": 0.6}  # absent above support
    candidate.write_text(yaml.safe_dump(bands))
    assert main(["eval-claims", "--oracle", "--n", "4", "--thresholds", str(candidate), "--out", str(out)]) == 2
    assert "must not exceed support" in capsys.readouterr().err


def test_eval_claims_compares_several_bands_on_one_reading_of_the_images(tmp_path, capsys, monkeypatch) -> None:
    import yaml

    from models.inference import DentalReader

    reads: list[str] = []
    original = DentalReader.read

    def counting_read(self, image_id, *args, **kwargs):
        reads.append(image_id)
        return original(self, image_id, *args, **kwargs)

    monkeypatch.setattr(DentalReader, "read", counting_read)
    bands = yaml.safe_load(Path("configs/validation/thresholds.yaml").read_text())
    files = []
    for version, absent in (("narrow", 0.05), ("wide", 0.4)):
        bands["version"] = version
        bands["findings"] = {k: {"support": 0.45, "absent": absent} for k in bands["findings"]}
        files += ["--thresholds", str(tmp_path / f"{version}.yaml")]
        (tmp_path / f"{version}.yaml").write_text(yaml.safe_dump(bands))
    out = tmp_path / "out"
    assert main(["eval-claims", "--n", "4", "--seed", "5", "--threads", "2", *files, "--out", str(out)]) == 0
    assert len(reads) == len(set(reads)) == 4, "each claim's radiograph is read once for both bands"
    narrow = json.loads((out / "models" / "narrow" / "claims_report.json").read_text())
    wide = json.loads((out / "models" / "wide" / "claims_report.json").read_text())
    assert narrow["tables"]["thresholds"] == "narrow" and wide["tables"]["thresholds"] == "wide"
    assert narrow["claims"] == wide["claims"] == 4
    printed = capsys.readouterr().out
    assert "narrow" in printed and "wide" in printed


def test_validate_refuses_a_malformed_claim(tmp_path, capsys) -> None:
    bad = tmp_path / "claim.json"
    bad.write_text('{"claim_id": "x", "lines": [')
    assert main(["validate", str(bad), "--images", str(tmp_path)]) == 2
    assert "claim.invalid" in capsys.readouterr().err
    bad.write_text(json.dumps({"claim_id": "x", "member": {"member_id": "m", "birth_date": "1980-01-01"},
                               "provider": {"provider_id": "p"}, "date_of_service": "2026-01-01",
                               "lines": [{"line_id": "1", "code": "D2391", "tooth": "8", "surfaces": "O"}]}))
    assert main(["validate", str(bad), "--images", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "claim.invalid" in err and "not valid on tooth 11" in err


@pytest.mark.slow
def test_synth_then_validate_with_the_shipped_models(tmp_path, capsys) -> None:
    assert main(["claims", "synth", "--n", "2", "--seed", "4", "--out", str(tmp_path)]) == 0
    claim_file = sorted(tmp_path.glob("CLM-*.json"))[0]
    capsys.readouterr()
    assert main(["validate", str(claim_file), "--images", str(tmp_path / "images"), "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["claim_id"] == claim_file.stem and decision["lines"]
    assert decision["versions"]["model:findings"]
    missing = tmp_path / "elsewhere"
    missing.mkdir()
    assert main(["validate", str(claim_file), "--images", str(missing)]) == 2
    assert "not found" in capsys.readouterr().err
