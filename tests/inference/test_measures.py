"""Bringing a model to new text: unseen characters, held-out ids from the token cache."""

import json

import pytest

import gentext
from gentext.cli import main
from gentext.errors import GentextError
from tests.conftest import TINY_SETTINGS

NEW_TEXT = 'The "lazy" dog (and X) ran; the quick fox — too.\n' * 20


def test_unseen_characters_are_an_error_that_suggests_skipping(trained_run, tmp_path, capsys):
    path = tmp_path / "new.txt"
    path.write_text(NEW_TEXT, encoding="utf-8")
    assert main(["eval", str(trained_run), str(path)]) == 2
    err = capsys.readouterr().err
    assert "never seen" in err and "--unknown skip" in err and err.count("\n") == 1


def test_eval_and_score_with_skip_leave_unseen_characters_out_and_say_how_many(trained_run, tmp_path, capsys):
    model = gentext.load(trained_run)
    unseen = model.tokenizer.unknown_chars(NEW_TEXT)
    assert unseen  # quotes, brackets, X are not in the tiny corpus
    result = model.evaluate(text=NEW_TEXT, unknown="skip")
    dropped = sum(NEW_TEXT.count(c) for c in unseen)
    assert result["skipped_characters"] == dropped
    assert result["skipped_share"] == pytest.approx(dropped / len(NEW_TEXT))
    kept = "".join(c for c in NEW_TEXT if c not in unseen)
    assert result["loss"] == pytest.approx(model.evaluate(text=kept)["loss"])
    path = tmp_path / "new.txt"
    path.write_text(NEW_TEXT, encoding="utf-8")
    assert main(["eval", str(trained_run), str(path), "--unknown", "skip", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped_characters"] == dropped
    assert main(["score", str(trained_run), NEW_TEXT[:40], "--unknown", "skip"]) == 0
    with pytest.raises(GentextError, match="--unknown skip"):
        model.score(NEW_TEXT)


@pytest.mark.slow
def test_compare_with_skip_scores_every_run_on_the_same_characters(trained_run, tiny_corpus, tmp_path, capsys):
    wide = tmp_path / "wide.txt"
    wide.write_text(tiny_corpus.read_text() + "()", encoding="utf-8")  # knows two characters more
    gentext.train(tmp_path / "wide", paths=[str(wide)], steps=5, **TINY_SETTINGS)
    data = tmp_path / "new.txt"
    data.write_text(NEW_TEXT, encoding="utf-8")
    runs = [str(trained_run), str(tmp_path / "wide")]
    assert main(["compare", *runs, "--data", str(data)]) == 2
    assert "--unknown skip" in capsys.readouterr().err
    assert main(["compare", *runs, "--data", str(data), "--unknown", "skip", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"]
    union = gentext.load(trained_run).tokenizer.unknown_chars(NEW_TEXT)
    assert rows[0]["skipped_characters"] == rows[1]["skipped_characters"] == sum(NEW_TEXT.count(c) for c in union)


def test_eval_without_text_reads_the_held_out_ids_from_the_token_cache(tiny_corpus, tmp_path, capsys):
    # a text of its own: the cache entry removed below is shared by every run of the same text
    tiny_corpus.write_text(tiny_corpus.read_text() + "One line only this test has.\n", encoding="utf-8")
    run = tmp_path / "run"
    gentext.train(run, paths=[str(tiny_corpus)], steps=5, **TINY_SETTINGS)
    model = gentext.load(run)
    from_cache = model.evaluate()
    assert from_cache == pytest.approx(model.evaluate(text=model.held_out_text()))
    tiny_corpus.unlink()  # the training text moved: the cache still has the held-out ids
    assert gentext.load(run).evaluate() == pytest.approx(from_cache)
    from gentext.paths import cache_dir

    key = json.loads((run / "config.json").read_text())["data"]["cache_key"]
    import shutil

    shutil.rmtree(cache_dir() / "tokens" / key)  # ... and now the cache is gone too
    assert main(["eval", str(run)]) == 2
    assert f"this run needs {tiny_corpus}" in capsys.readouterr().err


def test_fine_tuning_grows_the_vocabulary_keeps_old_ids_and_reports_forgetting(trained_run, tmp_path, capsys):
    new = tmp_path / "new.txt"
    new.write_text(NEW_TEXT * 3, encoding="utf-8")
    old = gentext.load(trained_run)
    flags = ["--init-from", str(trained_run), "--steps", "15", "--batch-size", "4", "--seq-len", "16", "--quiet"]
    code = main(["train", str(new), "--out", str(tmp_path / "ft"), *flags])
    out = capsys.readouterr().out
    assert code == 0 and f"fine-tuned from {trained_run}" in out and "on its held-out text" in out
    tuned = gentext.load(tmp_path / "ft")
    unseen = old.tokenizer.unknown_chars(NEW_TEXT)
    assert tuned.tokenizer.chars[: old.tokenizer.vocab_size] == old.tokenizer.chars  # old ids keep their meaning
    assert set(tuned.tokenizer.chars[old.tokenizer.vocab_size :]) == unseen
    assert tuned.generate('The "', max_new_tokens=10, seed=0)[0].startswith('The "')  # new characters work
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["init_from"] == {"run": str(trained_run), "tokens_added": len(unseen)}
    assert config["train"]["learning_rate"] == 1e-3  # the fine-tuning default
    result = config["result"]["init_from"]
    assert result["original_val_loss_before"] > 0 and result["original_val_loss_after"] > 0


def test_fine_tuning_starts_from_the_source_weights(trained_run, tmp_path):
    import torch

    from gentext.training import finetune

    old = gentext.load(trained_run)
    source = gentext.checkpoint.load_run(trained_run)
    grown = gentext.models.build_model(
        gentext.config.ModelConfig(**{**vars(source.model_config), "vocab_size": source.model_config.vocab_size + 2})
    )
    assert finetune.init_weights(grown, source) == 2
    emb = grown.embedding.weight.detach()
    assert torch.equal(emb[:-2], old.model.embedding.weight.detach())
    assert torch.allclose(emb[-1], old.model.embedding.weight.detach().mean(0))
    assert grown.head.bias[-1] == old.model.head.bias.min()


@pytest.mark.parametrize(
    "flags, message",
    [(["--hidden-size", "64"], "drop --hidden-size"), (["--level", "word"], "drop --level")],
)
def test_fine_tuning_keeps_the_architecture_and_tokenizer(trained_run, tmp_path, capsys, flags, message):
    new = tmp_path / "new.txt"
    new.write_text(NEW_TEXT, encoding="utf-8")
    assert main(["train", str(new), "--out", str(tmp_path / "ft"), "--init-from", str(trained_run), *flags]) == 2
    assert message in capsys.readouterr().err


def test_spelling_charges_unfamiliar_and_novel_spellings_more():
    from gentext.models.spelling import UNICODE_NATS, SpellingModel

    speller = SpellingModel(["the", "then", "there", "these", "other", "bother", "tether"])
    assert 0 < speller.cost(["these"]) < speller.cost(["xqzkv"])
    assert speller.cost(["the", "then"]) == pytest.approx(speller.cost(["the"]) + speller.cost(["then"]))
    assert speller.cost(["thé"]) > speller.cost(["the"]) + UNICODE_NATS - 1e-9  # é was never seen


def test_word_bpc_spells_out_unknown_words_and_keeps_the_closed_figure(tmp_path, tiny_corpus, capsys):
    run = tmp_path / "words"
    gentext.train(run, paths=[str(tiny_corpus)], level="word", model="markov", order=2, vocab_size=4)
    model = gentext.load(run)
    text = tiny_corpus.read_text()[:2000]
    result = model.evaluate(text=text)
    unknown = [w for w in model.tokenizer.split(text)[1:] if w not in model.tokenizer.index]
    assert result["unknown_words"] == len(unknown) > 0
    spelled = model._speller().cost(unknown)
    assert result["bpc"] - result["bpc_closed_vocab"] == pytest.approx(spelled / result["characters"] / 0.6931471805)
    # A three-word vocabulary makes <unk> nearly certain: cheap closed, dear once spelled, and
    # `compare` ranks by the honest figure, below a character chain it would "beat" otherwise.
    chars = tmp_path / "chars"
    gentext.train(chars, paths=[str(tiny_corpus)], model="markov", order=3)
    data = tmp_path / "text.txt"
    data.write_text(text, encoding="utf-8")
    assert main(["compare", str(run), str(chars), "--data", str(data), "--json"]) == 0
    rows = {r["run"]: r for r in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"]}
    assert rows[str(run)]["bpc_closed_vocab"] < rows[str(chars)]["bpc"] < rows[str(run)]["bpc"]
    assert main(["compare", str(run), str(chars), "--data", str(data)]) == 0
    table = capsys.readouterr().out
    assert table.index(str(chars)) < table.index(str(run)) and "closed vocab" in table
    assert main(["eval", str(run), str(data)]) == 0
    assert f"spelling the {len(unknown):,} <unk> words" in capsys.readouterr().out


def test_char_and_bpe_bpc_need_no_spelling(trained_run):
    result = gentext.load(trained_run).evaluate()
    assert "bpc_closed_vocab" not in result and result["bpc"] > 0
