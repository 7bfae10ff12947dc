"""Test-suite wide settings: a hypothesis profile and the ``gpu`` marker.

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped, with the reason, on machines without CUDA (for runs that
    select them explicitly with ``-m gpu``)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


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
