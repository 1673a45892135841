"""The claim as an adjudication system sends it (the ``Claim`` data contract).

Tooth numbers arrive in Universal or FDI (``tooth_system`` says which) and are converted
to FDI once, here, on validation: everything behind this module speaks FDI. Surfaces are
parsed for the billed tooth, so 'I' on a molar or 'O' on an incisor is refused with the
reason. Member identifiers are kept for the rule module but never logged."""

from __future__ import annotations

import datetime as dt
import json
from functools import cached_property
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.config_loading import validation_problems
from models.errors import DxvError, VocabularyError
from models.radiographs import RadiographKind
from models.teeth import NumberingSystem, Surface, Tooth, format_surfaces, parse_surfaces


class _Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# The longest identifiers and codes the state store keeps (its column widths): a longer one
# is refused here, with the field named, rather than failing the database write later.
ID_MAX = 64  # claim, tenant, member, provider, plan; provider specialty and region
LINE_ID_MAX = 32
RADIOGRAPH_ID_MAX = 128
CODE_MAX = 16  # procedure code and code system
# Dates a claim may carry: the rules count policy years and look-back windows of years
# either side of a date, which overflow the calendar near its ends (9999-12-31 plus a
# policy year once answered 500); no dental claim is dated outside these.
EARLIEST_DATE = dt.date(1900, 1, 1)
LATEST_DATE = dt.date(2199, 12, 31)


class Member(_Contract):
    member_id: str = Field(min_length=1, max_length=ID_MAX)
    birth_date: dt.date = Field(ge=EARLIEST_DATE, le=LATEST_DATE)

    def age_on(self, day: dt.date) -> int:
        """Age in whole years on ``day``."""
        before_birthday = (day.month, day.day) < (self.birth_date.month, self.birth_date.day)
        return day.year - self.birth_date.year - int(before_birthday)


class Provider(_Contract):
    provider_id: str = Field(min_length=1, max_length=ID_MAX)
    specialty: str = Field("general", max_length=ID_MAX)
    region: str = Field("", max_length=ID_MAX)


class Attachment(_Contract):
    """One radiograph sent with the claim. ``content`` is base64 (service) or a file name
    under the images folder (``dxv validate``); the validation layer only needs the id and kind."""

    radiograph_id: str = Field(min_length=1, max_length=RADIOGRAPH_ID_MAX)
    kind: RadiographKind | None = None
    content: str | None = None


class ClaimLine(_Contract):
    line_id: str = Field(min_length=1, max_length=LINE_ID_MAX)
    code: str = Field(min_length=1, max_length=CODE_MAX)
    code_system: str = Field("CDT", max_length=CODE_MAX)
    tooth: str | None = None
    tooth_system: NumberingSystem = NumberingSystem.UNIVERSAL
    surfaces: str | None = None
    quadrant: int | None = Field(None, ge=1, le=4)  # FDI quadrant digit of the permanent dentition
    fee: float = Field(0.0, ge=0.0)

    @field_validator("code", "code_system")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip().upper()

    @model_validator(mode="after")
    def _site(self) -> Self:
        try:
            tooth = self.fdi_tooth
            if self.surfaces is not None:
                if tooth is None:
                    raise ValueError("surfaces are given but no tooth")
                parse_surfaces(self.surfaces, tooth)
        except VocabularyError as exc:
            raise ValueError(exc.message) from exc
        return self

    @cached_property
    def fdi_tooth(self) -> Tooth | None:
        return None if self.tooth is None else Tooth.parse(self.tooth, self.tooth_system)

    @cached_property
    def surface_set(self) -> frozenset[Surface]:
        tooth = self.fdi_tooth
        if self.surfaces is None or tooth is None:
            return frozenset()
        return parse_surfaces(self.surfaces, tooth)

    def site_text(self) -> str:
        """'tooth 36 (Universal 19), MOD' for reasons a provider reads."""
        tooth = self.fdi_tooth
        if tooth is None:
            return f"quadrant {self.quadrant}" if self.quadrant else "no tooth"
        text = f"tooth {tooth.fdi} (Universal {tooth.universal})"
        return f"{text}, {format_surfaces(self.surface_set, tooth)}" if self.surfaces else text


class Claim(_Contract):
    claim_id: str = Field(min_length=1, max_length=ID_MAX)
    tenant: str = Field("default", min_length=1, max_length=ID_MAX)
    member: Member
    provider: Provider
    plan_id: str = Field("default", max_length=ID_MAX)
    date_of_service: dt.date = Field(ge=EARLIEST_DATE, le=LATEST_DATE)
    lines: tuple[ClaimLine, ...] = Field(min_length=1)
    narrative: str = ""
    attachments: tuple[Attachment, ...] = ()
    mode: str = Field("claim", pattern="^(claim|preauthorization)$")

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        for name, ids in (("line_id", [x.line_id for x in self.lines]),
                          ("radiograph_id", [a.radiograph_id for a in self.attachments])):
            duplicates = sorted({i for i in ids if ids.count(i) > 1})
            if duplicates:
                raise ValueError(f"duplicate {name}: {', '.join(duplicates)}")
        if self.member.birth_date > self.date_of_service:
            raise ValueError("the member's birth date is after the date of service")
        return self

    def line(self, line_id: str) -> ClaimLine:
        return next(x for x in self.lines if x.line_id == line_id)


class InvalidClaimError(DxvError):
    code = "claim.invalid"


def claim_from_json(text: str) -> Claim:
    """Parse and validate a claim; InvalidClaimError says what is wrong and where."""
    try:
        # pydantic's own JSON parser: a request with two periapicals' base64 in 0.3 ms, where
        # json.loads and validating the dict took 1.2. Bad input is parsed again below, for the
        # messages (line and column of a JSON error; every problem of an invalid claim).
        return Claim.model_validate_json(text)
    except ValidationError:
        pass
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidClaimError(f"the claim is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
    try:
        return Claim.model_validate(data)
    except ValidationError as exc:
        raise InvalidClaimError(f"not a valid claim: {validation_problems(exc, 'claim')}") from exc
