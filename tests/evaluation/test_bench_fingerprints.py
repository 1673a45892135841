"""The fingerprint benchmark measures what it reports: on a small synthetic set, the same
images altered all match and different images do not, with room between them."""

from __future__ import annotations

import pytest

from evaluation.bench_fingerprints import measure
from models.radiographs import RadiographKind


@pytest.mark.parametrize("kind", [RadiographKind.PERIAPICAL, RadiographKind.BITEWING], ids=lambda k: k.value)
def test_a_small_benchmark_separates_the_same_image_from_different_ones(kind: RadiographKind, capsys) -> None:
    found = measure(kind, n_images=16, n_same=2, n_candidates=8)
    assert found.misses == 0 and found.false_matches == 0
    assert found.lowest_same > found.highest_different
    printed = capsys.readouterr().out
    assert f"{kind.value}: thresholds" in printed and "(120 pairs)" in printed and "misses 0" in printed
