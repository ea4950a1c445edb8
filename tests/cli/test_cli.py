"""The command line: a smoke run, --json contracts, and every bad-input path (message + exit code)."""

import json
import subprocess
import sys

import pytest

from gentext.cli import main
from tests.conftest import TINY_FLAGS


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_train_generate_eval_info_through_the_cli(capsys, tiny_corpus, tmp_path):
    run = tmp_path / "run"
    code, out, _ = run_cli(capsys, "train", tiny_corpus, "--out", run, "--steps", "6", "--json", *TINY_FLAGS)
    assert code == 0
    summary = last_json(out)
    assert set(summary) >= {
        "steps",
        "tokens",
        "seconds",
        "train_loss",
        "val_loss",
        "val_bpc",
        "tokens_per_second",
        "out",
    }
    assert summary["steps"] == 6 and summary["out"] == str(run)

    seeded = ("generate", run, "--prompt", "The ", "--max-new-tokens", "20", "--seed", "1", "--num-samples", "2")
    code, out, _ = run_cli(capsys, *seeded, "--json")
    samples = last_json(out)["samples"]
    assert code == 0 and len(samples) == 2 and all(s.startswith("The ") for s in samples)
    _, again, _ = run_cli(capsys, *seeded, "--json")
    assert last_json(again)["samples"] == samples

    code, out, _ = run_cli(
        capsys, "generate", run, "--prompt", "A", "--max-new-tokens", "10", "--seed", "2", "--stream"
    )
    assert code == 0 and out.startswith("A") and len(out.rstrip("\n")) >= 10

    code, out, _ = run_cli(capsys, "eval", run, tiny_corpus, "--json")
    result = last_json(out)
    assert code == 0 and set(result) == {"loss", "perplexity", "bpc", "tokens", "characters"}

    code, out, _ = run_cli(capsys, "info", run)
    assert code == 0 and "lstm 1x32" in out


@pytest.mark.slow
def test_python_dash_m_runs_and_errors_have_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "gentext", "generate", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


HEAVY = ("torch", "numpy", "fastapi", "tokenizers", "safetensors")


@pytest.mark.parametrize(
    "argv", [["--help"], ["train", "--help"], ["serve", "--help"], ["train", "--out", "x", "--lrr", "1"]]
)
def test_reading_the_command_line_loads_no_torch(argv):
    """Help and a mistyped flag answer before any heavy library loads; the command runs them."""
    probe = (
        "import sys\nfrom gentext.__main__ import run\nsys.argv = ['gentext', *sys.argv[1:]]\n"
        "try:\n    code = run()\nexcept SystemExit as exc:\n    code = exc.code\n"
        f"print('loaded:', sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})), code)"
    )
    proc = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True)
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("loaded: [] "), (last, proc.stderr)
    assert last.endswith(" 2" if argv[-1] == "1" else " 0"), (last, proc.stderr)
    if argv[-1] == "1":
        assert "--lrr -> --lr" in proc.stderr, proc.stderr


def test_corpora_lists_the_builtin(capsys):
    code, out, _ = run_cli(capsys, "corpora")
    assert code == 0 and "python-docs" in out


@pytest.fixture
def bad_inputs(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"hello caf\xe9 world" * 3)
    short = tmp_path / "short.txt"
    short.write_text("just a few words\n")
    one = tmp_path / "one.txt"
    one.write_text("x")
    repeated = tmp_path / "repeated.txt"
    repeated.write_text("a" * 10_000)
    binary_dir = tmp_path / "bins"
    binary_dir.mkdir()
    (binary_dir / "blob.txt").write_bytes(bytes(range(256)) * 4)
    return {"empty": empty, "latin1": latin1, "short": short, "bins": binary_dir, "one": one, "repeated": repeated}


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such file or directory"),
        ("empty", "corpus is empty"),
        ("latin1", r"latin1.txt: not valid UTF-8 at byte offset 9"),
        ("short", "too short"),
        ("bins", "binary file"),
        ("one", "single distinct token ('x')"),
        ("repeated", "single distinct token ('a')"),
    ],
)
def test_bad_corpus(capsys, tmp_path, bad_inputs, case, message):
    path = bad_inputs.get(case, tmp_path / "missing.txt")
    code, _, err = run_cli(capsys, "train", path, "--out", tmp_path / "out", *TINY_FLAGS)
    assert code == 2
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert message.lower() in err.lower() or __import__("re").search(message, err)
    assert not (tmp_path / "out").exists()  # nothing written for bad input


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "transformer", "--context", "0"], "--context must be in 2.."),  # not the --seq-len it sets
        (["--level", "bpe", "--vocab-size", "5"], "--vocab-size for bpe must be more than its 256 byte tokens"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_flag_that_was_typed(capsys, tmp_path, tiny_corpus, flags, message):
    code, _, err = run_cli(capsys, "train", tiny_corpus, "--out", tmp_path / "out", *TINY_FLAGS, *flags)
    assert code == 2 and err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_encoding_errors_replace_accepts_bad_bytes(capsys, tmp_path, bad_inputs):
    big = tmp_path / "big.txt"
    big.write_bytes(bad_inputs["latin1"].read_bytes() * 20)
    code, _, err = run_cli(
        capsys, "train", big, "--out", tmp_path / "o", "--steps", "1", "--encoding-errors", "replace", *TINY_FLAGS
    )
    assert code == 0, err


@pytest.mark.slow
def test_existing_run_is_not_overwritten_without_force(capsys, trained_run, tiny_corpus):
    before = (trained_run / "model.safetensors").read_bytes()
    code, _, err = run_cli(capsys, "train", tiny_corpus, "--out", trained_run, "--steps", "1", *TINY_FLAGS)
    assert code == 2 and "--force" in err
    assert (trained_run / "model.safetensors").read_bytes() == before


@pytest.mark.slow
def test_force_overwrites_a_run(capsys, tiny_corpus, tmp_path):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", tiny_corpus, "--out", run, "--steps", "2", *TINY_FLAGS)[0] == 0
    code, out, _ = run_cli(capsys, "train", tiny_corpus, "--out", run, "--steps", "3", "--force", "--json", *TINY_FLAGS)
    assert code == 0 and last_json(out)["steps"] == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "#!"], "never seen: '!', '#'"),
        (["--temperature", "-1"], "--temperature must be >= 0"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--max-new-tokens", "x"], "--max-new-tokens: expected an integer, got 'x'"),
    ],
)
def test_bad_generate_arguments(capsys, trained_run, args, message):
    code, _, err = run_cli(capsys, "generate", trained_run, *args)
    assert code == 2 and err.startswith("error:") and message in err


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    "damage, message",
    [
        ("nothing-there", "no such run directory"),
        ("no-weights", "incomplete run directory, missing model.safetensors"),
        ("bad-json", "corrupt JSON"),
        ("newer-format", "newer gentext"),
        ("truncated-weights", "corrupt or truncated"),
        ("wrong-tokenizer", "do not belong together"),
        ("absurd-size", "--hidden-size must be in 1..16384"),
    ],
)
def test_broken_run_directory(capsys, trained_run, tmp_path, damage, message):
    run = tmp_path / "nothing" if damage == "nothing-there" else _copy_run(trained_run, tmp_path / "run")
    if damage == "no-weights":
        (run / "model.safetensors").unlink()
    elif damage == "bad-json":
        (run / "config.json").write_text("{not json")
    elif damage == "newer-format":
        config = json.loads((run / "config.json").read_text())
        config["format_version"] = 99
        (run / "config.json").write_text(json.dumps(config))
    elif damage == "truncated-weights":
        data = (run / "model.safetensors").read_bytes()
        (run / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "absurd-size":
        config = json.loads((run / "config.json").read_text())
        config["model"]["hidden_size"] = 10**9  # must be refused before anything is allocated
        (run / "config.json").write_text(json.dumps(config))
    elif damage == "wrong-tokenizer":
        (run / "tokenizer.json").write_text(json.dumps({"type": "char", "vocab": list("abc")}))
    for command in (["generate", run], ["eval", run], ["info", run]):
        code, _, err = run_cli(capsys, *command)
        assert code == 2 and err.startswith("error:") and message in err, err


@pytest.mark.slow
def test_train_reads_stdin_and_directories(tmp_path, tiny_corpus):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gentext",
            "train",
            "-",
            "--out",
            str(tmp_path / "stdin"),
            "--steps",
            "2",
            "--json",
            *TINY_FLAGS,
        ],
        input=tiny_corpus.read_text(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["steps"] == 2
    nested = tmp_path / "docs" / "deeper"
    nested.mkdir(parents=True)
    (nested / "a.md").write_text(tiny_corpus.read_text())
    (tmp_path / "docs" / "skip.txt").write_text("\x00binary")  # not matched by --glob
    code = main(
        ["train", str(tmp_path / "docs"), "--glob", "*.md", "--out", str(tmp_path / "dir"), "--steps", "2", *TINY_FLAGS]
    )
    assert code == 0
