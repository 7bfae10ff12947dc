"""Hostile texts, files and numbers: every command's inputs, every numeric flag at and past its bounds."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import FuzzRun
from tests.fuzz.outcome import OK, zonkey

BIG = str(2**64)  # past every integer torch or numpy takes
HUGE = str(10**30)

# (command words before the run, after it), (flag, value), expected exit code (None: 0, 1 or 2).
# The values sit at a flag's bound, just past it, or far past it. Values that are valid but only
# cost time (a million sampler steps) are left out: they are not errors.
FLAGS = [
    (("split",), ("hello",), "--input", "-", None),
    (("reconstruct",), ("hello",), "--sigma", "0", OK),
    (("reconstruct",), ("hello",), "--sigma", "1", OK),
    (("reconstruct",), ("hello",), "--sigma", "2", 2),
    (("reconstruct",), ("hello",), "--sigma", "-0.5", 2),
    (("reconstruct",), ("hello",), "--sigma", "nan", 2),
    (("reconstruct",), ("hello",), "--sigma", "inf", 2),
    (("reconstruct",), ("hello",), "--steps", "0", None),
    (("reconstruct",), ("hello",), "--steps", "-1", 2),
    (("reconstruct",), ("hello",), "--seed", "-1", 2),
    (("reconstruct",), ("hello",), "--seed", BIG, 2),
    (("sample",), (), "-n", "0", 2),
    (("sample",), (), "-n", "-5", 2),
    (("sample",), (), "-n", "100000000", 2),
    (("sample",), (), "--steps", "0", 2),
    (("sample",), (), "--steps", "-1", 2),
    (("sample",), (), "--steps", HUGE, 2),
    (("sample",), (), "--steps", "100001", 2),
    (("sample",), (), "--seed", "-1", 2),
    (("sample",), (), "--seed", str(2**63 - 1), OK),
    (("sample",), (), "--seed", BIG, 2),
    (("sample",), (), "--level", "-1", 1),
    (("sample",), (), "--level", "1", 1),
    (("sample",), (), "--segments", "0", 1),
    (("sample",), (), "--segments", HUGE, 2),
    (("infill",), ("a ___ b",), "--level", "-1", 1),
    (("infill",), ("a ___ b",), "--level", "5", 1),
    (("infill",), ("a ___ b",), "--steps", "0", None),
    (("infill",), ("a ___ b",), "--steps", "-1", None),
    (("infill",), ("a ___ b",), "--steps", HUGE, 2),
    (("reconstruct",), ("hello", "--sigma", "0.5"), "--steps", HUGE, 2),
    (("infill",), ("a ___ b",), "--gap", "0", 2),
    (("infill",), ("a ___ b",), "--gap", "5-2", 2),
    (("infill",), ("a ___ b",), "--gap", "x", 2),
    (("infill",), ("a ___ b",), "--gap", HUGE, 2),
    (("infill",), ("a ___ b",), "--seed", BIG, 2),
    (("eval",), ("--samples", "0", "--infill", "0"), "--max-batches", "0", None),
    (("eval",), ("--samples", "0", "--infill", "0"), "--max-batches", "-1", None),
    (("eval",), ("--samples", "0", "--infill", "0", "--max-batches", "1"), "--steps", "0", None),
    (("eval",), ("--samples", "0", "--infill", "0", "--max-batches", "1"), "--steps", HUGE, 2),
    (("eval",), ("--samples", "0", "--infill", "0"), "--max-batches", HUGE, OK),
    (("eval",), ("--infill", "0", "--max-batches", "1", "--throughput", "0"), "--samples", HUGE, 2),
    (("eval",), ("--samples", "0", "--max-batches", "1"), "--infill", HUGE, 2),
    (("eval",), ("--samples", "1", "--infill", "0", "--max-batches", "1"), "--throughput", HUGE, 2),
    (("eval",), ("--samples", "0", "--infill", "0", "--max-batches", "1"), "--seed", BIG, 2),
    (("eval",), ("--samples", "1", "--infill", "1", "--throughput", "0", "--max-batches", "1"), "--seed", "-1", 2),
    (("eval",), ("--infill", "0", "--max-batches", "1"), "--samples", "-1", 2),
    (("eval",), ("--samples", "0", "--max-batches", "1"), "--infill", "-1", 2),
    (("eval",), ("--samples", "0", "--infill", "0", "--max-batches", "1"), "--throughput", "-1", 2),
    (("eval",), ("--samples", "0", "--infill", "0", "--max-batches", "1"), "--judge-order", "0", 2),
    (("eval",), ("--samples", "0", "--infill", "0", "--max-batches", "1"), "--judge-order", "8", 2),
    (("diagnose", "byte-errors"), (), "--batches", "0", 2),
    (("diagnose", "byte-errors"), (), "--batches", HUGE, OK),
    (("diagnose", "roundtrip-chunks"), (), "--bytes", "0", 2),
    (("diagnose", "roundtrip-chunks"), (), "--lengths", "a,b", 2),
    (("diagnose", "roundtrip-chunks"), (), "--lengths", "-5", None),
    (("diagnose", "probe-level1"), (), "--steps", "-1", 2),
    (("diagnose", "probe-level1"), (), "--threads", "0", 2),
    (("diagnose", "probe-level1"), (), "--threads", HUGE, 2),
    (("diagnose", "probe-level1"), (), "--every", "0", 2),
    (("diagnose", "probe-level1"), (), "--lr", "nan", None),
    (("diagnose", "denoise"), ("--samples", "0", "--max-batches", "1"), "--sigmas", "2", 1),
    (("diagnose", "denoise"), ("--samples", "0", "--max-batches", "1"), "--sigmas", "nan", None),
    (("diagnose", "denoise"), ("--samples", "0", "--max-batches", "1"), "--sigmas", "x", 2),
    (("diagnose", "denoise"), ("--samples", "0", "--max-batches", "1"), "--level", "3", 1),
    (("diagnose", "denoise"), ("--samples", "1", "--max-batches", "1", "--sigmas", "0"), "--seed", "-1", 2),
    (("diagnose", "denoise"), ("--samples", "0", "--max-batches", "1"), "--steps", "0", 2),
    (("diagnose", "denoise"), ("--samples", "0", "--max-batches", "1", "--sigmas", "0,1"), "--steps", HUGE, 2),
    (("diagnose", "denoise"), ("--max-batches", "1", "--sigmas", "0"), "--samples", HUGE, 2),
    (("diagnose", "denoise"), ("--max-batches", "1", "--sigmas", "0", "--samples", "1"), "--sample-steps", HUGE, 2),
    (("diagnose", "denoise"), ("--samples", "0"), "--max-batches", "0", 2),
    (("diagnose", "denoise"), ("--max-batches", "1"), "--samples", "-1", 2),
    (("diagnose", "denoise"), ("--max-batches", "1", "--samples", "1"), "--sample-steps", "0", 2),
    (("curves",), (), "--every", "0", OK),
    (("curves",), (), "--every", "-3", OK),
    (("curves",), (), "--every", HUGE, OK),
]


def _flag_id(case: tuple) -> str:
    words, _, flag, value, _ = case
    return f"{' '.join(words)} {flag}={value[:12]}"


@pytest.mark.parametrize("case", FLAGS, ids=[_flag_id(c) for c in FLAGS])
def test_numeric_flags_at_and_past_their_bounds(fuzz_run: FuzzRun, case: tuple) -> None:
    words, rest, flag, value, expect = case
    args = [*words, fuzz_run.run, *rest, flag, value]
    if words[0] in ("sample", "reconstruct", "infill") and flag != "--steps":
        args += ["--steps", "1"]
    named = {"--sigmas": "sigmas|noise levels", "--level": "level", "--segments": "segments", "--steps": "steps"}
    match = named.get(flag, flag.lstrip("-")) if expect not in (None, OK) else None
    zonkey(args, expect=expect, match=match, input="hello\n")


@pytest.mark.parametrize("value, expect", [("-1", 2), ("1", OK), (HUGE, 2)])
def test_root_threads_flag(fuzz_run: FuzzRun, value: str, expect: int) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        zonkey(["--threads", value, "split", fuzz_run.run, "hello"], expect=expect, match="threads")
    finally:
        torch.set_num_threads(before)


@settings(max_examples=30)
@given(st.text(st.characters(codec="utf-8"), min_size=1, max_size=60))
def test_any_text_splits_reconstructs_and_infills(fuzz_run: FuzzRun, text: str) -> None:
    zonkey(["split", fuzz_run.run, text])
    zonkey(["reconstruct", fuzz_run.run, text, "--steps", "1"])
    zonkey(["infill", fuzz_run.run, "--prefix", text, "--steps", "1", "--gap", "1-2"])


@settings(max_examples=15)
@given(st.binary(min_size=0, max_size=300))
def test_any_bytes_as_an_input_file(fuzz_run: FuzzRun, tmp_path_factory: pytest.TempPathFactory,
                                    data: bytes) -> None:
    path = tmp_path_factory.mktemp("input") / "texts.txt"
    path.write_bytes(data)
    zonkey(["split", fuzz_run.run, "--input", path])


def test_text_inputs(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    run = fuzz_run.run
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\n\xff\xfe broken\n")
    zonkey(["split", run, "--input", bad], expect=1, match=r"bad\.txt: not valid UTF-8 at byte 10 \(line 2\)")
    zonkey(["split", run, "--input", tmp_path / "nope.txt"], expect=2, match=r"nope\.txt")
    zonkey(["split", run, "--input", tmp_path], expect=2, match=tmp_path.name)
    zonkey(["split", run, "--input", "-"], input=b"\xff\n", expect=1, match="not valid UTF-8")
    zonkey(["split", run, ""], expect=1, match="text 0 is empty")
    zonkey(["split", run], expect=2, match="nothing to split")
    zonkey(["reconstruct", run, ""], expect=1, match="empty")
    zonkey(["split", run, "\x00\x01 nul and controls \u202e"], expect=OK)


def test_infill_inputs(fuzz_run: FuzzRun) -> None:
    run = fuzz_run.run
    zonkey(["infill", run], expect=2, match="nothing to infill")
    zonkey(["infill", run, "no gap here"], expect=2, match="no ___")
    zonkey(["infill", run, "two ___ gaps ___"], expect=2, match="2 gaps")
    zonkey(["infill", run, "a ___ b", "--prefix", "x"], expect=2, match="not both")
    zonkey(["infill", run, "___"], expect=1, match="nothing around the gap")
    zonkey(["infill", run, "   "], expect=1, match="empty")


def test_output_files_that_cannot_be_written(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    zonkey(["sample", fuzz_run.run, "-n", "1", "--steps", "1", "--trace", tmp_path], expect=2, match="trace")
    zonkey(["infill", fuzz_run.run, "a ___ b", "--steps", "1", "--trace", tmp_path / "no" / "dir.jsonl"],
           expect=2, match="trace")


def test_eval_inputs(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    run = fuzz_run.run
    base = ["eval", run, "--max-batches", "1", "--samples", "0", "--infill", "0"]
    zonkey([*base, "--data", tmp_path / "nope.txt"], expect={1, 2}, match="nope")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    zonkey([*base, "--data", empty], expect=1, match="empty")
    items = tmp_path / "items.jsonl"
    items.write_text('{"prefix": "a"}\n')
    zonkey([*base, "--infill-items", items], expect=1, match="items.jsonl")
    items.write_bytes(b"\xff")
    zonkey([*base, "--infill-items", items], expect=1, match="items.jsonl")
    zonkey([*base, "--infill-items", tmp_path / "none.jsonl"], expect={1, 2}, match="none.jsonl")
