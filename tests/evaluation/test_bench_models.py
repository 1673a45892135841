import json
import shutil
import time

import numpy as np
import pytest

from datasets.synth.generator import generate_case
from evaluation import bench_models
from evaluation.bench_models import processor_name, served_inputs, throughput
from models.inference import DentalReader
from models.model_card import SHIPPED_DIR, ModelKey, get_model_card, verify_card
from models.preprocess import prepare_image
from models.radiographs import RadiographKind


@pytest.fixture(scope="module")
def reader() -> DentalReader:
    return DentalReader.from_directory(SHIPPED_DIR, threads=1)


def test_served_inputs_are_what_each_model_reads_in_serving(reader):
    inputs = served_inputs(reader)
    assert set(inputs) == {ModelKey.TOOTH_NUMBERING, ModelKey.FINDINGS, ModelKey.ROOT_COUNT, ModelKey.FINDING_VERIFIER}
    findings_card = reader.findings.model.card
    periapical = generate_case(RadiographKind.PERIAPICAL, 4242, 0).pixels_unit
    expected, _ = prepare_image(periapical, findings_card.long_side_for(RadiographKind.PERIAPICAL))
    assert inputs[ModelKey.FINDINGS]["periapical"].shape == expected.shape
    # Panoramics: the finding detector reads only the teeth's region, at the whole image's scale.
    assert RadiographKind.PANORAMIC in findings_card.input.teeth_region_margin
    panoramic = generate_case(RadiographKind.PANORAMIC, 4242, 0).pixels_unit
    whole, _ = prepare_image(panoramic, findings_card.long_side_for(RadiographKind.PANORAMIC))
    region = inputs[ModelKey.FINDINGS]["panoramic"]
    assert region.shape[2] * region.shape[3] < 0.8 * whole.shape[2] * whole.shape[3]
    assert inputs[ModelKey.ROOT_COUNT]["crop"].shape == (1, 1, *reader.roots.crop_hw)
    arch = reader.verifier.arch  # one candidate's crops, one channel per context
    assert inputs[ModelKey.FINDING_VERIFIER]["crop"].shape == (1, arch.channels, arch.crop_px, arch.crop_px)


class _SleepingSession:
    """Takes at least ``delay`` seconds a run and records the batches it is given."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.shapes: list[tuple[int, ...]] = []

    def run(self, _outputs, feed):
        self.shapes.append(feed["image"].shape)
        time.sleep(self.delay)


def test_throughput_counts_every_image_of_the_batch_and_never_beats_the_run_time():
    session = _SleepingSession(0.02)
    single = np.zeros((1, 1, 8, 8), np.float32)
    per_second = throughput(session, "image", single, batch=4, seconds=0.0)
    assert len(session.shapes) == 3 + 5  # warm-ups, then at least five timed runs
    assert set(session.shapes) == {(4, 1, 8, 8)}
    assert 0 < per_second <= 4 / 0.02


@pytest.mark.slow
def test_write_cards_stores_the_figures_and_leaves_the_models_alone(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(SHIPPED_DIR, models)
    out = tmp_path / "bench.json"
    bench_models.main(["--models", str(models), "--threads", "1", "--repeats", "1", "--throughput",
                       "--batches", "1,2", "--throughput-seconds", "0.01", "--write-cards", "--out", str(out)])
    findings = get_model_card(ModelKey.FINDINGS, models)
    assert set(findings.throughput) == {f"cpu_{kind.value}_batch{n}_images_per_s"
                                        for kind in findings.kinds_served for n in (1, 2)}
    assert all(v > 0 for v in findings.throughput.values())
    assert findings.throughput_device.startswith("CPU")
    roots = get_model_card(ModelKey.ROOT_COUNT, models)
    assert set(roots.throughput) == {"cpu_crop_batch1_images_per_s", "cpu_crop_batch2_images_per_s"}
    verifier = get_model_card(ModelKey.FINDING_VERIFIER, models)  # one candidate's two crops per input
    assert set(verifier.throughput) == {"cpu_crop_batch1_images_per_s", "cpu_crop_batch2_images_per_s"}
    for key in ModelKey:
        card = get_model_card(key, models)
        verify_card(card, models / card.onnx_file)  # same file, same hash
    written = json.loads(out.read_text())
    assert written["throughput"]["findings"] == findings.throughput
    # The full serving path, radiographs read together: every kind, every batch size.
    assert set(written["serving_throughput"]) == {kind.value for kind in RadiographKind}
    assert all(set(v) == {"batch 1", "batch 2"} and min(v.values()) > 0 for v in written["serving_throughput"].values())


def test_gpu_without_a_cuda_provider_and_write_cards_without_throughput_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_models.main(["--gpu"])
    assert exit_info.value.code == 2
    assert "no CUDA provider" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_models.main(["--write-cards"])
    assert "give both" in capsys.readouterr().err


def test_the_cuda_provider_is_named_even_where_torch_is_the_cpu_build():
    assert processor_name(True, 4).endswith("ONNX Runtime CUDA provider")
    assert processor_name(False, 2).startswith("CPU, 2 of ")
