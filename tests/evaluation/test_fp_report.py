"""The false-positive report: the figures on a hand-made set with known rates, and the
command end to end on dispositions made through the API."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from fastapi.testclient import TestClient

from evaluation.fp_report import DecidedLine, Disposed, fp_figures
from models.inference import DentalReader
from models.model_card import SHIPPED_DIR
from serving.api.app import ModelReader
from serving.cli import main
from tests.serving.review_fixtures import NOW, flagged_claim, make_review_service, periapical_image

MON, NEXT_MON = dt.date(2026, 4, 6), dt.date(2026, 4, 13)


def test_figures_on_a_set_with_known_rates() -> None:
    lines = [DecidedLine(1, MON, "1", ("R1.necessity",), ("caries",)),
             DecidedLine(1, MON, "2", ("R1.necessity", "R1.documentation"), ("caries", "periapical_lesion")),
             DecidedLine(2, NEXT_MON, "1", ("R1.documentation",), ()),
             DecidedLine(2, NEXT_MON, "2", ("R1.recycled_image",), ())]
    lines += [DecidedLine(3, NEXT_MON, str(i), (), ()) for i in range(6)]  # six clean lines
    disposed = [Disposed(1, MON, "1", "D2391", 150, "override_pass", "caries is there"),
                Disposed(1, MON, "2", "D3330", 1100, "confirm", "no lesion"),
                Disposed(2, NEXT_MON, "1", "D0220", 30, "override_pass", "image attached"),
                Disposed(2, NEXT_MON, "2", "D2740", 1000, "change", "recode")]
    f = fp_figures(lines, disposed)
    assert (f.lines, f.flagged, f.disposed) == (10, 4, 4)
    assert f.flag_rate_by_rule == {"R1.documentation": 0.2, "R1.necessity": 0.2, "R1.recycled_image": 0.1}
    assert f.flag_share_by_class == {"caries": 0.5, "periapical_lesion": 0.25}
    assert (f.agreement_rate, f.override_rate, f.change_rate) == (0.25, 0.5, 0.25)
    assert f.by_rule["R1.necessity"] == {"n": 2, "agreement": 0.5, "override": 0.5, "change": 0.0}
    assert f.by_rule["R1.documentation"] == {"n": 2, "agreement": 0.5, "override": 0.5, "change": 0.0}
    assert f.by_rule["R1.recycled_image"]["change"] == 1.0
    assert f.by_class["periapical_lesion"] == {"n": 1, "agreement": 1.0, "override": 0.0, "change": 0.0}
    assert [(w["week"], w["flag_rate"], w["override_rate"]) for w in f.weekly] == [
        ("2026-W15", 1.0, 0.5), ("2026-W16", 0.25, 0.5)]


def test_nothing_decided_gives_empty_figures_not_an_error() -> None:
    f = fp_figures([], [])
    assert (f.lines, f.flag_rate_by_rule, f.override_rate, f.weekly) == (0, {}, 0.0, [])


@pytest.mark.slow
def test_the_report_command_on_dispositions_made_through_the_api(tmp_path) -> None:
    service = make_review_service(tmp_path, ModelReader(DentalReader.from_directory(SHIPPED_DIR, threads=2)))
    client = TestClient(service.app)
    adjudicator, reviewer = {"X-API-Key": service.keys["adjudicator"]}, {"X-API-Key": service.keys["reviewer"]}
    for day, (claim_id, index) in enumerate((("F-1", 9), ("F-2", 10))):
        service.clock[0] = NOW + dt.timedelta(days=day)
        assert client.post("/v1/claims:validate", json=flagged_claim(claim_id, periapical_image(index)),
                           headers=adjudicator).status_code == 200
    items = client.get("/v1/reviews", headers=reviewer).json()["items"]
    assert len(items) == 8
    outcomes = ["override_pass", "override_pass", "confirm", "confirm", "change"]
    for item, outcome in zip(items, outcomes, strict=False):
        body = {"outcome": outcome, "reason": f"reviewed as {outcome}", **({"action": "reject"} if outcome == "change" else {})}
        assert client.post(f"/v1/reviews/{item['item_id']}/disposition", json=body, headers=reviewer).status_code == 201
    out = tmp_path / "fp.html"
    url = str(service.store.engine.url)
    assert main(["report", "fp", "--from", "2026-04-27", "--to", "2026-05-03", "--tenant", "demo", "--out", str(out),
                 "--url", url]) == 0
    figures = json.loads(out.with_suffix(".json").read_text())
    assert (figures["lines"], figures["disposed"]) == (8, 5)
    assert (figures["override_rate"], figures["agreement_rate"], figures["change_rate"]) == (0.4, 0.4, 0.2)
    page = out.read_text()
    assert page.count("class='example'") == 2 and page.count("data:image/png;base64") >= 4
    assert "MBR-0001" not in page and "pa-s404" not in page  # no member or client image ids
    # another tenant, and a period with nothing in it
    assert main(["report", "fp", "--from", "2026-04-27", "--to", "2026-05-03", "--tenant", "other", "--out",
                 str(tmp_path / "other.html"), "--url", url]) == 0
    assert json.loads((tmp_path / "other.json").read_text())["lines"] == 0
    assert main(["report", "fp", "--from", "2026-05-03", "--to", "2026-04-27", "--url", url]) == 2
    service.store.close()
