"""Benchmark: synthetic radiographs per second on one core (target: >= 20 periapical and
>= 2 panoramic images per second at the default scale).

Prints render-only speed (what on-the-fly training data needs) and the speed including
the DICOM and PNG encoding that ``dxv synth`` writes."""

from __future__ import annotations

import argparse
import os
import time

from datasets.synth.config import SynthConfig
from datasets.synth.generator import case_dicom_bytes, generate_case, png_bytes
from models.radiographs import RadiographKind

TARGETS: dict[RadiographKind, float | None] = {
    RadiographKind.PERIAPICAL: 20.0, RadiographKind.BITEWING: None, RadiographKind.PANORAMIC: 2.0}


def measure(kind: RadiographKind, n: int, encode: bool, config: SynthConfig) -> float:
    generate_case(kind, 999, 0, config)  # warm-up: imports and caches
    start = time.perf_counter()
    for index in range(n):
        case = generate_case(kind, 1, index, config)
        if encode:
            case_dicom_bytes(case)
            png_bytes(case)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--scale", type=float, default=SynthConfig().scale)
    args = parser.parse_args()
    # One core, as the target is stated: keep numpy/scipy from using more threads.
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    config = SynthConfig(scale=args.scale)
    print(f"synthetic generator, one core, scale {args.scale}")
    print(f"{'kind':<11} {'render/s':>9} {'+encode/s':>10} {'target/s':>9}  ok")
    for kind, target in TARGETS.items():
        n = args.n if kind is not RadiographKind.PANORAMIC else max(4, args.n // 4)
        render = measure(kind, n, False, config)
        encoded = measure(kind, n, True, config)
        verdict = "-" if target is None else ("yes" if render >= target else "NO")
        target_text = "-" if target is None else f"{target:.1f}"
        print(f"{kind.value:<11} {render:9.1f} {encoded:10.1f} {target_text:>9}  {verdict}")


if __name__ == "__main__":
    main()
