"""Streaming a corpus into the on-disk token cache: pieces, the split, encoding in pieces, reuse, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gentext.config import CorpusConfig, TokenizerConfig
from gentext.data import corpus, tokencache
from gentext.data.corpus import Shaping, at_newlines, load_corpus, open_corpus, split_pieces
from gentext.data.tokenizers import fit_tokenizer
from gentext.errors import GentextError
from gentext.paths import cache_dir
from tests.conftest import TINY_TEXT

lines_text = st.lists(st.text(alphabet="ab \n.é", max_size=12), max_size=30).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=lines_text, size=st.integers(1, 9), cuts=st.lists(st.integers(0, 300), max_size=4))
def test_pieces_end_after_newlines_and_join_to_the_text(text, size, cuts):
    chunks = [text[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(text) + 1], strict=True)]
    pieces = list(at_newlines(chunks, size))
    assert "".join(pieces) == text
    for piece in pieces[:-1]:
        assert piece.endswith("\n") or len(piece) >= 4 * size  # only an overlong line is cut elsewhere


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of a few dozen characters and 7-byte reads, so every boundary case happens on tiny text."""
    monkeypatch.setattr(corpus, "PIECE_CHARS", 40)
    monkeypatch.setattr(corpus, "READ_BYTES", 7)


@pytest.mark.parametrize("mode", ["stream", "lines"])
def test_streamed_split_matches_the_whole_text_split(tmp_path, small_pieces, mode):
    path = tmp_path / "t.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    cfg = CorpusConfig(paths=[str(path)], mode=mode, val_fraction=0.23)
    loaded = load_corpus(cfg, Shaping())
    text = corpus.as_documents(TINY_TEXT) if mode == "lines" else TINY_TEXT
    cut = len(text) - int(len(text) * 0.23)
    if mode == "lines":
        cut = text.rfind("\n", 0, cut) + 1
    assert (loaded.train, loaded.val) == (text[:cut], text[cut:])


@pytest.mark.parametrize(
    "tok_cfg",
    [TokenizerConfig(level="char"), TokenizerConfig(level="word"), TokenizerConfig(level="word", tokenize="whitespace")]
    + [TokenizerConfig(level="bpe", vocab_size=300)],
    ids=["char", "word", "whitespace", "bpe"],
)
def test_ids_encoded_in_pieces_equal_the_whole_text_encoded(tmp_path, small_pieces, tok_cfg):
    path = tmp_path / "t.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    cfg = CorpusConfig(paths=[str(path)])
    source = open_corpus(cfg, Shaping())
    content, tok = tokencache.fingerprint_and_fit(source, cfg, lambda p: fit_tokenizer(tok_cfg, p))
    data = tokencache.token_data(source, cfg, tok, content, progress=False)
    whole = load_corpus(cfg, Shaping())
    assert isinstance(data.train, np.memmap)
    assert data.train.tolist() == tok.encode(whole.train).tolist()
    assert data.val.tolist() == tok.encode(whole.val).tolist()
    assert data.val_chars == len(whole.val)
    assert data.train.dtype == (np.uint8 if tok.vocab_size <= 256 else np.uint16)


def _prepared(path):
    cfg = CorpusConfig(paths=[str(path)])
    source = open_corpus(cfg, Shaping())
    content, tok = tokencache.fingerprint_and_fit(source, cfg, lambda p: fit_tokenizer(TokenizerConfig(), p))
    return source, cfg, tok, content


def test_the_cache_is_reused_for_the_same_text_and_renewed_for_changed_text(tmp_path, monkeypatch):
    monkeypatch.setenv("GENTEXT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "t.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    first = tokencache.token_data(*_prepared(path), progress=False)

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(tokencache, "_encode", no_encoding)
    again = tokencache.token_data(*_prepared(path), progress=False)
    assert again.key == first.key and again.path == first.path
    path.write_text(TINY_TEXT.replace("fox", "cat"), encoding="utf-8")
    with pytest.raises(AssertionError, match="encoded again"):  # new content: a new entry
        tokencache.token_data(*_prepared(path), progress=False)


def test_a_failed_encoding_leaves_no_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("GENTEXT_CACHE", str(tmp_path / "cache"))  # empty: this text is not encoded yet
    path = tmp_path / "t.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    source, cfg, tok, content = _prepared(path)

    def broken(text, dtype=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tok, "encode", broken)
    with pytest.raises(GentextError, match="cannot write the token cache.*No space left"):
        tokencache.token_data(source, cfg, tok, content, progress=False)
    entries = list(cache_dir().glob("tokens/*"))
    assert entries == []  # nothing half-written, no temporary left


def test_invalid_utf8_far_into_a_file_names_its_byte_offset(tmp_path, small_pieces):
    path = tmp_path / "bad.txt"
    path.write_bytes("é".encode() * 20 + b"ok \xff more")  # 40 bytes of 2-byte characters, then 3 more
    with pytest.raises(GentextError, match="not valid UTF-8 at byte offset 43"):
        load_corpus(CorpusConfig(paths=[str(path)]), Shaping())


def test_a_blank_corpus_is_an_error_in_both_modes(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text(" \n\n  \n", encoding="utf-8")
    for mode in ("stream", "lines"):
        cfg = CorpusConfig(paths=[str(path)], mode=mode)
        with pytest.raises(GentextError, match="the corpus is empty"):
            list(split_pieces(open_corpus(cfg, Shaping()), cfg))


def test_the_split_point_is_counted_once_for_all_passes(tmp_path, monkeypatch):
    monkeypatch.setenv("GENTEXT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "t.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    cfg = CorpusConfig(paths=[str(path)])
    source = open_corpus(cfg, Shaping())
    reads = {"n": 0}
    read_train = source.train

    def counted():
        reads["n"] += 1
        return read_train()

    source.train = counted
    content, tok = tokencache.fingerprint_and_fit(source, cfg, lambda p: fit_tokenizer(TokenizerConfig(), p))
    tokencache.token_data(source, cfg, tok, content, progress=False)
    assert reads["n"] == 3  # one count, one pass to hash and fit, one to encode
