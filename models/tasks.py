"""What each network predicts: its classes, in output order, and how they map back onto
the dental vocabulary."""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from models.findings import CANONICAL_LABELS, CariesDepth, FindingClass, Label
from models.teeth import ALL_FDI, Tooth


class DetectorTask(StrEnum):
    TEETH = "teeth"
    FINDINGS = "findings"


TOOTH_CLASSES: tuple[Label, ...] = tuple(Label(tooth=Tooth.fdi_of(fdi)) for fdi in ALL_FDI)

# Caries is detected as three depth classes; the rest as one class each.
FINDING_CLASSES: tuple[Label, ...] = (
    *(Label(finding=FindingClass.CARIES, caries_depth=d) for d in CariesDepth),
    *(Label(finding=c) for c in FindingClass if c is not FindingClass.CARIES),
)

ROOT_COUNT_CLASSES: tuple[int, ...] = (1, 2, 3)  # 3 means three or more


def task_classes(task: DetectorTask) -> tuple[Label, ...]:
    return TOOTH_CLASSES if task is DetectorTask.TEETH else FINDING_CLASSES


def class_names(task: DetectorTask) -> tuple[str, ...]:
    return tuple(label.name for label in task_classes(task))


def labels_from_names(names: tuple[str, ...] | list[str]) -> tuple[Label, ...]:
    return tuple(CANONICAL_LABELS[n] for n in names)


def nms_groups(labels: tuple[Label, ...]) -> np.ndarray:
    """Classes that compete for the same box: all tooth numbers form one group (a tooth has
    one number), the caries depths form one group (a lesion has one depth), every other
    finding class is its own group."""
    groups = []
    for label in labels:
        if label.tooth is not None:
            groups.append("tooth")
        else:
            assert label.finding is not None
            groups.append(label.finding.value)
    names = sorted(set(groups))
    return np.asarray([names.index(g) for g in groups], np.int64)


def label_index(labels: tuple[Label, ...], label: Label) -> int:
    return labels.index(label)
