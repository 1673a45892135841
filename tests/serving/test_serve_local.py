"""The Serve application logic in-process (Serve's local testing mode, no Ray cluster):
the model deployment with ``@serve.batch`` and its ``user_config``, and the ingress app
reading radiographs through a deployment handle. The real cluster runs in
``test_serve_on_ray.py`` in its own process (the two modes do not share one)."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from fastapi.testclient import TestClient
from ray import serve

from datasets.radiograph import ReaderLimits
from datasets.synth.generator import case_dicom_bytes, generate_case
from models.config_loading import ConfigError
from models.inference import available_providers, runs_int8
from models.model_card import SHIPPED_DIR, ModelKey, get_model_card
from models.radiographs import RadiographKind
from serving.adjudication import RuleTables
from serving.image_analysis import ImageAnalysis, ImageAnalysisRefused
from serving.plans import load_plans
from serving.service import build_ingress_app, model_deployment
from serving.service_config import load_serving_config
from serving.store import repository
from serving.store.api_keys import Role, create_key
from serving.store.database import Store

NOW = dt.datetime(2026, 5, 1, 9, 0)


@pytest.fixture(scope="module")
def models_handle():
    # Ray 2.60's local testing mode runs replicas without the replica context that
    # serve.batch reads for a start-up warning (a follow-up of ray-project/ray#48477);
    # only that warning is skipped here. test_serve_on_ray.py runs the real cluster path.
    from ray.serve.batching import _BatchQueue

    patch = pytest.MonkeyPatch()
    patch.setattr(_BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None)
    config = load_serving_config(overrides=("batching.max_batch_size=4", "batching.batch_wait_timeout_s=0.2"))
    handle = serve.run(model_deployment(config).bind(str(SHIPPED_DIR)), name="dxv-local", _local_testing_mode=True)
    yield handle, config
    patch.undo()


def test_the_model_deployment_batches_concurrent_reads(models_handle) -> None:
    handle, _ = models_handle
    assert handle.ready.remote().result()
    cases = [generate_case(RadiographKind.PERIAPICAL, 31, i) for i in range(3)]
    files = [(c.image_id, case_dicom_bytes(c), "periapical") for c in cases] + [("junk", b"not an image at all", None)]
    pending = [handle.analyze.remote(image_id, data, kind, ReaderLimits()) for image_id, data, kind in files]
    outcomes = [p.result() for p in pending]
    # The four files arrived within the 0.2 s wait: one batch of the configured size (user_config).
    assert max(handle.recent_batch_sizes.remote().result()) == 4
    # Each answer to its request; the bad file is refused on its own and the rest of its batch is read.
    readings = [o for o in outcomes if isinstance(o, ImageAnalysis)]
    assert [a.reading.image_id for a in readings] == [c.image_id for c in cases]
    assert all(a.reading.teeth and a.printed.kind == "periapical" for a in readings)
    assert isinstance(outcomes[3], ImageAnalysisRefused) and outcomes[3].error.code == "image.not_an_image"


def _demo_store(tmp_path) -> tuple[str, str]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = Store.open(url)
    with store.transaction() as session:
        repository.save_plans(session, load_plans(), NOW)
        repository.seed(session, repository.load_seed_file("configs/seed/demo.yaml"),
                        RuleTables.load().validation.catalogue, NOW)
        key = create_key(session, tenant="demo", role=Role.ADJUDICATOR, label="", now=NOW)[1]
    store.close()
    return url, key


def _decides_the_upcoded_root_canal(client: TestClient, key: str) -> None:
    assert client.get("/readyz").json() == {"ready": True, "models": True, "store": True}
    case = generate_case(RadiographKind.PERIAPICAL, 404, 9)
    claim = {"claim_id": "LOCAL-1", "tenant": "demo", "member": {"member_id": "MBR-0001", "birth_date": "1980-05-17"},
             "provider": {"provider_id": "PRV-001"}, "date_of_service": "2026-04-20",
             "lines": [{"line_id": "1", "code": "D3330", "tooth": "5", "tooth_system": "UNIVERSAL", "fee": 1100}],
             "attachments": [{"radiograph_id": case.image_id, "kind": "periapical",
                              "content": base64.b64encode(case_dicom_bytes(case)).decode()}]}
    answer = client.post("/v1/claims:validate", json=claim, headers={"X-API-Key": key})
    assert answer.status_code == 200, answer.text
    line = answer.json()["lines"][0]
    assert line["action"] == "downcode" and line["suggested_code"] == "D3320"  # tooth 14 is a premolar
    # On a CPU the replica runs the finding detector's int8 copy (models.precision: auto), and says so.
    findings = get_model_card(ModelKey.FINDINGS)
    int8 = runs_int8(findings, "auto", available_providers())
    assert int8 == (available_providers() == ["CPUExecutionProvider"]), "the 7-bit copy runs on any CPU"
    versions = answer.json()["versions"]
    assert versions["model:findings"] == findings.version + ("+int8" if int8 else "")
    assert versions["model:finding-verifier"] == get_model_card(ModelKey.FINDING_VERIFIER).version
    bad = client.post("/v1/claims:validate", content=b"{not json", headers={"X-API-Key": key})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "request.invalid"
    # A file the models cannot decode comes back as its own error code, not a 500.
    junk = {**claim, "claim_id": "LOCAL-2",
            "attachments": [{"radiograph_id": "x", "kind": "periapical", "content": base64.b64encode(b"GIF89a...").decode()}]}
    refused = client.post("/v1/claims:validate", json=junk, headers={"X-API-Key": key})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "image.not_an_image"


def test_the_ingress_app_decides_a_claim_through_the_deployment_handle(models_handle, tmp_path) -> None:
    handle, config = models_handle
    url, key = _demo_store(tmp_path)
    _decides_the_upcoded_root_canal(TestClient(build_ingress_app(handle, config.model_copy(update={"state_url": url}))), key)


@pytest.fixture(scope="module")
def pipeline_handle():
    """``placement: pipeline`` as build_application binds it: the decoding deployment given
    a handle per network deployment (local testing mode)."""
    from ray.serve.batching import _BatchQueue

    from serving.service import network_deployment

    patch = pytest.MonkeyPatch()
    patch.setattr(_BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None)
    config = load_serving_config(overrides=("batching.max_batch_size=4", "batching.batch_wait_timeout_s=0.2",
                                            "models.placement=pipeline"))
    networks = {key.value: network_deployment(config, 0, key.value).bind(str(SHIPPED_DIR), key.value)
                for key in ModelKey}
    app = model_deployment(config, networks_apart=True).bind(str(SHIPPED_DIR), networks)
    handle = serve.run(app, name="dxv-pipeline", route_prefix="/pipeline", _local_testing_mode=True)
    yield handle, config
    patch.undo()


def test_with_a_deployment_per_network_the_readings_are_those_of_one_process(pipeline_handle) -> None:
    from datasets.readers import read_radiograph
    from models.inference import DentalReader

    handle, config = pipeline_handle
    assert handle.ready.remote().result()
    cases = [generate_case(RadiographKind.PERIAPICAL, 32, i) for i in range(2)] + \
        [generate_case(RadiographKind.BITEWING, 32, 0)]
    files = [(c.image_id, case_dicom_bytes(c), c.kind.value) for c in cases] + [("junk", b"not an image at all", None)]
    pending = [handle.analyze.remote(image_id, data, kind, ReaderLimits()) for image_id, data, kind in files]
    outcomes = [p.result() for p in pending]
    assert max(handle.recent_batch_sizes.remote().result()) == 4  # one batch of reads (the 0.2 s wait)
    assert isinstance(outcomes[3], ImageAnalysisRefused) and outcomes[3].error.code == "image.not_an_image"
    # The same code reading the same batch of decoded files in one process gives the same readings.
    alone = DentalReader.from_directory(SHIPPED_DIR, precision=config.models.precision)
    expected = alone.read_many([(image_id, read_radiograph(data).pixels_unit, RadiographKind(kind))
                                for image_id, data, kind in files[:3]], operating_point=False)
    got = [o.reading for o in outcomes[:3] if isinstance(o, ImageAnalysis)]
    assert all(r.teeth and r.findings for r in got)
    assert got == expected


def test_a_network_deployment_runs_concurrent_requests_as_one_batch_and_answers_each(pipeline_handle) -> None:
    import numpy as np

    from models.inference import LoadedModel
    from serving.service import network_deployment

    _, config = pipeline_handle
    card = get_model_card(ModelKey.ROOT_COUNT)
    handle = serve.run(network_deployment(config, 0, ModelKey.ROOT_COUNT.value).bind(str(SHIPPED_DIR),
                                                                                   ModelKey.ROOT_COUNT.value),
                       name="dxv-network", route_prefix="/network", _local_testing_mode=True)
    rng = np.random.default_rng(5)
    shape = (1, *card.input.crop_hw_px)
    requests = [[rng.random((n, *shape), dtype=np.float32)] for n in (3, 1, 5)]
    pending = [handle.run.remote(batches) for batches in requests]
    answers = [p.result() for p in pending]
    assert handle.recent_batch_sizes.remote().result() == [3]  # the three requests, one run of 9 crops
    alone = LoadedModel.load(SHIPPED_DIR / card.onnx_file, precision=config.models.precision)
    assert handle.version.remote().result() == alone.version
    for batches, answer in zip(requests, answers, strict=True):
        (expected,), (got,) = alone.run(batches)[0], answer[0]
        assert got.shape == expected.shape == (len(batches[0]), len(card.classes))
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_ingress_app_decides_a_claim_through_the_per_network_deployments(pipeline_handle, tmp_path) -> None:
    handle, config = pipeline_handle
    url, key = _demo_store(tmp_path)
    _decides_the_upcoded_root_canal(TestClient(build_ingress_app(handle, config.model_copy(update={"state_url": url}))), key)


def test_a_model_deployment_that_cannot_take_the_request_is_a_503_to_retry(tmp_path) -> None:
    """Back-pressure (a full queue) from the model deployment: the claim is answered 503
    models.unavailable with Retry-After, not 500 (a fault raised where Serve raises it)."""
    from ray.serve.exceptions import BackPressureError

    from serving.image_analysis import ModelsUnavailableError
    from serving.service import HandleReader

    @serve.deployment(name="Overloaded")
    class Overloaded:
        async def analyze(self, image_id: str, data: bytes, kind: str | None, limits) -> None:
            raise BackPressureError(num_queued_requests=9, max_queued_requests=8)

        def ready(self) -> bool:
            return True

    handle = serve.run(Overloaded.bind(), name="dxv-overloaded", route_prefix="/overloaded", _local_testing_mode=True)
    case = generate_case(RadiographKind.PERIAPICAL, 404, 9)
    with pytest.raises(ModelsUnavailableError, match="BackPressureError"):
        HandleReader(handle).analyze([(case.image_id, case_dicom_bytes(case), RadiographKind.PERIAPICAL)], ReaderLimits())
    url, key = _demo_store(tmp_path)
    client = TestClient(build_ingress_app(handle, load_serving_config().model_copy(update={"state_url": url})))
    claim = {"claim_id": "LOCAL-9", "tenant": "demo", "member": {"member_id": "MBR-0001", "birth_date": "1980-05-17"},
             "provider": {"provider_id": "PRV-001"}, "date_of_service": "2026-04-20",
             "lines": [{"line_id": "1", "code": "D0220", "fee": 30}],
             "attachments": [{"radiograph_id": case.image_id, "kind": "periapical",
                              "content": base64.b64encode(case_dicom_bytes(case)).decode()}]}
    answer = client.post("/v1/claims:validate", json=claim, headers={"X-API-Key": key})
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert answer.json()["error"]["code"] == "models.unavailable"


def test_with_the_models_placed_in_the_ingress_it_decides_the_same(tmp_path) -> None:
    config = load_serving_config(overrides=("models.placement=ingress",))
    url, key = _demo_store(tmp_path)
    app = build_ingress_app(str(SHIPPED_DIR), config.model_copy(update={"state_url": url}))
    _decides_the_upcoded_root_canal(TestClient(app), key)
    with pytest.raises(ConfigError, match="placement"):
        load_serving_config(overrides=("models.placement=elsewhere",))


def test_auto_placement_puts_the_models_in_the_ingress_on_a_cpu_and_in_a_deployment_on_a_gpu(monkeypatch) -> None:
    import serving.service as service

    assert load_serving_config().models.placement == "auto"
    for gpu, expected in ((False, "ingress"), (True, "deployment")):
        monkeypatch.setattr(service, "gpu_available", lambda gpu=gpu: gpu)
        assert service.resolved_placement(load_serving_config()) == expected
        # Named explicitly, a placement is kept whatever the machine has.
        for named in ("deployment", "ingress", "pipeline"):
            assert service.resolved_placement(load_serving_config(overrides=(f"models.placement={named}",))) == named


def test_the_precision_setting_is_checked_when_the_config_loads() -> None:
    assert load_serving_config().models.precision == "auto"
    assert load_serving_config(overrides=("models.precision=fp32",)).models.precision == "fp32"
    with pytest.raises(ConfigError, match="precision"):
        load_serving_config(overrides=("models.precision=int4",))


@pytest.mark.parametrize(("value", "threads"), [(None, None), ("", None), (" ", None), ("0", None), ("2", 2), (" 3 ", 3)])
def test_ort_threads_come_from_the_environment(monkeypatch, value, threads) -> None:
    from serving.service import ort_threads_from_environment

    if value is None:
        monkeypatch.delenv("DXV_ORT_THREADS", raising=False)
    else:
        monkeypatch.setenv("DXV_ORT_THREADS", value)
    assert ort_threads_from_environment() == threads


@pytest.mark.parametrize("value", ["two", "-1", "1.5"])
def test_a_bad_ort_threads_value_stops_dxv_serve_before_ray_starts(monkeypatch, value) -> None:
    from serving import service

    monkeypatch.setenv("DXV_ORT_THREADS", value)
    monkeypatch.setattr(service, "serve_environment", lambda *_: pytest.fail("went on to start Ray"))
    with pytest.raises(ConfigError, match="DXV_ORT_THREADS"):
        service.run_service()


def test_serve_environment_sets_the_front_only_for_the_ray_dxv_serve_starts(monkeypatch) -> None:
    from serving.service import serve_environment

    monkeypatch.delenv("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", raising=False)
    monkeypatch.delenv("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", raising=False)
    monkeypatch.delenv("RAY_max_direct_call_object_size", raising=False)
    monkeypatch.delenv("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", raising=False)
    monkeypatch.setenv("RAY_SERVE_METRICS_EXPORT_INTERVAL_MS", "250")
    monkeypatch.setenv("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "90")
    monkeypatch.delenv("RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD", raising=False)
    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    started = serve_environment(load_serving_config(overrides=("models.placement=ingress",)), attaching=False)
    assert started == {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "90",
                       "RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
                       "RAY_max_direct_call_object_size": str(4 * 1024 * 1024),
                       "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5", "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "250",
                       "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_worker_niceness": "0"}
    # A model deployment blocks its event loop while it reads a batch: Serve's default stays.
    with_deployment = serve_environment(load_serving_config(overrides=("models.placement=deployment",)), attaching=False)
    assert "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD" not in with_deployment
    python_proxy = serve_environment(load_serving_config(overrides=("http.front=serve",)), attaching=False)
    assert python_proxy["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    assert "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S" not in python_proxy
    attached = serve_environment(load_serving_config(), attaching=True)
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in attached and "RAY_max_direct_call_object_size" not in attached
    assert "RAY_SERVE_CONTROL_LOOP_INTERVAL_S" not in attached and "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD" not in attached
    assert "RAY_worker_niceness" not in attached  # a cluster's own choice
    monkeypatch.setenv("RAY_worker_niceness", "5")
    assert serve_environment(load_serving_config(), attaching=False)["RAY_worker_niceness"] == "5"


_STUBBORN = """
import os, signal, sys, time
from pathlib import Path
pid = Path(sys.argv[1]); asked = []
signal.signal(signal.SIGINT, lambda *_: asked.append(1))
pid.parent.mkdir(parents=True, exist_ok=True); pid.write_text(str(os.getpid()))
while len(asked) < int(sys.argv[2]):
    time.sleep(0.05)
pid.unlink()
"""


@pytest.mark.parametrize("interrupts_needed", [1, 2])
def test_stop_asks_again_when_the_first_interrupt_is_not_enough(tmp_path, monkeypatch, interrupts_needed) -> None:
    import subprocess
    import sys
    import time

    from serving.service import pid_file, stop_service

    monkeypatch.setenv("DXV_DATA_DIR", str(tmp_path))
    assert stop_service(timeout_s=1) == "not_running"
    # A service whose Serve shutdown hangs after the first Ctrl-C ends at the second.
    process = subprocess.Popen([sys.executable, "-c", _STUBBORN, str(pid_file()), str(interrupts_needed)])
    deadline = time.monotonic() + 30
    while not pid_file().exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stop_service(timeout_s=3) == "stopped"
    assert process.wait(timeout=10) == 0 and not pid_file().exists()


def test_stop_reports_a_service_that_does_not_end(tmp_path, monkeypatch) -> None:
    import subprocess
    import sys
    import time

    from serving.service import pid_file, stop_service

    monkeypatch.setenv("DXV_DATA_DIR", str(tmp_path))
    process = subprocess.Popen([sys.executable, "-c", _STUBBORN, str(pid_file()), "3"])
    try:
        deadline = time.monotonic() + 30
        while not pid_file().exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stop_service(timeout_s=1.5) == "timeout"
    finally:
        process.kill()
        process.wait()
