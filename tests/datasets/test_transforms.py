import numpy as np
import torch

from datasets.coco import read_coco
from datasets.synth.generator import write_dataset
from datasets.transforms import (
    NEGATIVE_FOCUS_KEY,
    TOOTH_FOCUS_KEY,
    TOOTH_LABELS,
    RandBoxPatchd,
    RandFlipFdid,
    Target,
    detection_dataset,
    detection_items,
    from_monai_boxes,
    to_monai_boxes,
)
from models.radiographs import RadiographKind


def test_box_order_round_trip():
    boxes = np.array([[1, 2, 3, 4]], np.float32)
    assert to_monai_boxes(boxes).tolist() == [[2, 1, 4, 3]]
    np.testing.assert_array_equal(from_monai_boxes(to_monai_boxes(boxes)), boxes)


def test_flip_moves_pixels_boxes_and_tooth_numbers():
    image = torch.zeros((1, 10, 20))
    image[0, 2:5, 1:4] = 1.0  # a bright block at x 1..4, y 2..5
    data = {"image": image, "boxes": to_monai_boxes(np.array([[1, 2, 4, 5]], np.float32)),
            "fdi": np.array([16]), "labels": np.array([0])}
    flip = RandFlipFdid(prob=1.0)
    out = flip(data)
    (x0, y0, x1, y1), = from_monai_boxes(out["boxes"])
    assert (x0, y0, x1, y1) == (16, 2, 19, 5)
    assert out["fdi"].tolist() == [26]
    assert float(out["image"][0, 2:5, 16:19].mean()) == 1.0 and float(out["image"].sum()) == 9.0


def test_training_pipeline_keeps_boxes_aligned(tmp_path):
    write_dataset(tmp_path, RadiographKind.BITEWING, 2, 3)
    annotations = read_coco(tmp_path / "annotations.json")
    items = detection_items(annotations, tmp_path, Target.TEETH)
    flipped_seen = False
    for seed in range(6):
        dataset = detection_dataset(annotations, tmp_path, Target.TEETH, train=True, seed=seed)
        sample = dataset[0]
        assert sample["image"].shape[0] == 1
        n = len(sample["boxes"])
        assert n == len(sample["labels"]) == len(sample["fdi"]) == len(sample["root_count"])
        assert [TOOTH_LABELS[i] for i in sample["labels"]] == sample["fdi"].tolist()
        quadrants = {int(f) // 10 for f in sample["fdi"]}
        original = {int(f) // 10 for f in items[0]["fdi"]}
        flipped_seen |= quadrants != original and quadrants == {({1: 2, 2: 1, 3: 4, 4: 3}[q]) for q in original}
        h, w = sample["image"].shape[1:]
        boxes = from_monai_boxes(sample["boxes"])
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert flipped_seen


def _patched(image, boxes_xyxy, size, focus, seed):
    patch = RandBoxPatchd(size, focus_prob=focus)
    patch.set_random_state(seed=seed)
    return patch({"image": image, "boxes": to_monai_boxes(np.asarray(boxes_xyxy, np.float32))})


def test_focused_patch_holds_the_box_and_its_pixels():
    image = torch.zeros((1, 300, 500))
    image[0, 200:206, 420:425] = 1.0  # a 5x6 px "caries" at x 420..425, y 200..206
    for seed in range(20):
        out = _patched(image, [[420, 200, 425, 206]], 64, 1.0, seed)
        assert tuple(out["image"].shape) == (1, 64, 64)
        (x0, y0, x1, y1), = from_monai_boxes(out["boxes"])
        assert x0 >= 0 and x1 <= 64 and y0 >= 0 and y1 <= 64 and (x1 - x0, y1 - y0) == (5, 6)
        # the box still frames the bright pixels, which all came along
        assert float(out["image"][0, int(y0):int(y1), int(x0):int(x1)].mean()) == 1.0
        assert float(out["image"].sum()) == 30.0


def test_focus_weights_centre_the_weighted_class_more_often():
    image = torch.zeros((1, 400, 800))
    boxes = to_monai_boxes(np.asarray([[20, 20, 30, 30], [760, 360, 770, 370]], np.float32))

    def far_box_share(weights):
        patch = RandBoxPatchd(64, focus_prob=1.0, label_weights=weights)
        patch.set_random_state(seed=3)
        outs = [patch({"image": image, "boxes": boxes, "labels": np.asarray([0, 1])}) for _ in range(200)]
        far = [from_monai_boxes(o["boxes"])[1] for o in outs]
        return sum(bool((b[:2] >= 0).all() and (b[2:] <= 64).all()) for b in far) / 200

    assert 0.35 < far_box_share(None) < 0.65  # a uniform draw between the two boxes
    assert far_box_share(np.asarray([1.0, 9.0])) > 0.85
    assert far_box_share(np.asarray([9.0, 1.0])) < 0.15


def test_unfocused_patches_roam_and_small_images_are_padded():
    image = torch.ones((1, 300, 500))
    starts = set()
    for seed in range(12):
        out = _patched(image, [[420, 200, 425, 206]], 64, 0.0, seed)
        (x0, _, _, _), = from_monai_boxes(out["boxes"])
        starts.add(round(420 - float(x0)))  # where the patch began
    assert len(starts) > 6 and all(0 <= s <= 500 - 64 for s in starts)
    small = _patched(torch.ones((1, 40, 50)), np.zeros((0, 4)), 64, 0.7, 0)
    assert tuple(small["image"].shape) == (1, 64, 64) and float(small["image"].sum()) == 40 * 50


def _tooth_patches(tooth_prob, focus_prob, finding_boxes, n=300):
    """Shares of ``n`` 64 px patches of a 400x800 image that hold its one tooth whole, and
    its finding (far from the tooth: no patch holds both)."""
    ys, xs = torch.meshgrid(torch.arange(400.0), torch.arange(800.0), indexing="ij")
    image = (ys * 1000 + xs)[None]  # each pixel names its place: a patch's first is its origin
    tooth = to_monai_boxes(np.asarray([[700, 300, 740, 360]], np.float32))  # x 700..740, y 300..360
    patch = RandBoxPatchd(64, focus_prob=focus_prob, tooth_focus_prob=tooth_prob)
    patch.set_random_state(seed=5)
    on_tooth = on_finding = 0
    for _ in range(n):
        out = patch({"image": image, "boxes": to_monai_boxes(np.asarray(finding_boxes, np.float32).reshape(-1, 4)),
                     TOOTH_FOCUS_KEY: tooth})
        assert TOOTH_FOCUS_KEY not in out  # its boxes are in the whole image's frame
        top, left = divmod(int(out["image"][0, 0, 0]), 1000)
        on_tooth += left <= 700 and top <= 300 and left + 64 >= 740 and top + 64 >= 360
        for x0, y0, x1, y1 in finding_boxes:
            on_finding += left <= x0 and top <= y0 and left + 64 >= x1 and top + 64 >= y1
    return on_tooth / n, on_finding / n


def test_tooth_focused_patches_hold_a_whole_tooth_in_their_share():
    finding = [[20, 20, 30, 30]]  # far from the tooth: no patch holds both
    on_tooth, on_finding = _tooth_patches(0.3, 0.5, finding)
    assert 0.2 < on_tooth < 0.4 and 0.4 < on_finding < 0.6
    on_tooth, on_finding = _tooth_patches(0.0, 0.5, finding)
    assert on_tooth < 0.02 and 0.4 < on_finding < 0.6
    on_tooth, _ = _tooth_patches(0.3, 0.5, [])  # no finding: the tooth keeps its share
    assert 0.2 < on_tooth < 0.4


def test_without_tooth_focus_the_patches_are_the_same_as_before():
    image = torch.rand((1, 300, 500), generator=torch.Generator().manual_seed(0))
    boxes = to_monai_boxes(np.asarray([[420, 200, 425, 206]], np.float32))
    old, new = RandBoxPatchd(64, focus_prob=0.5), RandBoxPatchd(64, focus_prob=0.5, tooth_focus_prob=0.0)
    old.set_random_state(seed=9)
    new.set_random_state(seed=9)
    for _ in range(20):
        a = old({"image": image, "boxes": boxes})
        b = new({"image": image, "boxes": boxes, TOOTH_FOCUS_KEY: boxes})
        assert torch.equal(a["image"], b["image"])


def test_hard_negative_patches_hold_a_mined_box_in_their_share_beside_the_teeth():
    ys, xs = torch.meshgrid(torch.arange(400.0), torch.arange(800.0), indexing="ij")
    image = (ys * 1000 + xs)[None]  # each pixel names its place: a patch's first is its origin
    finding = to_monai_boxes(np.asarray([[20, 20, 30, 30]], np.float32))
    tooth = to_monai_boxes(np.asarray([[700, 300, 740, 360]], np.float32))
    negative = to_monai_boxes(np.asarray([[400, 40, 410, 50]], np.float32))
    patch = RandBoxPatchd(64, focus_prob=0.4, tooth_focus_prob=0.2, negative_focus_prob=0.3)
    patch.set_random_state(seed=3)
    held = {"finding": 0, "tooth": 0, "negative": 0}
    places = {"finding": (20, 20, 30, 30), "tooth": (700, 300, 740, 360), "negative": (400, 40, 410, 50)}
    n = 400
    for _ in range(n):
        out = patch({"image": image, "boxes": finding, TOOTH_FOCUS_KEY: tooth, NEGATIVE_FOCUS_KEY: negative})
        assert NEGATIVE_FOCUS_KEY not in out and TOOTH_FOCUS_KEY not in out
        top, left = divmod(int(out["image"][0, 0, 0]), 1000)
        for name, (x0, y0, x1, y1) in places.items():
            held[name] += left <= x0 and top <= y0 and left + 64 >= x1 and top + 64 >= y1
    assert 0.33 < held["finding"] / n < 0.47 and 0.14 < held["tooth"] / n < 0.27 and 0.24 < held["negative"] / n < 0.37
    # An image without mined boxes gives their share to unfocused patches, the others keep theirs.
    patch.set_random_state(seed=3)
    no_negative = [patch({"image": image, "boxes": finding, TOOTH_FOCUS_KEY: tooth,
                          NEGATIVE_FOCUS_KEY: np.zeros((0, 4), np.float32)}) for _ in range(n)]
    def holds_tooth(out):
        top, left = divmod(int(out["image"][0, 0, 0]), 1000)
        return left <= 700 and top <= 300 and left + 64 >= 740 and top + 64 >= 360

    assert 0.14 < sum(map(holds_tooth, no_negative)) / n < 0.27


def test_without_hard_negatives_the_patches_are_the_same_as_before():
    image = torch.rand((1, 300, 500), generator=torch.Generator().manual_seed(0))
    boxes = to_monai_boxes(np.asarray([[420, 200, 425, 206]], np.float32))
    old = RandBoxPatchd(64, focus_prob=0.5, tooth_focus_prob=0.2)
    new = RandBoxPatchd(64, focus_prob=0.5, tooth_focus_prob=0.2, negative_focus_prob=0.0)
    old.set_random_state(seed=9)
    new.set_random_state(seed=9)
    for _ in range(20):
        a = old({"image": image, "boxes": boxes, TOOTH_FOCUS_KEY: boxes})
        b = new({"image": image, "boxes": boxes, TOOTH_FOCUS_KEY: boxes, NEGATIVE_FOCUS_KEY: boxes})
        assert torch.equal(a["image"], b["image"])
