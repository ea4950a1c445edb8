"""The lesson's last comparison: a Markov chain, an LSTM, a Transformer from scratch and a pretrained
model, on the same held-out text, in bits per character and generation speed (one `gentext compare`).

    python benchmarks/bench_pretrained.py --pretrained ~/models/gpt2     # a real GPT-2 folder (or a cached id)
    python benchmarks/bench_pretrained.py                                 # a tiny GPT-2 made here instead
    python benchmarks/bench_pretrained.py --tiny                          # seconds; what the test suite runs

The text is Tiny Shakespeare from ../shared/data when present (else the built-in corpus); its last
10% is held out, and every model is scored on exactly that text. The Markov chain (order 7) is
counted, the LSTM and the Transformer train `--minutes` each. Without `--pretrained` a tiny GPT-2
(random weights, then fine-tuned on the same text for `--minutes`) stands in, so the script runs
offline anywhere; fetch a real one on a connected machine with `huggingface-cli download gpt2
--local-dir gpt2` (README, "A pretrained GPT-2").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
GENTEXT = [sys.executable, "-m", "gentext"]


def _text(tiny: bool) -> str:
    if SHARED.is_file():
        text = SHARED.read_text(encoding="utf-8")
    else:
        from gentext.data.corpus import load_builtin

        text = load_builtin("python-docs")
    return text[:30_000] if tiny else text


def _tiny_gpt2(folder: Path, text: str, tiny: bool) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from gentext.data.tokenizers import BPETokenizer

    tokenizer = BPETokenizer.fit(text, vocab_size=2000)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer.hf).save_pretrained(folder)
    torch.manual_seed(0)
    width = dict(n_layer=2, n_head=2, n_embd=32) if tiny else dict(n_layer=4, n_head=4, n_embd=128)
    sizes = dict(**width, n_positions=256, bos_token_id=0, eos_token_id=0)
    config = GPT2Config(vocab_size=tokenizer.vocab_size, **sizes)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def _train(out: Path, train: Path, *flags: str) -> None:
    command = [*GENTEXT, "train", str(train), "--out", str(out), "--quiet", "--force", *flags]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", help="a Hugging Face model folder or a cached model id")
    parser.add_argument("--minutes", type=float, default=2.0, help="training time of each network")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    text = _text(args.tiny)
    cut = len(text) - len(text) // 10
    budget = ["--steps", "5"] if args.tiny else ["--time-limit", f"{args.minutes * 60:.0f}"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "train.txt").write_text(text[:cut], encoding="utf-8")
        (tmp / "heldout.txt").write_text(text[cut:], encoding="utf-8")
        train = tmp / "train.txt"
        _train(tmp / "markov", train, "--model", "markov", "--order", "7")
        small = ["--hidden-size", "64", "--num-layers", "1", "--num-heads", "4"] if args.tiny else []
        _train(tmp / "lstm", train, "--model", "lstm", *budget, *small[:4])
        _train(tmp / "transformer", train, "--preset", "transformer-shakespeare-cpu", *budget, *small)
        runs = [tmp / "markov", tmp / "lstm", tmp / "transformer"]
        if args.pretrained:
            runs.append(Path(args.pretrained))
        else:
            folder = _tiny_gpt2(tmp / "tiny-gpt2", text[:cut], args.tiny)
            _train(tmp / "gpt2-tuned", train, "--init-from", str(folder), *budget, "--seq-len", "128")
            runs += [folder, tmp / "gpt2-tuned"]
        name = "Tiny Shakespeare" if SHARED.is_file() else "built-in corpus"
        print(f"text: {name}, {len(text) - cut:,} held-out characters")
        command = [*GENTEXT, "compare", *map(str, runs), "--data", str(tmp / "heldout.txt"), "--unknown", "skip"]
        print(subprocess.run(command, check=True, capture_output=True, text=True).stdout, end="")


if __name__ == "__main__":
    main()
