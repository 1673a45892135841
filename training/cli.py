"""``dxv train``, ``dxv export`` and ``dxv models list|promote|ship``."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from evaluation.cli import dataset_options, dataset_samples
from models.errors import DxvError
from models.findings import FindingClass
from models.model_card import PRECISIONS, ModelKey

_out = Console()


class RegistryError(DxvError):
    code = "models.registry"


def register(commands: Any) -> None:
    train = commands.add_parser("train", help="train a detector or the root-count classifier (MLflow-tracked)")
    train.add_argument("config", type=Path, help="training recipe, e.g. configs/train/tooth-numbering.yaml")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set optim.epochs=2")
    train.add_argument("--resume", type=Path, help="continue from a run's last.pt")
    train.set_defaults(handler=_train)

    export = commands.add_parser("export", help="export a training checkpoint to ONNX with its model card")
    export.add_argument("checkpoint", type=Path, help="best.pt or last.pt of a run")
    export.add_argument("--out", type=Path, required=True, help="folder for <model>.onnx and <model>.card.json")
    export.add_argument("--keep-threshold", action="store_true",
                        help="keep the recipe's operating threshold instead of choosing it on the validation split")
    export.add_argument("--set", dest="overrides", action="append", default=[], metavar="decode.KEY=VALUE",
                        help="decode differently from the recipe, e.g. --set 'decode.test_time_flip=[panoramic]'")
    export.set_defaults(handler=_export)

    models = commands.add_parser("models", help="registered model versions")
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="registered models, versions and aliases")
    listing.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the local SQLite store")
    listing.set_defaults(handler=_list)
    promote = actions.add_parser("promote", help="point an alias (e.g. champion) at a version")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("--alias", default="champion")
    promote.add_argument("--tracking-uri")
    promote.set_defaults(handler=_promote)
    ship = actions.add_parser("ship", help="copy a run's exported model and card into a model folder")
    ship.add_argument("run_dir", type=Path)
    ship.add_argument("--to", type=Path, default=None, help="default: the shipped models folder (models/shipped)")
    ship.set_defaults(handler=_ship)
    redecode = actions.add_parser("redecode", help="change how a model folder's detector decodes (decode.*), "
                                                   "its network unchanged")
    redecode.add_argument("model_dir", type=Path, help="e.g. models/shipped")
    redecode.add_argument("key", choices=[k.value for k in ModelKey], help="which model's card")
    redecode.add_argument("--set", dest="overrides", action="append", required=True, metavar="decode.KEY=VALUE")
    redecode.add_argument("--version", required=True, help="the card's new version (the decoding changed)")
    redecode.add_argument("--tune-on", metavar="DATASET",
                          help="choose the operating threshold again on this dataset (synthetic:seed=...,periapical=..."
                               " or a COCO/YOLO path), read with every model in the folder")
    dataset_options(redecode)
    redecode.set_defaults(handler=_redecode)
    quantize = actions.add_parser("quantize", help="give a model folder's model an int8 copy for CPUs "
                                                   "(ONNX Runtime static quantization)")
    quantize.add_argument("model_dir", type=Path, help="e.g. models/shipped")
    quantize.add_argument("key", choices=[k.value for k in ModelKey], help="which model")
    quantize.add_argument("--calibrate-on", required=True, metavar="DATASET",
                          help="radiographs to take the activation ranges on (synthetic:seed=...,periapical=... or a "
                               "COCO/YOLO path); not the evaluation sets")
    quantize.add_argument("--version", required=True, help="the card's new version (CPUs now run the copy)")
    quantize.add_argument("--weight-bits", type=int, choices=(7, 8), default=7,
                          help="7 (default): the copy reads the same on every x86 CPU; 8: a little finer, but x86 "
                               "CPUs without VNNI saturate on it, and there auto keeps the float file")
    quantize.add_argument("--log", action="store_true", help="log the copy, its card and the calibration to MLflow "
                          "(experiment dxv-detectors)")
    dataset_options(quantize)
    quantize.set_defaults(handler=_quantize)
    mine = actions.add_parser("mine-negatives", help="write where a model folder reports findings a training dataset "
                                                     "does not hold (hard negatives for data.hard_negatives)")
    mine.add_argument("model_dir", type=Path, help="e.g. models/shipped")
    mine.add_argument("dataset", help="the recipe's training data: synthetic:seed=...,periapical=... with the recipe's "
                                      "seed and counts, or its COCO/YOLO path")
    mine.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    mine.add_argument("--classes", nargs="+", default=["caries"], choices=[c.value for c in FindingClass],
                      help="finding classes whose false findings are kept (default: caries)")
    mine.add_argument("--min-score", type=float, default=0.3, help="only findings scored this much or more")
    mine.add_argument("--precision", choices=PRECISIONS, default="auto", help="which file to read with (default auto)")
    dataset_options(mine)
    mine.set_defaults(handler=_mine_negatives)


def _redecode(args: argparse.Namespace) -> int:
    from training.export import redecode

    samples = dataset_samples(args.tune_on, args)[0] if args.tune_on else None
    card = redecode(args.model_dir, ModelKey(args.key), tuple(args.overrides), args.version, samples)
    assert card.decode is not None
    _out.print(f"{card.key.value} {card.version}: decode {card.decode.model_dump(mode='json')}; held-out metrics "
               f"cleared (run dxv eval {args.model_dir} DATASET --write-card-metrics)")
    return 0


def _mine_negatives(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from models.inference import DentalReader
    from training.hard_negatives import mine_hard_negatives, write_hard_negatives

    samples, name = dataset_samples(args.dataset, args)
    reader = DentalReader.from_directory(args.model_dir, precision=args.precision)
    with Progress(console=_out, transient=True) as progress:
        task = progress.add_task("reading images", total=len(samples))
        mined = mine_hard_negatives(reader, samples, [FindingClass(c) for c in args.classes], args.min_score,
                                    on_progress=lambda n: progress.update(task, completed=n))
    write_hard_negatives(args.out, mined, name)
    _out.print(f"{mined.count} hard negatives on {len(mined.boxes_xyxy_px)} of {len(samples)} images "
               f"({', '.join(args.classes)} scored {args.min_score} or more, overlapping no annotated finding "
               f"of their class) -> {args.out}")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from training.export import quantize_model

    samples, name = dataset_samples(args.calibrate_on, args)
    card = quantize_model(args.model_dir, ModelKey(args.key), args.version, samples, name, args.weight_bits)
    assert card.int8 is not None
    _out.print(f"{card.key.value} {card.version}: wrote {args.model_dir / card.int8.onnx_file} "
               f"({card.int8.size_bytes / 1e6:.1f} MB, sha256 {card.int8.sha256[:12]}…), calibrated on {name}; "
               f"held-out metrics cleared (run dxv eval {args.model_dir} DATASET --write-card-metrics)")
    if args.log:
        from training.tracking import log_quantization

        run_id = log_quantization(args.model_dir, card)
        _out.print(f"logged to MLflow experiment dxv-detectors, run {run_id}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from models.config_loading import load_config
    from training.checkpoints import load_checkpoint
    from training.config import TrainConfig
    from training.train import main

    if args.resume:
        checkpoint = load_checkpoint(args.resume)
        import yaml

        config = TrainConfig.model_validate(yaml.safe_load(checkpoint.config_yaml))
    else:
        config = load_config(TrainConfig, args.config, args.overrides)
    result = main(config, resume=args.resume)
    _out.print(f"run folder: {result.run_dir}")
    if result.onnx_path:
        _out.print(f"ONNX: {result.onnx_path}")
    if result.registered_version:
        _out.print(f"registered {result.card.registered_name if result.card else ''} version {result.registered_version}")
    for key, value in result.final_metrics.items():
        _out.print(f"  {key}: {value:.4f}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from training.export import export_checkpoint

    card = export_checkpoint(args.checkpoint, args.out, tune_threshold=not args.keep_threshold,
                             decode_overrides=tuple(args.overrides))
    _out.print(f"wrote {args.out / card.onnx_file} ({card.size_bytes / 1e6:.1f} MB, sha256 {card.sha256[:12]}…)")
    return 0


def _client(uri: str | None):
    from mlflow.tracking import MlflowClient

    from training.tracking import configure

    configure(uri)
    return MlflowClient()


def _list(args: argparse.Namespace) -> int:
    client = _client(args.tracking_uri)
    table = Table("model", "version", "aliases", "run", "sha256", "created")
    import datetime as dt

    for model in client.search_registered_models():
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for v in sorted(client.search_model_versions(f"name='{model.name}'"), key=lambda v: int(v.version)):
            created = dt.datetime.fromtimestamp(v.creation_timestamp / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")
            table.add_row(model.name, str(v.version), ", ".join(aliases.get(str(v.version), [])), (v.run_id or "")[:8],
                          (v.tags or {}).get("sha256", "")[:12], created)
    _out.print(table)
    return 0


def _promote(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    client = _client(args.tracking_uri)
    try:
        client.get_model_version(args.name, str(args.version))
        client.set_registered_model_alias(args.name, args.alias, str(args.version))
    except MlflowException as exc:
        raise RegistryError(f"cannot promote {args.name} version {args.version}: {exc.message}") from exc
    _out.print(f"{args.name}@{args.alias} -> version {args.version}")
    return 0


def _ship(args: argparse.Namespace) -> int:
    from models.model_card import SHIPPED_DIR, card_path, read_card, verify_card, with_carried_throughput, write_card

    target = args.to or SHIPPED_DIR
    export = args.run_dir / "export"
    onnx_files = sorted(export.glob("*.onnx"))
    if not onnx_files:
        raise RegistryError(f"no exported model in {export}")
    target.mkdir(parents=True, exist_ok=True)
    for onnx_path in onnx_files:
        card = read_card(card_path(onnx_path))
        verify_card(card, onnx_path)
        target_card = target / card_path(onnx_path).name
        replaced = read_card(target_card) if target_card.exists() else None
        shipped = with_carried_throughput(card, replaced) if replaced else card
        if replaced and replaced.int8:  # the replaced version's int8 copy holds the old weights
            (target / replaced.int8.onnx_file).unlink(missing_ok=True)
        shutil.copy2(onnx_path, target / onnx_path.name)
        write_card(shipped, target_card)
        carried = " (throughput carried from the version it replaces: same network)" if shipped is not card else ""
        _out.print(f"shipped {onnx_path.name} -> {target}{carried}")
    return 0
