import json

import pytest

from datasets.coco import from_coco, read_coco, write_coco
from datasets.errors import DatasetFormatError
from datasets.synth.generator import write_dataset
from datasets.yolo import read_yolo, write_yolo
from models.findings import CariesDepth, FindingClass
from models.radiographs import RadiographKind


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_dataset(out, RadiographKind.BITEWING, 4, 9)
    return out


def _key(image):
    return (image.image_id, sorted((t.fdi, t.box_xyxy_px, t.root_count) for t in image.teeth),
            sorted((f.finding_class.value, f.fdi, f.box_xyxy_px, str(f.caries_depth), sorted(f.surfaces))
                   for f in image.findings))


def test_coco_round_trip_keeps_everything(synth_dir, tmp_path):
    first = read_coco(synth_dir / "annotations.json")
    assert first.images and not first.unmapped
    write_coco(tmp_path / "again.json", first.images)
    second = read_coco(tmp_path / "again.json")
    assert [_key(i) for i in first.images] == [_key(i) for i in second.images]
    assert first.images[0].kind is RadiographKind.BITEWING


def test_yolo_round_trip_keeps_classes_and_boxes(synth_dir, tmp_path):
    coco = read_coco(synth_dir / "annotations.json")
    write_yolo(coco, synth_dir, tmp_path / "yolo")
    back = read_yolo(tmp_path / "yolo")
    assert not back.unmapped
    for a, b in zip(coco.images, back.images, strict=True):
        assert sorted(t.fdi for t in a.teeth) == sorted(t.fdi for t in b.teeth)
        assert sorted((f.finding_class, f.caries_depth) for f in a.findings) == sorted(
            (f.finding_class, f.caries_depth) for f in b.findings)
        for ta, tb in zip(sorted(a.teeth, key=lambda t: t.fdi), sorted(b.teeth, key=lambda t: t.fdi), strict=True):
            assert max(abs(x - y) for x, y in zip(ta.box_xyxy_px, tb.box_xyxy_px, strict=True)) < 1e-3


DENTEX = {
    "images": [{"id": 1, "file_name": "train_0.png", "width": 2000, "height": 1000}],
    "categories_1": [{"id": i, "name": str(i + 1)} for i in range(4)],
    "categories_2": [{"id": i, "name": str(i + 1)} for i in range(8)],
    "categories_3": [{"id": 0, "name": "Impacted"}, {"id": 1, "name": "Caries"},
                     {"id": 2, "name": "Periapical Lesion"}, {"id": 3, "name": "Deep Caries"}],
    "annotations": [
        {"id": 1, "image_id": 1, "bbox": [100, 100, 50, 80], "category_id_1": 2, "category_id_2": 7,
         "category_id_3": 0},  # tooth 38, impacted
        {"id": 2, "image_id": 1, "bbox": [300, 100, 40, 80], "category_id_1": 0, "category_id_2": 5,
         "category_id_3": 3},  # tooth 16, deep caries
        {"id": 3, "image_id": 1, "bbox": [300, 100, 40, 80], "category_id_1": 0, "category_id_2": 5,
         "category_id_3": 2},  # tooth 16 again, periapical lesion
        {"id": 4, "image_id": 1, "bbox": [500, 100, 40, 80], "category_id_1": 3},  # quadrant only
    ],
}


def test_dentex_hierarchy_is_read_by_names():
    dataset = from_coco(DENTEX)
    image = dataset.images[0]
    assert sorted(t.fdi for t in image.teeth) == [16, 38]  # tooth 16 once despite two diagnoses
    found = sorted((f.fdi, f.finding_class.value, str(f.caries_depth)) for f in image.findings)
    assert found == [(16, "caries", "near_pulp"), (16, "periapical_lesion", "None"), (38, "impacted_tooth", "None")]
    assert dataset.unmapped == {"quadrant-only (no tooth number)": 1}


def test_plain_coco_with_category_map_and_unmapped_counted():
    data = {
        "images": [{"id": 7, "file_name": "x.png", "width": 100, "height": 100}],
        "categories": [{"id": 1, "name": "decay"}, {"id": 2, "name": "bracket"}, {"id": 3, "name": "46"}],
        "annotations": [
            {"id": 1, "image_id": 7, "bbox": [1, 1, 5, 5], "category_id": 1},
            {"id": 2, "image_id": 7, "bbox": [1, 1, 5, 5], "category_id": 2},
            {"id": 3, "image_id": 7, "bbox": [1, 1, 50, 50], "category_id": 3},
        ],
    }
    dataset = from_coco(data, {"decay": "caries-dentin"})
    image = dataset.images[0]
    assert image.findings[0].finding_class is FindingClass.CARIES
    assert image.findings[0].caries_depth is CariesDepth.DENTIN
    assert image.teeth[0].fdi == 46
    assert dataset.unmapped == {"bracket": 1}


def test_malformed_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetFormatError, match="not valid JSON"):
        read_coco(bad)
    with pytest.raises(DatasetFormatError, match="images"):
        from_coco({"annotations": []})
    with pytest.raises(DatasetFormatError, match="unknown image"):
        from_coco({"images": [], "annotations": [{"id": 1, "image_id": 3, "bbox": [0, 0, 1, 1]}]})
    bad.write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    with pytest.raises(DatasetFormatError):
        read_coco(bad)
    with pytest.raises(DatasetFormatError, match="images/"):
        read_yolo(tmp_path)
