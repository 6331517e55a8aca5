import pytest

from detzoo.common.config import ConfigError, DatasetSpec, load_config, parse_override


def test_recipe_loads_with_overrides():
    config = load_config("ssd300_mobilenetv2", ["train.epochs=3", "train.lr=0.1", "data.train=/x/a.json",
                                                 "data.train.images=/x/img", "model.input_size=256"])
    assert config.train.epochs == 3 and config.train.lr == 0.1
    assert config.data.train == [DatasetSpec(path="/x/a.json", images="/x/img")]
    assert config.model.input_size == 256
    assert config.model.model_kwargs()["input_size"] == 256


def test_base_recipe_is_merged():
    config = load_config("demo")
    assert config.model.name == "ssd300_mobilenetv2"  # from the base
    assert config.model.focal_alpha == 0.75  # from the base
    assert config.model.input_size == 128  # the demo's own value


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "did you mean 'train.epochs'"),
    ("modle.name=x", "did you mean 'model'"),
    ("train.amp=fp32", "not one of"),
    ("train.epochs=three", "expected an integer"),
    ("train.ema=maybe", "expected true/false"),
    ("data.train.0.path=x", "no entry 0"),
    ("novalue", "must look like key.sub=value"),
])
def test_bad_overrides_are_rejected_with_a_hint(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("ssd300_mobilenetv2", [override] if override != "data.train.0.path=x" else
                    ["data.train=[]", override])


def test_values_are_parsed_as_yaml_never_evaluated():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=null") == (["a"], None)
    assert parse_override("a=__import__('os')") == (["a"], "__import__('os')")


def test_several_datasets_need_an_index(tmp_path):
    config = load_config(None, ["data.train=[a, b]", "data.train.1.format=voc"])
    assert [d.path for d in config.data.train] == ["a", "b"]
    assert config.data.train[1].format == "voc"
    with pytest.raises(ConfigError, match="holds 2 entries"):
        load_config(None, ["data.train=[a, b]", "data.train.format=voc"])


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(bad)
    child = tmp_path / "child.yaml"
    child.write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="base 'missing.yaml' not found"):
        load_config(child)


def test_unknown_zoo_name_suggests():
    with pytest.raises(ConfigError, match="did you mean 'ssd300_mobilenetv2'"):
        load_config("ssd300_mobilenet")


def test_resolved_config_round_trips():
    config = load_config("ssd300_mobilenetv2", ["train.epochs=7"])
    again = load_config(config.to_dict())
    assert again == config
