"""Settings given as Python keywords are parsed or checked against their config field (keywords.py):
gentext.train and TextModel.generate refuse a wrong type in one line naming the setting."""

import pytest

import gentext
from gentext.config import ModelConfig, TrainConfig
from gentext.errors import GentextError
from gentext.keywords import typed
from gentext.useconfig import SampleConfig


def test_text_is_parsed_where_the_field_has_a_flag_parser_and_kept_where_it_is_a_string():
    assert typed(TrainConfig, {"time_limit": "10m", "steps": 5}, "train()") == {"time_limit": 600.0, "steps": 5}
    assert typed(ModelConfig, {"adaptive_cutoffs": "2000,6000"}, "train()") == {"adaptive_cutoffs": [2000, 6000]}
    sample = {"stop": "\n\n", "regex": "[a-z]+"}
    assert typed(SampleConfig, sample, "generate()") == {"stop": ["\n\n"], "regex": "[a-z]+"}
    schema = {"json_schema": "@/etc/hostname"}  # a text field keeps its text: no file is read for the API or a request
    assert typed(SampleConfig, schema, "generate()") == schema
    with pytest.raises(GentextError, match="time_limit: invalid duration 'soon'"):
        typed(TrainConfig, {"time_limit": "soon"}, "train()")


@pytest.mark.parametrize(
    ("cls", "values", "said"),
    [
        (TrainConfig, {"steps": "5"}, "steps must be an integer or None, got '5'"),
        (TrainConfig, {"steps": True}, "steps must be an integer or None, got True"),
        (ModelConfig, {"hidden_size": 64.5}, "hidden_size must be an integer or None, got 64.5"),
        (SampleConfig, {"temperature": "hot"}, "temperature must be a number, got 'hot'"),
        (SampleConfig, {"temperature": None}, "temperature must be a number, got None"),
        (SampleConfig, {"stop": ["ok", 3]}, "stop must be a list of strings, got"),
        (SampleConfig, {"allow_unk": "yes"}, "allow_unk must be True or False, got 'yes'"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_setting(cls, values, said):
    with pytest.raises(GentextError) as refused:
        typed(cls, values, "x()")
    assert str(refused.value).startswith(said)


def test_numbers_take_integers_and_optional_settings_take_none():
    values = {"temperature": 1, "top_p": 0.5, "seed": None, "max_time": 2}
    assert typed(SampleConfig, values, "generate()") == values


def test_a_misspelt_keyword_names_the_nearest_setting(tmp_path, trained_run):
    with pytest.raises(GentextError, match="train\\(\\) got an unknown setting 'stepz'; did you mean 'steps'\\?"):
        gentext.train(tmp_path / "run", paths=[], stepz=5)
    with pytest.raises(GentextError, match="did you mean 'max_new_tokens'"):
        gentext.load(trained_run).generate("a", max_new_tokenz=5)


def test_the_api_refuses_wrong_types_before_any_work(tmp_path, trained_run):
    with pytest.raises(GentextError, match="steps must be an integer"):
        gentext.train(tmp_path / "run", steps="5")
    assert not (tmp_path / "run").exists()  # nothing written
    model = gentext.load(trained_run)
    with pytest.raises(GentextError, match="the prompt must be a string, got int"):
        model.generate(5)
    with pytest.raises(GentextError, match="seed must be an integer or None, got 'x'"):
        model.generate("a", seed="x")
    one = model.generate("Th", max_new_tokens=30, stop="he", seed=1)  # a list of one, not the letters h and e
    assert one == model.generate("Th", max_new_tokens=30, stop=["he"], seed=1)
