"""Write radiographs as DICOM Part 10 files with valid intra-oral (IO) or panoramic (PX)
attributes, in any of the transfer syntaxes the reader accepts.

Used by the synthetic generator and by tests; identifiers come from a seed so that the
same seed gives the same bytes."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from models.radiographs import RadiographKind

# Digital Intra-Oral X-Ray Image Storage / Digital X-Ray Image Storage, both "For Presentation".
_SOP_CLASS_INTRAORAL = UID("1.2.840.10008.5.1.4.1.1.1.3")
_SOP_CLASS_DX = UID("1.2.840.10008.5.1.4.1.1.1")
_IMPLEMENTATION_UID = UID("1.2.826.0.1.3680043.10.1451.1")  # this project's implementation class


class TransferSyntax(StrEnum):
    EXPLICIT_LE = "explicit-le"
    IMPLICIT_LE = "implicit-le"
    RLE = "rle"
    JPEG_LS = "jpeg-ls"
    JPEG2000 = "jpeg2000"
    JPEG_BASELINE = "jpeg-baseline"  # lossy, 8-bit only

    @property
    def uid(self) -> UID:
        return {
            TransferSyntax.EXPLICIT_LE: ExplicitVRLittleEndian,
            TransferSyntax.IMPLICIT_LE: ImplicitVRLittleEndian,
            TransferSyntax.RLE: RLELossless,
            TransferSyntax.JPEG_LS: JPEGLSLossless,
            TransferSyntax.JPEG2000: JPEG2000Lossless,
            TransferSyntax.JPEG_BASELINE: JPEGBaseline8Bit,
        }[self]


@dataclass(frozen=True)
class SyntheticPatient:
    """A fake but well-formed patient module. Never a real person."""

    name: str = "SYNTHETIC^PATIENT"
    patient_id: str = "SYN-000000"
    birth_date: date = date(1980, 1, 1)
    sex: str = "O"


@dataclass(frozen=True)
class DicomImageInfo:
    kind: RadiographKind
    pixel_spacing_mm: float
    bits_stored: int = 12
    study_date: date = date(2026, 1, 1)
    laterality: str = "B"  # intra-oral Image Laterality: R, L, B (both) or U
    photometric: str = "MONOCHROME2"
    window: tuple[float, float] | None = None  # (center, width) in stored values
    rescale: tuple[float, float] = (1.0, 0.0)  # (slope, intercept)


def build_dicom(
    stored: np.ndarray,
    info: DicomImageInfo,
    *,
    uid_seed: str,
    patient: SyntheticPatient = SyntheticPatient(),
    transfer_syntax: TransferSyntax = TransferSyntax.EXPLICIT_LE,
) -> Dataset:
    """Build a dataset from stored values (uint8 or uint16, shape (rows, columns))."""
    if stored.ndim != 2 or stored.dtype not in (np.uint8, np.uint16):
        raise ValueError("stored pixels must be a 2-D uint8 or uint16 array")
    if transfer_syntax is TransferSyntax.JPEG_BASELINE and stored.dtype != np.uint8:
        raise ValueError("JPEG baseline holds 8-bit pixels only; pass uint8")
    bits_allocated = 8 if stored.dtype == np.uint8 else 16
    bits_stored = 8 if bits_allocated == 8 else info.bits_stored
    if stored.size and int(stored.max()) >= 2**bits_stored:
        raise ValueError(f"pixel values exceed {bits_stored} bits")

    sop_class = _SOP_CLASS_INTRAORAL if info.kind.is_intraoral else _SOP_CLASS_DX
    sop_instance = generate_uid(entropy_srcs=[uid_seed, "sop"])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _IMPLEMENTATION_UID
    meta.ImplementationVersionName = "DXV_0_1"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Modality = info.kind.dicom_modality
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "DXV Synthetic"
    ds.ManufacturerModelName = "dxv-synth"
    # Patient module: fake, well-formed.
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d")
    ds.PatientSex = patient.sex
    # Study and series.
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[uid_seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_seed, "series"])
    ds.StudyDate = ds.ContentDate = info.study_date.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SeriesDescription = info.kind.value.capitalize()
    ds.BodyPartExamined = "JAW"
    ds.PatientOrientation = ""
    ds.PositionerType = "NONE" if info.kind.is_intraoral else "PANORAMIC"
    ds.DetectorType = "DIRECT"
    if info.kind.is_intraoral:
        ds.ImageLaterality = info.laterality
    region = Dataset()  # SNOMED CT: jaw region
    region.CodeValue = "91609006"
    region.CodingSchemeDesignator = "SCT"
    region.CodeMeaning = "Mandible and maxilla" if not info.kind.is_intraoral else "Jaw region"
    ds.AnatomicRegionSequence = [region]
    # Image pixel module.
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = info.photometric
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1 if info.photometric == "MONOCHROME2" else -1
    ds.RescaleSlope = f"{info.rescale[0]:g}"
    ds.RescaleIntercept = f"{info.rescale[1]:g}"
    ds.RescaleType = "US"
    spacing = f"{info.pixel_spacing_mm:.6g}"
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.PixelSpacing = [spacing, spacing]
    if info.window is not None:
        ds.WindowCenter = f"{info.window[0]:g}"
        ds.WindowWidth = f"{info.window[1]:g}"
    ds.LossyImageCompression = "01" if transfer_syntax is TransferSyntax.JPEG_BASELINE else "00"
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    _apply_transfer_syntax(ds, stored, transfer_syntax)
    return ds


def _apply_transfer_syntax(ds: Dataset, stored: np.ndarray, syntax: TransferSyntax) -> None:
    if syntax in (TransferSyntax.EXPLICIT_LE, TransferSyntax.IMPLICIT_LE):
        ds.file_meta.TransferSyntaxUID = syntax.uid
        return
    if syntax is TransferSyntax.JPEG_BASELINE:
        # pydicom has no JPEG baseline encoder; Pillow writes the frame and we encapsulate it.
        buffer = io.BytesIO()
        Image.fromarray(stored, mode="L").save(buffer, format="JPEG", quality=95)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax.uid
        ds.LossyImageCompressionRatio = f"{stored.nbytes / max(1, len(buffer.getvalue())):.2f}"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        return
    ds.compress(syntax.uid, encoding_plugin="pylibjpeg" if syntax is TransferSyntax.RLE else "")


def write_dicom(ds: Dataset, path: str | Path) -> None:
    ds.save_as(path, enforce_file_format=True)


def dicom_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
