"""Word level: tokenizer round trips, <unk> handling, and word models through the API."""

import json
import logging

import pytest

import gentext
from gentext.config import ModelConfig, TokenizerConfig
from gentext.data.tokenizers import UNK, WordTokenizer, tokenizer_from_json
from tests.conftest import SHARED_DATA, TINY_SETTINGS


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world!",
        "It's a dog's life (isn't it?); yes: 100% sure.",
        'She said "no" and left.',
        "Über café — naïve façade, 日本語 too!\nNew line here.",
        "Look pale--they threw it... and left.",
    ],
)
def test_regex_round_trip_restores_normal_spacing(text):
    tok = WordTokenizer.fit(text)
    assert tok.decode(tok.encode(text)) == text


def test_words_and_punctuation_are_separate_tokens():
    tok = WordTokenizer.fit("Hello, world!")
    assert [tok.vocab[i] for i in tok.encode("Hello, world!")] == ["Hello", ",", "world", "!"]


def test_dashes_and_ellipses_stay_whole_but_runs_saved_before_keep_their_split():
    tok = WordTokenizer.fit("speak--it tauntingly...")
    assert tok.split("speak--it tauntingly...") == ["speak", "--", "it", "tauntingly", "..."]
    old = tokenizer_from_json({"type": "word", "tokenize": "regex", "vocab": [UNK, "speak", "-", "it"]})
    assert old.split("speak--it") == ["speak", "-", "-", "it"]
    assert tokenizer_from_json(json.loads(json.dumps(tok.to_json()))).split("a--b") == ["a", "--", "b"]


def test_vocabulary_caps_turn_rare_words_into_unk():
    text = "a a a b b c"
    assert WordTokenizer.fit(text, vocab_size=3).vocab == [UNK, "a", "b"]
    capped = WordTokenizer.fit(text, min_count=2)
    assert capped.vocab == [UNK, "a", "b"]
    assert capped.decode(capped.encode("a c b")) == f"a {UNK} b"
    assert capped.unknown_words("a c d") == ["c", "d"]


def test_whitespace_mode_keeps_the_corpus_own_unk_and_lines():
    text = "the <unk> sat on the mat\nthe cat ran\n"
    tok = WordTokenizer.fit(text, tokenize="whitespace")
    ids = tok.encode(text)
    assert tok.vocab[ids[1]] == UNK and list(ids).count(tok.unk_id) == 1
    assert tok.decode(ids) == text.rstrip("\n") + "\n"


def test_json_round_trip():
    tok = WordTokenizer.fit("one two, three!", tokenize="regex")
    again = tokenizer_from_json(json.loads(json.dumps(tok.to_json())))
    assert again.vocab == tok.vocab and again.tokenize == "regex"


@pytest.fixture
def word_corpus(tmp_path):
    path = tmp_path / "words.txt"
    lines = ["The cat sat on the mat.", "A dog ran in the park!", "The bird sang, and the cat slept."]
    path.write_text("Zyzzyva.\n" + "\n".join(lines * 30) + "\n")  # a rare word: below --min-count
    return path


@pytest.mark.parametrize("kind", ["lstm", "markov"])
def test_word_models_generate_real_words_and_never_unk_unless_allowed(word_corpus, tmp_path, kind, caplog):
    run = tmp_path / kind
    settings = {**TINY_SETTINGS, "steps": 30, "learning_rate": 1e-2} if kind == "lstm" else {}
    gentext.train(
        run,
        paths=[str(word_corpus)],
        tokenizer=TokenizerConfig(level="word", min_count=5),
        model=ModelConfig(kind=kind, order=3),
        **settings,
    )
    model = gentext.load(run)
    assert model.tokenizer.level == "word" and "Zyzzyva" not in model.tokenizer.vocab
    samples = model.generate("The cat", max_new_tokens=30, num_samples=4, seed=1, temperature=1.5)
    assert all(s.startswith("The cat") for s in samples)
    assert not any(UNK in s for s in samples)
    vocab = set(model.tokenizer.vocab)
    assert all(word in vocab for s in samples for word in model.tokenizer.split(s))
    with caplog.at_level(logging.WARNING):
        model.generate("The platypus", max_new_tokens=3, seed=0)
    assert "'platypus'" in caplog.text
    result = model.evaluate(text="The cat sat on the mat.\n")
    assert result["characters"] == len("The cat sat on the mat.\n") - len("The")
    assert result["tokens"] == 7


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "wikitext-2").exists(), reason="needs ../shared/data")
def test_word_markov_on_wikitext2_trains_and_generates(tmp_path):
    run = tmp_path / "wt2"
    data = SHARED_DATA / "wikitext-2"
    summary = gentext.train(
        run,
        paths=[str(data / "train.txt")],
        val_path=str(data / "valid.txt"),
        tokenizer=TokenizerConfig(level="word", tokenize="whitespace"),
        model=ModelConfig(kind="markov", order=3),
    )
    assert summary["seconds"] < 60 and summary["val_loss"] < 6.0  # perplexity below ~400
    text = gentext.load(run).generate("The", max_new_tokens=20, seed=0)[0]
    assert len(text.split()) > 10
