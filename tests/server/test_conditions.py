"""Seq2seq and captioning requests in the server's continuous batch (issue 25): sixteen at once
share batched steps, and each returns exactly what it returns alone."""

import base64
from concurrent.futures import ThreadPoolExecutor

import pytest

import gentext
from tests.conftest import reversals

pytest.importorskip("fastapi")
pytest.importorskip("PIL")

SMALL = dict(hidden_size=32, embed_size=16, batch_size=16, eval_every=50)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from gentext.data.shapes import make_shapes

    root = tmp_path_factory.mktemp("served")
    make_shapes(root / "shapes", 40, seed=6)
    gentext.train(root / "pairs", paths=[str(reversals(root / "pairs.tsv"))], condition="source", steps=60, **SMALL)
    gentext.train(root / "captions", paths=[str(root / "shapes")], condition="image", steps=40, **SMALL)
    return root


def _client(model):
    from fastapi.testclient import TestClient

    from gentext.server import create_app

    app = create_app({"m": model})
    return TestClient(app), app.state.service.engines[id(model)]


def _all_at_once(client, path: str, bodies: list[dict]) -> list:
    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda body: client.post(path, json=body), bodies))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    return [r.json() for r in responses]


@pytest.mark.slow
def test_sixteen_translations_share_the_batch_and_each_equals_its_text_alone(runs):
    model = gentext.load(runs / "pairs")
    sources = ["ab", "cdefgh", "hgf", "abcdefg", "ba", "ddd", "efgab", "h"] * 2  # sources of many lengths
    bodies = [
        {"source": s, "max_new_tokens": 12, "seed": i, "temperature": 0 if i % 2 else 1.0}
        for i, s in enumerate(sources)
    ]
    alone = [model.generate("", **b)[0] for b in bodies]
    client, engine = _client(model)
    together = [r["samples"][0] for r in _all_at_once(client, "/v1/generate", bodies)]
    assert together == alone
    assert engine.most_rows > 1  # they stepped as one batch, not one by one


def test_sixteen_captions_share_the_batch_and_each_equals_its_caption_alone(runs):
    model = gentext.load(runs / "captions")
    pictures = sorted((runs / "shapes" / "images").glob("*.png"))[:16]
    bodies = [
        {"image": base64.b64encode(p.read_bytes()).decode(), "seed": i, "temperature": 0 if i % 2 else 1.0}
        for i, p in enumerate(pictures)
    ]
    alone = [
        model.caption(p, seed=b["seed"], temperature=b["temperature"])[0] for p, b in zip(pictures, bodies, strict=True)
    ]
    client, engine = _client(model)
    together = [r["captions"][0] for r in _all_at_once(client, "/v1/caption", bodies)]
    assert together == alone
    assert engine.most_rows > 1


def test_score_takes_a_source_or_a_picture_on_the_same_contract(runs):
    pairs = gentext.load(runs / "pairs")
    greedy = pairs.generate("", source="abcd", temperature=0, max_new_tokens=8)[0].strip("\n")
    assert pairs.score(greedy, source="abcd")["log_prob"] > pairs.score("hhhhh", source="abcd")["log_prob"]
    captioner = gentext.load(runs / "captions")
    picture = sorted((runs / "shapes" / "images").glob("*.png"))[0]
    said = captioner.caption(picture, temperature=0)[0]
    scored = captioner.score(said, image=picture)
    assert scored["tokens"] == len(said.split()) and scored["log_prob"] < 0
