"""The ddmm objective's clean-pass noise levels follow its config (σ = clean_max · u^clean_power)."""

from __future__ import annotations

import pytest
import torch

from tests.components.context import ctx
from zonkey.core.contracts.outputs import DenoiseOutput
from zonkey.core.contracts.registry import registry


def _clean_sigmas(power: float, clean_max: float = 0.35, s: int = 4000) -> torch.Tensor:
    obj = registry("objective").config("ddmm", clean_max=clean_max, clean_power=power).build(ctx())
    seen: list[torch.Tensor] = []

    def denoise(z, sigma):
        seen.append(sigma.clone())
        return DenoiseOutput(x_hat=z.view(z.shape[0], 2, -1), bos_logits=z.new_zeros(z.shape[0], 2),
                             log_existence=z.new_zeros(z.shape[0], 2))

    def compress(x, log_e):
        return x.flatten(1)

    obj(torch.randn(s, 8), denoise, compress, generator=torch.Generator().manual_seed(0))
    return seen[0]  # the first denoiser call is the clean pass


@pytest.mark.parametrize("power", [1.0, 2.0, 4.0])
def test_clean_sigma_distribution(power):
    sig = _clean_sigmas(power)
    assert float(sig.min()) >= 0 and float(sig.max()) <= 0.35
    # E[clean_max · u^p] = clean_max / (1 + p)
    assert abs(float(sig.mean()) - 0.35 / (1 + power)) < 0.01
    # a larger power puts more of the clean pass near σ = 0
    assert abs(float((sig < 0.05).float().mean()) - (0.05 / 0.35) ** (1 / power)) < 0.03


def test_clean_power_below_one_is_rejected():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="clean_power"):
        registry("objective").config("ddmm", clean_power=0.5)
