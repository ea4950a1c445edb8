"""The benchmarks that read a run with a neural cache and a chain keep working (tiny sizes)."""

from pathlib import Path

import pytest

from benchmarks.bench_cache_samples import tiny_run
from tests.test_benchmarks import run_script


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory) -> Path:
    """bench_cache_samples.py's tiny run (a neural cache and a chain), shared by the tests that read
    one, so that each does not train its own."""
    return tiny_run(tmp_path_factory.mktemp("bench"))


@pytest.mark.slow
def test_cache_samples_benchmark_samples_the_run_beside_its_copy_without_the_cache(cached_run):
    out, rows = run_script("bench_cache_samples.py", str(cached_run), "--samples", "4", "--tokens", "30",
                           "--prompt-chars", "300")  # fmt: skip
    assert [r.split("|")[1].strip() for r in rows] == ["the run as trained", "the same run without its cache"]
    assert rows[1].split("|")[2].strip() == "no"  # the copy has no cache
    for r in rows:
        words, judged, speed = (r.split("|")[i].strip() for i in (3, 5, 6))
        assert words.endswith("%") and 0 <= float(words[:-1]) <= 100
        assert float(judged) > 0 and float(speed.replace(",", "")) > 0


@pytest.mark.slow
@pytest.mark.parametrize(  # tokens drawn ahead; read one call a token; after a prompt the cache is heard in
    "flags", [[], ["--top-p", "0.9"], ["--prompt", "The cat sat. " * 20]]
)
def test_mixed_benchmark_generates_the_run_as_sampled_beside_its_network_alone(flags, cached_run):
    """The first case trains its own tiny run (`--tiny`); the others read one already trained."""
    run = ["--tiny"] if not flags else [str(cached_run), "--tokens", "20", "--streams", "4", "--rounds", "1"]
    out, rows = run_script("bench_mixed.py", *run, *flags)
    assert "+ cache, mixture;" in out  # the tiny run has both parts, so the first row runs them
    assert ("top-p 0.9," in out) == ("--top-p" in flags)
    assert f"from a prompt of {len(flags[1]) if '--prompt' in flags else 4} characters" in out
    assert [r.split("|")[1].strip() for r in rows] == ["as sampled", "network alone"]
    for r in rows:
        one, many = (float(r.split("|")[i].strip().replace(",", "")) for i in (2, 4))
        assert one > 0 and many > 0
    assert rows[1].split("|")[3].strip() == rows[1].split("|")[5].strip() == "1.00x"
