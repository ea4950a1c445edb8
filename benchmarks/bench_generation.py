"""Generation speed: gentext against the loop a competent user writes by hand, in one invocation.

    python benchmarks/bench_generation.py            # 2x512 char LSTM, 65-token vocabulary
    python benchmarks/bench_generation.py --tiny     # seconds; what the test suite runs

Baseline: plain PyTorch, `nn.LSTM` called once per token on the (1, 1) input with the state
carried, softmax + multinomial; 32 samples are 32 such runs. gentext: the same weights through
`TextModel.generate`, once per sample (32 calls) and as one batch (`num_samples=32`).
Weights are random: speed does not depend on what the model learned.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch import nn

from gentext.api import TextModel
from gentext.config import ModelConfig
from gentext.data.tokenizers import CharTokenizer
from gentext.models import build_model


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


def plain_generate(model: PlainLSTM, tokens: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    out, state, ids = [], None, torch.zeros(1, 1, dtype=torch.long)
    with torch.inference_mode():
        for _ in range(tokens):
            logits, state = model(ids, state)
            ids = torch.multinomial(torch.softmax(logits[:, -1], -1), 1, generator=generator)
            out.append(int(ids))
    return out


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a small model and few tokens (smoke test)")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--samples", type=int, default=32)
    args = parser.parse_args()
    hidden, embed, layers, tokens, samples = (
        (64, 16, 1, 20, 4) if args.tiny else (512, 64, 2, args.tokens, args.samples)
    )
    chars = [chr(32 + i) for i in range(65)]

    torch.manual_seed(0)
    baseline = PlainLSTM(len(chars), embed, hidden, layers).eval()
    net = build_model(ModelConfig(vocab_size=len(chars), embed_size=embed, hidden_size=hidden, num_layers=layers))
    net.load_state_dict(baseline.state_dict())  # identical weights and layout
    model = TextModel(net.eval(), CharTokenizer(chars), {})

    rows = []
    t = timed(lambda: [plain_generate(baseline, tokens, s) for s in range(samples)])
    rows.append(("plain PyTorch, nn.LSTM per token, one sample at a time", samples * tokens / t, 1.0))
    base = rows[0][1]
    t = timed(lambda: model.generate(" ", max_new_tokens=tokens, num_samples=1, seed=0, temperature=1.0))
    rows.append(("gentext, 1 sample", tokens / t, tokens / t / base))
    t = timed(lambda: [model.generate(" ", max_new_tokens=tokens, seed=s, temperature=1.0) for s in range(samples)])
    rows.append((f"gentext, {samples} separate calls", samples * tokens / t, samples * tokens / t / base))
    t = timed(lambda: model.generate(" ", max_new_tokens=tokens, num_samples=samples, seed=0, temperature=1.0))
    rows.append((f"gentext, num_samples={samples} (one batch)", samples * tokens / t, samples * tokens / t / base))

    print(
        f"generation, {layers}x{hidden} LSTM, vocab {len(chars)}, {tokens} tokens per sample, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print("| path | tokens/s (all samples) | vs baseline |")
    print("|---|---:|---:|")
    for name, rate, ratio in rows:
        print(f"| {name} | {rate:,.0f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
