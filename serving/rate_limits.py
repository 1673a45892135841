"""Per-tenant rate limits at the ingress (``limits.tenant_rate`` / ``tenant_rates``): one
tenant's burst of radiographs must not take the models from every other tenant. A token
bucket per tenant, in radiographs (the models' work), held by each ingress replica (with
N replicas a tenant gets up to N times the rate: the buckets are not shared, so no store
round trip is added to every request). A request past its tenant's budget is refused
before any model runs: HTTP 429 ``rate.limited`` with ``Retry-After``."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from models.errors import DxvError
from serving.service_config import TenantRate


class RateLimitedError(DxvError):
    """The tenant has sent more radiographs than its rate allows just now (HTTP 429)."""

    code = "rate.limited"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Bucket:
    tokens: float
    at_s: float  # the clock when ``tokens`` was counted


def take(bucket: Bucket, rate: TenantRate, cost: int, now_s: float) -> tuple[Bucket, float]:
    """The bucket after taking ``cost`` at ``now_s``, and 0.0; or, where there is not
    enough, the bucket refilled to now and the seconds until there will be (pure)."""
    tokens = min(float(rate.burst), bucket.tokens + max(now_s - bucket.at_s, 0.0) * rate.images_per_s)
    if tokens >= cost:
        return Bucket(tokens - cost, now_s), 0.0
    return Bucket(tokens, now_s), (cost - tokens) / rate.images_per_s


class TenantBudgets:
    """The buckets of this replica's tenants (full at first use); thread-safe."""

    def __init__(self, default: TenantRate | None, per_tenant: Mapping[str, TenantRate],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.default, self.per_tenant, self.clock = default, dict(per_tenant), clock
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def charge(self, tenant: str, images: int) -> None:
        """Take a request of ``images`` radiographs from the tenant's budget, or raise
        ``RateLimitedError`` (nothing is taken then)."""
        rate = self.per_tenant.get(tenant, self.default)
        if rate is None:
            return
        cost = max(images, 1)
        with self._lock:
            now = self.clock()
            bucket, wait_s = take(self._buckets.get(tenant, Bucket(float(rate.burst), now)), rate, cost, now)
            self._buckets[tenant] = bucket
        if wait_s > 0:
            raise RateLimitedError(f"this tenant may send {rate.images_per_s:g} radiographs a second (bursts of "
                                   f"{rate.burst}); this request of {cost} can be sent in {wait_s:.1f} s",
                                   retry_after_s=wait_s)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up (at least 1)."""
    return str(max(1, math.ceil(seconds)))
