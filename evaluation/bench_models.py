"""Benchmark: inference latency of all shipped models together on one image, the full
serving path (pre-processing, ONNX Runtime, decoding, NMS, root-count crops, finding-to-
tooth association), and ONNX Runtime against torch eager on the same network input.

Targets on 2 CPU cores: <= 150 ms for one periapical, <= 600 ms for one panoramic; ONNX
Runtime at least 1.2x faster than torch eager. Run: ``make bench-models`` (or
``python -m evaluation.bench_models --threads 2``)."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from datasets.synth.generator import generate_case
from models.inference import DentalReader, available_providers
from models.model_card import SHIPPED_DIR, ModelKey, get_model_card
from models.networks import DetectorForExport, RootCountClassifier, build_detector
from models.preprocess import prepare_image
from models.radiographs import RadiographKind

TARGET_MS = {RadiographKind.PERIAPICAL: 150.0, RadiographKind.BITEWING: None, RadiographKind.PANORAMIC: 600.0}


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def end_to_end(reader: DentalReader, repeats: int) -> dict[str, float]:
    out = {}
    for kind in RadiographKind:
        image = generate_case(kind, 4242, 0).pixels_unit
        out[kind.value] = _median_ms(lambda img=image, k=kind: reader.read("bench", img, k), repeats)
    return out


def torch_vs_onnx(reader: DentalReader, repeats: int) -> list[dict[str, object]]:
    """Same input, same architecture: torch eager (no grad) vs the ONNX Runtime session."""
    rows = []
    image = generate_case(RadiographKind.PERIAPICAL, 4242, 0).pixels_unit
    for detector in (reader.teeth, reader.findings):
        if detector is None:
            continue
        card = detector.model.card
        assert card.detector is not None
        tensor, _ = prepare_image(image, card.long_side_for(RadiographKind.PERIAPICAL))
        net = DetectorForExport(build_detector(card.detector, len(card.classes))).eval()
        rows.append(_compare(card.key.value, net, detector.model.session, tensor, repeats))
    if reader.roots is not None:
        card = reader.roots.model.card
        assert card.classifier is not None and card.input.crop_hw_px is not None
        crops = np.random.default_rng(0).random((6, 1, *card.input.crop_hw_px)).astype(np.float32)
        rows.append(_compare(card.key.value, RootCountClassifier(card.classifier).eval(), reader.roots.model.session,
                             crops, repeats))
    return rows


def _compare(name: str, net: torch.nn.Module, session, array: np.ndarray, repeats: int) -> dict[str, object]:
    x = torch.from_numpy(array)

    def run_torch() -> None:
        with torch.inference_mode():
            net(x)

    torch_ms = _median_ms(run_torch, repeats)
    onnx_ms = _median_ms(lambda: session.run(None, {"image": array}), repeats)
    return {"model": name, "input": list(array.shape), "torch_ms": round(torch_ms, 1), "onnx_ms": round(onnx_ms, 1),
            "speedup": round(torch_ms / onnx_ms, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, default=SHIPPED_DIR)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("data/bench/models.json"))
    parser.add_argument("--gpu", action="store_true", help="ONNX Runtime CUDA provider (needs EXTRAS=gpu)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    providers = available_providers(prefer_gpu=True) if args.gpu else ["CPUExecutionProvider"]
    reader = DentalReader.from_directory(args.models, threads=args.threads, providers=providers)
    print(f"ONNX Runtime providers: {', '.join(providers)}")
    latency = end_to_end(reader, args.repeats)
    print(f"All models together, full serving path, {args.threads} threads (median of {args.repeats}):")
    for kind, ms in latency.items():
        target = TARGET_MS[RadiographKind(kind)]
        verdict = "" if target is None else f" (target <= {target:.0f} ms: {'met' if ms <= target else 'MISSED'})"
        print(f"  {kind:<11} {ms:7.1f} ms{verdict}")
    rows = torch_vs_onnx(reader, args.repeats)
    print("ONNX Runtime vs torch eager, same input (target speed-up >= 1.2):")
    for row in rows:
        print(f"  {row['model']:<16} input {row['input']}: torch {row['torch_ms']} ms, ONNX {row['onnx_ms']} ms, "
              f"x{row['speedup']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cards = {k.value: get_model_card(k, args.models).version for k in ModelKey if (args.models / f"{k.value}.card.json").exists()}
    args.out.write_text(json.dumps({"threads": args.threads, "latency_ms": latency, "torch_vs_onnx": rows,
                                    "models": cards}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
