"""Benchmark: inference latency of all shipped models together on one image, the full
serving path (pre-processing, ONNX Runtime, decoding, NMS, root-count crops, finding-to-
tooth association), and ONNX Runtime against torch eager on the same network input.

Targets on 2 CPU cores: <= 150 ms for one periapical, <= 600 ms for one panoramic; ONNX
Runtime at least 1.2x faster than torch eager. Run: ``make bench-models`` (or
``python -m evaluation.bench_models --threads 2``).

``--throughput`` adds images per second through each model's ONNX Runtime session alone at
batch 1 and 16, on the input serving gives it (host-to-device copies included, decoding
not); ``--gpu --throughput --write-cards`` stores the CUDA figures in the model cards."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from datasets.synth.generator import generate_case
from evaluation.machine_speed import describe as machine_reference
from models.inference import DentalReader, LoadedModel, Network, available_providers, make_session
from models.model_card import PRECISIONS, SHIPPED_DIR, ModelKey, get_model_card, write_card
from models.networks import DetectorForExport, FindingVerifier, RootCountClassifier, build_detector
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


def serving_throughput(reader: DentalReader, batches: tuple[int, ...], seconds: float = 2.0
                       ) -> dict[str, dict[str, float]]:
    """Images/s of the full serving path (all models, pre- and post-processing) per kind,
    reading ``batch`` different radiographs together (``DentalReader.read_many``, what a
    model replica does with a ``@serve.batch``) for each batch size."""
    out: dict[str, dict[str, float]] = {}
    for kind in RadiographKind:
        cases = [generate_case(kind, 4343, i) for i in range(max(batches))]
        figures = {}
        for batch in batches:
            images = [(c.image_id, c.pixels_unit, kind) for c in cases[:batch]]
            reader.read_many(images, operating_point=False)  # warm-up (this batch's shapes)
            done, start = 0, time.perf_counter()
            while done == 0 or time.perf_counter() - start < seconds:
                reader.read_many(images, operating_point=False)
                done += batch
            figures[f"batch {batch}"] = round(done / (time.perf_counter() - start), 1)
        out[kind.value] = figures
    return out


def torch_vs_onnx(reader: DentalReader, repeats: int, threads: int) -> list[dict[str, object]]:
    """Same input, same architecture: torch eager (no grad) vs the ONNX Runtime session of
    the float file, and of its int8 copy where the card has one (what a CPU serves)."""
    rows = []
    image = generate_case(RadiographKind.PERIAPICAL, 4242, 0).pixels_unit
    for detector in (reader.teeth, reader.findings):
        if detector is None:
            continue
        card = detector.model.card
        assert card.detector is not None
        tensor, _ = prepare_image(image, card.long_side_for(RadiographKind.PERIAPICAL))
        net = DetectorForExport(build_detector(card.detector, len(card.classes))).eval()
        rows.append(_compare(detector.model, net, tensor, repeats, threads))
    if reader.roots is not None:
        card = reader.roots.model.card
        assert card.classifier is not None and card.input.crop_hw_px is not None
        crops = np.random.default_rng(0).random((6, 1, *card.input.crop_hw_px)).astype(np.float32)
        rows.append(_compare(reader.roots.model, RootCountClassifier(card.classifier).eval(), crops, repeats, threads))
    if reader.verifier is not None:
        card = reader.verifier.model.card
        assert card.verifier is not None
        crops = verifier_crops(reader, 22)  # about as many candidates as a panoramic's verified ones
        verifier = FindingVerifier(card.verifier, len(card.classes)).eval()
        rows.append(_compare(reader.verifier.model, verifier, crops, repeats, threads))
    return rows


def verifier_crops(reader: DentalReader, count: int) -> np.ndarray:
    """``count`` verifier inputs cut around boxes of a typical caries' size on a synthetic
    periapical (the crops' content does not change the network's time)."""
    assert reader.verifier is not None
    image = generate_case(RadiographKind.PERIAPICAL, 4242, 0).pixels_unit
    rng = np.random.default_rng(0)
    corners = rng.uniform(40, 400, (count, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(8, 24, (count, 2))], axis=1).astype(np.float32)
    return reader.verifier.network_input(image, boxes)


def _compare(model: Network, net: torch.nn.Module, array: np.ndarray, repeats: int,
             threads: int) -> dict[str, object]:
    assert isinstance(model, LoadedModel)  # read from its files here
    x = torch.from_numpy(array)

    def run_torch() -> None:
        with torch.inference_mode():
            net(x)

    card = model.card
    torch_ms = _median_ms(run_torch, repeats)
    files = {"onnx": model.path.with_name(card.onnx_file)}
    if card.int8 is not None:
        files["int8"] = model.path.with_name(card.int8.onnx_file)
    row: dict[str, object] = {"model": card.key.value, "input": list(array.shape), "torch_ms": round(torch_ms, 1)}
    for name, path in files.items():
        session = make_session(path, threads, ["CPUExecutionProvider"])
        ms = _median_ms(lambda s=session: s.run(None, {card.input.name: array}), repeats)
        row[f"{name}_ms"] = round(ms, 1)
        row["speedup" if name == "onnx" else "int8_speedup"] = round(torch_ms / ms, 2)
    return row


def served_inputs(reader: DentalReader) -> dict[ModelKey, dict[str, np.ndarray]]:
    """One network input per model and input kind, as serving prepares it: each detector
    on every kind its card serves (the finding detector on the teeth's region where its
    card asks for one), the root counter on one tooth crop."""
    inputs: dict[ModelKey, dict[str, np.ndarray]] = {}
    for kind in RadiographKind:
        image = generate_case(kind, 4242, 0).pixels_unit
        reading = reader.read("bench", image, kind)
        if reader.teeth is not None and kind in reader.teeth.model.card.kinds_served:
            tensor, _ = reader.teeth.network_input(image, kind)
            inputs.setdefault(ModelKey.TOOTH_NUMBERING, {})[kind.value] = tensor
        if reader.findings is not None and kind in reader.findings.model.card.kinds_served:
            region = reader.findings_region(image, kind, list(reading.teeth))
            tensor, _ = reader.findings.network_input(image, kind, region)
            inputs.setdefault(ModelKey.FINDINGS, {})[kind.value] = tensor
    if reader.roots is not None:
        crop = np.random.default_rng(0).random((1, 1, *reader.roots.crop_hw)).astype(np.float32)
        inputs[ModelKey.ROOT_COUNT] = {"crop": crop}
    if reader.verifier is not None:
        inputs[ModelKey.FINDING_VERIFIER] = {"crop": verifier_crops(reader, 1)}
    return inputs


def throughput(session, name: str, single: np.ndarray, batch: int, seconds: float = 2.0) -> float:
    """Images per second through ``session`` at ``batch`` copies of ``single`` (1, C, H, W),
    over at least ``seconds`` and 5 runs after 3 warm-up runs (CUDA builds its kernels then)."""
    array = np.ascontiguousarray(np.repeat(single, batch, axis=0))
    for _ in range(3):
        session.run(None, {name: array})
    runs, start = 0, time.perf_counter()
    while runs < 5 or time.perf_counter() - start < seconds:
        session.run(None, {name: array})
        runs += 1
    return batch * runs / (time.perf_counter() - start)


def measure_throughput(reader: DentalReader, provider_tag: str, batches: tuple[int, ...] = (1, 16),
                       seconds: float = 2.0) -> dict[ModelKey, dict[str, float]]:
    loaded = {ModelKey.TOOTH_NUMBERING: reader.teeth, ModelKey.FINDINGS: reader.findings, ModelKey.ROOT_COUNT: reader.roots,
              ModelKey.FINDING_VERIFIER: reader.verifier}
    figures: dict[ModelKey, dict[str, float]] = {}
    for key, inputs in served_inputs(reader).items():
        part = loaded[key]
        assert part is not None and isinstance(part.model, LoadedModel)
        session, name = part.model.session, part.model.card.input.name
        figures[key] = {f"{provider_tag}_{what}_batch{n}_images_per_s": round(throughput(session, name, single, n, seconds), 1)
                        for what, single in inputs.items() for n in batches}
    return figures


def processor_name(gpu: bool, threads: int) -> str:
    """What the throughput was measured on. ``gpu`` means ONNX Runtime's CUDA provider ran;
    torch (often the CPU build beside onnxruntime-gpu) may still not see the GPU to name it."""
    if gpu:
        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "a CUDA GPU"
        return f"{name}, ONNX Runtime CUDA provider"
    return f"CPU, {threads} of {os.cpu_count()} cores, ONNX Runtime CPU provider"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, default=SHIPPED_DIR)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("data/bench/models.json"))
    parser.add_argument("--gpu", action="store_true", help="ONNX Runtime CUDA provider (needs EXTRAS=gpu)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="which files serve: auto takes a card's int8 copy on a CPU, the float file on a GPU")
    parser.add_argument("--throughput", action="store_true", help="images/s of each model alone at batch 1 and 16")
    parser.add_argument("--write-cards", action="store_true", help="store the --throughput figures in the model cards")
    parser.add_argument("--batches", type=lambda v: tuple(int(n) for n in v.split(",")), default=(1, 16),
                        help="batch sizes for --throughput, e.g. 1,16")
    parser.add_argument("--throughput-seconds", type=float, default=2.0, help="least time each throughput figure runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    providers = available_providers(prefer_gpu=True) if args.gpu else ["CPUExecutionProvider"]
    if args.gpu and providers[0] != "CUDAExecutionProvider":
        parser.error("--gpu: ONNX Runtime has no CUDA provider here (install onnxruntime-gpu: EXTRAS=gpu)")
    if args.write_cards and not args.throughput:
        parser.error("--write-cards stores the --throughput figures: give both")
    reader = DentalReader.from_directory(args.models, threads=args.threads, providers=providers,
                                         precision=args.precision)
    # This shared machine's speed drifts between hours and days: the reference workload
    # tells a slow hour from a slower model (the panoramic budget is the tight one).
    print(machine_reference())
    print(f"ONNX Runtime providers: {', '.join(providers)}; models: "
          + ", ".join(f"{key} {version}" for key, version in reader.model_versions()))
    latency = end_to_end(reader, args.repeats)
    print(f"All models together, full serving path, {args.threads} threads (median of {args.repeats}):")
    for kind, ms in latency.items():
        target = TARGET_MS[RadiographKind(kind)]
        verdict = "" if target is None else f" (target <= {target:.0f} ms: {'met' if ms <= target else 'MISSED'})"
        print(f"  {kind:<11} {ms:7.1f} ms{verdict}")
    unverified: dict[str, float] = {}
    if reader.verifier is not None:  # what the second look at the candidates costs
        unverified = end_to_end(dataclasses.replace(reader, verifier=None), args.repeats)
        print("  without the finding verifier: " + ", ".join(f"{k} {v:.1f} ms" for k, v in unverified.items()))
    rows = torch_vs_onnx(reader, args.repeats, args.threads)
    print("ONNX Runtime on the CPU vs torch eager, same input (target speed-up >= 1.2):")
    for row in rows:
        int8 = f"; int8 copy {row['int8_ms']} ms, x{row['int8_speedup']}" if "int8_ms" in row else ""
        print(f"  {row['model']:<16} input {row['input']}: torch {row['torch_ms']} ms, ONNX {row['onnx_ms']} ms, "
              f"x{row['speedup']}{int8}")
    figures: dict[ModelKey, dict[str, float]] = {}
    serving: dict[str, dict[str, float]] = {}
    if args.throughput:
        device = processor_name(args.gpu, args.threads)
        figures = measure_throughput(reader, "cuda" if args.gpu else "cpu", args.batches, args.throughput_seconds)
        print(f"Throughput, each model's session alone ({device}):")
        for key, values in figures.items():
            for name, value in values.items():
                print(f"  {key.value:<16} {name:<48} {value:9.1f}")
        serving = serving_throughput(reader, args.batches, args.throughput_seconds)
        print(f"Throughput, the full serving path, radiographs read together ({device}), images/s:")
        for kind, values in serving.items():
            print(f"  {kind:<11} " + ", ".join(f"{name}: {value:.1f}" for name, value in values.items()))
        if args.write_cards:
            for key, values in figures.items():
                card = get_model_card(key, args.models)
                write_card(card.model_copy(update={"throughput": values, "throughput_device": device}),
                           args.models / f"{key.value}.card.json")
            print(f"throughput written into the cards in {args.models}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "providers": providers, "latency_ms": latency,
                                    "latency_ms_without_verifier": unverified,
                                    "torch_vs_onnx": rows, "models": dict(reader.model_versions()),
                                    "throughput": {k.value: v for k, v in figures.items()},
                                    "serving_throughput": serving}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
