"""Errors raised while reading radiographs and datasets (see models.errors for the tree).

    RadiographError                   image.invalid
    ├── NotAnImageError               image.not_an_image: not DICOM/PNG/JPEG/TIFF at all
    ├── TruncatedImageError           image.truncated: the file ends before its pixels do
    ├── EmptyImageError               image.empty: zero rows or columns
    ├── ImageTooLargeError            image.too_large: over the pixel or byte limit
    ├── MissingPixelDataError         image.no_pixel_data: a DICOM without an image
    ├── UnsupportedPhotometricError   image.unsupported_photometric
    ├── UnsupportedModalityError      image.unsupported_modality: e.g. CT, MR
    └── UnsupportedTransferSyntaxError image.unsupported_transfer_syntax: no decoder
    DatasetFormatError                dataset.invalid: malformed COCO/YOLO/truth files
"""

from __future__ import annotations

from models.errors import DxvError


class RadiographError(DxvError, ValueError):
    code = "image.invalid"


class NotAnImageError(RadiographError):
    code = "image.not_an_image"


class TruncatedImageError(RadiographError):
    code = "image.truncated"


class EmptyImageError(RadiographError):
    code = "image.empty"


class ImageTooLargeError(RadiographError):
    code = "image.too_large"


class MissingPixelDataError(RadiographError):
    code = "image.no_pixel_data"


class UnsupportedPhotometricError(RadiographError):
    code = "image.unsupported_photometric"


class UnsupportedModalityError(RadiographError):
    code = "image.unsupported_modality"


class UnsupportedTransferSyntaxError(RadiographError):
    code = "image.unsupported_transfer_syntax"


class DatasetFormatError(DxvError, ValueError):
    code = "dataset.invalid"
