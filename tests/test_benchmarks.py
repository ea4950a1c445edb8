"""The benchmark scripts keep working (tiny sizes; the real numbers live in benchmarks/RESULTS.md)."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.background import HEAVY

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def run_script(name: str, *args: str) -> tuple[str, list[str]]:
    """Run benchmarks/NAME; return its stdout and the data rows of its markdown table."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    return proc.stdout, rows


@pytest.mark.slow
def test_generation_benchmark_prints_speed_per_format_and_a_roofline():
    out, rows = run_script("bench_generation.py", "--tiny")
    assert "plain PyTorch nn.LSTM per token: 1 stream" in out and "CPU features:" in out
    rows = [r for r in rows if not r.startswith(("| weights ", "| path "))]  # the later tables' headers
    transformer = [r for r in rows if "recompute" in r or "KV cache" in r]
    mingru = [r for r in rows if r.split("|")[2].strip() in ("Python", "compiled")]
    speed = [r for r in rows if "MB" not in r and r not in transformer + mingru]
    roofline = [r for r in rows if "MB" in r]
    formats = [r.split("|")[1].strip() for r in speed]
    assert formats[0] == "fp32" and "int8" in formats  # every CPU format, float32 first
    assert [r.split("|")[1].strip() for r in roofline] == formats
    assert all(float(r.split("|")[2].replace(",", "")) > 0 for r in speed + transformer)
    assert [r.split("|")[1].strip() for r in transformer] == [
        "nanoGPT-style full recompute",
        *(f"gentext (sliding KV cache), {fmt} weights" for fmt in formats),  # the Transformer has formats too
    ]
    assert all(r.split("|")[3].strip().endswith("x") for r in transformer[1:])  # the ratio to the full recompute
    paths = {(r.split("|")[1].strip(), r.split("|")[2].strip()) for r in mingru}  # minGRU: Python step vs compiled
    assert ("fp32", "Python") in paths and all(float(r.split("|")[3].replace(",", "")) > 0 for r in mingru)
    assert ("fp32", "compiled") in paths or "per-token kernels: Python" in out


@pytest.mark.background("speed")
def test_speed_benchmark_runs_both_sides_and_prints_ratios(background):
    _, rows = heavy(background, "speed")
    assert [r.split("|")[1].strip() for r in rows] == [
        "training tokens/s",
        "generation tokens/s, 1 stream",
        "generation tokens/s, 64 streams",
    ]
    assert all(r.split("|")[4].strip().endswith("x") for r in rows)


@pytest.mark.slow
def test_load_test_reports_latency_and_statuses(trained_run):
    out, rows = run_script(
        # 32 clients against 2 running + 8 queued: overloaded even when a busy CPU slows the clients
        # between requests (12 was not always: one CI run on a loaded machine saw no refusal)
        "load_test.py",
        str(trained_run),
        "--seconds",
        "1",
        "--clients",
        "1",
        "--clients",
        "32",
        "--tokens",
        "32",
    )
    assert len(rows) == 2 and "{200:" in rows[0] and "503" not in rows[0]  # under the limit: no errors
    assert "503" in rows[1]  # above it: refusals
    assert out.strip().endswith("/healthz after the load: 200")


@pytest.mark.slow
def test_softmax_benchmark_reports_the_head_share():
    out, rows = run_script("bench_softmax.py", "--tiny")
    assert len(rows) == 4
    assert "--adaptive-softmax" in rows[2]
    share = out.strip().splitlines()[-1]
    assert share.startswith("output layer share of the step: full softmax") and share.endswith("x faster")


@pytest.mark.slow
def test_streaming_load_test_compares_both_servers(trained_run):
    _, rows = run_script(
        "load_test.py",
        str(trained_run),
        "--stream",
        "--seconds",
        "1",
        "--clients",
        "2",
        "--tokens",
        "8",
        "--every-token",
    )
    names = ["one request at a time", "continuous batching", "continuous batching, an event per token"]
    assert [r.split("|")[1].strip() for r in rows] == names
    for row in rows:
        cells = [c.strip() for c in row.split("|")]
        assert int(cells[3]) > 0 and float(cells[4].replace(",", "")) > 0  # streams done, tokens/s
        assert cells[8:10] == ["0", "0"]  # no errors, every text as alone


@pytest.mark.slow
def test_beam_load_test_batches_beam_requests_each_as_alone(trained_run):
    _, rows = run_script("load_test.py", str(trained_run), "--beams", "3", "--seconds", "1", "--clients", "4",
                         "--tokens", "8")  # fmt: skip
    assert [r.split("|")[1].strip() for r in rows] == ["one request at a time", "continuous batching"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")]
        assert int(cells[3]) > 0 and cells[8:10] == ["0", "0"]  # requests done; no errors, every text as alone
    most = [int(r.split("|")[7]) for r in rows]
    assert most[0] == 3 and most[1] > 3  # a beam request's rows alone, then several requests' rows in a step


@pytest.mark.slow
def test_hostile_load_refuses_every_hostile_request_and_keeps_good_streams(trained_run):
    out, rows = run_script("hostile_load.py", str(trained_run), "--streams", "3", "--rounds", "1", "--tokens", "10")
    assert len(rows) >= 15 and all(r.split("|")[3].strip().startswith("{4") for r in rows)
    assert "not a 4xx within 1 s: 0" in out
    assert "good streams completed: 3/3, differing from alone: 0" in out
    assert "/healthz during the load: {200:" in out and out.strip().endswith("}")


@pytest.mark.slow
def test_conditional_benchmark_prints_gentext_beside_the_baselines():
    pytest.importorskip("sklearn")
    _, rows = run_script("bench_conditional.py", "--tiny", "--tasks", "digits")  # pairs: bench_pairs.py's test
    methods = [(r.split("|")[1].strip(), r.split("|")[2].strip()) for r in rows]
    assert [task for task, _ in methods] == ["digits"] * 4
    gentext_rows = ["gentext captioner, greedy, exact caption", "gentext captioner, 4 beams, exact caption"]
    assert [m for _, m in methods] == [*gentext_rows, "logistic regression", "SVM"]
    assert float(rows[-1].split("|")[3].strip().rstrip("%")) > 50  # an SVM on the pixels reads digits


@pytest.mark.slow
def test_pair_training_benchmark_runs_the_plain_loops_beside_gentext():
    _, rows = run_script("bench_pairs.py", "--seconds", "1")
    assert len(rows) == 3 and all(float(r.split("|")[2].replace(",", "")) > 0 for r in rows)
    assert rows[0].split("|")[3].strip() == "1.0x"


@pytest.mark.background("int8")
def test_int8_kernel_benchmark_times_every_kernel_against_float32(background):
    out, rows = heavy(background, "int8")
    names = [r.split("|")[1].strip() for r in rows]
    assert names[:2] == ["fp32 addmm (baseline)", "fbgemm int8 dynamic (gentext)"]
    assert rows[0].split("|")[6].strip() == "1.00x" and all(r.split("|")[6].strip().endswith("x") for r in rows)


def heavy(background, key: str) -> tuple[str, list[str]]:
    """The script's stdout and its table's data rows, once it has run."""
    result = background.result(key)
    if result is None:
        pytest.skip(f"{HEAVY[key][0]} cannot run here (needs transformers)")
    returncode, out, err = result
    assert returncode == 0, err
    return out, [line for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]


@pytest.mark.background("gpu_check")
def test_gpu_check_script_runs_every_command_and_reports_each(background):
    # On a CPU, in float32, tiny: the same script a GPU machine runs (README, benchmarks/RESULTS.md).
    out, rows = heavy(background, "gpu_check")
    checks = [r.split("|")[3].strip() for r in rows]
    assert checks[0] == "train + mid-run eval/sample" and "torchrun --nproc-per-node 1" in checks
    assert len(checks) == 9 and all(r.split("|")[4].strip() == "pass" for r in rows)
    assert out.rstrip().endswith("0 failed")


@pytest.mark.background("contention")
def test_contention_benchmark_runs_both_thread_policies_side_by_side(background):
    out, rows = heavy(background, "contention")
    assert "usable cores:" in out
    assert [r.split("|")[1].strip() for r in rows] == ["gentext", "plain"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")[2:-1]]
        assert float(cells[0].replace(",", "")) > 0 and cells[1].count("%") == 2 and cells[3].endswith("%)")


@pytest.mark.background("pretrained")
def test_pretrained_benchmark_compares_every_family_on_one_text(background):
    out, rows = heavy(background, "pretrained")
    kinds = sorted(r.split("|")[2].strip().split("-")[0] for r in rows)
    assert kinds == ["lstm", "markov", "pretrained", "pretrained", "transformer"]
    assert all(float(r.split("|")[7]) > 0 for r in rows)  # bits per character for each


@pytest.mark.background("quality")
def test_quality_benchmark_puts_gentext_its_chain_and_the_plain_loop_side_by_side(background):
    out, _ = heavy(background, "quality")
    small, recipes = out.split("\nthe README's recipes", 1) if "the README's recipes" in out else (out, "")
    rows = [line for line in small.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 1 and "CPUs (" in out
    cells = [c.strip() for c in rows[0].split("|")[1:-1]]
    losses = [float(c) for c in cells[3:8] if c != "—"]  # gentext, network + cache (if kept), alone, Markov, plain
    assert len(losses) >= 4 and all(0 < x < 10 for x in losses)
    assert float(cells[8]) == pytest.approx(float(cells[3]) - float(cells[6]), abs=2e-3)  # gentext - Markov
    assert small.strip().splitlines()[-1].startswith("beats the Markov chain by >= 0.05 nats/char:")
    # the recipes (Tiny Shakespeare, PTB words): one row per corpus ../shared/data holds
    present = [
        name for name, path in (("tinyshakespeare", "tinyshakespeare.txt"), ("ptb", "ptb")) if (SHARED / path).exists()
    ]
    found = [line.split("|")[1:-1] for line in recipes.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [cells[0].strip() for cells in found] == present
    for cells in found:
        figures = [float(c.split()[0]) for c in cells[4:9] if c.strip() != "—"]  # gentext, cache, net, chain, plain
        assert len(figures) >= 4 and all(x > 0 and math.isfinite(x) for x in figures)
        assert cells[10].strip() == ("yes" if figures[0] <= float(cells[9]) else "no")


@pytest.mark.background("bigcorpus")
def test_big_corpus_benchmark_measures_all_three_runs(background):
    out, rows = heavy(background, "bigcorpus")
    runs, passes = rows[:3], [r for r in rows[3:] if not r.startswith("| pass over")]
    assert [r.split("|")[1].strip().split(":")[0].split(",")[0] for r in runs] == [
        "plain",
        "gentext train",
        "gentext train",
    ]
    assert all(float(r.split("|")[3].replace(",", "")) > 0 for r in runs)  # a peak RSS for each
    assert [r.split("|")[1].strip().split(":")[0] for r in passes] == ["plain", "gentext", "gentext"]
    assert all(float(r.split("|")[3].replace(",", "")) > 0 for r in passes)  # MB/s of each pass
    assert "tokenization (the encoding pass):" in out


@pytest.mark.background("families")
def test_families_benchmark_trains_each_family_and_prints_one_table(background):
    _, rows = heavy(background, "families")
    families = [r.split("|")[2].strip() for r in rows][1:]
    assert families[:4] == ["lstm", "gru", "mingru", "transformer"]
    assert families[4] in ("default (mingru)", "default (lstm)")  # --model auto names the kind it chose
    assert rows[0].split("|")[2].strip().startswith("markov-")
    assert all(float(r.split("|")[3]) > 0 for r in rows)


@pytest.mark.background("apis")
def test_apis_benchmark_reports_lm_eval_prefix_cache_and_constraints(background):
    pytest.importorskip("lm_eval")
    _, rows = heavy(background, "apis")
    cells = [[c.strip() for c in row.split("|")[1:-1]] for row in rows]
    scored = [c for c in cells if "held-out" in c[0]]
    assert len(scored) == 2 and all(abs(float(c[1]) - float(c[2])) < 1e-3 for c in scored)  # lm-eval = gentext
    cached = [c for c in cells if c[0].startswith(("no cache", "prefix cache"))]
    assert len(cached) == 2 and all(c[4] == "True" for c in cached)  # the same texts with and without
    matched = [c for c in cells if c[0] in ("char", "bpe")]
    assert len(matched) == 6 and all(c[2] == "10/10" for c in matched)


def test_scan_benchmark_times_both_scans_and_they_agree():
    out, rows = run_script("bench_scan.py", "--tiny")
    cells = [[c.strip() for c in row.split("|")[1:-1]] for row in rows]
    assert [c[0] for c in cells] == ["4 x 16 x 32"] and "CPUs (" in out
    assert all(float(c[1]) > 0 and float(c[2]) > 0 and c[3].endswith("x") for c in cells)
    assert all(float(c[4]) < 1e-4 for c in cells)  # the same h from both
