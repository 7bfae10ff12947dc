"""Helpers for vectors on the sphere of the expected Gaussian norm.

§5: "normalized to match the expected norm of a normally distributed vector of the same length".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_norm(dim: int) -> float:
    """Expected norm of an N(0, I) vector of ``dim`` entries, ≈ sqrt(dim − 1/2)."""
    return math.sqrt(max(dim - 0.5, 0.5))


def to_sphere(x: Tensor) -> Tensor:
    """Scale the last axis to the expected Gaussian norm of its size."""
    return F.normalize(x, dim=-1, eps=1e-8) * gaussian_norm(x.shape[-1])


def atanh_cos_logits(a: Tensor, b: Tensor, eps: float = 1e-4) -> Tensor:
    """2·atanh(cos(a_i, b_j)) for every pair: (..., i, d) × (j, d) -> (..., i, j).

    Cosines are clamped to ±(1 − eps) so the logits stay finite (|logit| <= 2·atanh(1 − eps) ≈ 9.9).
    """
    cos = F.normalize(a, dim=-1, eps=1e-8) @ F.normalize(b, dim=-1, eps=1e-8).transpose(-1, -2)
    return 2.0 * torch.atanh(cos.clamp(-1 + eps, 1 - eps))


def slerp(a: Tensor, b: Tensor, w: Tensor) -> Tensor:
    """Spherical interpolation between rows of a and b with weights w (..., 1) in [0, 1]."""
    an, bn = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    omega = torch.acos((an * bn).sum(-1, keepdim=True).clamp(-1 + 1e-6, 1 - 1e-6))
    so = torch.sin(omega)
    return (torch.sin((1 - w) * omega) / so) * a + (torch.sin(w * omega) / so) * b
