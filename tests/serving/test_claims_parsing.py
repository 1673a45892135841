"""Parsing a claim's JSON (the API's JSON body, `dxv validate`): the same claim however it is
read, and a message that says what is wrong and where for every kind of bad text."""

from __future__ import annotations

import json

import pytest

from serving.claims import Claim, InvalidClaimError, claim_from_json

CLAIM = {"claim_id": "C-1", "tenant": "demo", "member": {"member_id": "M-1", "birth_date": "1980-02-03"},
         "provider": {"provider_id": "P-1"}, "date_of_service": "2026-05-04",
         "lines": [{"line_id": "1", "code": "D0220", "tooth": "3", "fee": 30},
                   {"line_id": "2", "code": "D2391", "tooth": "19", "surfaces": "MO", "fee": "150.5"}],
         "attachments": [{"radiograph_id": "pa-1", "kind": "periapical", "content": "QUJD"}]}


def test_a_claim_parses_to_what_validating_its_dict_gives() -> None:
    text = json.dumps(CLAIM)
    assert claim_from_json(text) == Claim.model_validate(json.loads(text))


@pytest.mark.parametrize(("text", "expected"), [
    ('{"claim_id": "C-1", "lines": [', r"not valid JSON \(.* at line 1, column \d+\)"),
    ("", r"not valid JSON \(Expecting value at line 1, column 1\)"),
    (json.dumps({**CLAIM, "date_of_service": "2026-13-40"}), r"not a valid claim: .*date_of_service"),
    (json.dumps({**CLAIM, "lines": [{**CLAIM["lines"][0], "tooth": "99"}]}), r"not a valid claim: .*tooth"),
    (json.dumps({**CLAIM, "unknown_field": 1}), r"not a valid claim: .*unknown_field"),
])
def test_bad_claim_text_says_what_is_wrong_and_where(text: str, expected: str) -> None:
    with pytest.raises(InvalidClaimError, match=expected):
        claim_from_json(text)
