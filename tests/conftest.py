"""Test-suite wide settings: a hypothesis profile, the ``gpu`` skip and the ``learning`` budget.

Markers (registered in ``pyproject.toml``):

- ``gpu`` tests are always collected and run where CUDA is present; elsewhere they are skipped with
  the reason (``make test-gpu`` runs only them).
- ``learning`` tests train a micro model until a measured quantity crosses a threshold. They stay in
  the default suite (CI runs them); ``make test-fast`` leaves them out. Their total time (CPU and
  wall seconds) is printed at the end of the run against :data:`LEARNING_BUDGET_S`, with a warning
  when it is exceeded: a report, never a failure (the suite asserts behaviour, not speed).
- ``slow`` tests (full recipes, minutes to an hour) run only when asked (``make test-slow``).

One opt-in fixture (``single_thread``); shared hypothesis strategies are in ``tests/strategies.py``.
"""

from __future__ import annotations

import time

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

# ``pytester`` runs throw-away suites against these hooks (tests/test_suite_hooks.py)
pytest_plugins = ("pytester",)


#: CPU seconds the ``learning`` tests may take together (about their time alone on CI's 2 cores)
#: before the summary warns. CPU time, not wall time: it does not grow when other jobs share the machine.
LEARNING_BUDGET_S = 240.0

_learning: dict[str, tuple[float, float]] = {}  # node id -> (CPU seconds, wall seconds)


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Time every ``learning`` test (setup, call and teardown), in CPU and wall seconds."""
    if "learning" not in item.keywords:
        return (yield)
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        return (yield)
    finally:
        _learning[item.nodeid] = (time.process_time() - cpu, time.perf_counter() - wall)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the ``learning`` tests' total time against the budget (nothing when none ran)."""
    if not _learning:
        return
    cpu = sum(c for c, _ in _learning.values())
    wall = sum(w for _, w in _learning.values())
    slowest = max(_learning, key=lambda k: _learning[k][0])
    line = (f"learning tests: {len(_learning)} took {cpu:.0f} s of CPU (budget {LEARNING_BUDGET_S:.0f} s), "
            f"{wall:.0f} s wall; slowest {slowest.split('::')[-1]} {_learning[slowest][0]:.0f} s")
    if cpu > LEARNING_BUDGET_S:
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
