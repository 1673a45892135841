"""Table-driven scenarios for every catalogue concept, built from findings (no model):
each concept has a pass, a flag and, where the catalogue gives it a lower tier or the
evidence matrix a contraindication, a reject or downcode."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from models.radiographs import RadiographKind as K
from serving.decisions import Action
from serving.validation.engine import load_tables, validate_claim
from tests.serving.builders import claim, finding, line, reading, tooth

TABLES = load_tables()
PA, BW, PX = K.PERIAPICAL, K.BITEWING, K.PANORAMIC
LOWER_RIGHT = [44, 45, 46, 47, 48]
LOWER_LEFT = [33, 34, 35, 36, 37]
UPPER_FRONT = [12, 11, 21, 22]


@dataclass(frozen=True)
class Case:
    name: str
    code: str
    tooth: int | None = None
    surfaces: str | None = None
    teeth: tuple = tuple(LOWER_RIGHT)
    findings: tuple = ()
    kinds: tuple[K, ...] = (PA,)
    narrative: str = ""
    age: int = 40
    quadrant: int | None = None
    expect: Action = Action.PASS
    suggested: str | None = None
    reason_has: str = ""
    system: str = "CDT"
    extra: dict = field(default_factory=dict)


def rcf(fdi, score=0.9):
    return finding("root_canal_filling", fdi, "root", score)


def implant(fdi):
    return finding("implant", fdi, "whole", 0.95)


def lesion(fdi, score=0.9):
    return finding("periapical_lesion", fdi, "apex", score)


def caries(fdi, where="mesial", depth="dentin", score=0.9):
    return finding("caries", fdi, where, score, depth)


def with_roots(teeth, roots):
    return tuple(tooth(t, roots=roots.get(t)) if t in roots else t for t in teeth)


CASES: list[Case] = [
    # --- imaging ---------------------------------------------------------------------
    Case("fmx pass", "D0210", kinds=(PA,) * 6 + (BW,) * 4),
    Case("fmx downcode to 4 bitewings", "D0210", kinds=(BW,) * 4, expect=Action.DOWNCODE, suggested="D0274"),
    Case("fmx flag: one image", "D0210", kinds=(PA,), expect=Action.FLAG, reason_has="not among the attachments"),
    Case("pa first pass", "D0220"),
    Case("pa first flag: none attached", "D0220", kinds=(BW,), expect=Action.FLAG, reason_has="missing documentation"),
    Case("pa additional pass", "D0230", kinds=(PA, PA)),
    Case("pa additional flag: one image", "D0230", kinds=(PA,), expect=Action.FLAG),
    Case("2 bitewings pass", "D0272", kinds=(BW, BW)),
    Case("2 bitewings flag", "D0272", kinds=(BW,), expect=Action.FLAG),
    Case("4 bitewings pass", "D0274", kinds=(BW,) * 4),
    Case("4 bitewings downcode", "D0274", kinds=(BW, BW), expect=Action.DOWNCODE, suggested="D0272"),
    Case("4 bitewings flag", "D0274", kinds=(PA,), expect=Action.FLAG),
    Case("panoramic pass", "D0330", kinds=(PX,)),
    Case("panoramic flag", "D0330", kinds=(PA,), expect=Action.FLAG, reason_has="panoramic"),
    # --- preventive / periodontal --------------------------------------------------
    Case("adult prophy pass", "D1110", kinds=()),
    Case("adult prophy on a child downcodes", "D1110", kinds=(), age=9, expect=Action.DOWNCODE, suggested="D1120"),
    Case("child prophy pass", "D1120", kinds=(), age=9),
    Case("child prophy on an adult flags", "D1120", kinds=(), age=40, expect=Action.FLAG, reason_has="billed below"),
    Case("periodontal maintenance passes the image layer", "D4910", kinds=()),
    Case("srp 4+ pass", "D4341", quadrant=4),
    Case("srp 4+ with 2 teeth downcodes", "D4341", quadrant=4, teeth=(46, 47), expect=Action.DOWNCODE, suggested="D4342"),
    Case("srp 4+ flag: quadrant not shown", "D4341", quadrant=2, expect=Action.FLAG, reason_has="quadrant 2"),
    Case("srp 1-3 pass", "D4342", quadrant=4, teeth=(46, 47)),
    Case("srp 1-3 flag: quadrant not shown", "D4342", quadrant=1, expect=Action.FLAG),
    Case("srp 1-3 flag: 5 teeth", "D4342", quadrant=4, expect=Action.FLAG),
    # --- crowns, build-up, pulpotomy -------------------------------------------------
    *[c for code in ("D2740", "D2750", "D2790") for c in (
        Case(f"{code} pass: root filled", code, 46, findings=(rcf(46),)),
        Case(f"{code} flag: no indication", code, 46, expect=Action.FLAG, reason_has="no visible indication"),
        Case(f"{code} reject: implant", code, 46, findings=(implant(46),), expect=Action.REJECT, reason_has="implant"),
    )],
    Case("crown pass: fracture in narrative", "D2750", 46, narrative="Tooth 46 fractured lingual cusp.", system="CDT"),
    Case("build-up pass", "D2950", 46, findings=(rcf(46),)),
    Case("build-up flag", "D2950", 46, expect=Action.FLAG),
    Case("build-up reject: implant", "D2950", 46, findings=(implant(46),), expect=Action.REJECT),
    Case("pulpotomy pass", "D3220", 46, findings=(caries(46, "occlusal", "near_pulp"),)),
    Case("pulpotomy flag", "D3220", 46, findings=(caries(46, "occlusal", "enamel"),), expect=Action.FLAG),
    Case("pulpotomy reject: root filled", "D3220", 46, findings=(rcf(46),), expect=Action.REJECT),
    # --- endodontics -------------------------------------------------------------------
    Case("anterior rct pass", "D3310", 11, teeth=tuple(UPPER_FRONT), findings=(lesion(11),)),
    Case("anterior rct flag: no indication", "D3310", 11, teeth=tuple(UPPER_FRONT), expect=Action.FLAG),
    Case("anterior rct reject: implant", "D3310", 11, teeth=tuple(UPPER_FRONT), findings=(implant(11),),
         expect=Action.REJECT),
    Case("premolar rct pass", "D3320", 45, findings=(caries(45, "occlusal", "near_pulp"),)),
    Case("premolar rct flag: weak lesion", "D3320", 45, findings=(lesion(45, 0.3),), expect=Action.FLAG,
         reason_has="not clear"),
    Case("premolar rct downcode: billed on a canine", "D3320", 43, teeth=(42, 43, 44), findings=(lesion(43),),
         expect=Action.DOWNCODE, suggested="D3310"),
    Case("molar rct pass", "D3330", 46, teeth=with_roots(LOWER_RIGHT, {46: 2}), findings=(lesion(46),)),
    Case("molar rct on a premolar downcodes", "D3330", 45, findings=(lesion(45),), expect=Action.DOWNCODE,
         suggested="D3320", reason_has="premolar"),
    Case("molar rct on a single-rooted molar downcodes", "D3330", 46, teeth=with_roots(LOWER_RIGHT, {46: 1}),
         findings=(lesion(46),), expect=Action.DOWNCODE, suggested="D3320", reason_has="root count 1"),
    Case("molar rct, single root but narrative says 3 canals", "D3330", 46, teeth=with_roots(LOWER_RIGHT, {46: 1}),
         findings=(lesion(46),), narrative="#46 three canals instrumented and obturated", expect=Action.FLAG,
         reason_has="disagree"),
    Case("molar rct flag: already root filled", "D3330", 46, teeth=with_roots(LOWER_RIGHT, {46: 2}),
         findings=(lesion(46), rcf(46)), expect=Action.FLAG, reason_has="retreatment"),
    Case("molar rct reject: implant", "D3330", 46, findings=(implant(46),), expect=Action.REJECT),
    *[c for code, t, teeth, lower in (("D3346", 11, UPPER_FRONT, "D3310"), ("D3347", 45, LOWER_RIGHT, "D3320"),
                                       ("D3348", 46, LOWER_RIGHT, "D3330")) for c in (
        Case(f"{code} pass", code, t, teeth=with_roots(teeth, {46: 2}), findings=(rcf(t), lesion(t))),
        Case(f"{code} flag: filling unclear", code, t, teeth=with_roots(teeth, {46: 2}), findings=(rcf(t, 0.3), lesion(t)),
             expect=Action.FLAG),
        Case(f"{code} downcode: no previous filling", code, t, teeth=with_roots(teeth, {46: 2}), findings=(lesion(t),),
             expect=Action.DOWNCODE, suggested=lower),
        Case(f"{code} reject: implant", code, t, teeth=tuple(teeth), findings=(implant(t),), expect=Action.REJECT),
    )],
    # --- oral surgery ------------------------------------------------------------------
    Case("simple extraction pass", "D7140", 46),
    Case("simple extraction flag: tooth absent on panoramic", "D7140", 46, teeth=(44, 45, 47), kinds=(PX,),
         expect=Action.FLAG, reason_has="absent"),
    Case("simple extraction reject: implant", "D7140", 46, findings=(implant(46),), expect=Action.REJECT),
    Case("surgical extraction pass: impacted", "D7210", 48, findings=(finding("impacted_tooth", 48),)),
    Case("surgical extraction pass: sectioned", "D7210", 46, narrative="Sectioned #46 and removed roots separately."),
    Case("surgical extraction flag: impaction unclear", "D7210", 48, findings=(finding("impacted_tooth", 48, score=0.3),),
         expect=Action.FLAG),
    Case("surgical extraction of an erupted tooth downcodes", "D7210", 46, expect=Action.DOWNCODE, suggested="D7140"),
    Case("surgical extraction, narrative rules out surgery", "D7210", 46, narrative="#46 elevated, no bone removal.",
         expect=Action.DOWNCODE, suggested="D7140"),
    *[c for code in ("D7220", "D7230", "D7240", "D7241") for c in (
        Case(f"{code} pass", code, 48, findings=(finding("impacted_tooth", 48),)),
        Case(f"{code} flag: narrative says impacted, image shows erupted", code, 48, narrative="Bony impaction of #48.",
             expect=Action.FLAG, reason_has="disagree"),
        Case(f"{code} downcode: erupted", code, 48, expect=Action.DOWNCODE, suggested="D7140"),
        Case(f"{code} downcode to surgical: erupted but root filled", code, 48, findings=(rcf(48),),
             expect=Action.DOWNCODE, suggested="D7210"),
    )],
    # --- anaesthesia: no image rule; the rule module (unbundling) decides ---------------
    Case("local anaesthesia passes the image layer", "D9215", kinds=()),
]

RESTORATIONS = {
    "D2140": (46, "O", 1), "D2150": (46, "MO", 2), "D2160": (46, "MOD", 3), "D2161": (46, "MODB", 4),
    "D2391": (46, "O", 1), "D2392": (46, "MO", 2), "D2393": (46, "MOD", 3), "D2394": (46, "MODB", 4),
    "D2330": (11, "M", 1), "D2331": (11, "MI", 2), "D2332": (11, "MID", 3), "D2335": (11, "MIDF", 4),
}
_WHERE = {"M": "mesial", "D": "distal", "O": "occlusal", "I": "occlusal", "B": "central", "F": "central"}
for code, (t, surfaces, n) in RESTORATIONS.items():
    teeth = tuple(UPPER_FRONT) if t == 11 else tuple(LOWER_RIGHT)
    lesions = tuple(caries(t, _WHERE[s]) for s in surfaces)
    CASES += [
        Case(f"{code} pass", code, t, surfaces, teeth=teeth, findings=lesions),
        Case(f"{code} flag: no caries", code, t, surfaces, teeth=teeth, expect=Action.FLAG),
        Case(f"{code} reject: implant", code, t, surfaces, teeth=teeth, findings=(implant(t),), expect=Action.REJECT),
    ]
    if n > 1:
        lower = {"D2150": "D2140", "D2160": "D2140", "D2161": "D2140", "D2392": "D2391", "D2393": "D2391",
                 "D2394": "D2391", "D2331": "D2330", "D2332": "D2330", "D2335": "D2330"}[code]
        CASES.append(Case(f"{code} downcode: lesion on one surface", code, t, surfaces, teeth=teeth,
                          findings=(caries(t, _WHERE[surfaces[0]]),), expect=Action.DOWNCODE, suggested=lower))


def _run(case: Case):
    readings = [reading(list(case.teeth), list(case.findings), kind=k, image_id=f"img-{i}") for i, k in enumerate(case.kinds)]
    c = claim([line(case.code, case.tooth, case.surfaces, system=case.system, quadrant=case.quadrant)], readings,
              narrative=case.narrative, age=case.age)
    return validate_claim(c, readings, TABLES).lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_scenario(case: Case) -> None:
    decision = _run(case)
    fired = [h for h in decision.rule_hits if h.fired]
    assert decision.action is case.expect, [f"{h.rule_id}: {h.action} {h.reason}" for h in fired]
    if case.suggested:
        assert decision.suggested_code == case.suggested
    if case.reason_has:
        assert any(case.reason_has in h.reason for h in fired), [h.reason for h in fired]
    # Every rule is recorded, fired or not, with the library version.
    assert len(decision.rule_hits) == 7 and all(h.rule_version for h in decision.rule_hits)


# Concepts without a flag or a stronger action in the image layer, and why.
NO_FLAG = {"D1110": "the member's age is a certain fact: the code fits or is downcoded",
           "D9215": "no image evidence; unbundling with restorative work is the rule module's",
           "D4910": "no image evidence; its frequency is the rule module's"}
NO_STRONGER = {"D0220": "lowest imaging tier", "D0230": "lowest imaging tier", "D0272": "lowest imaging tier",
               "D0330": "lowest imaging tier", "D1120": "lowest tier", "D4342": "lowest tier",
               "D9215": "no image evidence", "D4910": "no image evidence"}


def test_every_concept_has_pass_flag_and_a_stronger_action() -> None:
    by_code: dict[str, set[Action]] = {}
    for case in CASES:
        by_code.setdefault(case.code, set()).add(case.expect)
    for code in TABLES.catalogue.codes["CDT"]:
        actions = by_code.get(code, set())
        assert Action.PASS in actions, code
        assert Action.FLAG in actions or code in NO_FLAG, code
        assert actions & {Action.REJECT, Action.DOWNCODE} or code in NO_STRONGER, code
