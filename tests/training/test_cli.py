"""``dxv train | export | models list | models promote`` through the real CLI."""

import pytest
from mlflow.tracking import MlflowClient

from models.model_card import card_path, read_card, verify_card
from serving.cli import main as dxv

pytestmark = pytest.mark.slow


def test_train_export_list_promote(tmp_path, mlflow_store, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(f"""
model: root-count
output_dir: {tmp_path / 'runs'}
classifier: {{crop_height_px: 64, crop_width_px: 32}}
data:
  sources: [{{format: synthetic, counts: {{periapical: 3}}, seed: 2}}]
  val_fraction: 0.34
optim: {{epochs: 1, batch_size: 8, max_iters_per_epoch: 2}}
tracking: {{experiment: cli-test}}
""")
    assert dxv(["train", str(config), "--set", "optim.lr=0.001"]) == 0
    out = capsys.readouterr().out
    assert "registered dxv-root-count version 1" in out
    run_dir = next((tmp_path / "runs").iterdir())

    assert dxv(["export", str(run_dir / "best.pt"), "--out", str(tmp_path / "exported")]) == 0
    onnx_path = tmp_path / "exported" / "root-count.onnx"
    verify_card(read_card(card_path(onnx_path)), onnx_path)

    assert dxv(["models", "list"]) == 0
    assert "dxv-root-count" in capsys.readouterr().out
    assert dxv(["models", "promote", "dxv-root-count", "1", "--alias", "champion"]) == 0
    assert MlflowClient().get_model_version_by_alias("dxv-root-count", "champion").version in (1, "1")

    assert dxv(["models", "promote", "dxv-root-count", "7"]) == 2
    assert "models.registry" in capsys.readouterr().err


def test_train_refuses_an_override_that_names_no_field(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model: findings\n")
    assert dxv(["train", str(config), "--set", "optim.learning_rate=1"]) == 2
    assert "config.invalid" in capsys.readouterr().err


def test_eval_refuses_a_bad_synthetic_spec(capsys):
    assert dxv(["eval", "models/shipped", "synthetic:seed=1,xray=3"]) == 2
    assert "eval.dataset" in capsys.readouterr().err
