"""Annotated radiographs ready to load: from the synthetic generator (rendered in memory)
or from a COCO/DENTEX/YOLO dataset on disk. Shared by training and evaluation."""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from datasets.annotations import AnnotatedDataset, ImageAnnotations
from datasets.coco import read_coco
from datasets.errors import DatasetFormatError
from datasets.readers import read_radiograph
from datasets.synth.config import SynthConfig
from datasets.synth.generator import generate_case
from datasets.yolo import read_yolo
from models.preprocess import guess_kind
from models.radiographs import RadiographKind

_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True, eq=False)
class Sample:
    """One annotated radiograph; ``load`` returns its pixels as float32 [0, 1]."""

    annotations: ImageAnnotations
    kind: RadiographKind
    load: Callable[[], np.ndarray]

    @property
    def image_id(self) -> str:
        return self.annotations.image_id


def _unit(stored: np.ndarray, bits: int) -> np.ndarray:
    return stored.astype(np.float32) / float(2**bits - 1)


def _read_unit(path: Path, kind: RadiographKind) -> np.ndarray:
    return read_radiograph(path, kind_hint=kind).pixels_unit


def _rendered(job: tuple[RadiographKind, int, int, SynthConfig]) -> tuple[ImageAnnotations, np.ndarray, int]:
    case = generate_case(*job)
    return case.annotations, case.stored, case.bits_stored


def parallel_map(fn: Callable[[_T], _R], items: Sequence[_T], workers: int = 0) -> Iterator[_R]:
    """``fn`` over ``items``, results in order: here, or in ``workers`` processes when that
    is more than one. They are spawned, not forked: safe beside CUDA and torch's threads,
    and since each result depends on its item alone the output is the same either way."""
    if workers <= 1 or len(items) < 2:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(fn, items, chunksize=max(1, min(16, len(items) // (4 * workers))))


def synthetic_samples(counts: dict[RadiographKind, int], seed: int, config: SynthConfig = SynthConfig(),
                      workers: int = 0) -> list[Sample]:
    """The generator's cases as samples (each case depends only on its kind, seed and index,
    so ``workers`` processes render the same images faster)."""
    jobs = [(kind, seed, index, config) for kind, count in counts.items() for index in range(count)]
    return [Sample(annotations, job[0], functools.partial(_unit, stored, bits))
            for job, (annotations, stored, bits) in zip(jobs, parallel_map(_rendered, jobs, workers), strict=True)]


def disk_samples(path: Path, source_format: str, *, images_root: Path | None = None,
                 kind: RadiographKind | None = None,
                 category_map: dict[str, str] | None = None) -> tuple[list[Sample], AnnotatedDataset]:
    """``source_format`` 'yolo' reads a YOLO folder, anything else a COCO/DENTEX JSON. The
    kind comes from ``kind``, else the annotations, else the image's shape. Returns the
    samples and the dataset (whose ``unmapped`` counts what mapped to nothing)."""
    if not path.exists():
        raise DatasetFormatError(f"dataset not found: {path}")
    if source_format == "yolo":
        dataset = read_yolo(path, category_map=category_map or None)
        root = images_root or path
    else:
        dataset = read_coco(path, category_map=category_map or None)
        root = images_root or path.parent
    samples = []
    for image in dataset.images:
        k = kind or image.kind or guess_kind(image.height_px, image.width_px)
        samples.append(Sample(image, k, functools.partial(_read_unit, Path(root) / image.file_name, k)))
    return samples, dataset
