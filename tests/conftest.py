"""Test-suite wide settings: a hypothesis profile, the ``gpu`` skip and the ``learning`` budget.

Markers (registered in ``pyproject.toml``):

- ``gpu`` tests are always collected and run where CUDA is present; elsewhere they are skipped with
  the reason (``make test-gpu`` runs only them).
- ``learning`` tests train a micro model until a measured quantity crosses a threshold. They stay in
  the default suite (CI runs them); ``make test-fast`` leaves them out. Their total time is printed
  at the end of the run against :data:`LEARNING_BUDGET_S`, with a warning when it is exceeded (a
  report, never a failure: the suite asserts behaviour, not speed).
- ``slow`` tests (full recipes, minutes to an hour) run only when asked (``make test-slow``).

One opt-in fixture (``single_thread``); shared hypothesis strategies are in ``tests/strategies.py``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, settings

# Laws are checked on small tensors; torch's first call of a kernel can be slow, so no deadline.
settings.register_profile(
    "zonkey",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("zonkey")


#: seconds the ``learning`` tests may take together on CI's 2 cores before the summary warns
LEARNING_BUDGET_S = 240.0

_learning_seconds: dict[str, float] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests, with the reason, where CUDA is not available; lift the per-test timeout of ``slow`` ones."""
    cuda = torch.cuda.is_available()
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    timeouts = config.pluginmanager.hasplugin("timeout")
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip)
        if timeouts and "slow" in item.keywords:
            item.add_marker(pytest.mark.timeout(0))  # full recipes train for up to an hour


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add up the time of every ``learning`` test (setup, call and teardown)."""
    if "learning" in report.keywords:
        _learning_seconds[report.nodeid] = _learning_seconds.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the ``learning`` tests' total time against the budget (nothing when none ran)."""
    if not _learning_seconds:
        return
    total = sum(_learning_seconds.values())
    line = (f"learning tests: {len(_learning_seconds)} took {total:.0f} s "
            f"(budget {LEARNING_BUDGET_S:.0f} s; slowest {max(_learning_seconds.values()):.0f} s)")
    if total > LEARNING_BUDGET_S:
        terminalreporter.write_line(f"WARNING {line}: over budget", yellow=True, bold=True)
    else:
        terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tensor ops on one intra-op thread, restoring the setting afterwards.

    Property tests call kernels on tensors of a few dozen elements thousands of times; there a
    thread pool costs far more than it saves (on a loaded 2-core machine one small attention call
    took ~5 ms with 2 threads and ~0.06 ms with 1).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
