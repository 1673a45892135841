"""The project's exception tree.

Every error the project raises on purpose derives from ``DxvError`` and carries a short
machine-readable ``code`` (used by the service for 4xx answers) beside its message.

    DxvError
    ├── VocabularyError            models: an invalid tooth number, surface, class name
    │   ├── InvalidToothError
    │   ├── InvalidSurfaceError
    │   └── UnknownLabelError
    ├── RadiographError            datasets: a file that cannot be read as a radiograph
    │   └── (see datasets.errors)
    └── DatasetFormatError         datasets: a malformed COCO/YOLO/truth file
"""

from __future__ import annotations


class DxvError(Exception):
    """Base of every error the project raises on purpose."""

    code: str = "dxv.error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class VocabularyError(DxvError, ValueError):
    code = "vocabulary.invalid"


class InvalidToothError(VocabularyError):
    code = "vocabulary.invalid_tooth"


class InvalidSurfaceError(VocabularyError):
    code = "vocabulary.invalid_surface"


class UnknownLabelError(VocabularyError):
    code = "vocabulary.unknown_label"
