"""A small parser for the treatment narrative: what the provider says was seen and done.

It looks for a fixed set of signals (surgical steps, impaction, pulp involvement,
fracture, retreatment, canal counts) sentence by sentence, notices a negation in front of
a cue ("no bone removal", "not impacted", "without sectioning"), and ties each statement
to the teeth mentioned in the same sentence ("#30", "tooth 14", "teeth 3 and 14"). A
sentence that names no tooth applies to every line. Keyword rules rather than a language
model: every signal can be traced to the words that produced it, which a reviewer and an
appeal need."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from models.errors import VocabularyError
from models.teeth import NumberingSystem, Tooth


class Signal(StrEnum):
    SURGICAL_STEPS = "surgical_steps"  # flap, bone removal, sectioning
    IMPACTION = "impaction"
    PULP_INVOLVEMENT = "pulp_involvement"  # pulpitis, necrosis, abscess, exposure
    FRACTURE = "fracture"
    RETREATMENT = "retreatment"  # a previous root canal being redone
    CANALS_MULTIPLE = "canals_multiple"  # two or more canals treated


_CUES: dict[Signal, tuple[str, ...]] = {
    Signal.SURGICAL_STEPS: (
        r"(?:mucoperiosteal |full[- ]thickness )?flap", r"bone removal", r"removal of bone", r"removed bone",
        r"bone (?:was )?removed", r"osteotomy", r"ostectomy", r"section(?:ed|ing)", r"tooth division",
        r"divided (?:the )?(?:tooth|roots)", r"troughing",
    ),
    Signal.IMPACTION: (
        r"(?:complete(?:ly)?|partial(?:ly)?|full(?:y)?) bony impaction", r"bony impaction", r"soft[- ]tissue impaction",
        r"impacted", r"impaction", r"unerupted", r"embedded",
    ),
    Signal.PULP_INVOLVEMENT: (
        r"irreversible pulpitis", r"pulpitis", r"pulp(?:al)? necrosis", r"necrotic(?: pulp)?", r"non-?vital",
        r"(?:periapical|apical) (?:abscess|periodontitis|radiolucency|lesion)", r"abscess", r"pulp exposure",
        r"exposed pulp", r"sinus tract",
    ),
    Signal.FRACTURE: (r"fractur(?:e|ed)", r"cracked", r"broken", r"lost (?:a )?cusp", r"cusp fracture"),
    Signal.RETREATMENT: (
        r"re-?treat(?:ment|ed)?", r"previous(?:ly)? (?:rct|root canal|endo\w*)", r"failed (?:rct|root canal|endo\w*)",
        r"prior (?:rct|root canal)",
    ),
}
_NEGATION = re.compile(r"\b(?:no|not|without|none|denies|negative for|absence of|non)\b[\w\s,-]{0,24}$")
_TOOTH = re.compile(r"(?:#\s*|\btooth\s*#?\s*|\bteeth\s*#?\s*)(?:[0-9]{1,2}|[A-T])\b"
                    r"(?:\s*(?:,|and|&)\s*#?\s*(?:[0-9]{1,2}|[A-T])\b)*", re.IGNORECASE)
_TOOTH_WORD = re.compile(r"\bteeth\b|\btooth\b", re.IGNORECASE)
_TOOTH_TOKEN = re.compile(r"\b([0-9]{1,2}|[A-Ta-t])\b")
_WORD_NUMBERS = {"one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_CANALS = re.compile(r"\b([1-5]|one|single|two|three|four|five)[\s-]+(?:canals?|canal system)\b")
_NAMED_CANALS = re.compile(r"\b(?:mb2?|db|ml|dl|mesiobuccal|distobuccal|palatal canal|distal canal|mesial canals?)\b")


@dataclass(frozen=True)
class Statement:
    signal: Signal
    negated: bool
    phrase: str  # the words that produced it, for the evidence
    teeth: tuple[str, ...]  # tooth tokens as written in the sentence; empty: applies to every line
    canal_count: int | None = None


@dataclass(frozen=True)
class NarrativeSignals:
    statements: tuple[Statement, ...] = ()

    def about(self, tooth: Tooth | None, system: NumberingSystem) -> tuple[Statement, ...]:
        """Statements on ``tooth`` (mentioned in ``system``) and those naming no tooth."""
        return tuple(s for s in self.statements if not s.teeth or (tooth is not None and _mentions(s, tooth, system)))

    def state(self, signal: Signal, tooth: Tooth | None, system: NumberingSystem) -> Statement | None:
        """The positive statement of ``signal`` for the tooth if there is one, else a
        negated one, else None (the narrative is silent)."""
        found = [s for s in self.about(tooth, system) if s.signal is signal]
        return next((s for s in found if not s.negated), found[0] if found else None)

    def canal_count(self, tooth: Tooth | None, system: NumberingSystem) -> int | None:
        counts = [s.canal_count for s in self.about(tooth, system) if s.canal_count is not None]
        return max(counts) if counts else None


def _mentions(statement: Statement, tooth: Tooth, system: NumberingSystem) -> bool:
    for token in statement.teeth:
        try:
            if Tooth.parse(token, system) == tooth:
                return True
        except VocabularyError:
            continue
    return False


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def _teeth_in(sentence: str) -> tuple[str, ...]:
    tokens: list[str] = []
    for match in _TOOTH.finditer(sentence):
        tokens += [t.upper() for t in _TOOTH_TOKEN.findall(_TOOTH_WORD.sub(" ", match.group(0)).replace("#", " "))]
    return tuple(dict.fromkeys(tokens))


def parse_narrative(text: str) -> NarrativeSignals:
    statements: list[Statement] = []
    for sentence in _sentences(text or ""):
        lower = sentence.lower()
        teeth = _teeth_in(sentence)
        for signal, cues in _CUES.items():
            taken: list[tuple[int, int]] = []
            for cue in cues:
                for match in re.finditer(rf"\b{cue}\b", lower):
                    if any(a < match.end() and match.start() < b for a, b in taken):
                        continue  # a longer cue already covers these words
                    taken.append((match.start(), match.end()))
                    clause = re.split(r"[,;:]| but ", lower[: match.start()])[-1]
                    statements.append(Statement(signal, bool(_NEGATION.search(clause)),
                                                sentence[match.start():match.end()], teeth))
        count = _canal_count(lower)
        if count is not None:
            statements.append(Statement(Signal.CANALS_MULTIPLE, count < 2, sentence.strip(), teeth, count))
    return NarrativeSignals(tuple(statements))


def _canal_count(lower: str) -> int | None:
    match = _CANALS.search(lower)
    if match:
        word = match.group(1)
        return int(word) if word.isdigit() else _WORD_NUMBERS[word]
    named = set(_NAMED_CANALS.findall(lower))
    return len(named) if len(named) >= 2 else None
