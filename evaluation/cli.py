"""``dxv eval MODEL DATASET``: evaluate exported models end to end (ONNX Runtime, the
serving code path) and write report.json, summary.md and plots; ``--log`` records the
evaluation in MLflow, ``--write-card-metrics`` stores the figures in the model cards."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from datasets.samples import Sample, disk_samples, synthetic_samples
from models.errors import DxvError
from models.model_card import PRECISIONS
from models.radiographs import RadiographKind

_out = Console()


class DatasetSpecError(DxvError):
    code = "eval.dataset"


def register(commands: Any) -> None:
    ev = commands.add_parser("eval", help="evaluate exported models on an annotated dataset")
    ev.add_argument("model", type=Path, help="a folder of <model>.onnx + <model>.card.json (e.g. models/shipped), "
                    "or one .onnx file with its card")
    ev.add_argument("dataset", help="COCO/DENTEX JSON, YOLO folder, or synthetic:seed=99,periapical=150,bitewing=100,"
                    "panoramic=50")
    dataset_options(ev)
    ev.add_argument("--out", type=Path, default=Path("data/eval"))
    ev.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    ev.add_argument("--precision", choices=PRECISIONS, default="auto",
                    help="which files run: auto (as serving: a card's int8 copy on a CPU, the float file on a GPU), "
                    "fp32, or int8")
    ev.add_argument("--log", action="store_true", help="log the evaluation to MLflow")
    ev.add_argument("--write-card-metrics", action="store_true",
                    help="store the headline figures in the model cards (the ONNX files are unchanged)")
    ev.set_defaults(handler=_eval)

    read = commands.add_parser("read", help="run the models on one radiograph and print what they found")
    read.add_argument("file", type=Path, help="DICOM, PNG, JPEG or TIFF")
    read.add_argument("--kind", choices=[k.value for k in RadiographKind],
                      help="radiograph kind (default: from the DICOM header, else guessed from the shape)")
    read.add_argument("--models", type=Path, default=None, help="model folder (default: models/shipped)")
    read.add_argument("--overlay", type=Path, help="write a PNG with the detections drawn")
    read.add_argument("--json", action="store_true", help="machine-readable output")
    read.set_defaults(handler=_read)

    claims = commands.add_parser("eval-claims", help="precision and recall of flags/downcodes on synthetic claims")
    claims.add_argument("--n", type=int, default=300, help="number of claims")
    claims.add_argument("--seed", type=int, default=2026)
    claims.add_argument("--problem-rate", type=float, default=0.35, help="share of claims with one injected problem line")
    claims.add_argument("--oracle", action="store_true", help="read the images' truth instead of running the models "
                        "(measures the rules alone)")
    claims.add_argument("--models", type=Path, default=None, help="model folder (default: models/shipped)")
    claims.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    claims.add_argument("--thresholds", type=Path, action="append", default=None,
                        help="score bands to decide with (default: configs/validation/thresholds.yaml), "
                        "e.g. a candidate's in a band search; repeat it to compare several on the same "
                        "readings (each radiograph is read once)")
    claims.add_argument("--out", type=Path, default=Path("data/eval/claims"))
    claims.set_defaults(handler=_eval_claims)

    demo = commands.add_parser("demo-service", help="start the service on the local Ray, submit the sample synthetic "
                               "claims, print the decisions, write an HTML summary, stop the service")
    demo.add_argument("--out", type=Path, default=Path("data/demo/service"))
    demo.add_argument("--port", type=int, default=8765)
    demo.set_defaults(handler=_demo_service)


def dataset_options(parser: argparse.ArgumentParser) -> None:
    """How a dataset on disk is read: ``dxv eval``, and the datasets that ``dxv models
    redecode --tune-on`` and ``quantize --calibrate-on`` take."""
    parser.add_argument("--format", dest="source_format", choices=["coco", "yolo"], default=None,
                        help="of a dataset on disk (default: yolo for a folder, else coco)")
    parser.add_argument("--map", dest="category_map", type=Path, help="YAML: dataset category name -> ours")
    parser.add_argument("--kind", choices=[k.value for k in RadiographKind],
                        help="kind of every image when the files do not say (default: guessed from the shape)")


def dataset_samples(dataset: str, args: argparse.Namespace) -> tuple[list[Sample], str]:
    """The samples and a name for reports of a synthetic spec or a dataset on disk read as
    ``dataset_options`` say."""
    if dataset.startswith("synthetic:"):
        return synthetic_images(dataset)
    return disk_images(Path(dataset), args.source_format, args.category_map, args.kind)


def synthetic_images(spec: str) -> tuple[list[Sample], str]:
    """'synthetic:seed=99,periapical=150,...' -> generated samples and a name for reports."""
    fields: dict[str, int] = {}
    for part in spec.removeprefix("synthetic:").split(","):
        key, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise DatasetSpecError(f"synthetic dataset spec {spec!r}: expected key=number pairs, got {part!r}")
        fields[key.strip()] = int(value)
    seed = fields.pop("seed", 99)
    unknown = set(fields) - {k.value for k in RadiographKind}
    if unknown or not fields:
        raise DatasetSpecError(f"synthetic dataset spec {spec!r}: give counts for periapical, bitewing, panoramic")
    samples = synthetic_samples({RadiographKind(k): n for k, n in fields.items()}, seed)
    return samples, f"synthetic seed {seed} ({', '.join(f'{k} {v}' for k, v in fields.items())})"


def disk_images(path: Path, source_format: str | None, category_map: Path | None, kind: str | None) -> tuple[list[Sample], str]:
    import yaml

    mapping = yaml.safe_load(category_map.read_text("utf-8")) if category_map else None
    fmt = source_format or ("yolo" if path.is_dir() else "coco")
    samples, dataset = disk_samples(path, fmt, kind=RadiographKind(kind) if kind else None, category_map=mapping)
    if dataset.unmapped:
        _out.print(f"[yellow]categories that map to nothing (not evaluated): {dict(dataset.unmapped)}")
    return samples, str(path)


def _demo_service(args: argparse.Namespace) -> int:
    from evaluation.service_demo import run

    run(args.out, port=args.port)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from evaluation.evaluate import evaluate, headline_metrics, write_report
    from models.inference import DentalReader, LoadedModel

    images, name = dataset_samples(args.dataset, args)
    if args.model.is_file():
        reader = DentalReader.from_files([args.model], threads=args.threads, precision=args.precision)
    else:
        reader = DentalReader.from_directory(args.model, threads=args.threads, precision=args.precision)
    with Progress(console=_out) as progress:
        task = progress.add_task("reading images", total=len(images))
        result = evaluate(reader, images, name, on_progress=lambda n: progress.update(task, completed=n))
    files = write_report(result, args.out)
    headline = headline_metrics(result.report)
    _out.print((args.out / "summary.md").read_text("utf-8"))
    _out.print(f"wrote {', '.join(str(f) for f in files)}")
    if args.write_card_metrics:
        int8_keys = frozenset(part.model.card.key.value for part in (reader.teeth, reader.findings, reader.roots)
                              if part is not None and isinstance(part.model, LoadedModel) and part.model.int8)
        verified = tuple(reader.verifier.model.card.classes) if reader.verifier is not None else ()
        _write_card_metrics(args.model, headline, name, int8_keys, verified)
    if args.log:
        _log(args.out, files, headline, name)
    return 0


def _write_card_metrics(model_dir: Path, headline: dict[str, float], dataset_name: str,
                        int8_keys: frozenset[str] = frozenset(), verified: tuple[str, ...] = ()) -> None:
    """The headline figures into each card; ``int8_keys`` name the models that were read
    from their int8 copy, ``verified`` the finding classes a verifier re-scored (the cards
    say so beside the dataset; the verifier's card gets those classes' figures)."""
    from models.model_card import ModelKey, get_model_card, write_card

    keys = {ModelKey.TOOTH_NUMBERING: ("tooth_recall", "numbering_accuracy"),
            ModelKey.FINDINGS: ("ap", "ap50", "sensitivity", "ppv", "caries_depth"),
            ModelKey.ROOT_COUNT: ("root_count_accuracy",),
            ModelKey.FINDING_VERIFIER: tuple(f"{m}_{c}" for m in ("ap", "ap50", "sensitivity", "ppv") for c in verified)}
    for key, prefixes in keys.items():
        if not (model_dir / f"{key.value}.card.json").exists() or not prefixes:
            continue
        card = get_model_card(key, model_dir)
        metrics = {k: v for k, v in headline.items() if k.startswith(prefixes)}
        read_with = f"{dataset_name}; read with the int8 copy" if key.value in int8_keys else dataset_name
        if verified and key in (ModelKey.FINDINGS, ModelKey.FINDING_VERIFIER):
            read_with += f"; {', '.join(verified)} re-scored by the finding verifier"
        updated = card.model_copy(update={"metrics": metrics, "metrics_dataset": read_with})
        write_card(updated, model_dir / f"{key.value}.card.json")
        _out.print(f"card {key.value}: {len(metrics)} metrics on {read_with}")


def _log(out_dir: Path, files: list[Path], headline: dict[str, float], dataset_name: str) -> None:
    import mlflow

    from training.tracking import configure, ensure_experiment

    configure(None)
    with mlflow.start_run(experiment_id=ensure_experiment("dxv-evaluations"), run_name=f"eval {dataset_name}"[:200]):
        mlflow.log_param("dataset", dataset_name[:500])
        mlflow.log_metrics(headline)
        for f in files:
            mlflow.log_artifact(str(f), "evaluation")
    _out.print("logged to MLflow experiment dxv-evaluations")


def reading_as_dict(reading: Any) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(reading)
    data["kind"] = reading.kind.value
    data["model_versions"] = dict(reading.model_versions)
    for f in data["findings"]:
        f["finding_class"] = str(f["finding_class"])
        f["caries_depth"] = None if f["caries_depth"] is None else str(f["caries_depth"])
    return data


def _read(args: argparse.Namespace) -> int:
    import json

    from datasets.readers import read_radiograph
    from models.inference import DentalReader
    from models.model_card import SHIPPED_DIR

    radiograph = read_radiograph(args.file, kind_hint=RadiographKind(args.kind) if args.kind else None)
    pixels = radiograph.pixels_unit
    kind = radiograph.kind_or_guess(RadiographKind(args.kind) if args.kind else None)
    reader = DentalReader.from_directory(args.models or SHIPPED_DIR)
    reading = reader.read(args.file.stem, pixels, kind)
    if args.overlay:
        from datasets.annotations import FindingAnnotation, ImageAnnotations, ToothAnnotation
        from datasets.preview import draw_overlay

        drawn = ImageAnnotations(
            reading.image_id, args.file.name, reading.width_px, reading.height_px, kind,
            teeth=tuple(ToothAnnotation(t.fdi, t.box_xyxy_px, t.root_count) for t in reading.teeth),
            findings=tuple(FindingAnnotation(f.finding_class, f.box_xyxy_px, f.fdi, f.caries_depth)
                           for f in reading.findings))
        draw_overlay(pixels, drawn, max_side=1024).save(args.overlay)
    if args.json:
        print(json.dumps(reading_as_dict(reading), indent=2))
        return 0
    from rich.table import Table

    _out.print(f"{args.file.name}: {kind.value}, {reading.width_px}x{reading.height_px}, models "
               + ", ".join(f"{k} {v}" for k, v in reading.model_versions))
    teeth = Table("tooth (FDI)", "score", "roots", "box (x0, y0, x1, y1)")
    for t in sorted(reading.teeth, key=lambda t: t.fdi):
        roots = "-" if t.root_count is None else ("3+" if t.root_count == 3 else str(t.root_count))
        teeth.add_row(str(t.fdi), f"{t.score:.2f}", roots, ", ".join(f"{c:.0f}" for c in t.box_xyxy_px))
    _out.print(teeth)
    findings = Table("finding", "depth", "tooth", "score", "box (x0, y0, x1, y1)")
    for f in sorted(reading.findings, key=lambda f: (f.fdi or 0, f.finding_class)):
        findings.add_row(f.finding_class.value, f.caries_depth.value if f.caries_depth else "", str(f.fdi or "-"),
                         f"{f.score:.2f}", ", ".join(f"{c:.0f}" for c in f.box_xyxy_px))
    _out.print(findings)
    if args.overlay:
        _out.print(f"overlay: {args.overlay}")
    return 0


def _eval_claims(args: argparse.Namespace) -> int:
    import functools

    from rich.progress import Progress
    from rich.table import Table

    from evaluation.claim_generator import SyntheticClaim, generate_claims
    from evaluation.claims_eval import evaluate_claims, markdown, write_claims_report
    from serving.evidence_matrix import DEFAULT_THRESHOLDS
    from serving.validation.engine import load_tables

    # Every file is checked before anything is read, so a bad candidate costs nothing.
    all_tables = [load_tables(thresholds=path) for path in (args.thresholds or [DEFAULT_THRESHOLDS])]
    reader = None
    if not args.oracle:
        from models.inference import DentalReader
        from models.model_card import SHIPPED_DIR

        models = DentalReader.from_directory(args.models or SHIPPED_DIR, threads=args.threads)
        readings: dict[str, object] = {}

        def reader(item: SyntheticClaim):
            case = item.case
            if case.image_id not in readings:  # read once, whatever the bands
                pixels = case.stored.astype("float32") / float(2**case.bits_stored - 1)
                readings[case.image_id] = models.read(case.image_id, pixels, case.kind, operating_point=False)
            return readings[case.image_id]

    items = list(generate_claims(args.n, args.seed, problem_rate=args.problem_rate))
    base = args.out / ("oracle" if args.oracle else "models")
    comparison = Table("thresholds", "recall", "false flags", "precision", "right code")
    for tables in all_tables:
        with Progress(console=_out, transient=True) as progress:
            task = progress.add_task("claims", total=len(items))
            report = evaluate_claims(items, tables, reader, on_claim=functools.partial(progress.advance, task))
        out = base if len(all_tables) == 1 else base / report.tables["thresholds"]
        write_claims_report(report, out)
        if len(all_tables) == 1:
            _out.print(markdown(report), markup=False)
        comparison.add_row(report.tables["thresholds"], f"{report.problem_recall:.3f}", f"{report.false_flag_rate:.3f}",
                           f"{report.precision:.3f}", f"{report.exact_downcode_rate:.3f}")
        _out.print(f"report: {out}/claims_report.json, {out}/claims_summary.md")
    if len(all_tables) > 1:
        _out.print(comparison)
    return 0
