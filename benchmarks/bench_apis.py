"""The APIs tools speak, measured: lm-evaluation-harness against `gentext serve`, the prefix cache's
time to first token, and constrained output on a character and a BPE run.

    python benchmarks/bench_apis.py                      # trains two small runs first (~2 minutes)
    python benchmarks/bench_apis.py --char RUN --bpe RUN # runs of your own (char and byte-level BPE)
    python benchmarks/bench_apis.py --tiny               # seconds; what the test suite runs

1. lm-eval (`local-completions`, `tokenized_requests=False`, the server's tokenizer endpoints) runs
   `loglikelihood_rolling` over held-out documents; its bits per byte beside gentext's own figure
   for the same documents (`score` per document: the same computation) and `gentext eval` on the
   documents joined (one stream, the state carried from one to the next).
2. Prefix cache: streaming requests that share a 2,000-token prefix and differ after it, against
   a server with the cache and one without (`--prefix-cache-mb 0`); time to first token of each
   request after the first, and whether every text equals the other server's.
3. Constrained output: 100 samples under a date regex and under a small JSON schema, per run:
   how many match, and the time per sample beside unconstrained sampling.
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from servers import lm_eval_bits_per_byte, start_server  # noqa: I001 -- benchmarks/ is on the path when run as a script

import gentext

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
DATE = r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "line": {"type": "integer"}},
    "required": ["name", "line"],
}


def train_runs(where: Path, seconds: int) -> dict[str, str]:
    """A char and a BPE run on Tiny Shakespeare (else the built-in corpus's text) with a dated JSON
    record after every 300th paragraph, so the vocabularies can write dates and JSON."""
    if SHARED.exists():
        text = SHARED.read_text(encoding="utf-8")
    else:
        from gentext.config import CorpusConfig
        from gentext.data.corpus import Shaping, load_corpus

        corpus = load_corpus(CorpusConfig(), Shaping())
        text = corpus.train + corpus.val
    paragraphs = text.split("\n\n")
    for i in range(len(paragraphs) - 1, 0, -max(len(paragraphs) // 300, 1)):
        record = json.dumps({"name": f"speaker{i % 50}", "line": i})
        paragraphs.insert(i, f"Recorded 19{i % 100:02d}-{i % 12 + 1:02d}-{i % 28 + 1:02d} {record}")
    where.mkdir(parents=True, exist_ok=True)
    source = where / "text.txt"
    source.write_text("\n\n".join(paragraphs), encoding="utf-8")
    runs = {}
    for level, extra in (("char", []), ("bpe", ["--level", "bpe", "--vocab-size", "1000"])):
        out = where / level
        subprocess.run([sys.executable, "-m", "gentext", "train", str(source), "--out", str(out), "--time-limit",
                        f"{seconds}s", "--quiet", *extra], check=True)  # fmt: skip
        runs[level] = str(out)
    return runs


def held_out_docs(run: str, count: int) -> list[str]:
    model = gentext.load(run)
    text = model.held_out_text()
    docs = [d for d in text.split("\n\n") if d.strip() and "Recorded" not in d]
    return docs[:count]


def lm_eval_row(run: str, docs: list[str], work: Path, max_length: int = 1024) -> dict:
    server, port = start_server(run)
    try:
        started = time.perf_counter()
        try:
            bits = lm_eval_bits_per_byte(Path(run).name, f"http://127.0.0.1:{port}", docs, work, max_length)
        except RuntimeError as failed:
            raise SystemExit(str(failed)) from None
        seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    model = gentext.load(run)
    nbytes = sum(len(d.encode()) for d in docs)
    scored = -sum(model.score(d)["log_prob"] for d in docs) / nbytes / math.log(2)
    joined = "\n\n".join(docs)
    evaluated = model.evaluate(text=joined)  # one stream: what `gentext eval RUN FILE` prints
    return {
        "lm_eval": bits,
        "score": scored,
        "eval": evaluated["bpc"] * evaluated["characters"] / len(joined.encode()),
        "seconds": seconds,
    }


def first_token(port: int, prompt: str, seed: int) -> tuple[float, str]:
    """(seconds to the first generated text, the whole generated text) of one streamed request."""
    body = json.dumps({"prompt": prompt, "max_new_tokens": 30, "seed": seed, "stream": True})
    started, first, text = time.perf_counter(), None, ""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("POST", "/v1/generate", body, {"Content-Type": "application/json"})
    event = ""
    for raw in connection.getresponse():
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "token":
            text += json.loads(line[6:])["text"]
            if first is None and len(text) > len(prompt):
                first = time.perf_counter() - started
        elif event in ("done", "error") and line.startswith("data: "):
            break
    connection.close()
    return first, text[len(prompt) :]


def prefix_rows(run: str, tokens: int, requests: int) -> list[dict]:
    model = gentext.load(run)
    prefix = "".join(c for c in model.held_out_text() if c in set(model.tokenizer.decode(list(range(
        model.tokenizer.vocab_size)))))  # fmt: skip
    prefix = model.tokenizer.decode(model.tokenizer.encode(prefix)[:tokens].tolist())
    endings = [f"\n{name}:\n" for name in ("ROMEO", "JULIET", "HAMLET", "NURSE", "KING", "LEAR", "PAGE", "FOOL")]
    prompts = [prefix + endings[i % len(endings)] for i in range(requests)]
    rows, texts = [], {}
    for label, flags in (("no cache (--prefix-cache-mb 0)", ["--prefix-cache-mb", "0"]), ("prefix cache", [])):
        server, port = start_server(run, *flags)
        try:
            results = [first_token(port, prompt, seed) for seed, prompt in enumerate(prompts)]
        finally:
            server.terminate()
            server.wait(timeout=30)
        texts[label] = [text for _, text in results]
        later = [t for t, _ in results[1:]]
        rows.append({"server": label, "first": results[0][0], "median": statistics.median(later), "max": max(later)})
    same = texts["prefix cache"] == texts["no cache (--prefix-cache-mb 0)"]
    for row in rows:
        row["same"] = same
    return rows


def constrained_rows(runs: dict[str, str], samples: int) -> list[dict]:
    rows = []
    for level, run in runs.items():
        model = gentext.load(run)
        for name, settings, check in (
            ("date regex", {"regex": DATE}, lambda t: re.fullmatch(DATE, t) is not None),
            ("JSON schema", {"json_schema": json.dumps(SCHEMA)}, _fits_schema),
            ("none", {}, lambda t: True),
        ):
            started = time.perf_counter()
            done = model.complete("Recorded ", num_samples=samples, seed=1, max_new_tokens=60, **settings)
            seconds = time.perf_counter() - started
            ok = sum(check(c.text[len("Recorded ") :]) for c in done)
            rows.append({"run": level, "constraint": name, "match": ok, "samples": samples,
                         "ms": seconds / samples * 1000})  # fmt: skip
    return rows


def _fits_schema(text: str) -> bool:
    try:
        record = json.loads(text)
    except ValueError:
        return False
    return isinstance(record.get("name"), str) and len(record["name"]) <= 12 and isinstance(record.get("line"), int)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--char", help="a character-level run")
    parser.add_argument("--bpe", help="a byte-level BPE run")
    parser.add_argument("--tiny", action="store_true", help="small runs and counts (smoke test)")
    parser.add_argument("--keep", help="train the runs into this folder and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = {"char": args.char, "bpe": args.bpe}
        if not all(runs.values()):
            runs = train_runs(Path(args.keep) if args.keep else work, 10 if args.tiny else 60)
        docs, tokens, requests, samples = (5, 300, 3, 10) if args.tiny else (100, 2000, 9, 100)
        paragraphs = held_out_docs(runs["char"], docs)
        whole = "\n\n".join(held_out_docs(runs["char"], 10_000))[: 2000 if args.tiny else 60_000]
        print("lm-evaluation-harness (local-completions, loglikelihood_rolling) on `gentext serve`, bits per byte:")
        print("| text | lm-eval | gentext score, document by document | gentext eval (one stream) | lm-eval's time |")
        print("|---|---:|---:|---:|---:|")
        for name, texts, length in (
            (f"{len(paragraphs)} held-out paragraphs", paragraphs, 1024),
            (f"one held-out document, {len(whole):,} characters", [whole], 2048),
        ):
            row = lm_eval_row(runs["char"], texts, work, length)
            figures = f"{row['lm_eval']:.4f} | {row['score']:.4f} | {row['eval']:.4f}"
            print(f"| {name} | {figures} | {row['seconds']:.0f} s |")
        print(f"\nprefix cache: streamed requests sharing a {tokens}-token prefix, {requests} of them:")
        print("| server | first request TTFT ms | later requests TTFT median ms | max ms | texts equal |")
        print("|---|---:|---:|---:|---|")
        for r in prefix_rows(runs["char"], tokens, requests):
            print(f"| {r['server']} | {r['first'] * 1000:.0f} | {r['median'] * 1000:.1f} | {r['max'] * 1000:.1f} | "
                  f"{r['same']} |")  # fmt: skip
        print(f"\nconstrained output, {samples} samples each:")
        print("| run | constraint | matching | ms per sample |\n|---|---|---:|---:|")
        for r in constrained_rows(runs, samples):
            print(f"| {r['run']} | {r['constraint']} | {r['match']}/{r['samples']} | {r['ms']:.1f} |")


if __name__ == "__main__":
    main()
