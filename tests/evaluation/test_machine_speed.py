"""The reference workload printed with the benchmarks computes the same thing every time
(its time is comparable only while its work is unchanged) and is timed in milliseconds."""

from __future__ import annotations

import pytest

from evaluation import machine_speed


def test_the_reference_workload_computes_its_fixed_result() -> None:
    assert machine_speed._workload() == machine_speed.CHECKSUM


def test_the_reference_is_a_positive_time_and_refuses_a_changed_workload(monkeypatch) -> None:
    assert 0.0 < machine_speed.reference_ms(repeats=1) < 60_000
    monkeypatch.setattr(machine_speed, "CHECKSUM", "0" * 16)
    with pytest.raises(RuntimeError, match="reference workload changed"):
        machine_speed.reference_ms(repeats=1)
