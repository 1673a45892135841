"""A service (in-process API, shipped models, seeded SQLite store, keys of every role) with
one decided claim whose lines went to the review queue; shared by the review tests."""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from datasets.synth.generator import case_dicom_bytes, generate_case
from models.radiographs import RadiographKind
from serving.adjudication import RuleTables
from serving.api.app import ModelReader, create_app
from serving.plans import load_plans
from serving.service_config import load_serving_config
from serving.store import repository
from serving.store.api_keys import Role, create_key
from serving.store.database import Store

NOW = dt.datetime(2026, 5, 1, 9, 0)


@dataclass
class ReviewService:
    app: FastAPI
    store: Store
    keys: dict[str, str]
    clock: list[dt.datetime]  # the app's clock: tests move time forward by replacing clock[0]


def make_review_service(path: Path, models: ModelReader, overrides: tuple[str, ...] = ()) -> ReviewService:
    tables = RuleTables.load()
    store = Store.open(f"sqlite:///{path / 'review.db'}")
    with store.transaction() as session:
        repository.save_plans(session, load_plans(), NOW)
        repository.seed(session, repository.load_seed_file("configs/seed/demo.yaml"), tables.validation.catalogue, NOW)
        keys = {role.value: create_key(session, tenant="demo", role=role, label="", now=NOW)[1] for role in Role}
        keys["other-reviewer"] = create_key(session, tenant="other", role=Role.REVIEWER, label="", now=NOW)[1]
    clock = [NOW]
    app = create_app(reader=models, store=store, tables=tables, config=load_serving_config(overrides=overrides),
                     clock=lambda: clock[0])
    return ReviewService(app, store, keys, clock)


def periapical_image(index: int = 9) -> tuple[str, bytes]:
    case = generate_case(RadiographKind.PERIAPICAL, 404, index)
    return case.image_id, case_dicom_bytes(case)


def flagged_claim(claim_id: str, image: tuple[str, bytes], *, fees: tuple[float, ...] = (1100, 150, 400, 1000)) -> dict:
    """Four lines the shipped models cannot support on this periapical: a root canal billed
    on a premolar (downcode, flagged), a filling, an impaction extraction and a crown on
    teeth the image does not show well (flags)."""
    rid, data = image
    codes = (("D3330", "5", None), ("D2391", "4", "O"), ("D7240", "1", None), ("D2740", "3", None))
    return {"claim_id": claim_id, "tenant": "demo", "member": {"member_id": "MBR-0001", "birth_date": "1980-05-17"},
            "provider": {"provider_id": "PRV-001"}, "date_of_service": "2026-04-20",
            "lines": [{"line_id": str(i + 1), "code": code, "tooth": tooth, **({"surfaces": s} if s else {}), "fee": fee}
                      for i, ((code, tooth, s), fee) in enumerate(zip(codes, fees, strict=True))],
            "attachments": [{"radiograph_id": rid, "kind": "periapical", "content": base64.b64encode(data).decode()}]}
