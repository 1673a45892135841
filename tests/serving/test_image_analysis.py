"""The files of a batch (a model replica's, or one request's in the ingress) decoded one by
one and read together: each answer to its own file, a bad file refused on its own."""

from datasets.radiograph import ReaderLimits
from datasets.synth.generator import case_dicom_bytes, generate_case
from models.errors import DxvError
from models.radiographs import RadiographKind
from serving.image_analysis import ImageAnalysis, ImageAnalysisRefused, analyze_files, raise_if_refused


class RefusedByModels(DxvError):
    code = "image.refused_by_models"


class ModelsRefusing:
    """The shipped models, but refusing (as a model may, with a project error) to read one
    image: what a batch does when the models, not the decoder, turn an image down."""

    def __init__(self, reader, refused_id: str) -> None:
        self.reader, self.refused_id = reader, refused_id

    def _check(self, image_id: str) -> None:
        if image_id == self.refused_id:
            raise RefusedByModels(f"{image_id}: refused")

    def read_many(self, images, **options):
        for image_id, _, _ in images:
            self._check(image_id)
        return self.reader.read_many(images, **options)

    def read(self, image_id, pixels, kind, **options):
        self._check(image_id)
        return self.reader.read(image_id, pixels, kind, **options)


def _files(n: int, seed: int):
    cases = [generate_case(RadiographKind.PERIAPICAL, seed, i) for i in range(n)]
    return cases, [(c.image_id, case_dicom_bytes(c), RadiographKind.PERIAPICAL, ReaderLimits()) for c in cases]


def test_a_batch_answers_each_file_and_refuses_a_bad_one_on_its_own(models) -> None:
    _, files = _files(2, 61)
    files.insert(1, ("junk", b"not an image at all", None, ReaderLimits()))
    outcomes = analyze_files(models.models, files)
    assert isinstance(outcomes[1], ImageAnalysisRefused) and outcomes[1].error.code == "image.not_an_image"
    for outcome, (image_id, data, kind, limits) in zip((outcomes[0], outcomes[2]), (files[0], files[2]), strict=True):
        alone = raise_if_refused(analyze_files(models.models, [(image_id, data, kind, limits)])[0])
        assert isinstance(outcome, ImageAnalysis) and outcome.reading.image_id == image_id
        assert [t.fdi for t in outcome.reading.teeth] == [t.fdi for t in alone.reading.teeth]
        assert [(f.finding_class, round(f.score, 4)) for f in outcome.reading.findings] == \
            [(f.finding_class, round(f.score, 4)) for f in alone.reading.findings]
        assert outcome.printed.kind == "periapical" and outcome.models_s > 0 and outcome.decode_s > 0


def test_an_image_the_models_refuse_does_not_fail_the_rest_of_the_batch(models) -> None:
    cases, files = _files(3, 62)
    outcomes = analyze_files(ModelsRefusing(models.models, cases[1].image_id), files)
    assert isinstance(outcomes[1], ImageAnalysisRefused) and outcomes[1].error.code == RefusedByModels.code
    assert [o.reading.image_id for o in (outcomes[0], outcomes[2])] == [cases[0].image_id, cases[2].image_id]


class ModelsNoting:
    """The shipped models, noting when they read (to check what ran before them)."""

    def __init__(self, reader, events: list) -> None:
        self.reader, self.events = reader, events

    def read_many(self, images, **options):
        self.events.append(("models", [image_id for image_id, _, _ in images]))
        return self.reader.read_many(images, **options)


def test_the_fingerprints_are_handed_on_before_the_models_read_and_only_when_every_file_decoded(models) -> None:
    _, files = _files(2, 63)
    events: list = []
    outcomes = analyze_files(ModelsNoting(models.models, events), files,
                             on_printed=lambda prints: events.append(("printed", prints)))
    assert [name for name, _ in events] == ["printed", "models"]
    # The same fingerprints, in the files' order, as the analyses carry.
    assert events[0][1] == tuple(raise_if_refused(o).printed for o in outcomes)
    assert [p.radiograph_id for p in events[0][1]] == [image_id for image_id, _, _, _ in files]
    # A request with a file that cannot be read fails: nothing is started for it.
    events.clear()
    analyze_files(ModelsNoting(models.models, events), [*files, ("junk", b"not an image", None, ReaderLimits())],
                  on_printed=lambda prints: events.append(("printed", prints)))
    assert [name for name, _ in events] == ["models"]
