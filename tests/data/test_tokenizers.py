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


@pytest.mark.parametrize("extra", ["", "é—", "".join(chr(0x100 + i) for i in range(300))])
@given(text=st.text(alphabet="abc \n\t.~XYZ", max_size=200), dtype=st.sampled_from(["int64", "uint8", "uint16"]))
def test_every_encoding_path_gives_each_character_its_id(extra, text, dtype):
    """ASCII text takes a byte table when the vocabulary is small (issue 27: tokenizing speed),
    other text a code-point table; both give each character its own id, in the dtype asked."""
    tok = CharTokenizer(list("~ZYX.\t\n cba") + list(extra))  # ids not in code-point order
    for sample in (text, text + extra[:1]):
        ids = tok.encode(sample, dtype=dtype)
        assert ids.dtype == dtype and ids.tolist() == [tok.chars.index(c) for c in sample]
        assert tok.decode(ids) == sample
    with pytest.raises(GentextError, match="1 character.*'!'"):
        tok.encode(text + "!")  # an unknown ASCII character is named, as any other is
