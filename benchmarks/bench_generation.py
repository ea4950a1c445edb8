"""Generation speed per weight format, against the loop a competent user writes by hand, in one run.

    python benchmarks/bench_generation.py --run runs/ts-lstm10   # a trained 2x512 char LSTM: speed + quality
    python benchmarks/bench_generation.py                         # random 2x512 weights: speed only
    python benchmarks/bench_generation.py --tiny                  # seconds; what the test suite runs

Baseline: plain PyTorch, `nn.LSTM` called once per token on the (B, 1) input with the state
carried, softmax + multinomial (B = 1, and B = 64 for the batched row). gentext: the same weights
through `TextModel.generate` with the step's weights in each format (models/weights.py), one
stream and `num_samples=64`, with the compiled per-token kernels (gentext/native, built first if
they are not; the header says which path ran) and, for the fastest format, the Python path too.
Quality, with --run: the held-out loss teacher-forced through the
step path in each format (`evaluate` with the format named), its difference from float32, and how
much of a 300-token greedy continuation stays identical to float32's. Then a roofline: bytes each
token reads, the measured bandwidth at that working set and matmul peaks, the bound they set on
tokens/s and the share reached.

minGRU rows: a random 2 x 256 minGRU (what `--model auto` trains for a short character run), one
stream, its Python step against its compiled one in each format.

Transformer row: nanoGPT's Shakespeare-char shape (6 layers, 6 heads, 384 wide, context 256,
random weights), one stream continuing a 256-token prompt, so every step sees a full context.
Baseline: nanoGPT's `generate` loop on the same module (crop to the last 256 tokens, run the whole
window, keep the last position's logits, softmax + multinomial); gentext feeds one token a step
through its sliding KV cache, in each weight format this CPU runs natively.
"""

from __future__ import annotations

import argparse
import time

import torch
from generation_report import print_header, print_speed  # noqa: I001
from roofline import bandwidth_gbs, matmul_peaks, step_bytes, step_flops
from torch import nn

from gentext import native, threads
from gentext.api import TextModel, load
from gentext.conditions import Condition
from gentext.config import ModelConfig
from gentext.data.tokenizers import CharTokenizer
from gentext.models import build_model, weights
from gentext.models.weights import fast_formats
from gentext.runconfig import RunConfig

DEFAULT_THREADS = torch.get_num_threads()  # before gentext chooses any


class PlainLSTM(nn.Module):
    """The hand-written baseline model (as in pytorch/examples word_language_model)."""

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids, state=None):
        y, state = self.rnn(self.embedding(ids), state)
        return self.head(y), state


def plain_generate(model: PlainLSTM, tokens: int, batch: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    state, ids = None, torch.zeros(batch, 1, dtype=torch.long)
    with torch.inference_mode():
        for _ in range(tokens):
            logits, state = model(ids, state)
            ids = torch.multinomial(torch.softmax(logits[:, -1], -1), 1, generator=generator)


def recompute_generate(model: nn.Module, prompt: torch.Tensor, tokens: int, context: int, seed: int) -> None:
    """nanoGPT's generation loop: the whole (cropped) window through the model for every token."""
    generator = torch.Generator().manual_seed(seed)
    ids = prompt
    with torch.inference_mode():
        for _ in range(tokens):
            logits, _ = model(ids[:, -context:])
            probs = torch.softmax(logits[:, -1], -1)
            ids = torch.cat([ids, torch.multinomial(probs, 1, generator=generator)], dim=1)


def transformer_row(args) -> tuple[float, dict[str, float], str]:
    """(recompute tokens/s, gentext tokens/s per weight format, shape) for one stream at a full context."""
    size = dict(hidden_size=64, num_layers=2, num_heads=2, context=32)
    if not args.tiny:
        size = dict(hidden_size=384, num_layers=6, num_heads=6, context=256)
    cfg = ModelConfig(kind="transformer", vocab_size=65, **size)
    torch.manual_seed(0)
    model = TextModel(
        build_model(cfg).eval(), CharTokenizer([chr(32 + i) for i in range(65)]), RunConfig(), condition=Condition()
    )
    prompt_text = "".join(chr(32 + i % 65) for i in range(cfg.context))
    prompt = torch.tensor([model.tokenizer.encode(prompt_text).tolist()])
    fns = {"plain": at_default_threads(lambda: recompute_generate(model.model, prompt, args.tokens, cfg.context, 0))}
    formats = ("fp32", *(f for f in fast_formats(model.device) if f != "fp32"))
    fns.update({fmt: generating(model, fmt, prompt_text, args.tokens, kernels=native.kernels()) for fmt in formats})
    ours = interleaved(fns, args.tokens, 2)
    plain = ours.pop("plain")
    return plain, ours, f"{cfg.num_layers} layers x {cfg.hidden_size}, {cfg.num_heads} heads, context {cfg.context}"


def mingru_row(args) -> dict[str, float]:
    """Tokens/s of one stream of a random minGRU (the default kind of a short character run, 2 x 256)
    per weight format, its Python step ("FMT (Python)") and its compiled one, interleaved; and where
    the kernels make its int8 products ("int8"), the same step with fbgemm's ("int8 (fbgemm)")."""
    cfg = ModelConfig(kind="mingru", vocab_size=65, hidden_size=32 if args.tiny else 256, num_layers=2)
    chars = CharTokenizer([chr(32 + i) for i in range(65)])
    torch.manual_seed(0)
    model = TextModel(build_model(cfg).eval(), chars, RunConfig(), condition=Condition())
    formats = [f for f in ("fp32", "int8") if f in fast_formats(model.device)]
    paths = [f"{fmt} (Python)" for fmt in formats] + (formats if native.kernels() is not None else [])
    fns = {path: generating(model, path, " ", args.tokens, kernels=native.kernels()) for path in paths}
    if "int8" in paths and weights.direct_int8(scaled=True):
        fns["int8 (fbgemm)"] = fbgemm_products(cfg, chars, args.tokens)
    return interleaved(fns, args.tokens, 3)


def fbgemm_products(cfg: ModelConfig, chars: CharTokenizer, tokens: int):
    """A run of the same random model whose int8 step was built with every product fbgemm's (the
    step's matrices are built once and kept, so the choice made here holds)."""
    chosen, weights.direct_int8 = weights.direct_int8, lambda scaled=False: None
    try:
        torch.manual_seed(0)
        model = TextModel(build_model(cfg).eval(), chars, RunConfig(), condition=Condition())
        model.set_weights("int8")
        model.generate(" ", max_new_tokens=1, seed=0)  # builds the compiled step now
    finally:
        weights.direct_int8 = chosen
    return lambda: model.generate(" ", max_new_tokens=tokens, temperature=1.0, seed=0)


def generating(model: TextModel, fmt: str, prompt: str, tokens: int, streams: int = 1, kernels=None):
    """gentext's run for one timing: the step's weights in `fmt` (a format name; "int8 (Python)":
    int8 without the compiled kernels), then `streams` samples of `tokens`."""
    python = fmt.endswith(" (Python)")

    def run():
        model.set_weights(fmt.removesuffix(" (Python)"))
        native.use(None if python else kernels)
        model.generate(prompt, max_new_tokens=tokens, temperature=1.0, seed=0, num_samples=streams)
        native.use(kernels)

    return run


def at_default_threads(fn):
    """`fn` run at torch's own thread count (returning its result): gentext's governor (threads.py)
    sets a count per OS thread, one for a one-row step, which a plain program or the machine's
    peaks would not inherit."""

    def run():
        before = torch.get_num_threads()
        torch.set_num_threads(DEFAULT_THREADS)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)

    return run


def interleaved(fns: dict, tokens: int, repeats: int) -> dict[str, float]:
    """Tokens per second of each function, the best of `repeats` rounds that run every function
    once in turn: a shared machine's speed drifts by tens of percent within a minute, and taking
    the baseline and gentext in the same rounds keeps the drift out of their ratio."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: tokens / seconds for name, seconds in best.items()}


def models(args) -> tuple[TextModel, PlainLSTM]:
    """The gentext model (trained with --run, else random) and the baseline with the same weights."""
    if args.run:
        model = load(args.run, weights="fp32")
        cfg = model.model.config
    else:
        size = dict(embed_size=16, hidden_size=64, num_layers=1) if args.tiny else dict(hidden_size=512, num_layers=2)
        cfg = ModelConfig(kind="lstm", vocab_size=65, **size)
        torch.manual_seed(0)
        model = TextModel(
            build_model(cfg).eval(), CharTokenizer([chr(32 + i) for i in range(65)]), RunConfig(), condition=Condition()
        )
    baseline = PlainLSTM(cfg.vocab_size, cfg.embed_size, cfg.hidden_size, cfg.num_layers).eval()
    baseline.load_state_dict(model.model.state_dict())
    return model, baseline


def speeds(model: TextModel, baseline: PlainLSTM, formats: list[str], args) -> dict[str, tuple[float, float]]:
    """(1-stream, many-stream) tokens/s of the baseline ("plain") and each weight format, timed in
    interleaved rounds."""
    kernels = native.kernels()
    one = {"plain": at_default_threads(lambda: plain_generate(baseline, args.tokens, 1, 0))}
    one.update({f: generating(model, f, " ", args.tokens, kernels=kernels) for f in formats})
    many = {"plain": at_default_threads(lambda: plain_generate(baseline, args.tokens, args.streams, 0))}
    many.update({f: generating(model, f, " ", args.tokens, args.streams, kernels) for f in formats})
    one, many = interleaved(one, args.tokens, 3), interleaved(many, args.tokens * args.streams, 2)
    return {name: (one[name], many[name]) for name in one}


def measure(model: TextModel, fmt: str, args, reference: dict, speed: tuple[float, float]) -> dict:
    model.set_weights(fmt.removesuffix(" (Python)"))
    row = {"format": fmt, "bytes": step_bytes(model.model), "one": speed[0], "many": speed[1]}
    if args.run:
        row["loss"] = model.evaluate(seq_len=64)["loss"]
        greedy = model.generate(" ", max_new_tokens=300, temperature=0)[0]
        reference.setdefault("greedy", greedy)
        same = next((i for i, (a, b) in enumerate(zip(greedy, reference["greedy"], strict=False)) if a != b), 300)
        row["greedy_same"] = min(same, len(greedy))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained LSTM run: adds held-out quality per format")
    parser.add_argument("--tiny", action="store_true", help="a small model and few tokens (smoke test)")
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--python", action="store_true", help="the Python per-token path only (no compiled kernels)")
    args = parser.parse_args()
    # as gentext.load and the CLI do: gentext's rows run with its thread choices, from a look at what
    # others use now (without one the governor starts from the load average, which this machine's
    # last benchmark still fills, and runs the first seconds on one core)
    threads.prepare()
    time.sleep(0.5)
    threads.configure()
    if args.tiny:
        args.tokens, args.streams = 20, 4
    if not args.python:
        native.prepare(wait=True)  # the compiled kernels, built now if they are not yet
    model, baseline = models(args)
    cfg = model.model.config
    formats = ["fp32", *(f for f in fast_formats(model.device) if f != "fp32")]
    if native.kernels() is not None:
        formats.append(f"{formats[1] if len(formats) > 1 else 'fp32'} (Python)")
    timed = speeds(model, baseline, formats, args)
    (base_one, base_many), reference = timed["plain"], {}
    rows = [measure(model, fmt, args, reference, timed[fmt]) for fmt in formats]
    print_header(cfg, args)
    print_speed(rows, base_one, base_many, args)
    plain_t, ours_t, shape = transformer_row(args)
    print(f"\nTransformer ({shape}), 1 stream at a full context, {args.tokens} tokens:")
    print("| path | tokens/s | vs full recompute |\n|---|---:|---:|")
    print(f"| nanoGPT-style full recompute | {plain_t:,.0f} | 1.0x |")
    for fmt, rate_t in ours_t.items():
        print(f"| gentext (sliding KV cache), {fmt} weights | {rate_t:,.0f} | {rate_t / plain_t:.1f}x |")
    minimal = mingru_row(args)
    print(f"\nminGRU (2 x {32 if args.tiny else 256}), 1 stream: the Python step against the compiled one")
    print("| weights | path | tokens/s |\n|---|---|---:|")
    names = {"(Python)": "Python", "(fbgemm)": "compiled, fbgemm's products"}
    for path, rate in minimal.items():
        print(f"| {path.split()[0]} | {names.get(path.split()[-1], 'compiled')} | {rate:,.0f} |")
    print_roofline(rows, model, args)


def print_roofline(rows: list[dict], model: TextModel, args) -> None:
    peaks = at_default_threads(lambda: matmul_peaks(tiny=args.tiny))()  # the machine's: all its cores
    flops = step_flops(model.model)
    print(
        f"\nroofline: {flops / 1e6:.2f} MFLOP per token; matmul peaks (GFLOP/s): "
        + ", ".join(f"{k} {v:,.0f}" for k, v in peaks.items())
    )
    print(
        "| weights | bytes/token | bandwidth at that size GB/s | 1-stream bound tokens/s | reached | "
        f"{args.streams}-stream bound | reached |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        bw = at_default_threads(lambda: bandwidth_gbs(int(r["bytes"])))()  # noqa: B023 -- called at once
        peak = peaks.get(r["format"].removesuffix(" (Python)"), peaks["fp32"])
        one = min(bw * 1e9 / r["bytes"], peak * 1e9 / flops)
        many = min(bw * 1e9 / r["bytes"] * args.streams, peak * 1e9 / flops)
        print(
            f"| {r['format']} | {r['bytes'] / 1e6:.2f} MB | {bw:,.0f} | {one:,.0f} | {r['one'] / one:.0%} | "
            f"{many:,.0f} | {r['many'] / many:.0%} |"
        )


if __name__ == "__main__":
    main()
