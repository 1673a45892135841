import pytest

from models.config_loading import ConfigError, FrozenConfig, dump_config, load_config
from models.errors import UnknownLabelError
from models.findings import CariesDepth, FindingClass, resolve_label


@pytest.mark.parametrize(("name", "finding", "depth"), [
    ("Caries", FindingClass.CARIES, None),
    ("Deep Caries", FindingClass.CARIES, CariesDepth.NEAR_PULP),
    ("Periapical Lesion", FindingClass.PERIAPICAL_LESION, None),
    ("Impacted", FindingClass.IMPACTED_TOOTH, None),
    ("caries-dentin", FindingClass.CARIES, CariesDepth.DENTIN),
    ("root_canal_filling", FindingClass.ROOT_CANAL_FILLING, None),
])
def test_dataset_names_resolve(name, finding, depth):
    label = resolve_label(name)
    assert label.finding is finding and label.caries_depth is depth


def test_tooth_numbers_resolve_and_unknowns_raise():
    assert resolve_label("36").tooth.fdi == 36
    assert resolve_label("tooth-85").tooth.fdi == 85
    with pytest.raises(UnknownLabelError):
        resolve_label("bracket")
    with pytest.raises(UnknownLabelError):
        resolve_label("99")


def test_category_map_takes_precedence_and_is_validated():
    assert resolve_label("Caries", {"Caries": "caries-enamel"}).caries_depth is CariesDepth.ENAMEL
    with pytest.raises(UnknownLabelError):
        resolve_label("x", {"x": "not-a-label"})


class Inner(FrozenConfig):
    lr: float = 0.1


class Outer(FrozenConfig):
    name: str = "a"
    inner: Inner = Inner()


def test_config_overrides_and_refusals(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: b\ninner: {lr: 0.5}\n")
    config = load_config(Outer, path, ["inner.lr=0.01"])
    assert config.name == "b" and config.inner.lr == 0.01
    assert "lr: 0.01" in dump_config(config)
    with pytest.raises(ConfigError, match="no field 'lrr'"):
        load_config(Outer, path, ["inner.lrr=1"])
    path.write_text("name: b\nunknown: 1\n")
    with pytest.raises(ConfigError, match="unknown"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(Outer, None, ["inner.lr"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")
