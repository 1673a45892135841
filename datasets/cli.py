"""``dxv synth``, ``dxv data convert|stats`` and ``dxv inspect``."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from models.radiographs import RadiographKind

_out = Console()


def register(commands: Any) -> Any:
    """Adds ``synth``, ``data`` and ``inspect``; returns the ``data`` subcommands (other
    packages add theirs, e.g. ``export-corrections``)."""
    synth = commands.add_parser("synth", help="generate synthetic radiographs with exact annotations")
    synth.add_argument("--kind", required=True, choices=[k.value for k in RadiographKind])
    synth.add_argument("--n", type=int, required=True, help="number of images")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", required=True, type=Path)
    synth.add_argument("--preview", action="store_true", help="also write preview.png with the annotations drawn")
    synth.add_argument("--config", type=Path, help="generator YAML (e.g. configs/synth/hard.yaml)")
    synth.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a generator setting, e.g. --set scale=1.0")
    synth.set_defaults(handler=_synth)

    data = commands.add_parser("data", help="dataset formats")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    convert = data_commands.add_parser("convert", help="convert between COCO/DENTEX JSON and YOLO folders")
    convert.add_argument("--from", dest="source_format", required=True, choices=["coco", "yolo"])
    convert.add_argument("source", type=Path, help="COCO: the annotations JSON; YOLO: the dataset folder")
    convert.add_argument("--to", dest="target_format", required=True, choices=["coco", "yolo"])
    convert.add_argument("target", type=Path, help="COCO: the JSON to write; YOLO: the folder to write")
    convert.add_argument("--map", dest="category_map", type=Path,
                         help="YAML mapping the source's category names to ours (e.g. 'Caries': caries-dentin)")
    convert.set_defaults(handler=_convert)
    stats = data_commands.add_parser("stats", help="count images, teeth and findings in a dataset")
    stats.add_argument("--format", dest="source_format", default="coco", choices=["coco", "yolo"])
    stats.add_argument("source", type=Path)
    stats.add_argument("--map", dest="category_map", type=Path)
    stats.set_defaults(handler=_stats)

    inspect = commands.add_parser("inspect", help="show what the reader sees in a radiograph file")
    inspect.add_argument("file", type=Path)
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(handler=_inspect)
    return data_commands


def _synth(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from datasets.synth.config import SynthConfig
    from datasets.synth.generator import write_dataset
    from models.config_loading import load_config

    if args.n < 1:
        raise SystemExit("--n must be at least 1")
    config = load_config(SynthConfig, args.config, args.overrides)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=_out, transient=True) as progress:
        task = progress.add_task(f"synth {args.kind}", total=args.n)
        summary = write_dataset(args.out, RadiographKind(args.kind), args.n, args.seed, config,
                                preview=args.preview, on_progress=lambda done: progress.update(task, completed=done))
    _out.print(f"wrote {summary.images} {args.kind} images, {summary.teeth} teeth, findings {summary.findings} "
               f"to {summary.out_dir}")
    if args.preview:
        _out.print(f"preview: {summary.out_dir / 'preview.png'}")
    return 0


def _load_map(path: Path | None) -> dict[str, str] | None:
    if path is None:
        return None
    import yaml

    from datasets.errors import DatasetFormatError

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise DatasetFormatError(f"{path}: a category map is a mapping of source name to our label name")
    return {str(k): str(v) for k, v in data.items()}


def _load(source_format: str, source: Path, category_map: dict[str, str] | None):
    from datasets.coco import read_coco
    from datasets.yolo import read_yolo

    if source_format == "coco":
        return read_coco(source, category_map), source.parent
    return read_yolo(source, category_map), source


def _report_unmapped(unmapped: Counter[str]) -> None:
    if unmapped:
        _out.print(f"[yellow]{sum(unmapped.values())} annotations map to nothing of ours[/]: "
                   + ", ".join(f"{name} x{count}" for name, count in unmapped.most_common()))


def _convert(args: argparse.Namespace) -> int:
    import shutil

    from datasets.coco import write_coco
    from datasets.yolo import write_yolo

    dataset, root = _load(args.source_format, args.source, _load_map(args.category_map))
    if args.target_format == "coco":
        args.target.parent.mkdir(parents=True, exist_ok=True)
        write_coco(args.target, dataset.images, description=f"converted from {args.source_format}")
        if args.target.parent.resolve() != root.resolve():
            for image in dataset.images:
                destination = args.target.parent / image.file_name
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / image.file_name, destination)
    else:
        names = write_yolo(dataset, root, args.target)
        _out.print(f"{len(names)} classes: {', '.join(names)}")
    _out.print(f"converted {len(dataset)} images from {args.source_format} to {args.target_format}: {args.target}")
    _report_unmapped(dataset.unmapped)
    return 0


def _stats(args: argparse.Namespace) -> int:
    dataset, _ = _load(args.source_format, args.source, _load_map(args.category_map))
    findings: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for image in dataset.images:
        kinds[image.kind.value if image.kind else "unknown"] += 1
        for f in image.findings:
            findings[f.finding_class.value + (f"/{f.caries_depth.value}" if f.caries_depth else "")] += 1
    table = Table(title=f"{args.source}")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("images", str(len(dataset)))
    for kind, count in sorted(kinds.items()):
        table.add_row(f"  kind {kind}", str(count))
    table.add_row("teeth", str(sum(len(i.teeth) for i in dataset.images)))
    for name, count in sorted(findings.items()):
        table.add_row(f"  {name}", str(count))
    _out.print(table)
    _report_unmapped(dataset.unmapped)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from datasets.readers import read_radiograph

    radiograph = read_radiograph(args.file, with_header=True)
    meta = radiograph.metadata
    pixels = radiograph.pixels_unit
    summary: dict[str, Any] = {
        "file": args.file.name,
        "format": meta.source_format,
        "kind": meta.kind.value if meta.kind else None,
        "kind_source": meta.kind_source,
        "size_px": [meta.width_px, meta.height_px],
        "bits_stored": meta.bits_stored,
        "photometric_interpretation": meta.photometric_interpretation,
        "transfer_syntax": meta.transfer_syntax_name,
        "modality": meta.modality,
        "pixel_spacing_mm": meta.pixel_spacing_mm,
        "frames": meta.number_of_frames,
        "voi_applied": meta.voi_applied,
        "pixel_range_unit": [round(float(pixels.min()), 4), round(float(pixels.max()), 4)],
        # Of the file, hashed here: the reader leaves it out (the service hashes each file once, for its audit digest).
        "sha256": hashlib.sha256(args.file.read_bytes()).hexdigest(),
        "header": dict(meta.header),
    }
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    table = Table(show_header=False, title=args.file.name)
    for key, value in summary.items():
        if key != "header":
            table.add_row(key, str(value))
    for key, value in meta.header:
        table.add_row(f"  {key}", value)
    _out.print(table)
    return 0
