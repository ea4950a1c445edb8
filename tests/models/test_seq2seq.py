"""Sequence to sequence (issue 17, requirements 3, 4 and 6): pairs in, translations out."""

import json
import re

import pytest

import gentext
from gentext.cli import main
from gentext.data.generated import dates
from gentext.errors import GentextError

pytest.importorskip("babel")
pytest.importorskip("sacrebleu")

ISO = re.compile(r"\d{4}-\d{2}-\d{2}")


@pytest.fixture(scope="module")
def pairs_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    path = root / "dates.tsv"
    path.write_text(dates(800, seed=5), encoding="utf-8")
    settings = dict(hidden_size=96, embed_size=32, batch_size=32, eval_every=100, learning_rate=1e-2)
    gentext.train(root / "run", paths=[str(path)], condition="source", model="seq2seq", steps=200, **settings)
    return root / "run"


def test_dates_are_deterministic_and_name_their_month():
    assert dates(50, seed=1) == dates(50, seed=1) != dates(50, seed=2)
    for line in dates(200).splitlines():
        written, iso = line.split("\t")
        assert ISO.fullmatch(iso) and not re.fullmatch(r"[\d./ -]+", written)  # never an ambiguous 07/03/21


@pytest.mark.slow
def test_a_trained_pair_model_translates_through_every_decoder(pairs_run):
    model = gentext.load(pairs_run)
    greedy = model.generate("", source="7 mars 2021", temperature=0)[0]
    beams = model.generate("", source="7 mars 2021", num_beams=3)[0]
    assert ISO.fullmatch(greedy.strip()) and ISO.fullmatch(beams.strip())  # ends at the end of a target
    streamed = "".join(model.stream("", source="7 mars 2021", temperature=0))
    assert streamed == greedy
    result = model.evaluate()
    assert result["pairs"] == 80 and result["loss"] < 1.0  # held out: every 10th pair, never trained on
    for name in ("greedy", "beam"):
        assert set(result[name]) == {"exact_match", "chrf", "bleu"}
    assert result["chrf"] > 50  # the shape is learned in 300 steps; exact dates take minutes (RESULTS.md)


@pytest.mark.slow
def test_pairs_through_the_cli_and_clear_errors(pairs_run, tmp_path, capsys):
    sources = tmp_path / "sources.txt"
    sources.write_text("7 mars 2021\n\n12. juni 1935\n", encoding="utf-8")
    assert main(["generate", str(pairs_run), "--source-file", str(sources), "--temperature", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1] == "" and all(ISO.fullmatch(x) for x in (lines[0], lines[2]))
    heldout = tmp_path / "heldout.tsv"
    heldout.write_text(dates(20, seed=9), encoding="utf-8")
    assert main(["eval", str(pairs_run), str(heldout), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["pairs"] == 20 and {"exact_match", "chrf", "bleu", "loss"} <= set(result)
    # score: a target given its source, as the API scores it; a better target scores higher
    target = gentext.load(pairs_run).generate("", source="7 mars 2021", temperature=0)[0].strip()
    assert main(["score", str(pairs_run), target, "--source", "7 mars 2021", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["log_prob"] == pytest.approx(gentext.load(pairs_run).score(target, source="7 mars 2021")["log_prob"])
    assert main(["score", str(pairs_run), "1066-10-14", "--source", "7 mars 2021", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["log_prob"] < scored["log_prob"]
    assert main(["generate", str(pairs_run)]) == 2
    assert "--source" in capsys.readouterr().err
    with pytest.raises(GentextError, match="--condition source"):
        gentext.train(tmp_path / "bad", paths=[str(heldout)], model="seq2seq", steps=1)


@pytest.mark.slow
def test_the_server_translates_json_and_streams(pairs_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from gentext.server import create_app

    model = gentext.load(pairs_run)
    client = TestClient(create_app({"dates": model}))
    assert client.get("/v1/models").json()["models"][0]["needs_source"] is True
    body = {"source": "12. juni 1935", "temperature": 0, "max_new_tokens": 15}
    text = client.post("/v1/generate", json=body).json()["samples"][0]
    assert text == model.generate("", source="12. juni 1935", temperature=0, max_new_tokens=15)[0]
    with client.stream("POST", "/v1/generate", json={**body, "stream": True}) as response:
        events = [e for e in response.read().decode().split("\n\n") if e]
    assert "".join(json.loads(e.split("data: ", 1)[1])["text"] for e in events if e.startswith("event: token")) == text
    missing = client.post("/v1/generate", json={"temperature": 0})
    assert missing.status_code == 400 and "--source" in missing.json()["detail"]


@pytest.mark.slow
def test_the_attention_picture_is_drawn_for_a_pair(pairs_run, tmp_path, capsys, trained_run):
    picture = tmp_path / "attention.png"
    assert main(["attention", str(pairs_run), "--source", "7 mars 2021", "--out", str(picture)]) == 0
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "attention drawn" in capsys.readouterr().out
    assert main(["attention", str(trained_run), "--source", "x", "--out", str(tmp_path / "no.png")]) == 2
    assert "not a seq2seq run" in capsys.readouterr().err and not (tmp_path / "no.png").exists()


@pytest.mark.slow
def test_the_server_returns_the_attention_matrix(pairs_run, trained_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from gentext.server import create_app

    client = TestClient(create_app({"dates": gentext.load(pairs_run), "text": gentext.load(trained_run)}))
    found = client.post("/v1/attention", json={"source": "7 mars 2021"}).json()
    assert len(found["weights"]) == len(found["output_tokens"]) == len(found["output"]) + 1  # chars + the end
    assert all(len(row) == len(found["source_tokens"]) == 11 for row in found["weights"])
    assert all(abs(sum(row) - 1) < 1e-4 for row in found["weights"])  # a distribution over the source
    assert client.post("/v1/attention", json={"source": "x", "model": "text"}).status_code == 400
    assert client.post("/v1/attention", json={"source": ""}).status_code == 422


@pytest.mark.slow
def test_eval_compare_and_chat_work_without_json_on_a_pair_run(pairs_run, trained_run, capsys, monkeypatch):
    import io

    assert main(["eval", str(pairs_run)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^loss \d+\.\d+ nats/token on [\d,]+ pairs", out, re.M)
    assert re.search(r"^greedy on [\d,]+ pairs: exact match \d+\.\d%", out, re.M) and "beam" in out
    assert main(["compare", str(pairs_run), str(pairs_run)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| run | kind | loss | exact_match | chrf | bleu |" and len(table) == 4
    assert main(["compare", str(pairs_run), str(trained_run)]) == 2
    assert "compare with each other" in capsys.readouterr().err
    # chat: each line is a source to translate, and /settings do not trip over --source
    source = "martedì 23 maggio 1978"
    monkeypatch.setattr("sys.stdin", io.StringIO(f"/max_new_tokens 12\n{source}\n"))
    assert main(["chat", str(pairs_run), "--temperature", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = gentext.load(pairs_run).generate("", source=source, max_new_tokens=12, temperature=0)[0]
    assert lines[0] == "max_new_tokens = 12" and lines[1] == expected.strip("\n")
