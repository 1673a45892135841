"""``dxv models ship``: copies a run's export into a model folder and keeps the GPU
throughput figures only when the retrained file is the same network; ``dxv models
redecode``: changes how a shipped detector decodes, its network untouched."""

import shutil

import pytest

from evaluation.evaluate import read_all
from evaluation.thresholds import CANDIDATE_THRESHOLDS
from models.model_card import (
    CARRIED_THROUGHPUT_NOTE,
    SHIPPED_DIR,
    card_path,
    get_model_card,
    read_card,
    verify_card,
    with_carried_throughput,
    write_card,
)
from models.radiographs import RadiographKind
from serving.cli import main as dxv
from training import export


def _run_with_export(tmp_path, **card_changes):
    """A run folder whose export is the shipped root-count file with its throughput cleared
    (what `dxv export` writes) and ``card_changes`` applied to its card."""
    export = tmp_path / "run" / "export"
    export.mkdir(parents=True)
    card = get_model_card("root-count")
    shutil.copy2(SHIPPED_DIR / card.onnx_file, export / card.onnx_file)
    fresh = card.model_copy(update={"throughput": {}, "throughput_device": None, "version": "9.9.9", **card_changes})
    write_card(fresh, card_path(export / card.onnx_file))
    return tmp_path / "run"


def _target_with_previous(tmp_path):
    target = tmp_path / "shipped"
    target.mkdir()
    card = get_model_card("root-count")
    assert card.throughput, "the shipped root-count card has GPU figures to carry"
    write_card(card, target / "root-count.card.json")
    return target, card


def test_ship_carries_throughput_to_a_retrained_file_of_the_same_network(tmp_path, capsys):
    target, previous = _target_with_previous(tmp_path)
    assert dxv(["models", "ship", str(_run_with_export(tmp_path)), "--to", str(target)]) == 0
    assert "throughput carried" in " ".join(capsys.readouterr().out.split())  # rich wraps lines
    shipped = read_card(target / "root-count.card.json")
    verify_card(shipped, target / shipped.onnx_file)
    assert shipped.version == "9.9.9"
    assert shipped.throughput == previous.throughput
    assert shipped.throughput_device.startswith(previous.throughput_device)
    assert shipped.throughput_device.count(CARRIED_THROUGHPUT_NOTE) == 1


def test_ship_drops_throughput_when_the_network_changed(tmp_path, capsys):
    target, previous = _target_with_previous(tmp_path)
    wider = previous.classifier.model_copy(update={"block_inplanes": (32, 64, 128, 256)})
    assert dxv(["models", "ship", str(_run_with_export(tmp_path, classifier=wider)), "--to", str(target)]) == 0
    assert "throughput carried" not in " ".join(capsys.readouterr().out.split())  # rich wraps lines
    shipped = read_card(target / "root-count.card.json")
    assert shipped.throughput == {} and shipped.throughput_device is None


def test_ship_into_an_empty_folder_copies_the_card_as_exported(tmp_path):
    run = _run_with_export(tmp_path)
    assert dxv(["models", "ship", str(run), "--to", str(tmp_path / "new")]) == 0
    exported = run / "export" / "root-count.card.json"
    assert (tmp_path / "new" / "root-count.card.json").read_text() == exported.read_text()


def test_own_figures_and_other_inputs_are_never_overwritten():
    previous = get_model_card("findings")
    measured = previous.model_copy(update={"throughput": {"cuda_periapical_batch1_images_per_s": 1.0}})
    assert with_carried_throughput(measured, previous) is measured
    finer = previous.input.model_copy(update={"long_side_px": {**previous.input.long_side_px, "panoramic": 3200}})
    fresh = previous.model_copy(update={"throughput": {}, "throughput_device": None, "input": finer})
    assert with_carried_throughput(fresh, previous).throughput == {}
    same = previous.model_copy(update={"throughput": {}, "throughput_device": None})
    carried = with_carried_throughput(same, previous)
    assert carried.throughput == previous.throughput
    assert carried.throughput_device == previous.throughput_device  # its note is already there, not doubled


def test_redecode_changes_only_the_decoding_and_clears_the_stale_metrics(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "models"
    shutil.copytree(SHIPPED_DIR, folder)
    assert (folder / "finding-verifier.card.json").exists()
    before = get_model_card("findings", folder)
    tuned_with = []

    def reading(reader, samples):  # the thresholds are the detector's own: its scores, not the verifier's
        tuned_with.append(reader)
        return read_all(reader, samples)

    monkeypatch.setattr(export, "read_all", reading)
    assert dxv(["models", "redecode", str(folder), "findings", "--set", "decode.test_time_flip=[periapical]",
                "--set", "decode.fusion_iou=0.6", "--version", "9.0.0",
                "--tune-on", "synthetic:seed=3,periapical=2"]) == 0
    after = get_model_card("findings", folder)
    verify_card(after, folder / after.onnx_file)
    assert after.sha256 == before.sha256 and after.throughput == before.throughput  # the same network
    assert after.version == "9.0.0" and after.metrics == {} and after.metrics_dataset is None
    assert after.decode.test_time_flip == (RadiographKind.PERIAPICAL,) and after.decode.fusion_iou == 0.6
    assert after.decode.operating_threshold in CANDIDATE_THRESHOLDS
    assert after.decode.class_thresholds, "each class seen in the tuning images gets its own threshold"
    assert set(after.decode.class_thresholds.values()) <= set(CANDIDATE_THRESHOLDS)
    assert after.model_dump(exclude={"version", "metrics", "metrics_dataset", "decode"}) == \
        before.model_dump(exclude={"version", "metrics", "metrics_dataset", "decode"})
    assert get_model_card("tooth-numbering", folder) == get_model_card("tooth-numbering")
    (reader,) = tuned_with
    assert reader.findings is not None and reader.verifier is None


@pytest.mark.parametrize(("args", "code"), [
    (["findings", "--set", "detector.fpn_channels=32"], "export.invalid"),
    (["root-count", "--set", "decode.fusion_iou=0.6"], "export.invalid"),
    (["findings", "--set", "decode.test_time_scales={periapical: [1.0]}"], "config.invalid"),
])
def test_redecode_refuses_what_is_not_a_decoding_change(tmp_path, capsys, args, code):
    folder = tmp_path / "models"
    shutil.copytree(SHIPPED_DIR, folder)
    assert dxv(["models", "redecode", str(folder), *args, "--version", "9"]) == 2
    assert code in capsys.readouterr().err
    assert get_model_card("findings", folder) == get_model_card("findings")
