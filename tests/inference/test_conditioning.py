"""Generation from a label (issue 17, requirement 1 and 2): train, generate, measure, serve."""

import json

import pytest

import gentext
from gentext.cli import main
from gentext.data.conditions import labelled_documents, mark, split_line
from gentext.errors import GentextError
from gentext.training.defaults import WEIGHT_DECAY


@pytest.fixture(scope="module")
def labelled(labelled_root):
    """The shared labelled run, and a Markov chain fitted on the same corpus."""
    path = labelled_root / "labelled.tsv"
    gentext.train(labelled_root / "markov", paths=[str(path)], condition="label", model="markov", order=3)
    return labelled_root


def test_lines_become_documents_led_by_their_label_mark():
    labels: dict[str, int] = {}
    documents = labelled_documents("b\tone two\na\tthree\n\nb\tfour\tignored\n", labels)
    assert sorted(documents.splitlines()) == sorted([f"{mark(0)}one two", f"{mark(1)}three", f"{mark(0)}four"])
    assert labelled_documents("b\tone two\na\tthree\n\nb\tfour\tignored\n", {}) == documents  # seeded
    assert labels == {"b": 0, "a": 1}
    with pytest.raises(GentextError, match="label<TAB>text"):
        split_line("no tab here")
    with pytest.raises(GentextError, match="private-use"):
        split_line(f"a\tsneaky {mark(3)}")


@pytest.mark.slow
def test_every_label_is_held_out_and_recorded(labelled):
    config = json.loads((labelled / "run" / "config.json").read_text())
    assert config["labels"] == ["soft", "hard"] and config["corpus"]["mode"] == "lines"
    assert config["train"]["weight_decay"] == WEIGHT_DECAY  # a mark is read once a document: the light decay
    held_out = gentext.load(labelled / "run").held_out_text()
    assert held_out.count(mark(0)) + held_out.count(mark(1)) == 30  # every 10th line (after a seeded shuffle)
    assert min(held_out.count(mark(0)), held_out.count(mark(1))) >= 8  # both labels, though grouped in the file


@pytest.mark.slow
@pytest.mark.parametrize("run, network_only", [("run", False), ("run", True), ("markov", False)])
def test_the_label_steers_generation_and_classifies_held_out_text(labelled, run, network_only):
    model = gentext.load(labelled / run, network_only=network_only)
    if run == "run":  # a default labelled run is mixed with one chain per label; --no-mix reads the network
        assert json.loads((labelled / run / "config.json").read_text())["mixture"]["labels"] == 2
        assert hasattr(model.model, "chain") != network_only
    soft = "".join(model.generate("", "soft", max_new_tokens=60, num_samples=4, seed=1))
    hard = "".join(model.generate("", "hard", max_new_tokens=60, num_samples=4, seed=1))
    # a chain sees its label only within its order, and its smoothing can step into the other
    # alphabet, after which the label is forgotten: a weaker bound for it
    factor = 5 if run == "run" else 1
    assert sum(c in "aeiou" for c in soft) > factor * sum(c in "kptgd" for c in soft)
    assert sum(c in "kptgd" for c in hard) > factor * sum(c in "aeiou" for c in hard)
    assert not any(c >= mark(0) for c in soft + hard)  # marks are never sampled
    result = model.evaluate()
    assert result["label_accuracy"] >= 0.9 and result["label_pairs"] == 30
    assert model.sample_label_accuracy(4, max_new_tokens=40)["sample_label_accuracy"] >= 0.75


def test_labels_are_checked_everywhere(labelled, tmp_path, capsys, trained_run):
    model = gentext.load(labelled / "run")
    with pytest.raises(GentextError, match="unknown label 'loud'.*'soft', 'hard'"):
        model.generate("", "loud")
    with pytest.raises(GentextError, match="generates from a label"):
        model.generate("")
    with pytest.raises(GentextError, match="not trained with labels"):
        gentext.load(trained_run).generate("", "soft")
    assert main(["generate", str(labelled / "run"), "--label", "loud"]) == 2
    assert "unknown label" in capsys.readouterr().err
    heldout = tmp_path / "heldout.tsv"
    heldout.write_text("soft\taia oue\nhard\ttkp dgt\n", encoding="utf-8")
    assert main(["eval", str(labelled / "run"), str(heldout), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["label_pairs"] == 2 and "loss" in result
    unseen = gentext.load(labelled / "run").evaluate(text="soft\taia Zoue\nhard\ttkp dgt\n", unknown="skip")
    assert unseen["skipped_characters"] == 1 and unseen["label_pairs"] == 2  # scored and classified without it
    heldout.write_text("loud\taia oue\n", encoding="utf-8")
    assert main(["eval", str(labelled / "run"), str(heldout)]) == 2


def test_the_server_takes_a_label_and_lists_them(labelled):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from gentext.server import create_app

    model = gentext.load(labelled / "run")
    client = TestClient(create_app({"labelled": model}))
    assert client.get("/v1/models").json()["models"][0]["labels"] == ["soft", "hard"]
    body = {"label": "hard", "max_new_tokens": 30, "seed": 3}
    text = client.post("/v1/generate", json=body).json()["samples"][0]
    assert text == model.generate("", "hard", max_new_tokens=30, seed=3)[0]  # the batch engine, as alone
    with client.stream("POST", "/v1/generate", json={**body, "stream": True}) as response:
        events = [e for e in response.read().decode().split("\n\n") if e]
    pieces = [json.loads(e.split("data: ", 1)[1])["text"] for e in events if e.startswith("event: token")]
    assert "".join(pieces) == text
    bad = client.post("/v1/generate", json={"label": "loud"})
    assert bad.status_code == 400 and "unknown label" in bad.json()["detail"]
    assert client.post("/v1/generate", json={}).status_code == 400  # a labelled run needs a label
    assert client.post("/v1/score", json={"text": "aia", "label": "soft"}).status_code == 200


def test_the_names_corpus_is_deterministic_labelled_and_latin():
    pytest.importorskip("faker")
    from gentext.data.generated import NAME_LOCALES, names

    text = names(300, seed=2)
    assert text == names(300, seed=2) != names(300, seed=3)
    pairs = [line.split("\t") for line in text.splitlines()]
    assert {label for label, _ in pairs} == set(NAME_LOCALES)  # every language appears
    assert all(len(name.split()) >= 2 and all(ord(c) < 0x250 for c in name) for _, name in pairs)


def test_a_csv_with_named_columns_trains_a_labelled_run(tmp_path, capsys):
    rows = ["id,genre,line,extra"] + [
        f'{i},{"soft" if i % 2 else "hard"},"{"aei ou" if i % 2 else "kpt gd"}",x' for i in range(60)
    ]
    path = tmp_path / "lines.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    flags = [
        "--condition",
        "label",
        "--label-column",
        "genre",
        "--text-column",
        "line",
        "--steps",
        "5",
        "--seq-len",
        "8",
    ]
    assert main(["train", str(path), *flags, "--out", str(tmp_path / "run"), "--hidden-size", "16"]) == 0
    assert sorted(json.loads((tmp_path / "run" / "config.json").read_text())["labels"]) == ["hard", "soft"]
    assert main(["eval", str(tmp_path / "run"), str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["label_pairs"] == 60
    bad = ["--condition", "label", "--label-column", "kind", "--text-column", "line", "--steps", "1"]
    assert main(["train", str(path), *bad, "--out", str(tmp_path / "bad")]) == 2
    assert "no column 'kind'" in capsys.readouterr().err


def test_chat_with_a_label_takes_settings(labelled, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("/top_k 3\n/settings\n"))
    assert main(["chat", str(labelled / "run"), "--label", "soft"]) == 0
    out = capsys.readouterr().out
    assert "top_k = 3" in out and "error" not in out
