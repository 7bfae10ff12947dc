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
  to learn; the readout starts at zero, so step 0 is already the unigram. The "other" class is a
  Gaussian over the latents outside the bank, around a mean μ the prior predicts (trained by
  squared error on out-of-bank positions, and by the cross-entropy through its likelihood); its
  exact likelihood competes with the entries', so the vocabulary stays open: a sample may hold
  segments the bank does not, with m̂, the Gaussian's posterior mean of z0 given z_σ, as their
  latent. The clean estimate the sampler steps with is the expectation x̂ = Σ p_i·B_i +
  p_other·m̂ (score interpolation); the last step commits to the argmax.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zonkey.core.nn.sphere import gaussian_norm, to_sphere

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
    seg_bytes: Tensor  # (K, max_bytes) uint8, each entry's segment (zero-padded)
    seg_len: Tensor  # (K,) its length in bytes (0: no segment kept)
    #: buffers an exponential moving average of the weights holds as they are (they are set, not learned)
    ema_copy = ("bank", "log_freq", "filled", "seg_bytes", "seg_len")

    def __init__(self, width: int, dim: int, size: int, max_bytes: int = 64, readout: str = "free") -> None:
        super().__init__()
        self.size = size
        self.max_bytes = max_bytes
        self.tied = readout == "tied"
        if self.tied:
            # the context's logit of entry i is ⟨q(h), B_i⟩: one product with the bank serves it and the
            # likelihood term, and its backward has no (K × width) weight gradient; "other" and every
            # entry keep a free bias
            self.query = nn.Linear(width, dim)
            nn.init.zeros_(self.query.weight)
            nn.init.zeros_(self.query.bias)
            self.other_logit = nn.Linear(width, 1)
            nn.init.zeros_(self.other_logit.weight)
            nn.init.zeros_(self.other_logit.bias)
            self.bias = nn.Parameter(torch.zeros(size + 1))
        else:
            self.readout = nn.Linear(width, size + 1)
            nn.init.zeros_(self.readout.weight)
            nn.init.zeros_(self.readout.bias)
        self.other = nn.Linear(width, dim)
        self.register_buffer("bank", torch.zeros(size, dim))
        self.register_buffer("log_freq", torch.zeros(size + 1))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("seg_bytes", torch.zeros(size, max_bytes, dtype=torch.uint8))
        self.register_buffer("seg_len", torch.zeros(size, dtype=torch.long))

    @torch.no_grad()
    def set_bank(self, latents: Tensor, log_freq: Tensor, other_log_freq: float,
                 strings: Sequence[bytes] | None = None) -> None:
        """Put a (new) bank in place: ``latents`` (k, D) with k <= size, their ``log_freq`` (k,).

        Entries past k (a text with fewer distinct segments than the bank's size) get −inf
        log-frequency: they are never predicted. ``strings``, the entries' segments, are kept with
        the head (and its checkpoint), so that their latents can be encoded again as the encoder
        moves (:meth:`set_latents`) and every entry can be read as text.
        """
        k = latents.shape[0]
        if k > self.size:
            raise ValueError(f"a bank of {k} entries does not fit a head of size {self.size}")
        self.bank.zero_()
        self.bank[:k] = to_sphere(latents.to(self.bank))
        self.log_freq.fill_(float("-inf"))
        self.log_freq[:k] = log_freq.to(self.log_freq)
        self.log_freq[-1] = max(other_log_freq, -30.0)  # "other" stays possible
        self.seg_bytes.zero_()
        self.seg_len.zero_()
        if strings is not None:
            if len(strings) != k:
                raise ValueError(f"{len(strings)} strings for a bank of {k} latents")
            for i, s in enumerate(strings):
                if not 1 <= len(s) <= self.max_bytes:
                    raise ValueError(f"bank entry {i} has {len(s)} bytes; the head keeps 1 to {self.max_bytes}")
                self.seg_bytes[i, :len(s)] = torch.tensor(list(s), dtype=torch.uint8)
                self.seg_len[i] = len(s)
        self.filled.fill_(1)

    def strings(self) -> list[bytes]:
        """The kept segments of the bank's entries, in order (empty when none were kept)."""
        n = int((self.seg_len > 0).sum())
        rows = self.seg_bytes[:n].tolist()
        return [bytes(r[:int(m)]) for r, m in zip(rows, self.seg_len[:n].tolist(), strict=True)]

    def has_segments(self) -> bool:
        """Whether the bank keeps its entries' segments (banks set without them do not)."""
        return bool(int(self.seg_len[0]) > 0)

    def lookup(self, segments: Sequence[bytes]) -> Tensor:
        """(s,) each segment's entry by its bytes, or ``size`` ("other"); exact whatever the latents."""
        key = hash(self.seg_bytes.cpu().numpy().tobytes())  # the kept segments (a load or a rebuild changes them)
        if getattr(self, "_index_key", None) != key:
            self._index = {s: i for i, s in enumerate(self.strings())}
            self._index_key = key
        return torch.tensor([self._index.get(s, self.size) for s in segments], dtype=torch.long,
                            device=self.bank.device)

    @torch.no_grad()
    def set_latents(self, latents: Tensor) -> None:
        """Replace the latents of the first ``len(latents)`` entries (the same segments, encoded anew)."""
        self.require_bank()
        self.bank[:latents.shape[0]] = to_sphere(latents.to(self.bank))

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

    def logits(self, h: Tensor, z: Tensor, sigma: Tensor, ctx: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The logits of every position, the "other" class's clean estimate and its prior mean.

        Entry i's likelihood term is √(1−σ)/σ·⟨z, B_i⟩. "Other" is a Gaussian over the latents
        outside the bank, z0 ~ N(μ, v·I), with μ predicted from ``ctx`` and v the spread a latent on
        the sphere has around a mean of that norm; its term is log N(z;
        √(1−σ)·μ, ((1−σ)·v + σ)·I) less the parts the entries' terms leave out, so that the two
        compare exactly (v = (R² − ‖μ‖²)/D, R the sphere's radius). At σ → 1 it vanishes (as the entries' do); at low σ a latent far from
        every entry is "other" and one on an entry is that entry.

        Args:
            h: (..., w) hidden states (the readout's input).
            z: (..., D) the noised latents the prior read.
            sigma: (...) the noise share of each position.
            ctx: (..., w) what μ is read from; ``h`` when not given. A prior that can keep a
                position's own latent out of it should: a μ that copies z would explain any z.

        Returns:
            (..., K + 1) logits, (..., D) "other"'s posterior mean of z0 given z, on the sphere,
            and (..., D) μ.
        """
        dim = z.shape[-1]
        r2 = gaussian_norm(dim) ** 2  # ‖B_i‖² of every entry
        mu = self.other(h if ctx is None else ctx)
        s = sigma.clamp(1e-6, 1 - 1e-6)[..., None]
        a2 = 1 - s
        v = ((r2 - mu.pow(2).sum(-1, keepdim=True)) / dim).clamp(0.05, 1.0)
        s2 = a2 * v + s
        z2 = z.pow(2).sum(-1, keepdim=True)
        lik_other = (-(z - a2.sqrt() * mu).pow(2).sum(-1, keepdim=True) / (2 * s2)
                     - 0.5 * dim * torch.log(s2 / s) + (z2 + a2 * r2) / (2 * s))
        post = mu + (a2.sqrt() * v / s2) * (z - a2.sqrt() * mu)
        if self.tied:
            entries = (self.query(h) + (a2.sqrt() / s) * z) @ self.bank.T
            logits = torch.cat([entries, self.other_logit(h) + lik_other], dim=-1) + self.bias
        else:
            lik = torch.cat([(a2.sqrt() / s) * (z @ self.bank.T), lik_other], dim=-1)
            logits = self.readout(h) + lik
        return logits + self.log_freq, to_sphere(post), mu

    def estimate(self, logits: Tensor, other: Tensor) -> Tensor:
        """The expectation Σ p_i·B_i + p_other·m̂, (..., D)."""
        p = torch.softmax(logits.float(), dim=-1).to(other.dtype)
        return p[..., :-1] @ self.bank + p[..., -1:] * other

    def draw(self, logits: Tensor, other: Tensor, temperature: float = 1.0,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """One class drawn per position from softmax(logits / temperature), as a latent.

        Returns:
            (..., D) latents (the entry, or m̂ for "other") and (...) the classes.
        """
        p = torch.softmax(logits.float() / temperature, dim=-1)
        flat = p.reshape(-1, p.shape[-1])
        cls = torch.multinomial(flat, 1, generator=generator)[:, 0].reshape(p.shape[:-1])
        picked = self.bank[cls.clamp_max(self.size - 1)]
        return torch.where((cls == self.size)[..., None], other, picked), cls

    def commit(self, logits: Tensor, other: Tensor) -> tuple[Tensor, Tensor]:
        """The argmax class of every position as a latent (its bank entry, or m̂ for "other").

        Returns:
            (..., D) latents and (...) the classes (``size`` is "other").
        """
        cls = logits.argmax(-1)
        picked = self.bank[cls.clamp_max(self.size - 1)]
        return torch.where((cls == self.size)[..., None], other, picked), cls
