"""Several radiographs read together (``DentalReader.read_many``, what the model
deployment does with a ``@serve.batch``): each model's inputs of one shape go through it as
one batch, and every reading is the one the image gets alone."""

import numpy as np
import pytest

import models.inference as inference
from datasets.synth.generator import generate_case
from models.inference import DentalReader, run_batched
from models.radiographs import RadiographKind


@pytest.fixture(scope="module")
def reader():
    return DentalReader.from_directory("models/shipped", threads=2)


class CountingSession:
    """A real ONNX Runtime session that counts its runs and the batch sizes it was given."""

    def __init__(self, session) -> None:
        self.session, self.batches = session, []

    def run(self, names, feed):
        self.batches.append(len(next(iter(feed.values()))))
        return self.session.run(names, feed)


def _same_reading(a, b) -> None:
    assert (a.image_id, a.kind, a.width_px, a.height_px, a.model_versions) == \
        (b.image_id, b.kind, b.width_px, b.height_px, b.model_versions)
    assert [(t.fdi, t.root_count) for t in a.teeth] == [(t.fdi, t.root_count) for t in b.teeth]
    assert [(f.finding_class, f.fdi, f.verified) for f in a.findings] == [(f.finding_class, f.fdi, f.verified)
                                                                       for f in b.findings]
    for x, y in zip((*a.teeth, *a.findings), (*b.teeth, *b.findings), strict=True):
        np.testing.assert_allclose(x.box_xyxy_px, y.box_xyxy_px, atol=1e-2)
        assert abs(x.score - y.score) < 1e-4


@pytest.mark.parametrize("operating_point", [True, False])
def test_reading_together_gives_each_image_its_own_reading(reader, operating_point, monkeypatch):
    kinds = [RadiographKind.PERIAPICAL, RadiographKind.BITEWING, RadiographKind.PERIAPICAL,
             RadiographKind.PANORAMIC, RadiographKind.PERIAPICAL]
    cases = [generate_case(kind, 4040, i) for i, kind in enumerate(kinds)]
    images = [(c.image_id, c.pixels_unit, kind) for c, kind in zip(cases, kinds, strict=True)]
    alone = [reader.read(*image, operating_point=operating_point) for image in images]
    runs: list[tuple[object, list[int]]] = []  # (session, batch sizes of its runs)

    def counted(session, name, batches):
        counting = CountingSession(session)
        runs.append((session, counting.batches))
        return run_batched(session=counting, input_name=name, batches=batches)

    monkeypatch.setattr(inference, "run_batched", counted)
    together = reader.read_many(images, operating_point=operating_point)
    assert [r.image_id for r in together] == [c.image_id for c in cases]
    for a, b in zip(together, alone, strict=True):
        _same_reading(a, b)
    assert any(r.findings for r in together) and all(r.teeth for r in together)
    # One call a model; the tooth detector reads periapicals and bitewings at one input
    # shape (320x384): one run of four, and the panoramic alone.
    tooth_runs = [sizes for session, sizes in runs if session is reader.teeth.model.session]
    assert tooth_runs == [[4, 1]]
    assert len(runs) == 4  # tooth detector, root counter, finding detector, verifier


def test_given_teeth_are_used_per_image(reader):
    cases = [generate_case(RadiographKind.PERIAPICAL, 4041, i) for i in range(2)]
    images = [(c.image_id, c.pixels_unit, RadiographKind.PERIAPICAL) for c in cases]
    first = reader.read(*images[0])
    together = reader.read_many(images, given_teeth=[list(first.teeth), []])
    assert [t.fdi for t in together[0].teeth] == [t.fdi for t in first.teeth]
    assert together[1].teeth == () and all(f.fdi is None for f in together[1].findings)


def test_run_batched_splits_outputs_back_and_bounds_each_run(reader, monkeypatch):
    session = CountingSession(reader.roots.model.session)
    name = reader.roots.model.card.input.name
    rng = np.random.default_rng(0)
    h, w = reader.roots.crop_hw
    batches = [rng.random((n, 1, h, w), dtype=np.float32) for n in (3, 1, 4)]
    alone = [session.session.run(None, {name: b})[0] for b in batches]
    together = run_batched(session, name, batches)
    assert session.batches == [8]  # one run for the three batches of one shape
    for (got,), expected in zip(together, alone, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    # At most MAX_RUN_PIXELS input pixels a run; a batch larger alone still runs whole.
    monkeypatch.setattr(inference, "MAX_RUN_PIXELS", 4 * h * w)
    session.batches.clear()
    again = run_batched(session, name, [*batches, rng.random((6, 1, h, w), dtype=np.float32)])
    assert session.batches == [4, 4, 6]
    for (got,), expected in zip(again[:3], alone, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    # Inputs of other shapes are never joined (the tooth detector takes any size).
    detector = CountingSession(reader.teeth.model.session)
    name = reader.teeth.model.card.input.name
    small, wide = rng.random((3, 1, 64, 64), dtype=np.float32), rng.random((2, 1, 64, 96), dtype=np.float32)
    mixed = run_batched(detector, name, [small, wide, small[:1]])
    assert detector.batches == [4, 2]
    for got, alone_batch in zip(mixed, [small, wide, small[:1]], strict=True):
        for out, expected in zip(got, detector.session.run(None, {name: alone_batch}), strict=True):
            np.testing.assert_allclose(out, expected, atol=1e-4)


class MeetingNetwork:
    """A network whose runs wait at ``barrier`` first: two such networks finish only if
    their runs are under way at the same time."""

    def __init__(self, model, barrier) -> None:
        self.model, self.barrier = model, barrier
        self.card, self.version = model.card, model.version

    def run(self, batches):
        self.barrier.wait()
        return self.model.run(batches)


def test_with_branches_the_root_counter_is_read_beside_the_finding_detector(reader):
    """Networks elsewhere (a deployment each): the root counter and the finding detector
    both need only the teeth, so a reader with ``branches`` waits for them together (the
    barrier breaks, and the read fails, if they run one after the other); the readings are
    those of the reader in one process."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    barrier = threading.Barrier(2, timeout=10)
    networks = [reader.teeth.model, MeetingNetwork(reader.roots.model, barrier),
                MeetingNetwork(reader.findings.model, barrier), reader.verifier.model]
    cases = [generate_case(RadiographKind.PERIAPICAL, 4042, i) for i in range(2)]
    images = [(c.image_id, c.pixels_unit, RadiographKind.PERIAPICAL) for c in cases]
    with ThreadPoolExecutor(2) as branches:
        together = DentalReader.from_networks(networks, branches).read_many(images)
    assert not barrier.broken
    for a, b in zip(together, reader.read_many(images), strict=True):
        _same_reading(a, b)
    assert any(t.root_count for r in together for t in r.teeth) and any(f.fdi for r in together for f in r.findings)
    # Without branches the same networks are read one after the other: the first to run waits alone.
    with pytest.raises(threading.BrokenBarrierError):
        DentalReader.from_networks([*networks[:1], MeetingNetwork(reader.roots.model, threading.Barrier(2, timeout=0.5)),
                                    *networks[2:]]).read_many(images)
