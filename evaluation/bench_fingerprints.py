"""How well the recycled-radiograph fingerprints separate the same image sent again from
different images of a kind, and what a comparison costs (``make bench-fingerprints``).

For each radiograph kind: synthetic radiographs from two generator seeds. *Same*: each of
the first ``--same`` images against itself altered in every way a re-sent image is
(``datasets.synth.alterations``); *different*: every pair of the ``--images`` images. It
prints, per kind, the lowest same-image scores (misses: below the kind's match threshold),
the highest different-image scores (false matches: at or above it), the share of different
pairs that pass the quick gate (each costs a full comparison), the most alike different
pairs (the regression cases of ``tests/serving/test_fingerprints.py``) and the time of one
query against ``--candidates`` stored radiographs.

    python -m evaluation.bench_fingerprints [--images 200] [--same 20] [--kinds periapical bitewing panoramic]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from datasets.synth.alterations import ALTERATIONS, MORE_ALTERATIONS
from datasets.synth.generator import generate_case
from models.radiographs import RadiographKind
from serving.fingerprints import Candidates, Fingerprint, fingerprint, similarities, thresholds_for

SEEDS = (808, 21)


@dataclass(frozen=True)
class Separation:
    lowest_same: float
    highest_different: float
    misses: int  # the same image altered, scored below the kind's match threshold
    false_matches: int  # different images at or above it


def measure(kind: RadiographKind, n_images: int, n_same: int, n_candidates: int) -> Separation:
    limits = thresholds_for(kind.value)
    names = [(seed, i) for seed in SEEDS for i in range(n_images // len(SEEDS))]
    pixels = [generate_case(kind, seed, i).pixels_unit for seed, i in names]
    prints = [fingerprint(p) for p in pixels]
    same: list[tuple[float, str, tuple[int, int]]] = []
    for name, image, original in list(zip(names, pixels, prints, strict=True))[:n_same]:
        for alteration, alter in {**ALTERATIONS, **MORE_ALTERATIONS}.items():
            score = float(similarities(fingerprint(alter(image)), [original], kind.value)[0])
            same.append((score, alteration, name))
    different: list[tuple[float, tuple[int, int], tuple[int, int]]] = []
    gated = 0
    for i in range(1, len(prints)):
        scores = similarities(prints[i], prints[:i], kind.value)
        gated += int((scores >= limits.gate).sum())
        different += [(float(s), names[i], names[j]) for j, s in enumerate(scores)]
    same_scores = [s for s, _, _ in same]
    different_scores = [s for s, _, _ in different]
    misses = [x for x in same if x[0] < limits.match]
    false_matches = [x for x in different if x[0] >= limits.match]
    print(f"{kind.value}: thresholds gate {limits.gate:.3f}, match {limits.match:.3f}")
    print(f"  same image altered ({len(same)} pairs, {len(ALTERATIONS) + len(MORE_ALTERATIONS)} alterations): "
          f"lowest {min(same_scores):.3f}, 1st percentile {np.quantile(same_scores, 0.01):.3f}; misses {len(misses)}")
    for score, alteration, (seed, i) in sorted(same)[:3]:
        print(f"    {score:.3f}  seed {seed} image {i}, {alteration}")
    print(f"  different images ({len(different):,} pairs): highest {max(different_scores):.3f}, "
          f"99.9th percentile {np.quantile(different_scores, 0.999):.3f}; past the gate {gated / len(different):.2%}; "
          f"false matches {len(false_matches)}")
    for score, (seed_a, a), (seed_b, b) in sorted(different, reverse=True)[:3]:
        print(f"    {score:.3f}  seed {seed_a} image {a} ~ seed {seed_b} image {b}")
    pool: list[Fingerprint] = prints[:n_candidates]
    queries = prints[n_candidates:n_candidates + 20] or prints[:20]
    # As the service does: the stored radiographs' templates once per claim, then each query.
    start = time.perf_counter()
    prepared = Candidates.of(pool)
    prepare_s = time.perf_counter() - start
    start = time.perf_counter()
    for query in queries:
        similarities(query, prepared, kind.value)
    print(f"  one query against {len(pool)} stored radiographs: {(time.perf_counter() - start) / len(queries) * 1000:.1f} ms "
          f"(mean of {len(queries)}), after preparing their templates once per claim: {prepare_s * 1000:.1f} ms")
    return Separation(min(same_scores), max(different_scores), len(misses), len(false_matches))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="different images per kind (from two seeds)")
    parser.add_argument("--same", type=int, default=20, help="images altered per kind")
    parser.add_argument("--candidates", type=int, default=40, help="stored radiographs per timed query")
    parser.add_argument("--kinds", nargs="+", default=[k.value for k in RadiographKind])
    args = parser.parse_args()
    for kind in args.kinds:
        measure(RadiographKind(kind), args.images, args.same, args.candidates)


if __name__ == "__main__":
    main()
