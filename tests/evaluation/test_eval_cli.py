"""``dxv eval`` and ``dxv read`` with the shipped models."""

import json

import pytest

from datasets.synth.generator import case_dicom_bytes, generate_case
from models.radiographs import RadiographKind
from serving.cli import main as dxv

pytestmark = pytest.mark.slow


def test_eval_writes_report_summary_and_plots(tmp_path, capsys):
    out = tmp_path / "eval"
    assert dxv(["eval", "models/shipped", "synthetic:seed=31,periapical=3,panoramic=1", "--out", str(out),
                "--threads", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 4 and report["images_per_kind"] == {"panoramic": 1, "periapical": 3}
    assert 0 <= report["teeth"]["all"]["tooth_recall"] <= 1
    assert "root_count_accuracy" in report["root_count"]
    assert "froc" in report["findings"]["all"]
    assert (out / "summary.md").read_text().startswith("# Evaluation on synthetic seed 31")
    assert {"pr_curves.png", "froc.png", "root_count_confusion.png", "tooth_number_confusion.png"} <= {
        p.name for p in out.glob("*.png")}


def test_read_prints_json_and_draws_an_overlay(tmp_path, capsys):
    case = generate_case(RadiographKind.PERIAPICAL, 32, 0)
    path = tmp_path / "pa.dcm"
    path.write_bytes(case_dicom_bytes(case))
    assert dxv(["read", str(path), "--json", "--overlay", str(tmp_path / "o.png")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "periapical" and data["teeth"]
    assert (tmp_path / "o.png").stat().st_size > 1000


def test_read_refuses_a_broken_file(tmp_path, capsys):
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"DICM" + b"\0" * 20)
    assert dxv(["read", str(path)]) == 2
    assert "image." in capsys.readouterr().err


def test_eval_of_one_model_file_reports_only_that_model(tmp_path):
    out = tmp_path / "roots"
    assert dxv(["eval", "models/shipped/root-count.onnx", "synthetic:seed=33,periapical=2", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["models"]) == {"root-count"}
    assert "teeth" not in report and "findings" not in report
    assert report["root_count"]["teeth"] > 0  # classified on the true tooth boxes
