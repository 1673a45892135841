"""Tooth numbering (FDI and Universal), anatomy and surfaces.

FDI (ISO 3950) is the internal numbering everywhere in the project; Universal (ADA) is
converted at the edges (claims, reports). Quadrants follow the patient: 1 upper right,
2 upper left, 3 lower left, 4 lower right; primary teeth use quadrants 5-8.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cache

from models.errors import InvalidSurfaceError, InvalidToothError


class Dentition(StrEnum):
    PERMANENT = "permanent"
    PRIMARY = "primary"


class Arch(StrEnum):
    MAXILLARY = "maxillary"
    MANDIBULAR = "mandibular"


class Side(StrEnum):
    """The patient's side (not the viewer's)."""

    RIGHT = "right"
    LEFT = "left"


class ToothType(StrEnum):
    INCISOR = "incisor"
    CANINE = "canine"
    PREMOLAR = "premolar"
    MOLAR = "molar"


class NumberingSystem(StrEnum):
    FDI = "FDI"
    UNIVERSAL = "UNIVERSAL"


@dataclass(frozen=True)
class RootProfile:
    """Typical number of roots of a tooth and the counts seen as anatomical variants."""

    typical: int
    variants: frozenset[int] = frozenset()

    @property
    def possible(self) -> frozenset[int]:
        return frozenset({self.typical}) | self.variants


# Permanent teeth by position 1-8 (central incisor ... third molar).
_PERMANENT_TYPES: dict[int, ToothType] = {
    1: ToothType.INCISOR, 2: ToothType.INCISOR, 3: ToothType.CANINE,
    4: ToothType.PREMOLAR, 5: ToothType.PREMOLAR,
    6: ToothType.MOLAR, 7: ToothType.MOLAR, 8: ToothType.MOLAR,
}
# Primary teeth by position 1-5 (central incisor ... second molar); there are no premolars.
_PRIMARY_TYPES: dict[int, ToothType] = {
    1: ToothType.INCISOR, 2: ToothType.INCISOR, 3: ToothType.CANINE,
    4: ToothType.MOLAR, 5: ToothType.MOLAR,
}
_POSITION_NAMES_PERMANENT = {
    1: "central incisor", 2: "lateral incisor", 3: "canine", 4: "first premolar",
    5: "second premolar", 6: "first molar", 7: "second molar", 8: "third molar",
}
_POSITION_NAMES_PRIMARY = {
    1: "central incisor", 2: "lateral incisor", 3: "canine", 4: "first molar", 5: "second molar",
}

# Root counts from standard dental anatomy texts; variants are the counts a radiograph may
# legitimately show (e.g. radix entomolaris gives some mandibular first molars 3 roots).
_ROOTS_PERMANENT: dict[tuple[Arch, int], RootProfile] = {
    (Arch.MAXILLARY, 1): RootProfile(1),
    (Arch.MAXILLARY, 2): RootProfile(1),
    (Arch.MAXILLARY, 3): RootProfile(1),
    (Arch.MAXILLARY, 4): RootProfile(2, frozenset({1, 3})),
    (Arch.MAXILLARY, 5): RootProfile(1, frozenset({2})),
    (Arch.MAXILLARY, 6): RootProfile(3),
    (Arch.MAXILLARY, 7): RootProfile(3, frozenset({1, 2})),
    (Arch.MAXILLARY, 8): RootProfile(3, frozenset({1, 2})),
    (Arch.MANDIBULAR, 1): RootProfile(1, frozenset({2})),
    (Arch.MANDIBULAR, 2): RootProfile(1, frozenset({2})),
    (Arch.MANDIBULAR, 3): RootProfile(1, frozenset({2})),
    (Arch.MANDIBULAR, 4): RootProfile(1, frozenset({2})),
    (Arch.MANDIBULAR, 5): RootProfile(1),
    (Arch.MANDIBULAR, 6): RootProfile(2, frozenset({3})),
    (Arch.MANDIBULAR, 7): RootProfile(2, frozenset({1})),
    (Arch.MANDIBULAR, 8): RootProfile(2, frozenset({1, 3})),
}
_ROOTS_PRIMARY: dict[tuple[Arch, int], RootProfile] = {
    (Arch.MAXILLARY, 1): RootProfile(1), (Arch.MAXILLARY, 2): RootProfile(1),
    (Arch.MAXILLARY, 3): RootProfile(1), (Arch.MAXILLARY, 4): RootProfile(3),
    (Arch.MAXILLARY, 5): RootProfile(3),
    (Arch.MANDIBULAR, 1): RootProfile(1), (Arch.MANDIBULAR, 2): RootProfile(1),
    (Arch.MANDIBULAR, 3): RootProfile(1), (Arch.MANDIBULAR, 4): RootProfile(2),
    (Arch.MANDIBULAR, 5): RootProfile(2),
}

# Universal numbering: permanent 1..32 run from the upper right third molar clockwise (as
# the dentist faces the patient); primary A..T in the same order.
_UNIVERSAL_PERMANENT_ORDER: tuple[int, ...] = (
    18, 17, 16, 15, 14, 13, 12, 11, 21, 22, 23, 24, 25, 26, 27, 28,
    38, 37, 36, 35, 34, 33, 32, 31, 41, 42, 43, 44, 45, 46, 47, 48,
)
_UNIVERSAL_PRIMARY_ORDER: tuple[int, ...] = (
    55, 54, 53, 52, 51, 61, 62, 63, 64, 65, 75, 74, 73, 72, 71, 81, 82, 83, 84, 85,
)
_PRIMARY_LETTERS = "ABCDEFGHIJKLMNOPQRST"
_FDI_TO_UNIVERSAL: dict[int, str] = {
    **{fdi: str(i + 1) for i, fdi in enumerate(_UNIVERSAL_PERMANENT_ORDER)},
    **{fdi: _PRIMARY_LETTERS[i] for i, fdi in enumerate(_UNIVERSAL_PRIMARY_ORDER)},
}
_UNIVERSAL_TO_FDI: dict[str, int] = {u: fdi for fdi, u in _FDI_TO_UNIVERSAL.items()}

PERMANENT_FDI: tuple[int, ...] = tuple(sorted(_UNIVERSAL_PERMANENT_ORDER))
PRIMARY_FDI: tuple[int, ...] = tuple(sorted(_UNIVERSAL_PRIMARY_ORDER))
ALL_FDI: tuple[int, ...] = PERMANENT_FDI + PRIMARY_FDI


def _parse_fdi(value: int | str) -> int:
    text = str(value).strip()
    if not text.isdigit() or len(text) != 2:
        raise InvalidToothError(f"FDI tooth number must be two digits (11-48, 51-85), got {value!r}")
    number = int(text)
    if number not in _FDI_TO_UNIVERSAL:
        raise InvalidToothError(
            f"{number} is not an FDI tooth number (permanent 11-18, 21-28, 31-38, 41-48; "
            "primary 51-55, 61-65, 71-75, 81-85)"
        )
    return number


@dataclass(frozen=True, order=True)
class Tooth:
    """One tooth, identified by its FDI number. Build it with ``Tooth.fdi_of`` or
    ``Tooth.from_universal``; the constructor validates too."""

    fdi: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "fdi", _parse_fdi(self.fdi))

    @classmethod
    def fdi_of(cls, value: int | str) -> Tooth:
        return _tooth(_parse_fdi(value))

    @classmethod
    def from_universal(cls, value: int | str) -> Tooth:
        text = str(value).strip().upper()
        if text not in _UNIVERSAL_TO_FDI:
            raise InvalidToothError(
                f"{value!r} is not a Universal tooth number (permanent 1-32, primary A-T)"
            )
        return _tooth(_UNIVERSAL_TO_FDI[text])

    @classmethod
    def parse(cls, value: int | str, system: NumberingSystem | str) -> Tooth:
        system = NumberingSystem(str(system).upper())
        return cls.fdi_of(value) if system is NumberingSystem.FDI else cls.from_universal(value)

    @property
    def universal(self) -> str:
        return _FDI_TO_UNIVERSAL[self.fdi]

    @property
    def quadrant(self) -> int:
        """FDI quadrant digit: 1-4 permanent, 5-8 primary."""
        return self.fdi // 10

    @property
    def position(self) -> int:
        """Position from the midline: 1 central incisor ... 8 (permanent) or 5 (primary)."""
        return self.fdi % 10

    @property
    def dentition(self) -> Dentition:
        return Dentition.PERMANENT if self.quadrant <= 4 else Dentition.PRIMARY

    @property
    def arch(self) -> Arch:
        return Arch.MAXILLARY if self.quadrant in (1, 2, 5, 6) else Arch.MANDIBULAR

    @property
    def side(self) -> Side:
        return Side.RIGHT if self.quadrant in (1, 4, 5, 8) else Side.LEFT

    @property
    def tooth_type(self) -> ToothType:
        types = _PERMANENT_TYPES if self.dentition is Dentition.PERMANENT else _PRIMARY_TYPES
        return types[self.position]

    @property
    def is_anterior(self) -> bool:
        return self.tooth_type in (ToothType.INCISOR, ToothType.CANINE)

    @property
    def is_posterior(self) -> bool:
        return not self.is_anterior

    @property
    def roots(self) -> RootProfile:
        table = _ROOTS_PERMANENT if self.dentition is Dentition.PERMANENT else _ROOTS_PRIMARY
        return table[(self.arch, self.position)]

    @property
    def name(self) -> str:
        names = _POSITION_NAMES_PERMANENT if self.dentition is Dentition.PERMANENT else _POSITION_NAMES_PRIMARY
        prefix = "primary " if self.dentition is Dentition.PRIMARY else ""
        return f"{self.arch.value} {self.side.value} {prefix}{names[self.position]}"

    def mirrored(self) -> Tooth:
        """The same tooth on the patient's other side (what a horizontal image flip shows)."""
        return _tooth(flip_fdi_horizontal(self.fdi))

    def __str__(self) -> str:
        return str(self.fdi)


@cache
def _tooth(fdi: int) -> Tooth:
    return Tooth(fdi)


def fdi_to_universal(fdi: int | str) -> str:
    return Tooth.fdi_of(fdi).universal


def universal_to_fdi(universal: int | str) -> int:
    return Tooth.from_universal(universal).fdi


_MIRROR_QUADRANT = {1: 2, 2: 1, 3: 4, 4: 3, 5: 6, 6: 5, 7: 8, 8: 7}


def flip_fdi_horizontal(fdi: int) -> int:
    """FDI number after a left-right flip of the image: the patient's sides swap
    (quadrants 1<->2, 3<->4, 5<->6, 7<->8); the position in the arch is unchanged."""
    number = _parse_fdi(fdi)
    return _MIRROR_QUADRANT[number // 10] * 10 + number % 10


# --- Surfaces ------------------------------------------------------------------------


class Surface(StrEnum):
    """The five surfaces of a tooth. Each has one letter on posterior teeth and one on
    anterior teeth (occlusal/incisal, buccal/facial); lingual is called palatal on the
    maxilla in FDI-speaking countries."""

    MESIAL = "mesial"
    DISTAL = "distal"
    OCCLUSAL_INCISAL = "occlusal_incisal"
    BUCCAL_FACIAL = "buccal_facial"
    LINGUAL_PALATAL = "lingual_palatal"


_SURFACE_ORDER: tuple[Surface, ...] = (
    Surface.MESIAL, Surface.OCCLUSAL_INCISAL, Surface.DISTAL, Surface.BUCCAL_FACIAL, Surface.LINGUAL_PALATAL,
)


@cache
def valid_surface_letters(tooth: Tooth) -> dict[str, Surface]:
    """Letters accepted on a claim for this tooth and the surface each one names.

    Posterior teeth take O (occlusal) and B (buccal); anterior teeth I (incisal) and F
    (facial); P (palatal) is accepted for lingual on maxillary teeth only."""
    letters = {"M": Surface.MESIAL, "D": Surface.DISTAL, "L": Surface.LINGUAL_PALATAL}
    if tooth.is_anterior:
        letters |= {"I": Surface.OCCLUSAL_INCISAL, "F": Surface.BUCCAL_FACIAL}
    else:
        letters |= {"O": Surface.OCCLUSAL_INCISAL, "B": Surface.BUCCAL_FACIAL}
    if tooth.arch is Arch.MAXILLARY:
        letters["P"] = Surface.LINGUAL_PALATAL
    return letters


def surface_letter(surface: Surface, tooth: Tooth) -> str:
    """The conventional letter of ``surface`` on ``tooth`` (L, not P, for lingual)."""
    if surface is Surface.OCCLUSAL_INCISAL:
        return "I" if tooth.is_anterior else "O"
    if surface is Surface.BUCCAL_FACIAL:
        return "F" if tooth.is_anterior else "B"
    return {Surface.MESIAL: "M", Surface.DISTAL: "D", Surface.LINGUAL_PALATAL: "L"}[surface]


def parse_surfaces(text: str, tooth: Tooth) -> frozenset[Surface]:
    """Parse a claim's surface string ("MOD", "m,o", "DO") for ``tooth``.

    Raises InvalidSurfaceError for a letter not valid on that tooth type, a repeated
    surface, or an empty string."""
    letters = [c for c in text.upper() if c not in " ,;/-"]
    if not letters:
        raise InvalidSurfaceError(f"no surfaces given for tooth {tooth.fdi}")
    valid = valid_surface_letters(tooth)
    surfaces: list[Surface] = []
    for letter in letters:
        if letter not in valid:
            raise InvalidSurfaceError(
                f"surface {letter!r} is not valid on tooth {tooth.fdi} ({tooth.tooth_type.value}); "
                f"valid letters: {''.join(sorted(valid))}"
            )
        if valid[letter] in surfaces:
            raise InvalidSurfaceError(f"surface {letter!r} given twice for tooth {tooth.fdi}: {text!r}")
        surfaces.append(valid[letter])
    return frozenset(surfaces)


def format_surfaces(surfaces: frozenset[Surface] | set[Surface], tooth: Tooth) -> str:
    """Canonical string in M-O/I-D-B/F-L order, e.g. frozenset({D, O, M}) -> "MOD"."""
    return "".join(surface_letter(s, tooth) for s in _SURFACE_ORDER if s in surfaces)
