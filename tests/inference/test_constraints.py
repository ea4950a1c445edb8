"""Constrained output (inference/constraints.py, outlines-core): every sample matches the pattern,
on a character and a byte-level BPE vocabulary, sampled or searched; what cannot be is refused."""

import json
import re

import pytest

import gentext
from gentext.errors import GentextError

DATE = r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.mark.slow
@pytest.mark.parametrize("level", ["char", "bpe"])
def test_a_hundred_samples_under_a_date_regex_all_match(records_runs, level):
    model = gentext.load(records_runs[level])
    done = model.complete("born ", regex=DATE, num_samples=100, seed=1, temperature=1.2, max_new_tokens=20)
    assert len(done) == 100 and all(re.fullmatch(DATE, c.text[len("born ") :]) for c in done)
    assert {c.finish_reason for c in done} == {"stop"}  # each ended because its pattern was complete
    assert len({c.text for c in done}) > 10  # sampled, not one forced answer


@pytest.mark.parametrize("level", ["char", "bpe"])
def test_a_hundred_samples_under_a_json_schema_all_parse_and_fit(records_runs, level):
    model = gentext.load(records_runs[level])
    texts = model.generate("", json_schema=json.dumps(SCHEMA), num_samples=100, seed=2, max_new_tokens=120)
    for text in texts:
        record = json.loads(text)
        assert set(record) == {"name", "age"} and isinstance(record["age"], int)
        assert isinstance(record["name"], str) and len(record["name"]) <= 8


def test_beams_and_several_requests_in_one_batch_keep_their_own_patterns(records_runs):
    model = gentext.load(records_runs["char"])
    best = model.generate("born ", regex=DATE, num_beams=4, num_samples=2, max_new_tokens=20)
    assert all(re.fullmatch(DATE, t[len("born ") :]) for t in best)
    many = model.generate_many(["born ", "age ", '{"name": '], regex="[0-9]{3}", seed=3, max_new_tokens=10)
    assert [t[-3:].isdigit() for t in many] == [True] * 3
    plain = model.generate_many(["born ", "age "], seed=3, max_new_tokens=10)  # no pattern: the usual text
    assert plain == [model.generate(p, seed=3, max_new_tokens=10)[0] for p in ["born ", "age "]]


def test_a_sample_that_runs_out_of_tokens_says_so(records_runs):
    model = gentext.load(records_runs["char"])
    done = model.complete("", regex="[a-z]{30}", max_new_tokens=5, seed=1)[0]
    assert done.finish_reason == "length" and re.fullmatch("[a-z]{5}", done.text)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(regex="Ω+"), "cannot write any text"),  # a character the vocabulary never saw
        (dict(regex="a{1000000}"), "more than 100,000"),
        (dict(regex="("), "cannot be compiled"),
        (dict(json_schema="{not json"), "--json-schema"),
        (dict(regex="a", json_schema="{}"), "not both"),
    ],
)
def test_patterns_that_cannot_be_followed_are_one_line_errors(records_runs, settings, message):
    with pytest.raises(GentextError, match=message):
        gentext.load(records_runs["char"]).generate("", **settings)


@pytest.mark.slow
def test_a_word_level_run_refuses_constraints(tmp_path, tiny_corpus):
    from tests.conftest import TINY_SETTINGS

    gentext.train(tmp_path / "w", paths=[str(tiny_corpus)], steps=2, level="word", **TINY_SETTINGS)
    with pytest.raises(GentextError, match="character or byte-level BPE"):
        gentext.load(tmp_path / "w").generate("", regex="[a-z]+")


def test_generate_takes_regex_and_json_schema_flags(records_runs, capsys, tmp_path):
    from gentext.cli import main

    assert main(["generate", str(records_runs["char"]), "--prompt", "born ", "--regex", DATE, "--seed", "1",
                 "--json", "--max-new-tokens", "20"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert re.fullmatch(DATE, out["samples"][0][len("born ") :]) and out["finish_reasons"] == ["stop"]
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    assert main(["generate", str(records_runs["char"]), "--json-schema", f"@{schema}", "--seed", "2",
                 "--max-new-tokens", "120"]) == 0  # fmt: skip
    assert set(json.loads(capsys.readouterr().out.strip())) == {"name", "age"}
    assert main(["generate", str(records_runs["char"]), "--regex", "a{1000000}"]) == 2
    assert "more than 100,000" in capsys.readouterr().err
