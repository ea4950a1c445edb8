import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gentext.data.tokenizers import CharTokenizer, tokenizer_from_json
from gentext.errors import GentextError


@given(st.text(min_size=1))
def test_char_round_trip_any_unicode(text):
    tok = CharTokenizer.fit(text)
    ids = tok.encode(text)
    assert len(ids) == len(text)  # one id per code point, not per byte
    assert tok.decode(ids) == text


def test_non_ascii_is_one_token_per_code_point():
    tok = CharTokenizer.fit("naïve 日本語 🙂")
    assert tok.encode("日本").tolist() == [tok.chars.index("日"), tok.chars.index("本")]
    assert "🙂" in tok.chars


def test_unknown_characters_are_an_error_naming_them():
    tok = CharTokenizer.fit("abc")
    with pytest.raises(GentextError, match=r"2 character\(s\).*'x'.*'z'"):
        tok.encode("abxzx")


def test_json_round_trip_keeps_ids():
    tok = CharTokenizer.fit("héllo wörld\n")
    again = tokenizer_from_json(json.loads(json.dumps(tok.to_json())))
    assert again.chars == tok.chars
    assert again.encode("wörld").tolist() == tok.encode("wörld").tolist()


@pytest.mark.parametrize(
    "data, message",
    [({}, "no 'type'"), ({"type": "char", "vocab": "abc"}, "list of characters"), ({"type": "nope"}, "unknown")],
)
def test_bad_tokenizer_json(data, message):
    with pytest.raises(GentextError, match=message):
        tokenizer_from_json(data)
