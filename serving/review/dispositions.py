"""What a reviewer decides about a queued line (pure).

Outcomes:
- ``confirm``: the flag was right. The line ends as the reviewer's ``action`` (reject or
  downcode); without one, as the rules suggested (downcode to the suggested code where
  there is one, else reject).
- ``override_pass``: the flag was wrong (a false positive); the line is paid.
- ``change``: the reviewer sets the action (pass, downcode or reject) and, for a
  downcode, the code.

Finding corrections say what the models got wrong on the radiographs (they become
training data): a detected finding that is not there, a finding the models missed (with
the box the reviewer drew), a tooth read with the wrong number."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from models.errors import DxvError, VocabularyError
from models.findings import FindingClass
from models.teeth import Tooth
from serving.decisions import Action

BoxXYXY = tuple[float, float, float, float]


def _fdi(value: int) -> int:
    try:
        Tooth.fdi_of(value)
    except VocabularyError as exc:
        raise ValueError(f"{value} is not an FDI tooth number") from exc
    return value


Fdi = Annotated[int, AfterValidator(_fdi)]


class DispositionError(DxvError):
    code = "review.invalid_disposition"


class Outcome(StrEnum):
    CONFIRM = "confirm"
    OVERRIDE_PASS = "override_pass"
    CHANGE = "change"


class _In(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FindingWrong(_In):
    """A detection the reviewer rejects (the box as the case view showed it)."""

    type: Literal["finding_wrong"]
    image_id: str = Field(min_length=1)
    finding_class: FindingClass
    box_xyxy_px: BoxXYXY
    note: str = ""


class MissedFinding(_In):
    """A finding the models did not report, with the box the reviewer drew."""

    type: Literal["missed_finding"]
    image_id: str = Field(min_length=1)
    finding_class: FindingClass
    box_xyxy_px: BoxXYXY
    tooth_fdi: Fdi | None = None
    note: str = ""

    @model_validator(mode="after")
    def _box_has_area(self) -> Self:
        x0, y0, x1, y1 = self.box_xyxy_px
        if not (x1 > x0 and y1 > y0):
            raise ValueError("the drawn box needs x1 > x0 and y1 > y0")
        return self


class WrongToothNumber(_In):
    """A detected tooth (its box and number as shown) that is really ``correct_fdi``."""

    type: Literal["wrong_tooth_number"]
    image_id: str = Field(min_length=1)
    box_xyxy_px: BoxXYXY
    detected_fdi: Fdi
    correct_fdi: Fdi
    note: str = ""


Correction = Annotated[FindingWrong | MissedFinding | WrongToothNumber, Field(discriminator="type")]


class DispositionIn(_In):
    outcome: Outcome
    action: Action | None = None  # for confirm (reject or downcode) and change
    code: str | None = Field(None, min_length=1, max_length=16)  # the code a downcode pays
    reason: str = Field(min_length=3, max_length=2000)
    corrections: tuple[Correction, ...] = Field(default=(), max_length=200)


def final_action(disposition: DispositionIn, suggested_code: str | None) -> tuple[Action, str | None]:
    """The line's final action and code (the code only for a downcode)."""
    match disposition.outcome:
        case Outcome.OVERRIDE_PASS:
            if disposition.action not in (None, Action.PASS):
                raise DispositionError("override_pass pays the line; leave 'action' out or set it to pass")
            return Action.PASS, None
        case Outcome.CONFIRM:
            action = disposition.action or (Action.DOWNCODE if suggested_code else Action.REJECT)
            if action not in (Action.REJECT, Action.DOWNCODE):
                raise DispositionError("confirm ends a line as reject or downcode; use override_pass to pay it")
        case Outcome.CHANGE:
            if disposition.action is None or disposition.action is Action.FLAG:
                raise DispositionError("change needs the final action: pass, downcode or reject")
            action = disposition.action
    if action is Action.DOWNCODE:
        code = disposition.code or suggested_code
        if not code:
            raise DispositionError("a downcode needs the code to pay ('code'); the rules suggested none")
        return action, code
    if disposition.code:
        raise DispositionError(f"'code' applies to a downcode only, not to {action.value}")
    return action, None
