"""Threads chosen from the cores this process may use and given back to other work; CPU caps honoured."""

import logging
import os
import subprocess
import sys
import threading
import types

import pytest
import torch

from gentext import hardware, threads


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not chosen its threads yet (restored afterwards)."""
    monkeypatch.setattr(threads, "_governor", None)
    for name in threads.FIXING_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_usable_cores_come_from_the_affinity_mask_and_the_cgroup_quota(monkeypatch):
    monkeypatch.setattr(threads, "_affinity", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "_cgroup_cpus", lambda: None)
    assert threads.usable_cpus() == 4
    monkeypatch.setattr(threads, "_cgroup_cpus", lambda: 1.5)  # a quota of 1.5 cores
    assert threads.usable_cpus() == 2
    monkeypatch.setattr(threads, "_cgroup_cpus", lambda: 0.2)
    assert threads.usable_cpus() == 1


def test_the_cores_others_take_are_left_to_them_and_at_least_one_is_kept(monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    governor = threads.Governor()
    assert [governor.choose(others) for others in (0.0, 0.5, 0.7, 1.9, 3.5, 9.0)] == [4, 4, 3, 2, 1, 1]


def test_other_processes_cpu_time_is_measured_without_our_own(monkeypatch):
    samples = iter([(1000, 2000), (1000 + 150, 2000 + 200)])  # 1.5 s busy of 2 s on the usable cores
    monkeypatch.setattr(threads, "_busy_jiffies", lambda cpus: next(samples))
    own = iter([10.0, 10.5])  # of which half a second was ours
    monkeypatch.setattr(threads, "_own_cpu_seconds", lambda: next(own))
    clock = iter([100.0, 101.0])
    # threads' own clock only: the time module's is every thread's, and another thread's look at it
    # would take a tick of this one
    monkeypatch.setattr(threads, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    monkeypatch.setattr(threads, "_start", None)
    governor = threads.Governor()
    governor.hz = 100
    assert governor.others() == pytest.approx(1.0)


def test_a_busy_machine_is_said_once_and_the_count_adapts(fresh, monkeypatch, caplog):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(threads.Governor, "others", lambda self: 1.8)
    monkeypatch.setattr(threads, "_start", (threads.time.monotonic() - 1.0, (0, 0), 0.0))  # imported a second ago
    with caplog.at_level(logging.WARNING):
        governor = threads.configure()
        assert governor.target == 1 and torch.get_num_threads() == 1
        assert not caplog.records  # said when work starts, so a command refused at once says nothing more
        threads.configure()  # a second command in the same process: no second line
        threads.tick()
        threads.tick()
    busy = [r for r in caplog.records if "other processes are using" in r.getMessage()]
    assert len(busy) == 1 and "--threads N" in busy[0].getMessage()
    monkeypatch.setattr(threads.Governor, "others", lambda self: 0.0)  # the other work ended
    governor.last = (0.0, *governor.last[1:])  # due for a new look
    threads.tick()
    assert governor.target == 2 and torch.get_num_threads() == 2


def test_a_command_that_has_only_read_its_flags_chooses_at_its_first_tick_not_from_the_load_average(
    fresh, monkeypatch, caplog
):
    """`gentext generate` right after a training: the minute's load average still holds the training,
    which has ended; the first look at the CPUs is too recent to tell. All cores until the first
    tick FIRST_LOOK_SECONDS on, which chooses from what others used meanwhile."""
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.9, 1.0, 0.5))
    monkeypatch.setattr(threads, "_start", None)  # the first look is taken now
    monkeypatch.setattr(threads.Governor, "others", lambda self: 0.0)
    with caplog.at_level(logging.WARNING):
        governor = threads.configure()
        assert governor.undecided and governor.target == 2 and torch.get_num_threads() == 2
        threads.tick()  # too early to choose
        assert governor.undecided
        governor.last = (governor.last[0] - threads.FIRST_LOOK_SECONDS, *governor.last[1:])
        threads.tick()
    assert not governor.undecided and governor.target == 2 and torch.get_num_threads() == 2
    assert not caplog.records
    monkeypatch.setattr(threads, "_governor", None)  # the same where others did take a core meanwhile
    monkeypatch.setattr(threads.Governor, "others", lambda self: 1.2)
    with caplog.at_level(logging.WARNING):
        governor = threads.configure()
        governor.last = (governor.last[0] - threads.FIRST_LOOK_SECONDS, *governor.last[1:])
        threads.tick()
    assert governor.target == 1 and torch.get_num_threads() == 1
    assert ["other processes are using 1.2" in r.getMessage() for r in caplog.records] == [True]


def test_threads_flag_and_environment_fix_the_count(fresh, monkeypatch):
    monkeypatch.setattr(threads.Governor, "others", lambda self: 5.0)  # would otherwise go down to 1
    assert threads.configure(2).target == 2 and threads.configure(2).fixed == 2
    monkeypatch.setattr(threads, "_governor", None)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    governor = threads.configure()
    governor.last = (0.0, *governor.last[1:])
    threads.tick()
    assert governor.target == 2 and torch.get_num_threads() == 2


def test_each_thread_gets_the_count_where_it_runs(fresh):
    governor = threads.configure(1)
    seen = []
    worker = threading.Thread(target=lambda: (threads.tick(), seen.append(torch.get_num_threads())))
    worker.start()
    worker.join()
    assert seen == [1] and governor.local.applied == 1


def test_a_small_generation_step_runs_on_one_thread_unless_the_count_is_fixed(fresh, monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(threads.Governor, "others", lambda self: 0.0)  # an idle machine: two threads
    governor = threads.configure()
    threads.tick(rows=1)
    assert governor.target == 2 and torch.get_num_threads() == 1
    threads.tick(rows=threads.PARALLEL_ROWS)
    assert torch.get_num_threads() == 2
    threads.tick()  # training and evaluation loops pass no rows
    assert torch.get_num_threads() == 2
    monkeypatch.setattr(threads, "_governor", None)
    threads.configure(2)  # --threads 2: the user's count, whatever the step
    threads.tick(rows=1)
    assert torch.get_num_threads() == 2


def test_a_small_step_takes_the_spare_core_only_when_adapting_free_and_not_serving(fresh, monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(threads.Governor, "others", lambda self: 0.0)
    assert not threads.spare_core(1) and not threads.may_split()  # nothing chosen yet: no helper
    governor = threads.configure()
    assert threads.may_split()  # so int8 products are packed in halves too
    threads.tick()  # evaluation's loop: this thread runs two OpenMP threads, no room for a helper
    assert not threads.spare_core(1)
    threads.tick(rows=1)  # a small generation step: one thread here, the helper on the other core
    assert threads.spare_core(1) and not threads.spare_core(threads.PARALLEL_ROWS)
    governor.target = 1  # others took a core
    assert not threads.spare_core(1)
    governor.target = 2
    threads.serving()  # the event loop needs that core
    assert not threads.spare_core(1) and not threads.may_split()
    threads.tick(rows=threads.PARALLEL_ROWS)  # and a server keeps steps of up to 15 rows on one thread
    assert torch.get_num_threads() == 1
    threads.tick(rows=threads.SERVING_PARALLEL_ROWS)
    assert torch.get_num_threads() == 2
    monkeypatch.setattr(threads, "_governor", None)
    threads.configure(2)  # --threads 2: the user's count, left to torch
    assert not threads.spare_core(1) and not threads.may_split()


def test_bad_thread_counts_are_one_line_errors(capsys):
    from gentext.cli import main

    assert main(["info", "nowhere", "--threads", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --threads must be at least 1, got 0"


@pytest.mark.slow
def test_the_command_sets_openmp_idle_waiting_and_importing_the_library_changes_nothing(tmp_path):
    code = (
        "import os, sys, gentext; gentext.load; before = os.environ.get('GOMP_SPINCOUNT'); "
        "import gentext.__main__ as entry; entry.prepare_process(); "
        "print(before, os.environ['GOMP_SPINCOUNT'], os.environ['KMP_BLOCKTIME'], 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["None", "10000", "1", "True"]  # the library imported torch and left the environment
    env["GOMP_SPINCOUNT"] = "777"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split()[:2] == ["777", "777"]  # what the user set stays


@pytest.mark.parametrize(
    "env, native",
    [
        ({}, True),
        ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, False),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, False),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, True),
        ({"DNNL_MAX_CPU_ISA": "avx2"}, False),
        ({"ATEN_CPU_CAPABILITY": "avx2"}, False),
    ],
)
def test_native_bf16_needs_the_cpu_feature_and_no_cap_below_it(monkeypatch, env, native):
    monkeypatch.setattr(hardware, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    monkeypatch.setattr(hardware, "bf16_pays", lambda: True)
    for name in hardware.CAPS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert hardware.cpu_native(torch.bfloat16) is native
    assert hardware.resolve_precision("auto", torch.device("cpu")) == (torch.bfloat16 if native else None)


@pytest.mark.parametrize("pays", [True, False])
def test_auto_trains_in_bf16_only_where_its_products_measured_faster(monkeypatch, pays):
    """Native bf16 that runs slower than float32 (an Intel Xeon without AMX) leaves `auto` at float32;
    asked for by name it is still given."""
    monkeypatch.setattr(hardware, "cpu_native", lambda dtype: True)
    monkeypatch.setattr(hardware, "bf16_pays", lambda: pays)
    assert hardware.resolve_precision("auto", torch.device("cpu")) == (torch.bfloat16 if pays else None)
    assert hardware.resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16


def test_the_bf16_measurement_is_taken_once_a_process():
    hardware.bf16_pays.cache_clear()
    first = hardware.bf16_pays()
    assert hardware.bf16_pays() is first and hardware.bf16_pays.cache_info().misses == 1


def test_an_avx2_cpu_has_no_native_bf16(monkeypatch):
    monkeypatch.setattr(hardware, "_cpu_flags", lambda: {"avx2", "fma"})
    assert not hardware.cpu_native(torch.bfloat16) and not hardware.cpu_native(torch.float16)
    assert hardware.cpu_native(torch.float32)
