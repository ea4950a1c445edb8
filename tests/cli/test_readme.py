"""A new user's first hour: what they type first, the mistakes they make, and the README they follow."""

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

import gentext
from gentext.cli import build_parser, main
from gentext.errors import GentextError
from tests.conftest import TINY_FLAGS, TINY_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# what a user reads: the README and the pages it links to
DOCS = README + "".join(page.read_text(encoding="utf-8") for page in sorted((ROOT / "docs").glob("*.md")))


def test_version_and_bare_gentext_answer_instead_of_erroring(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"gentext {gentext.__version__}"
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "generate" in out and "doctor" in out
    assert "gentext train --out runs/demo" in out  # one example to start from


def test_a_mistyped_flag_gets_the_closest_flag_of_its_command(trained_run, capsys):
    assert main(["generate", str(trained_run), "--temprature", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean --temprature -> --temperature?" in err
    assert main(["train", "x.txt", "--out", "r", "--hiden-size", "8"]) == 2
    assert "--hiden-size -> --hidden-size" in capsys.readouterr().err


def test_a_condition_only_one_kind_takes_picks_that_kind(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{n}\t{n * 2}\n" for n in range(60)), encoding="utf-8")
    settings = {k: v for k, v in TINY_SETTINGS.items() if k != "kind"}  # the condition picks the kind
    summary = gentext.train(tmp_path / "run", paths=[str(pairs)], condition="source", steps=2, **settings)
    assert summary["steps"] == 2
    assert gentext.load(tmp_path / "run").model.config.kind == "seq2seq"
    with pytest.raises(GentextError, match="--condition source trains --model seq2seq only; drop --model lstm"):
        gentext.train(tmp_path / "r2", paths=[str(pairs)], condition="source", model="lstm", steps=1)
    with pytest.raises(GentextError, match="--model captioner needs --condition image"):
        gentext.train(tmp_path / "r3", paths=[str(pairs)], model="captioner", steps=1)
    with pytest.raises(GentextError, match="--condition image trains --model captioner only; drop --model lstm"):
        gentext.train(tmp_path / "r4", paths=[str(pairs)], condition="image", model="lstm", steps=1)


def test_a_tsv_line_without_a_tab_names_the_file_and_the_line(tmp_path, capsys):
    path = tmp_path / "labels.tsv"
    path.write_text("a\tone text\nb\tanother\nno tab on this line\n", encoding="utf-8")
    code = main(["train", str(path), "--condition", "label", "--out", str(tmp_path / "r"), *TINY_FLAGS])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"{path}, line 3:" in err and "label<TAB>text" in err
    assert not (tmp_path / "r").exists()


def test_runs_with_the_same_folder_name_get_distinct_names():
    from gentext.server.running import run_names

    assert run_names(["a/run", "b/run", "c/other"]) == ["a/run", "b/run", "other"]
    assert run_names(["x/a/run", "y/a/run"]) == ["x/a/run", "y/a/run"]
    with pytest.raises(GentextError, match="given twice"):
        run_names(["a/run", "a/../a/run"])


def test_a_format_error_names_the_run_it_is_about(trained_run, tmp_path, tiny_corpus, capsys):
    gentext.train(tmp_path / "markov", paths=[str(tiny_corpus)], model="markov", order=3)
    assert main(["compare", str(trained_run), str(tmp_path / "markov"), "--weights", "int8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'markov'}: --weights int8 is for language networks")


@pytest.mark.parametrize("command", ["eval", "score", "compare"])
def test_measuring_commands_show_the_weights_they_measure(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "_name_parser_map"))._name_parser_map[command]
    weights = next(a for a in sub._actions if "--weights" in a.option_strings)
    assert weights.help.endswith("[fp32]")


def test_a_missing_tensorboard_leaves_no_run_folder(tiny_corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    out = tmp_path / "run"
    assert main(["train", str(tiny_corpus), "--out", str(out), "--tensorboard", *TINY_FLAGS]) == 2
    assert "pip install 'gentext[tensorboard]'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_a_resumed_runs_summary_tells_its_part_from_the_whole(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(tiny_corpus), "--out", str(out), "--steps", "4", *TINY_FLAGS]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--steps", "7", "--quiet"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.match(r"resumed at step 4: trained 3 more steps in \d+s \(7 steps, \d+s in all\)", line), line


def test_doctor_says_what_a_bug_report_needs(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for heading in ("gentext", "cpu", "threads", "gpu", "native", "extras"):
        assert re.search(rf"^{heading}\s", out, re.M), heading
    assert main(["doctor", "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"cpu_features", "threads", "torch", "extras", "weights_cpu"} <= set(info)
    assert info["threads"]["usable_cpus"] >= 1 and "fp32" in info["weights_cpu"]
    assert info["threads"]["second_core"] == (info["threads"]["usable_cpus"] >= 2 and not info["threads"]["fixed"])
    products = info["int8_products"]  # a scaled product is the kernels' wherever a recurrent one is
    assert products["scaled"] in ("avx512", "avx2", "fbgemm")
    assert products["recurrent"] in (products["scaled"], "fbgemm")


def _readme_commands() -> list[list[str]]:
    """Every `gentext COMMAND ...` line in the documentation's code blocks, split as a shell would."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", DOCS, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;")  # a quoted | stays in its word
            lexer.whitespace_split, words = True, []
            for word in [*lexer, "|"]:
                if word not in ("|", "||", "&&", ";", "&"):
                    words.append(word)
                    continue
                if words and words[0].endswith("gentext") and len(words) > 1:
                    commands.append(words[1:])
                words = []
    return commands


def test_every_flag_the_readme_shows_exists_in_that_commands_help():
    parser = build_parser()
    commands = next(a for a in parser._actions if hasattr(a, "_name_parser_map"))._name_parser_map
    seen = 0
    for words in _readme_commands():
        if words[0] not in commands:
            continue
        flags = {f for action in commands[words[0]]._actions for f in action.option_strings}
        for word in words[1:]:
            if word.startswith("--"):
                assert word.split("=")[0] in flags, f"docs: gentext {' '.join(words)}: no {word}"
                seen += 1
    assert seen > 50  # the documentation's examples were found


def test_every_commands_help_prints(capsys):
    """--help formats every option's help text (argparse %-formats it: a bare "%" broke `train --help`)."""
    parser = build_parser()
    commands = next(a for a in parser._actions if hasattr(a, "_name_parser_map"))._name_parser_map
    for name, command in commands.items():
        text = command.format_help()
        assert command.prog.endswith(name) and "usage:" in text
    assert "(0.1: the last 10%)" in " ".join(commands["train"].format_help().split())  # shown as written


def test_readme_tells_the_flags_resume_may_change_as_the_error_does():
    from gentext.settings import _resumable_flags

    sentence = re.search(r"On resume only (.*?) may change", DOCS, re.S).group(1)
    assert set(re.findall(r"`(--[a-z-]+)`", sentence)) == set(_resumable_flags())


def test_help_says_what_dropout_is_chosen_up_to():
    from gentext.config import ModelConfig
    from gentext.training.defaults import MAX_DROPOUT

    field = next(f for f in ModelConfig.__dataclass_fields__.values() if f.name == "dropout")
    assert f"0 to {MAX_DROPOUT}" in field.metadata["help"] and f"{MAX_DROPOUT} at most" in " ".join(DOCS.split())


@pytest.mark.slow
@pytest.mark.background("quickstart")
@pytest.mark.timeout(900)
def test_the_readme_quickstart_runs_in_a_fresh_environment(background):
    returncode, out, err = background.result("quickstart")
    assert returncode == 0, err[-2000:]
    samples = out.strip()
    assert samples.count("The ") >= 3  # three samples from the prompt
    assert "Traceback" not in err and not re.search(r"^error:", err, re.M)


@pytest.mark.slow
def test_force_leaves_nothing_of_the_old_run(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    gentext.train(out, paths=[str(tiny_corpus)], steps=4, **TINY_SETTINGS)
    (out / "tensorboard").mkdir()
    (out / "model.onnx").write_bytes(b"old")
    before = (out / "model.safetensors").read_bytes()
    gentext.train(out, paths=[str(tiny_corpus)], force=True, steps=4, **{**TINY_SETTINGS, "hidden_size": 48})
    assert not (out / "tensorboard").exists() and not (out / "model.onnx").exists()
    assert (out / "model.safetensors").read_bytes() != before
    assert gentext.load(out).model.config.hidden_size == 48


@pytest.mark.slow
def test_a_transformer_trains_on_windows_as_long_as_its_context(tiny_corpus, tmp_path):
    summary_cfg = {k: v for k, v in TINY_SETTINGS.items() if k != "seq_len"}
    gentext.train(tmp_path / "t", paths=[str(tiny_corpus)], model="transformer", num_heads=2, context=24, steps=2,
                  **summary_cfg)  # fmt: skip
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["train"]["seq_len"] == 24
    gentext.train(tmp_path / "u", paths=[str(tiny_corpus)], model="transformer", num_heads=2, context=24, steps=2,
                  **{**summary_cfg, "seq_len": 8})  # fmt: skip
    assert json.loads((tmp_path / "u" / "config.json").read_text())["train"]["seq_len"] == 8  # given: kept


def test_readme_names_the_extra_the_generated_corpora_need():
    section = DOCS[DOCS.index("## Translate") :][:1500]
    assert 'pip install -e ".[corpora]"' in section and "--corpus dates" in section
    names = DOCS.index("--corpus names --condition label")
    assert '.[corpora]"' in DOCS[names : names + 120]
