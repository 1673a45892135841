"""Per-tenant rate limits: the token bucket at its boundaries, tenants apart, the config
refusing a burst no full request fits in."""

from __future__ import annotations

import pytest

from models.config_loading import ConfigError
from serving.rate_limits import Bucket, RateLimitedError, TenantBudgets, retry_after_header, take
from serving.service_config import TenantRate, load_serving_config

RATE = TenantRate(images_per_s=2.0, burst=4)


def test_a_full_bucket_gives_its_burst_then_refills_at_the_rate() -> None:
    bucket, wait = take(Bucket(4.0, 0.0), RATE, 4, now_s=0.0)
    assert (bucket.tokens, wait) == (0.0, 0.0)
    bucket, wait = take(bucket, RATE, 1, now_s=0.0)
    assert bucket.tokens == 0.0 and wait == pytest.approx(0.5)  # one radiograph at 2 a second
    bucket, wait = take(bucket, RATE, 1, now_s=0.49)
    assert wait == pytest.approx(0.01)  # not yet: 0.98 of a token
    bucket, wait = take(bucket, RATE, 1, now_s=0.5)
    assert wait == 0.0 and bucket.tokens == pytest.approx(0.0)
    bucket, _ = take(bucket, RATE, 0, now_s=100.0)
    assert bucket.tokens == 4.0  # never more than the burst


def test_budgets_are_per_tenant_and_a_refusal_takes_nothing() -> None:
    now = [0.0]
    budgets = TenantBudgets(RATE, {"big": TenantRate(images_per_s=10, burst=8)}, clock=lambda: now[0])
    budgets.charge("a", 3)
    with pytest.raises(RateLimitedError) as refused:
        budgets.charge("a", 2)  # one left
    assert refused.value.code == "rate.limited" and refused.value.retry_after_s == pytest.approx(0.5)
    assert retry_after_header(refused.value.retry_after_s) == "1"
    budgets.charge("a", 1)  # the refusal took nothing: the one left is still there
    budgets.charge("b", 4)  # another tenant has its own bucket
    budgets.charge("big", 8)  # and a tenant with a rate of its own, its own burst
    with pytest.raises(RateLimitedError):
        budgets.charge("a", 0)  # a request without radiographs counts as one
    now[0] = 0.5
    budgets.charge("a", 1)


def test_without_a_rate_nothing_is_counted() -> None:
    budgets = TenantBudgets(None, {"limited": RATE})
    for _ in range(100):
        budgets.charge("free", 8)
    with pytest.raises(RateLimitedError):
        for _ in range(5):
            budgets.charge("limited", 1)


def test_a_burst_smaller_than_a_full_request_is_refused_in_the_config() -> None:
    with pytest.raises(ConfigError, match="fewer than max_images"):
        load_serving_config(overrides=("limits.max_images=8", "limits.tenant_rate={images_per_s: 1, burst: 4}"))
    with pytest.raises(ConfigError, match=r"tenant_rates\.t1\.burst"):
        load_serving_config(overrides=("limits.tenant_rates={t1: {images_per_s: 1, burst: 2}}",))
    config = load_serving_config(overrides=("limits.tenant_rate={images_per_s: 0.5, burst: 8}",))
    assert config.limits.tenant_rate == TenantRate(images_per_s=0.5, burst=8)
