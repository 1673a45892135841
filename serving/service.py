"""The Ray Serve application: a FastAPI ingress (``serving.api.app``) and a model
deployment holding the ONNX Runtime sessions (CUDA provider and a GPU when there is one,
CPU otherwise), with ``@serve.batch`` on the image reads (batch size and wait set through
``user_config``) and autoscaling from ``configs/serving.yaml``.

``dxv serve`` starts a local Ray on 127.0.0.1 (or attaches to ``--address``), runs the
application and stays in the foreground until Ctrl-C or ``dxv serve --stop``, then shuts
Serve and Ray down."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from models.config_loading import ConfigError
from models.paths import data_dir
from models.radiographs import RadiographKind
from serving.service_config import DEFAULT_SERVING_CONFIG, ServingConfig, load_serving_config

APP_NAME = "dxv"
MODEL_DEPLOYMENT = "ModelDeployment"
NETWORK_DEPLOYMENT_PREFIX = "Network-"  # + the model's key, e.g. Network-tooth-numbering


def pid_file() -> Path:
    return data_dir() / "serve" / "serve.pid"


def gpu_available() -> bool:
    try:
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        return False


def resolved_placement(config: ServingConfig) -> str:
    """Where the models run, ``models.placement`` with "auto" settled: their own deployment
    where ONNX Runtime has a GPU (batches across requests fill it), the ingress where it
    has the CPU alone (a hop between replicas and a second busy process only cost there)."""
    if config.models.placement != "auto":
        return config.models.placement
    return "deployment" if gpu_available() else "ingress"


# Requests an ingress replica takes in beside the claims at the models or waiting for them:
# probes, metrics, reads of decisions, the review workbench.
INGRESS_MARGIN = 32

# With each network in a deployment of its own, the reads a decoding replica has waiting on
# them at once: its work is mostly waiting, and the networks batch what arrives together.
READS_IN_FLIGHT = 4


def _batched_deployment_options(config: ServingConfig) -> dict[str, Any]:
    """Replicas scaled from the config, ``@serve.batch`` size and wait set through
    ``user_config``, and enough requests in flight per replica for a full batch to form."""
    return {"max_ongoing_requests": max(2 * config.batching.max_batch_size, 16),
            "autoscaling_config": {"min_replicas": config.autoscaling.min_replicas,
                                   "max_replicas": config.autoscaling.max_replicas,
                                   "target_ongoing_requests": config.autoscaling.target_ongoing_requests},
            "user_config": {"max_batch_size": config.batching.max_batch_size,
                            "batch_wait_timeout_s": config.batching.batch_wait_timeout_s}}


def _set_batching(batched: Any, user_config: dict[str, Any]) -> None:
    batched.set_max_batch_size(int(user_config["max_batch_size"]))  # serve.batch adds the setters
    batched.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))


def model_deployment(config: ServingConfig, networks_apart: bool = False) -> Any:
    """The deployment that decodes and reads radiographs, with ``@serve.batch`` on reads:
    holding the ONNX Runtime sessions (``placement: deployment``), or, with
    ``networks_apart`` (``placement: pipeline``), the pre- and post-processing alone, each
    network in a deployment of its own (``network_deployment``) whose handles it is given."""
    from ray import serve

    from serving.image_analysis import analyze_files

    gpu = gpu_available() and not networks_apart

    @serve.deployment(name=MODEL_DEPLOYMENT, ray_actor_options={"num_gpus": 1 if gpu else 0},
                      **_batched_deployment_options(config))
    class ModelDeployment:
        def __init__(self, model_dir: str, networks: dict[str, Any] | None = None) -> None:
            from models.inference import DentalReader
            from models.model_card import read_card
            from serving.networks import RemoteNetwork

            self.remote = [RemoteNetwork(read_card(Path(model_dir) / f"{key}.card.json"), handle)
                           for key, handle in (networks or {}).items()]
            # The root counter is waited for beside the finding detector (one thread per read in flight).
            self.models = DentalReader.from_networks(self.remote, ThreadPoolExecutor(READS_IN_FLIGHT)) if networks \
                else local_models(model_dir, config)
            self.batch_sizes: list[int] = []  # the sizes of the last batches (for tests and diagnostics)

        def reconfigure(self, user_config: dict[str, Any]) -> None:
            _set_batching(self.analyze_batch, user_config)

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01,
                     max_concurrent_batches=READS_IN_FLIGHT if networks_apart else 1)
        async def analyze_batch(self, requests: list[tuple[str, bytes, str | None, Any]]) -> list[Any]:
            self.batch_sizes = [*self.batch_sizes[-63:], len(requests)]
            files = [(image_id, data, RadiographKind(kind) if kind else None, limits)
                     for image_id, data, kind, limits in requests]
            if self.remote:  # the networks are waited for in a worker thread, never on this loop
                return await asyncio.to_thread(analyze_files, self.models, files)
            return analyze_files(self.models, files)

        async def analyze(self, image_id: str, data: bytes, kind: str | None, limits: Any) -> Any:
            """The file as received: decoded, fingerprinted and read here, so only its bytes
            travel (an ``ImageAnalysis``, or ``ImageAnalysisRefused`` for a bad file)."""
            return await self.analyze_batch((image_id, data, kind, limits))

        def ready(self) -> bool:
            if self.remote:
                return all(network.answers() for network in self.remote)
            return bool(self.models.ready())

        def recent_batch_sizes(self) -> list[int]:
            return list(self.batch_sizes)

    return ModelDeployment


def network_deployment(config: ServingConfig, gpu_share: float, key: str) -> Any:
    """The deployment of the network ``key`` (``placement: pipeline``), named
    ``Network-<key>``: an ONNX Runtime session and nothing else, ``@serve.batch`` on its runs
    (the input batches of every request in a batch go through the network together, in
    runs of one input shape), scaled on its own, with ``gpu_share`` of a GPU where there is
    one (the networks of a model folder share one). A class of its own for each network:
    ``@serve.batch`` keeps one queue per decorated method, shared by every instance in a
    process, so two networks of one class in one process (local testing mode) would have
    their requests batched together."""
    from ray import serve

    @serve.deployment(name=f"{NETWORK_DEPLOYMENT_PREFIX}{key}",
                      ray_actor_options={"num_gpus": gpu_share, "num_cpus": config.models.network_cpus},
                      **_batched_deployment_options(config))
    class NetworkDeployment:
        def __init__(self, model_dir: str, key: str) -> None:
            from models.inference import LoadedModel, precision_for
            from models.model_card import read_card

            card = read_card(Path(model_dir) / f"{key}.card.json")
            precision = precision_for(config.models.precision, card.int8 is not None)
            self.network = LoadedModel.load(Path(model_dir) / card.onnx_file, precision=precision,
                                            threads=None if gpu_available() else ort_threads_from_environment())
            self.batch_sizes: list[int] = []

        def reconfigure(self, user_config: dict[str, Any]) -> None:
            _set_batching(self.run_batch, user_config)

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
        async def run_batch(self, requests: list[list[np.ndarray]]) -> list[list[list[np.ndarray]]]:
            from serving.networks import split_outputs

            self.batch_sizes = [*self.batch_sizes[-63:], len(requests)]
            # In a worker thread: this replica's loop keeps taking requests in for the next batch.
            outputs = await asyncio.to_thread(self.network.run, [batch for batches in requests for batch in batches])
            return split_outputs(requests, outputs)

        async def run(self, batches: list[np.ndarray]) -> list[list[np.ndarray]]:
            return await self.run_batch(batches)

        def version(self) -> str:
            return self.network.version

        def recent_batch_sizes(self) -> list[int]:
            return list(self.batch_sizes)

    return NetworkDeployment


def ort_threads_from_environment() -> int | None:
    """$DXV_ORT_THREADS as ONNX Runtime's threads per session on a CPU; unset, empty or 0:
    ONNX Runtime's default. Checked by ``dxv serve`` before Ray starts, so that a bad value
    is a clear error there instead of model replicas that fail to start."""
    text = os.environ.get("DXV_ORT_THREADS", "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise ConfigError(f"DXV_ORT_THREADS must be a whole number of threads (0: ONNX Runtime's default), got {text!r}")
    return int(text) or None


def local_models(model_dir: str, config: ServingConfig) -> Any:
    """The ONNX Runtime sessions of a model replica, or of an ingress replica with
    ``models.placement: ingress`` (CUDA where there is a GPU; on a CPU, $DXV_ORT_THREADS
    threads each, or ONNX Runtime's default)."""
    from models.inference import DentalReader

    threads = None if gpu_available() else ort_threads_from_environment()
    return DentalReader.from_directory(model_dir, threads=threads, precision=config.models.precision)


class HandleReader:
    """The API's reader (``serving.api.app.Reader``) through a Serve handle to the model
    deployment. A deployment that cannot take the request (its queue full, a replica gone,
    failed to deploy) is ``ModelsUnavailableError``, a 503 to retry, not a failure of the
    request; anything else it raises stays what it is."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def analyze(self, files: list[tuple[str, bytes, RadiographKind | None]], limits: Any, on_printed: Any = None
                ) -> list[Any]:
        """``on_printed`` is never called: the fingerprints come back with the readings (the
        files are decoded where the models are), and the caller does that work after."""
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

        from serving.image_analysis import ModelsUnavailableError, raise_if_refused

        # All sent before any is awaited: the replica takes them as one batch.
        pending = [self.handle.analyze.remote(image_id, data, kind.value if kind else None, limits)
                   for image_id, data, kind in files]
        try:
            outcomes = [p.result() for p in pending]
        except (BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError, RayActorError) as exc:
            raise ModelsUnavailableError(f"the models cannot take the request just now ({type(exc).__name__}); "
                                         "retry") from exc
        return [raise_if_refused(o) for o in outcomes]

    def ready(self) -> bool:
        try:
            return bool(self.handle.ready.remote().result(timeout_s=5))
        except Exception:  # a replica still starting is simply not ready
            return False


def build_ingress_app(models: Any, config: ServingConfig) -> Any:
    """The FastAPI app of an ingress replica: the API (``serving.api.app``) reading images
    through ``models``: a handle to the model deployment, or the folder of the models it
    loads itself (``models.placement: ingress``)."""
    from serving.adjudication import RuleTables
    from serving.api.app import ModelReader, create_app
    from serving.runtime import limit_blas_threads, tune_gc
    from serving.store.database import Store

    reader: Any = ModelReader(local_models(models, config)) if isinstance(models, str) else HandleReader(models)
    store = Store.open(config.state_url, checkpoint_in_background=True)
    if config.webhooks:
        import threading

        from serving.outbox import deliver_due

        def deliver_forever() -> None:  # the outbox worker of this replica
            while True:
                try:
                    deliver_due(store, dt.datetime.now(dt.UTC).replace(tzinfo=None))
                except Exception as exc:  # keep delivering; the next round retries
                    logging.getLogger("dxv.outbox").warning("outbox round failed: %s", type(exc).__name__)
                time.sleep(2.0)

        threading.Thread(target=deliver_forever, name="outbox", daemon=True).start()
    app = create_app(reader=reader, store=store, tables=RuleTables.from_config(config), config=config,
                     reads_at_once=config.models.resolved_reads_at_once(models_in_ingress=isinstance(models, str)))
    tune_gc()  # after start-up: the tables and modules are frozen out of the collector's reach
    limit_blas_threads()
    return app


def build_application(config: ServingConfig) -> Any:
    """The Serve application, bound and ready for serve.run: the ingress, and by
    ``models.placement`` the model deployment (``deployment``), or the decoding deployment
    and one deployment per network (``pipeline``), or nothing more (``ingress``)."""
    from ray import serve

    from models.model_card import ModelKey
    from serving.model_sources import resolve_model_dir

    placement = resolved_placement(config)
    in_ingress = placement == "ingress"
    options = {"num_gpus": 1} if in_ingress and gpu_available() else {}

    # Every request goes into the app at once (Serve's default lets 5 in and queues the rest
    # before the app, probes behind claims): the app keeps the claims' turns at the models
    # itself (serving.api.turns) and answers the rest straight away. The margin is for
    # probes, metrics and reads; past it Serve queues again.
    reads = config.models.resolved_reads_at_once(models_in_ingress=in_ingress)
    max_ongoing = reads + config.limits.max_waiting_requests + INGRESS_MARGIN

    @serve.deployment(name="Ingress", max_ongoing_requests=max_ongoing,
                      autoscaling_config={"min_replicas": 1, "max_replicas": config.autoscaling.max_replicas,
                                          "target_ongoing_requests": config.autoscaling.target_ongoing_requests},
                      ray_actor_options=options)
    @serve.ingress()
    class Ingress:
        def __init__(self, models: Any) -> None:
            self.models = models  # the model deployment's handle, bound by Serve; or the models' folder

        def __serve_build_asgi_app__(self) -> Any:  # called by Serve after __init__
            return build_ingress_app(self.models, config)

    model_dir, pins = resolve_model_dir(config)  # registry aliases pinned to versions, once, here
    for pin in pins:
        logging.getLogger("dxv.serve").warning("model %s: %s pinned to %s version %s", pin.key.value, pin.reference,
                                               pin.name, pin.version)
    ingress: Any = Ingress
    if in_ingress:
        return ingress.bind(str(model_dir))
    if placement == "pipeline":
        keys = [key.value for key in ModelKey if (Path(model_dir) / f"{key.value}.card.json").exists()]
        share = round(1.0 / len(keys), 3) if gpu_available() and keys else 0
        networks = {key: network_deployment(config, share, key).bind(str(model_dir), key) for key in keys}
        return ingress.bind(model_deployment(config, networks_apart=True).bind(str(model_dir), networks))
    return ingress.bind(model_deployment(config).bind(str(model_dir)))


def serve_environment(config: ServingConfig, attaching: bool) -> dict[str, str]:
    """Ray Serve settings for ``dxv serve``: patience for the proxy's readiness check,
    which must answer within 5 s by default (too tight on a small, busy machine: 2 cores,
    models loading), so 60 s unless the environment says otherwise; and, for the Ray it
    starts itself, the front on the HTTP port (``http.front``), radiographs passed in the
    call, Serve's background loops slowed and, with the models in the ingress, its handlers
    on the replica's own event loop. A cluster it attaches to keeps the settings
    it was started with; the environment overrides any of them."""
    settings = {name: os.environ.get(name, "60") for name in
                ("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S")}
    if not attaching:
        # A radiograph (a periapical DICOM is about 650 KB) goes to the model replica inside
        # the call itself rather than through the object store, Ray's way above 100 KB:
        # about 5 ms less per one-image claim here (README, "The service under load").
        name = "RAY_max_direct_call_object_size"
        settings[name] = os.environ.get(name, str(4 * 1024 * 1024))
        # Serve's background work, slowed: the controller reconciles every 0.5 s instead of
        # 0.1 s and Serve's own metrics reach Ray's every second instead of every 0.1 s (the
        # service's /metrics are its own). An idle service took 12.4 % of a core in Ray's
        # processes, 8.5 % with these; background load on 2 cores slows the models' parallel
        # operators by more than its share (README, "The service under load").
        for name, value in (("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.5"), ("RAY_SERVE_METRICS_EXPORT_INTERVAL_MS", "1000")):
            settings[name] = os.environ.get(name, value)
        # Ray starts its workers (here: the replicas, whose threads run the models) at nice 15,
        # so that a cluster's data jobs leave CPU to its own daemons; on a serving node the
        # replicas are the work, and at 15 any other process of the machine at 0 (Ray's own
        # daemons, a log shipper, a database) takes a core from the models the moment it
        # wakes. Alternating runs on 2 cores: the models took 2-6 ms longer in the service than
        # in one process at 0, 6-18 ms at 15 (README, "The service under load", session 25).
        name = "RAY_worker_niceness"
        settings[name] = os.environ.get(name, "0")
        if resolved_placement(config) == "ingress":
            # The ingress's handlers on the replica's own event loop rather than a second loop in
            # a thread of their own: every message of a request (a radiograph's body comes in
            # chunks) then stays on one loop. Measured with the models in the ingress, paired
            # runs: 26-27 / 29-31 ms overhead for one / two periapicals against 31-34 / 33-38.
            # Safe here because the handlers never block that loop for long (the models and the
            # store run in the thread pool); a model deployment's batch method does block it, so
            # with one the default (a thread of their own) stays.
            name = "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"
            settings[name] = os.environ.get(name, "0")
        haproxy = config.http.front == "haproxy"
        settings["RAY_SERVE_ENABLE_HA_PROXY"] = "1" if haproxy else "0"
        if haproxy:
            # An ingress replica that stops stays open this long so that load balancers can
            # drop it first: 30 s by default, which every `dxv serve --stop` would wait out.
            # The HAProxy in front here is reconfigured within about 0.1 s.
            name = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
            settings[name] = os.environ.get(name, "2")
    return settings


def run_service(config_path: Path = DEFAULT_SERVING_CONFIG, overrides: tuple[str, ...] = (), address: str | None = None,
                on_ready: Any = None) -> None:
    config = load_serving_config(config_path, overrides)
    ort_threads_from_environment()  # a bad value stops here, before Ray starts
    address = address or config.ray_address
    # Before Ray is imported: Serve reads these when its modules load, in this process and
    # in the Ray processes started from it.
    settings = serve_environment(config, attaching=bool(address))
    os.environ.update(settings)
    import ray
    from ray import serve

    application = build_application(config)
    runtime_env = {"env_vars": settings}
    if address:
        ray.init(address=address, logging_level=logging.WARNING, runtime_env=runtime_env)
    else:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, _node_ip_address="127.0.0.1",
                 runtime_env=runtime_env)
    # Ctrl-C, `dxv serve --stop` (SIGINT) and a process manager's SIGTERM all end the service,
    # even where it was started with SIGINT ignored (a background job of a script, nohup),
    # which Python would otherwise leave ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    pid = pid_file()
    pid.parent.mkdir(parents=True, exist_ok=True)
    pid.write_text(str(os.getpid()))  # from here on `dxv serve --stop` reaches this process, starting or serving
    try:
        logs = {"enable_access_log": config.access_log, "log_level": "INFO" if config.access_log else "WARNING"}
        serve.start(http_options={"host": config.http.host, "port": config.http.port}, logging_config=logs)
        serve.run(application, name=APP_NAME, route_prefix="/", blocking=False, logging_config=logs)
        if on_ready:
            on_ready(config)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        try:
            serve.shutdown()
        except KeyboardInterrupt:  # a second stop: Serve's graceful shutdown is cut short, Ray still goes down
            logging.getLogger("dxv.serve").warning("Serve's shutdown interrupted; shutting Ray down")
        finally:
            ray.shutdown()
            pid.unlink(missing_ok=True)  # last: `dxv serve --stop` waits for it to go


def _gone(pid: Path, number: int, timeout_s: float) -> bool:
    """Whether the service process has ended (or removed its pid file) within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid.exists():  # removed once Serve and Ray are down
            return True
        try:
            os.kill(number, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


def stop_service(timeout_s: float = 180.0) -> str:
    """Ask the running ``dxv serve`` (found by its pid file) to shut down and wait for it:
    "stopped", "not_running" (no pid file, or no such process) or "timeout". Serve's
    graceful shutdown can hang on a busy machine (its controller's shutdown task retried
    without end), so after two thirds of the time a second interrupt cuts it short; the
    service then shuts Ray down all the same."""
    pid = pid_file()
    if not pid.exists():
        return "not_running"
    number = int(pid.read_text().strip())
    try:
        os.kill(number, signal.SIGINT)
    except ProcessLookupError:
        pid.unlink(missing_ok=True)
        return "not_running"
    if _gone(pid, number, timeout_s * 2 / 3):
        return "stopped"
    try:
        os.kill(number, signal.SIGINT)
    except ProcessLookupError:
        return "stopped"
    return "stopped" if _gone(pid, number, timeout_s / 3) else "timeout"


__all__ = ["ServingConfig", "build_application", "run_service", "stop_service"]
