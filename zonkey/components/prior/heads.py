"""The output heads of the sequence prior: what it predicts at each position from its hidden state.

* :class:`MSEHead` (``head: mse``): one clean latent, on the sphere, trained by squared error. Its
  optimum is the posterior mean over a vocabulary of near-orthogonal latents, so it learns word
  frequencies and function-word pairs and little else (kept as the ablation's reference).
* :class:`BankHead` (``head: bank``): a distribution over the level's emergent vocabulary, the
  ``K`` most frequent segments' latents (the *bank*, :mod:`zonkey.core.model.bank`), plus one
  "other" class for everything outside it, trained by cross-entropy (CDCD, Plaid and LangFlow
  do the same over a fixed token vocabulary). The logit of entry i is

      readout(h)_i + log-frequency_i + √(1−σ)/σ · ⟨z_σ, B_i⟩,

  the last term being the exact Gaussian log-likelihood of the noised latent z_σ =
  √(1−σ)·B_i + √σ·ε under entry i (up to terms equal for every entry, since every ‖B_i‖² = D).
  A word the noise has not yet hidden names itself through it, so the network has only context
  to learn; the readout starts at zero, so step 0 is already the unigram. The "other" class has a
  continuous estimate m̂ of its own (trained by squared error on out-of-bank positions only) and
  the same likelihood term on m̂ (detached), so the vocabulary stays open: a sample may hold
  segments the bank does not. The clean estimate the sampler steps with is the expectation
  x̂ = Σ p_i·B_i + p_other·m̂ (score interpolation); the last step commits to the argmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zonkey.core.nn.sphere import to_sphere

#: a clean latent is a bank entry when their cosine is above this (else it is "other")
SAME_SEGMENT_COS = 0.98


def likelihood_scale(sigma: Tensor) -> Tensor:
    """√(1−σ)/σ: the weight of ⟨z_σ, B_i⟩ in log p(z_σ | z0 = B_i) (natural log)."""
    s = sigma.clamp(1e-6, 1 - 1e-6)
    return (1 - s).sqrt() / s


class MSEHead(nn.Module):
    """One clean estimate per position, on the sphere."""

    def __init__(self, width: int, dim: int) -> None:
        super().__init__()
        self.out = nn.Linear(width, dim)

    def forward(self, h: Tensor) -> Tensor:
        """(b, n, w) hidden states -> (b, n, D) clean estimates on the sphere."""
        return to_sphere(self.out(h))


class BankHead(nn.Module):
    """A distribution over ``size`` bank entries and "other" (module docstring)."""

    bank: Tensor  # (K, D) the bank's latents on the sphere
    log_freq: Tensor  # (K + 1,) log-frequencies of the entries and, last, of "other"
    filled: Tensor  # () 1 once a bank was set
    #: buffers an exponential moving average of the weights holds as they are (they are set, not learned)
    ema_copy = ("bank", "log_freq", "filled")

    def __init__(self, width: int, dim: int, size: int) -> None:
        super().__init__()
        self.size = size
        self.readout = nn.Linear(width, size + 1)
        nn.init.zeros_(self.readout.weight)
        nn.init.zeros_(self.readout.bias)
        self.other = nn.Linear(width, dim)
        self.register_buffer("bank", torch.zeros(size, dim))
        self.register_buffer("log_freq", torch.zeros(size + 1))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def set_bank(self, latents: Tensor, log_freq: Tensor, other_log_freq: float) -> None:
        """Put a (new) bank in place: ``latents`` (k, D) with k <= size, their ``log_freq`` (k,).

        Entries past k (a text with fewer distinct segments than the bank's size) get −inf
        log-frequency: they are never predicted.
        """
        k = latents.shape[0]
        if k > self.size:
            raise ValueError(f"a bank of {k} entries does not fit a head of size {self.size}")
        self.bank.zero_()
        self.bank[:k] = to_sphere(latents.to(self.bank))
        self.log_freq.fill_(float("-inf"))
        self.log_freq[:k] = log_freq.to(self.log_freq)
        self.log_freq[-1] = max(other_log_freq, -30.0)  # "other" stays possible
        self.filled.fill_(1)

    @property
    def ready(self) -> bool:
        """Whether a bank was set."""
        return bool(int(self.filled))

    def require_bank(self) -> None:
        """Refuse to predict before a bank was set (the trainer builds it when the prior starts)."""
        if not int(self.filled):
            raise RuntimeError("the prior's bank is empty: it is built from the encoder when the prior starts "
                               "training (prior.lr_start)")

    @torch.no_grad()
    def classes(self, z0: Tensor) -> Tensor:
        """The class of each clean latent: its bank entry, or ``size`` ("other").

        Args:
            z0: (..., D) clean latents.

        Returns:
            (...) long.
        """
        cos = F.normalize(z0, dim=-1) @ F.normalize(self.bank, dim=-1).T  # (..., K)
        cos = cos.masked_fill(torch.isinf(self.log_freq[:-1]), -2.0)
        best, idx = cos.max(-1)
        return torch.where(best > SAME_SEGMENT_COS, idx, torch.full_like(idx, self.size))

    def logits(self, h: Tensor, z: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """The logits of every position and the "other" estimate.

        Args:
            h: (..., w) hidden states.
            z: (..., D) the noised latents the prior read.
            sigma: (...) the noise share of each position.

        Returns:
            (..., K + 1) logits and (..., D) the "other" estimate m̂ on the sphere.
        """
        other = to_sphere(self.other(h))
        scale = likelihood_scale(sigma)[..., None]
        lik = torch.cat([z @ self.bank.T, (z * other.detach()).sum(-1, keepdim=True)], dim=-1)
        return self.readout(h) + self.log_freq + scale * lik, other

    def estimate(self, logits: Tensor, other: Tensor) -> Tensor:
        """The expectation Σ p_i·B_i + p_other·m̂, (..., D)."""
        p = torch.softmax(logits.float(), dim=-1).to(other.dtype)
        return p[..., :-1] @ self.bank + p[..., -1:] * other

    def commit(self, logits: Tensor, other: Tensor) -> tuple[Tensor, Tensor]:
        """The argmax class of every position as a latent (its bank entry, or m̂ for "other").

        Returns:
            (..., D) latents and (...) the classes (``size`` is "other").
        """
        cls = logits.argmax(-1)
        picked = self.bank[cls.clamp_max(self.size - 1)]
        return torch.where((cls == self.size)[..., None], other, picked), cls
