import pytest

from models.errors import InvalidSurfaceError, InvalidToothError
from models.teeth import (
    ALL_FDI,
    PERMANENT_FDI,
    PRIMARY_FDI,
    Arch,
    Dentition,
    NumberingSystem,
    Side,
    Surface,
    Tooth,
    ToothType,
    fdi_to_universal,
    flip_fdi_horizontal,
    format_surfaces,
    parse_surfaces,
    universal_to_fdi,
)

# The published Universal <-> FDI chart, written out in full (not derived from the code).
CHART = {
    "1": 18, "2": 17, "3": 16, "4": 15, "5": 14, "6": 13, "7": 12, "8": 11,
    "9": 21, "10": 22, "11": 23, "12": 24, "13": 25, "14": 26, "15": 27, "16": 28,
    "17": 38, "18": 37, "19": 36, "20": 35, "21": 34, "22": 33, "23": 32, "24": 31,
    "25": 41, "26": 42, "27": 43, "28": 44, "29": 45, "30": 46, "31": 47, "32": 48,
    "A": 55, "B": 54, "C": 53, "D": 52, "E": 51, "F": 61, "G": 62, "H": 63, "I": 64, "J": 65,
    "K": 75, "L": 74, "M": 73, "N": 72, "O": 71, "P": 81, "Q": 82, "R": 83, "S": 84, "T": 85,
}


def test_chart_covers_all_52_teeth():
    assert len(CHART) == 52 == len(ALL_FDI)
    assert set(CHART.values()) == set(ALL_FDI)


@pytest.mark.parametrize(("universal", "fdi"), sorted(CHART.items()))
def test_conversion_both_ways(universal, fdi):
    assert universal_to_fdi(universal) == fdi
    assert fdi_to_universal(fdi) == universal
    assert Tooth.parse(universal, NumberingSystem.UNIVERSAL) == Tooth.parse(str(fdi), "fdi")


def test_universal_accepts_lower_case_letters_and_ints():
    assert universal_to_fdi("a") == 55
    assert universal_to_fdi(30) == 46


@pytest.mark.parametrize("bad", [0, 10, 19, 49, 50, 56, 86, 99, "1a", "", "110", -11])
def test_invalid_fdi_rejected(bad):
    with pytest.raises(InvalidToothError):
        Tooth.fdi_of(bad)


@pytest.mark.parametrize("bad", ["0", "33", "U", "Z", "AA"])
def test_invalid_universal_rejected(bad):
    with pytest.raises(InvalidToothError):
        Tooth.from_universal(bad)


def test_anatomy_of_a_few_teeth():
    t = Tooth.fdi_of(36)
    assert (t.quadrant, t.position, t.arch, t.side, t.tooth_type, t.dentition) == (
        3, 6, Arch.MANDIBULAR, Side.LEFT, ToothType.MOLAR, Dentition.PERMANENT)
    assert t.is_posterior and not t.is_anterior
    assert Tooth.fdi_of(13).tooth_type is ToothType.CANINE and Tooth.fdi_of(13).is_anterior
    assert Tooth.fdi_of(44).tooth_type is ToothType.PREMOLAR and Tooth.fdi_of(44).side is Side.RIGHT
    assert Tooth.fdi_of(74).tooth_type is ToothType.MOLAR  # primary first molar, no premolars in primary teeth
    assert Tooth.fdi_of(74).dentition is Dentition.PRIMARY
    assert Tooth.fdi_of(61).arch is Arch.MAXILLARY and Tooth.fdi_of(61).side is Side.LEFT


def test_root_counts_and_variants():
    assert Tooth.fdi_of(11).roots.typical == 1
    assert Tooth.fdi_of(14).roots.typical == 2 and 1 in Tooth.fdi_of(14).roots.variants  # max first premolar
    assert Tooth.fdi_of(16).roots.typical == 3
    assert Tooth.fdi_of(46).roots.typical == 2 and 3 in Tooth.fdi_of(46).roots.variants  # radix entomolaris
    assert Tooth.fdi_of(35).roots.possible == frozenset({1})
    assert Tooth.fdi_of(84).roots.typical == 2 and Tooth.fdi_of(54).roots.typical == 3
    for fdi in ALL_FDI:
        assert 1 <= Tooth.fdi_of(fdi).roots.typical <= 3


def test_horizontal_flip_swaps_sides_and_is_an_involution():
    assert flip_fdi_horizontal(16) == 26 and flip_fdi_horizontal(37) == 47
    assert flip_fdi_horizontal(55) == 65 and flip_fdi_horizontal(83) == 73
    for fdi in ALL_FDI:
        mirrored = Tooth.fdi_of(flip_fdi_horizontal(fdi))
        original = Tooth.fdi_of(fdi)
        assert flip_fdi_horizontal(mirrored.fdi) == fdi
        assert mirrored.side is not original.side
        assert (mirrored.arch, mirrored.position, mirrored.tooth_type) == (original.arch, original.position, original.tooth_type)


def test_surfaces_by_tooth_type():
    molar, incisor, lower_incisor = Tooth.fdi_of(36), Tooth.fdi_of(11), Tooth.fdi_of(41)
    assert parse_surfaces("MOD", molar) == {Surface.MESIAL, Surface.OCCLUSAL_INCISAL, Surface.DISTAL}
    assert parse_surfaces("m,i", incisor) == {Surface.MESIAL, Surface.OCCLUSAL_INCISAL}
    assert parse_surfaces("P", incisor) == {Surface.LINGUAL_PALATAL}  # palatal on the maxilla
    with pytest.raises(InvalidSurfaceError):
        parse_surfaces("I", molar)  # incisal on a molar
    with pytest.raises(InvalidSurfaceError):
        parse_surfaces("O", incisor)
    with pytest.raises(InvalidSurfaceError):
        parse_surfaces("B", incisor)  # facial, not buccal, on anteriors
    with pytest.raises(InvalidSurfaceError):
        parse_surfaces("P", lower_incisor)  # no palate in the mandible
    with pytest.raises(InvalidSurfaceError):
        parse_surfaces("MM", molar)
    with pytest.raises(InvalidSurfaceError):
        parse_surfaces("", molar)


def test_surface_format_round_trip():
    for fdi, text in ((36, "MODBL"), (11, "MIDFL"), (24, "DO")):
        tooth = Tooth.fdi_of(fdi)
        formatted = format_surfaces(parse_surfaces(text, tooth), tooth)
        assert parse_surfaces(formatted, tooth) == parse_surfaces(text, tooth)
    assert format_surfaces(parse_surfaces("DOM", Tooth.fdi_of(46)), Tooth.fdi_of(46)) == "MOD"


def test_permanent_and_primary_sets():
    assert len(PERMANENT_FDI) == 32 and len(PRIMARY_FDI) == 20
