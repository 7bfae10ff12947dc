"""Exhausted memory, in any command, is one line and exit code 1 (never a traceback)."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fuzz.conftest import FuzzRun
from tests.fuzz.outcome import OK, zonkey
from zonkey.core.model.network import ZonkeyModel

OOM = r"out of memory"

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]


@contextmanager
def address_space_cap(extra_bytes: int):
    """Let this process map at most ``extra_bytes`` more than it has now (Linux), so that a huge
    allocation fails at once instead of swapping on a machine that could almost afford it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


needs_cap = pytest.mark.skipif(resource is None or not sys.platform.startswith("linux"),
                               reason="caps the address space through /proc and RLIMIT_AS")


@needs_cap
def test_split_of_one_200000_byte_line(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    """A success where splitting costs linear memory; otherwise a one-line error, not a traceback."""
    line = tmp_path / "long.txt"
    line.write_text("word " * 40_000 + "\n")
    with address_space_cap(2 << 30):
        res = zonkey(["split", fuzz_run.run, "--input", line, "--json"], expect={OK, 1}, match=OOM)
    if res.exit_code:
        assert "zonkey split: out of memory" in res.stderr


@needs_cap
def test_sample_with_a_huge_segment_count(fuzz_run: FuzzRun) -> None:
    with address_space_cap(1 << 30):
        zonkey(["sample", fuzz_run.run, "-n", "256", "--steps", "1", "--segments", "1000000"], expect=1,
               match=r"zonkey sample: out of memory \(\d+\.\d GiB asked for\)")


def test_a_huge_n_is_refused_before_anything_is_allocated(fuzz_run: FuzzRun, monkeypatch) -> None:
    def no_load(*a, **k):
        raise AssertionError("the run was loaded")

    monkeypatch.setattr(ZonkeyModel, "from_run", classmethod(no_load))
    zonkey(["sample", fuzz_run.run, "-n", "100000000", "--steps", "1"], expect=2, match=r"-n 100000000: at most")


def test_a_large_n_is_drawn_in_batches(fuzz_run: FuzzRun, monkeypatch) -> None:
    import zonkey.core.generate.sample as core_sample

    real, sizes = core_sample.sample, []

    def counting(model, n, **kw):
        sizes.append((n, kw["seed"]))
        return real(model, n, **kw)

    monkeypatch.setattr(core_sample, "sample", counting)
    res = zonkey(["sample", fuzz_run.run, "-n", "600", "--steps", "1", "--seed", "5", "--json"], expect=OK)
    assert sizes == [(256, 5), (256, 6), (88, 7)]
    assert len(res.stdout.splitlines()) == 600


LOADING = {
    "split": ["split", "{run}", "hello"],
    "reconstruct": ["reconstruct", "{run}", "hello"],
    "sample": ["sample", "{run}"],
    "infill": ["infill", "{run}", "a ___ b"],
    "eval": ["eval", "{run}"],
    "byte-errors": ["diagnose", "byte-errors", "{run}"],
    "roundtrip-chunks": ["diagnose", "roundtrip-chunks", "{run}"],
    "probe-level1": ["diagnose", "probe-level1", "{run}"],
    "denoise": ["diagnose", "denoise", "{run}"],
}


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError(
    "[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: not enough memory: you tried to allocate "
    "40000000000 bytes.")], ids=["MemoryError", "allocator"])
@pytest.mark.parametrize("command", sorted(LOADING))
def test_every_command_reports_exhausted_memory_in_one_line(fuzz_run: FuzzRun, monkeypatch, command: str,
                                                            error: BaseException) -> None:
    def exhausted(*a, **k):
        raise error

    monkeypatch.setattr(ZonkeyModel, "from_run", classmethod(exhausted))
    args = [str(fuzz_run.run) if a == "{run}" else a for a in LOADING[command]]
    zonkey(args, expect=1, match=OOM)


def test_train_reports_exhausted_memory(fuzz_run: FuzzRun, tmp_path: Path, monkeypatch) -> None:
    import zonkey.core.train.trainer as core_train

    def exhausted(*a, **k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 bytes. "
                           "Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(core_train, "build_model", exhausted)
    zonkey(["train", fuzz_run.recipe, "--out", tmp_path / "run", "--no-progress"], expect=1,
           match=r"zonkey train: out of memory")


def test_exhausted_memory_outside_any_command_handler(monkeypatch) -> None:
    """The root group is the net under code the commands do not wrap (here the component listing)."""
    from zonkey.cli import common

    def exhausted(*a, **k):
        raise MemoryError

    monkeypatch.setattr(common, "describe_components", exhausted)
    zonkey(["components"], expect=1, match=r"zonkey components: out of memory")


def test_other_runtime_errors_are_not_hidden(monkeypatch) -> None:
    """A bug stays a bug: only exhausted memory is turned into a message."""
    from typer.testing import CliRunner

    from zonkey.cli import common
    from zonkey.cli.app import app

    def bug(*a, **k):
        raise RuntimeError("an honest bug")

    monkeypatch.setattr(common, "describe_components", bug)
    res = CliRunner().invoke(app, ["components"])
    assert isinstance(res.exception, RuntimeError) and "an honest bug" in str(res.exception)
