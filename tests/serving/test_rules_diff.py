"""dxv rules diff: validated inputs, entries matched by id, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from models.config_loading import ConfigError
from serving.cli import main
from serving.rules_diff import diff_files


def _edited(tmp_path: Path, source: str, edit) -> Path:
    data = yaml.safe_load(Path(source).read_text())
    edit(data)
    out = tmp_path / Path(source).name
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def test_changes_are_matched_by_id_not_position(tmp_path: Path) -> None:
    def edit(d):
        d["version"] = "2026.12.1"
        d["limits"].reverse()  # reordering alone is no change
        next(x for x in d["limits"] if x["id"] == "bitewings")["count"] = 2
        d["limits"] = [x for x in d["limits"] if x["id"] != "srp-per-quadrant"]

    source = "configs/rules/frequency.yaml"
    kind, old, new, changes = diff_files(Path(source), _edited(tmp_path, source, edit))
    assert (kind, old, new) == ("frequency table", "2026.11.1", "2026.12.1")
    assert {(c.path, c.kind) for c in changes} == {("version", "changed"), ("limits.bitewings.count", "changed"),
                                                  ("limits.srp-per-quadrant", "removed")}


def test_plan_versions_are_compared_by_label(tmp_path: Path) -> None:
    def edit(d):
        d["versions"][1]["sub_limits"]["endodontics"] = 1500

    _, _, _, changes = diff_files(Path("configs/plans/standard-dental.yaml"),
                                  _edited(tmp_path, "configs/plans/standard-dental.yaml", edit))
    assert [(c.path, c.old, c.new) for c in changes] == [("versions.2026.1.sub_limits.endodontics", 1200, 1500)]


def test_an_invalid_or_different_table_is_refused(tmp_path: Path, capsys) -> None:
    broken = _edited(tmp_path, "configs/rules/frequency.yaml", lambda d: d["limits"][0].update({"per": "galaxy"}))
    with pytest.raises(ConfigError, match="galaxy"):
        diff_files(Path("configs/rules/frequency.yaml"), broken)
    assert main(["rules", "diff", "configs/rules/frequency.yaml", "configs/rules/bundles.yaml"]) == 2
    assert "nothing to compare" in capsys.readouterr().err
