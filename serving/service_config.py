"""The service's one typed config (``configs/serving.yaml``): model sources, tables,
state store, Ray address, HTTP, request limits, batching and autoscaling, webhooks.
Unknown keys are refused; ``--set`` overrides must name existing fields."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, HttpUrl, model_validator

from models.config_loading import FrozenConfig, load_config
from models.model_card import Precision
from models.paths import PROJECT_ROOT
from serving.drift import MonitoringSettings
from serving.review.queue import ReviewPriority

DEFAULT_SERVING_CONFIG = PROJECT_ROOT / "configs" / "serving.yaml"


class ModelSources(FrozenConfig):
    source: Path = Path("models/shipped")
    # model key -> MLflow URI (models:/NAME@alias or models:/NAME/VERSION), pinned at start
    mlflow: dict[str, str] = Field(default_factory=dict)
    # auto: a card's int8 copy where ONNX Runtime runs on the CPU alone, the float file on
    # a GPU; fp32 or int8 to choose (models.inference.Precision).
    precision: Precision = "auto"
    # Where the ONNX Runtime sessions run. "deployment": a model deployment of its own,
    # reached through a Serve handle, batched with @serve.batch and scaled apart from the
    # ingress (GPUs, several nodes). "ingress": inside every ingress replica, read in the
    # request's own thread: no trip between replicas and no second busy process (CPUs).
    # "pipeline": a deployment per network (tooth detector, finding detector, root counter,
    # verifier), each only an ONNX Runtime session batched with @serve.batch, scaled on its
    # own and given a share of the GPU, behind a deployment that decodes the radiographs and
    # does the pre- and post-processing on CPUs (GPU clusters). "auto": the deployment
    # where ONNX Runtime has a GPU, the ingress where it runs on the CPU alone (README,
    # "The service under load": on 2 cores the ingress took 7-22 ms off a claim's
    # overhead, with as many images/s under load).
    placement: Literal["auto", "deployment", "ingress", "pipeline"] = "auto"
    # The CPUs each network deployment's replica reserves in Ray (placement: pipeline). On
    # a GPU its work is the GPU's; where the networks run on CPUs they share the node's
    # cores with everything else whatever is reserved (0 lets the layout start on 2 cores).
    network_cpus: float = Field(0.5, ge=0)
    # Requests each ingress replica has at the models at once (claims, FHIR claims, analyses,
    # appeals; the others wait their turn, up to limits.max_waiting_requests). None: 4 where
    # the models read in the ingress (two cores shared), 32 where they have a deployment of
    # their own (its batches need requests in flight).
    reads_at_once: int | None = Field(None, ge=1)

    def resolved_reads_at_once(self, models_in_ingress: bool) -> int:
        if self.reads_at_once is not None:
            return self.reads_at_once
        return 4 if models_in_ingress else 32


class TablePaths(FrozenConfig):
    catalogue: Path = Path("configs/procedures/catalogue.yaml")
    evidence_matrix: Path = Path("configs/validation/evidence-matrix.yaml")
    thresholds: Path = Path("configs/validation/thresholds.yaml")
    rules: Path = Path("configs/rules")
    plans: Path = Path("configs/plans")


class HttpSettings(FrozenConfig):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # What listens on the port. "haproxy": Ray Serve's HAProxy mode (HAProxy, which ships
    # with ray[serve], forwards each request straight to an ingress replica's own HTTP
    # server), one Python process hop fewer than "serve", Serve's Python proxy actor.
    # Applies to the Ray that `dxv serve` starts; an existing cluster keeps its own setting.
    front: Literal["haproxy", "serve"] = "haproxy"


class TenantRate(FrozenConfig):
    """The radiographs a tenant may send each ingress replica: ``burst`` at once, refilled
    at ``images_per_s`` (a token bucket; a request without radiographs counts as one)."""

    images_per_s: float = Field(gt=0)
    burst: int = Field(ge=1)


class RequestLimits(FrozenConfig):
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_images: int = Field(8, ge=1)
    max_pixels_per_image: int = Field(25_000_000, ge=1)
    # Requests an ingress replica keeps waiting for the models (models.reads_at_once are
    # read at once); one more is refused at once, 503 models.busy with Retry-After, instead
    # of waiting without end behind a backlog the two-second budget cannot hold.
    max_waiting_requests: int = Field(24, ge=0)
    # Every tenant's rate (None: none), and tenants with a rate of their own.
    tenant_rate: TenantRate | None = None
    tenant_rates: dict[str, TenantRate] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _a_full_request_can_pass(self) -> RequestLimits:
        rates = {"tenant_rate": self.tenant_rate} if self.tenant_rate else {}
        rates.update({f"tenant_rates.{name}": rate for name, rate in self.tenant_rates.items()})
        for where, rate in rates.items():
            if rate.burst < self.max_images:
                raise ValueError(f"{where}.burst is {rate.burst}, fewer than max_images ({self.max_images}): a request "
                                 "with that many radiographs could never pass")
        return self


class Batching(FrozenConfig):
    max_batch_size: int = Field(8, ge=1)
    # 0: a batch is whatever is queued when the replica is free. A wait for more requests
    # costs every lone request that long, and the replica reads a batch's images one by
    # one, so waiting gains nothing.
    batch_wait_timeout_s: float = Field(0.0, ge=0)


class Autoscaling(FrozenConfig):
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(4, gt=0)


class Webhook(FrozenConfig):
    url: HttpUrl
    tenant: str | None = None  # None: every tenant's decisions
    secret_env: str  # the environment variable holding the signing secret (never in the file)


class ReviewSettings(FrozenConfig):
    priority: ReviewPriority = ReviewPriority()


class ServingConfig(FrozenConfig):
    models: ModelSources = ModelSources()
    tables: TablePaths = TablePaths()
    state_url: str | None = None
    ray_address: str | None = None
    # Serve's per-request access lines; off, replicas log warnings and errors only (the
    # Prometheus metrics count every request by route and status).
    access_log: bool = False
    http: HttpSettings = HttpSettings()
    limits: RequestLimits = RequestLimits()
    batching: Batching = Batching()
    autoscaling: Autoscaling = Autoscaling()
    webhooks: tuple[Webhook, ...] = ()
    review: ReviewSettings = ReviewSettings()
    thresholds_refresh_s: float = Field(10.0, gt=0)  # how soon a promoted thresholds version reaches a replica
    monitoring: MonitoringSettings = MonitoringSettings()

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else PROJECT_ROOT / path


def load_serving_config(path: str | Path = DEFAULT_SERVING_CONFIG, overrides: tuple[str, ...] = ()) -> ServingConfig:
    return load_config(ServingConfig, path, overrides)
