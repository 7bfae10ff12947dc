"""The suite's own hooks (tests/conftest.py), run on a throw-away suite: the ``gpu`` skip and the
``learning`` time report."""

from __future__ import annotations

from pathlib import Path

import torch

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()
INI = """
[pytest]
addopts = --strict-markers -m "not slow" -p no:cacheprovider
markers =
    slow: slow
    gpu: gpu
    learning: learning
"""
TESTS = """
import pytest

@pytest.mark.learning
def test_learns():
    pass

@pytest.mark.gpu
def test_on_cuda():
    pass

@pytest.mark.slow
def test_slow():
    pass

def test_plain():
    pass
"""


def _suite(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    pytester.makepyfile(test_inner=TESTS)


def test_gpu_tests_are_collected_and_skipped_with_the_reason_without_cuda(pytester):
    _suite(pytester)
    res = pytester.runpytest("-rs")
    if torch.cuda.is_available():
        res.assert_outcomes(passed=3, deselected=1)
    else:
        res.assert_outcomes(passed=2, skipped=1, deselected=1)
        res.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_inner.py:*: needs a CUDA device (torch.cuda.is_available() is False)"])


def test_learning_time_is_reported_only_when_learning_tests_ran(pytester):
    _suite(pytester)
    pytester.runpytest().stdout.fnmatch_lines(["learning tests: 1 took * s of CPU (budget * s), * s wall; slowest *"])
    res = pytester.runpytest("-m", "not slow and not learning")
    res.assert_outcomes(passed=1 + torch.cuda.is_available(), skipped=int(not torch.cuda.is_available()),
                        deselected=2)
    assert "learning tests:" not in res.stdout.str()
