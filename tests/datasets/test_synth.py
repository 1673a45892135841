import json
import os
import subprocess
import sys

import numpy as np
import pytest

from datasets.annotations import check_box
from datasets.readers import read_radiograph
from datasets.samples import synthetic_samples
from datasets.synth.config import SynthConfig
from datasets.synth.generator import case_dicom_bytes, generate_case, png_bytes, write_dataset
from models.findings import FindingClass
from models.radiographs import RadiographKind
from models.teeth import Tooth

KINDS = list(RadiographKind)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_bytes_other_seed_other_image(kind):
    a, b = generate_case(kind, 7, 3), generate_case(kind, 7, 3)
    assert case_dicom_bytes(a) == case_dicom_bytes(b)
    assert png_bytes(a) == png_bytes(b)
    assert a.truth == b.truth
    assert not np.array_equal(a.stored, generate_case(kind, 8, 3).stored)


_DIGEST = """
import hashlib
from datasets.synth.generator import generate_case
from models.radiographs import RadiographKind
digest = hashlib.sha256()
for kind in RadiographKind:
    for index in range(12):
        case = generate_case(kind, 7, index)
        boxes = [(t.fdi, t.box_xyxy_px) for t in case.annotations.teeth]
        boxes += [(f.finding_class.value, f.box_xyxy_px) for f in case.annotations.findings]
        digest.update(case.stored.tobytes() + repr(boxes).encode())
print(digest.hexdigest())
"""


def test_a_case_is_the_same_in_every_process():
    # Python salts string hashes per process: a generator that iterated a set of surfaces
    # drew its random numbers in another order in each process.
    digests = {subprocess.run([sys.executable, "-c", _DIGEST], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert len(digests) == 1


def test_samples_rendered_in_worker_processes_are_the_same():
    counts = {RadiographKind.PERIAPICAL: 3, RadiographKind.PANORAMIC: 2}
    here, there = synthetic_samples(counts, 5), synthetic_samples(counts, 5, workers=2)
    assert [s.image_id for s in there] == [s.image_id for s in here]
    for a, b in zip(here, there, strict=True):
        assert a.kind is b.kind and a.annotations == b.annotations
        assert np.array_equal(a.load(), b.load())


@pytest.mark.parametrize("kind", KINDS)
def test_annotation_truth(kind):
    for index in range(6 if kind is not RadiographKind.PANORAMIC else 3):
        case = generate_case(kind, 11, index)
        ann = case.annotations
        assert ann.teeth, "every synthetic radiograph shows teeth"
        present = {t.fdi for t in ann.teeth}
        assert len(present) == len(ann.teeth), "a tooth number appears once"
        missing = set(case.truth["missing_fdi"])
        for tooth in ann.teeth:
            assert check_box(tooth.box_xyxy_px, ann.width_px, ann.height_px)
            assert tooth.root_count in Tooth.fdi_of(tooth.fdi).roots.possible or (
                tooth.root_count == 3 and max(Tooth.fdi_of(tooth.fdi).roots.possible) >= 3)
        for finding in ann.findings:
            assert check_box(finding.box_xyxy_px, ann.width_px, ann.height_px)
            if finding.finding_class is FindingClass.IMPLANT:
                assert finding.fdi in missing  # an implant stands where a tooth is missing
            else:
                assert finding.fdi in present, f"{finding} is on no annotated tooth"
            if finding.finding_class is FindingClass.CARIES:
                assert finding.caries_depth is not None and finding.surfaces


def test_kind_geometry():
    pa, bw, px = (generate_case(k, 1, 0) for k in KINDS)
    assert px.stored.shape[1] == 2 * px.stored.shape[0]  # panoramic about 2:1
    assert bw.stored.shape[1] > bw.stored.shape[0]  # bitewing landscape
    assert {t.fdi // 10 for t in bw.annotations.teeth} in ({1, 4}, {2, 3})  # one side, both arches
    assert len({Tooth.fdi_of(t.fdi).arch for t in pa.annotations.teeth}) == 1  # periapical: one arch
    assert len(px.annotations.teeth) >= 20
    assert px.stored.dtype == np.uint16 and px.stored.max() < 4096


def test_findings_appear_over_many_panoramics():
    counts = {c: 0 for c in FindingClass}
    for index in range(6):
        for finding in generate_case(RadiographKind.PANORAMIC, 5, index).annotations.findings:
            counts[finding.finding_class] += 1
    assert all(counts[c] > 0 for c in (FindingClass.CARIES, FindingClass.PERIAPICAL_LESION,
                                       FindingClass.IMPACTED_TOOTH, FindingClass.RESTORATION)), counts


def test_lesions_are_darker_than_their_surroundings():
    """A caries box is radiolucent compared with the rest of its tooth."""
    config = SynthConfig.model_validate({"difficulty": {"caries_contrast": {"low": 0.6, "high": 0.7},
                                                        "noise_sigma": {"low": 0.0, "high": 0.0}}})
    checked = 0
    for index in range(20):
        case = generate_case(RadiographKind.BITEWING, 3, index, config)
        for finding in case.annotations.findings:
            if finding.finding_class is not FindingClass.CARIES:
                continue
            tooth = case.annotations.tooth(finding.fdi)
            x0, y0, x1, y1 = (int(v) for v in finding.box_xyxy_px)
            tx0, ty0, tx1, ty1 = (int(v) for v in tooth.box_xyxy_px)
            lesion = case.pixels_unit[y0:y1, x0:x1].min()
            crown = np.percentile(case.pixels_unit[ty0:ty1, tx0:tx1], 75)
            assert lesion < crown
            checked += 1
    assert checked >= 3


def test_dicom_attributes_and_png_agree():
    case = generate_case(RadiographKind.PANORAMIC, 2, 0)
    from io import BytesIO

    import pydicom

    ds = pydicom.dcmread(BytesIO(case_dicom_bytes(case)))
    assert ds.Modality == "PX" and ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.BitsAllocated == 16 and ds.BitsStored == 12
    assert str(ds.PatientName).startswith("SYNTHETIC^") and ds.PatientID.startswith("SYN-")
    intraoral = pydicom.dcmread(BytesIO(case_dicom_bytes(generate_case(RadiographKind.BITEWING, 2, 0))))
    assert intraoral.Modality == "IO" and intraoral.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.3"
    from_dicom = read_radiograph(case_dicom_bytes(case)).pixels_unit
    from_png = read_radiograph(png_bytes(case)).pixels_unit
    assert np.abs(from_dicom - from_png).max() < 1e-4


def test_write_dataset_files(tmp_path):
    summary = write_dataset(tmp_path, RadiographKind.PERIAPICAL, 3, 4, preview=True)
    assert summary.images == 3
    truth = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    assert [t["image_id"] for t in truth] == ["pa-s4-00000", "pa-s4-00001", "pa-s4-00002"]
    for record in truth:
        assert (tmp_path / record["file_png"]).is_file() and (tmp_path / record["file_dcm"]).is_file()
    coco = json.loads((tmp_path / "annotations.json").read_text())
    assert len(coco["images"]) == 3 and coco["categories_3"][0]["name"] == "Impacted"
    assert (tmp_path / "preview.png").stat().st_size > 10_000
