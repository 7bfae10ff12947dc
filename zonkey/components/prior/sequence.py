"""``sequence``: a diffusion prior over the *sequence* of one level's latents (§9.1, §9.2).

The per-segment denoiser of a level turns one latent into its segment; nothing in it models which
latents follow each other. This prior does: a bidirectional probabilistic-attention encoder over a
document's latents of that level (b, n, D), given noised latents, the noise level and which
positions are known (clean context), with self-conditioning. Its head (:mod:`.heads`) says what
it predicts at each position:

* ``head: bank``: a distribution over the level's emergent vocabulary (the K most frequent
  segments' latents) and an open "other" class, trained by cross-entropy, with the exact Gaussian
  likelihood of the noised latent in its logits; the clean estimate is the distribution's mean;
* ``head: mse``: one clean latent trained by squared error (the reference of the ablation).

Training noise: ``noise: cosine`` draws σ from a cosine schedule shifted toward σ = 1
(:mod:`zonkey.core.nn.schedule`); ``noise: band`` draws logit(σ) from a Gumbel law around
``band_loc``, the band where the likelihood term stops naming the word and context must decide.
Context: a share ``infill`` of the rows keeps everything outside one random span clean, and a
share ``anchors`` keeps a random share (r ~ Beta(2, 2)) of its positions clean, so that many
positions are a noised word beside clean neighbours, the situation that teaches p(word | context).

The latents it is trained on are detached: the prior learns the encoder's latent distribution
without reshaping it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from zonkey.components.prior.heads import BankHead, MSEHead
from zonkey.components.prior.sampler import CommitOrder, SamplerMode, draw
from zonkey.core.contracts.registry import ComponentConfig, register
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.nn import schedule
from zonkey.core.nn.existence import NEG_INF
from zonkey.core.nn.transformer import Encoder

N_FREQ = 32  # Fourier features of the log-SNR
SIGMA_TOP = 1 - 1e-4  # the noise share of a position that is pure noise (the masked one of the PLL)


class SequencePrior(nn.Module):
    """Denoiser over (b, n, D) latent sequences with known-position conditioning."""

    freqs: Tensor  # (N_FREQ,) frequencies of the log-SNR

    def __init__(self, cfg: SequencePriorConfig, dim: int, attention: nn.Module | None, max_bytes: int = 64) -> None:
        super().__init__()
        self.cfg = cfg
        self.dim = dim
        w = cfg.d_model
        self.inp = nn.Linear(dim, w)
        # the self-conditioning estimate enters through a zero-initialised map: a no-op at start
        self.cond_in = nn.Linear(dim, w)
        nn.init.zeros_(self.cond_in.weight)
        nn.init.zeros_(self.cond_in.bias)
        self.pos = nn.Parameter(torch.randn(cfg.max_len, w))
        self.known_flag = nn.Parameter(torch.randn(w) * 0.02)
        self.time = nn.Sequential(nn.Linear(2 * N_FREQ, w), nn.GELU(), nn.Linear(w, w))
        self.encoder = Encoder(w, cfg.heads, cfg.layers, attention, cfg.ffn_mult, 0.0)
        self.head: BankHead | MSEHead = BankHead(w, dim, cfg.bank_size, max_bytes, cfg.readout) if cfg.head == "bank" else MSEHead(w, dim)
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(1000.0), N_FREQ)) / 8.0,
                             persistent=False)

    @property
    def bank(self) -> BankHead | None:
        """The vocabulary head, or None for ``head: mse``."""
        return self.head if isinstance(self.head, BankHead) else None

    def _time_features(self, sigma: Tensor) -> Tensor:
        a = schedule.log_snr(sigma)[:, None] * self.freqs  # (b, N_FREQ)
        return torch.cat([a.sin(), a.cos()], dim=-1)  # (b, 2·N_FREQ)

    def hidden(self, z: Tensor, sigma: Tensor, known: Tensor, valid: Tensor, cond: Tensor | None = None) -> Tensor:
        """The encoder's (b, n, w) hidden states; arguments as :meth:`forward`."""
        n = z.shape[1]
        if n > self.cfg.max_len:
            raise ValueError(f"sequence of {n} positions is longer than the prior's max_len ({self.cfg.max_len})")
        h = self.inp(z) + self.pos[:n] + self.time(self._time_features(sigma))[:, None]
        h = h + known[..., None].to(h.dtype) * self.known_flag
        if cond is not None:
            h = h + self.cond_in(cond)
        le = torch.zeros(valid.shape, dtype=torch.float32, device=z.device).masked_fill(~valid, NEG_INF)
        return self.encoder(h, le)

    def features(self, z: Tensor, sigma: Tensor, known: Tensor, valid: Tensor, cond: Tensor | None = None
                 ) -> tuple[Tensor, Tensor | None]:
        """The hidden states and what the "other" class's mean is read from (None: the hidden states)."""
        return self.hidden(z, sigma, known, valid, cond), None

    def predict(self, z: Tensor, sigma: Tensor, known: Tensor, valid: Tensor, cond: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The clean estimate of every position and, with the bank head, its logits and m̂.

        Returns:
            (b, n, D) estimates (0 on padding), (b, n, K + 1) logits or None, (b, n, D) "other"
            estimates or None.
        """
        if self.cfg.self_cond == 0:
            cond = None  # never trained with one: its input map is still the zero it started as
        h, ctx = self.features(z, sigma, known, valid, cond)
        if isinstance(self.head, BankHead):
            self.head.require_bank()
            logits, other, _ = self.head.logits(h, z, sigma[:, None].expand(z.shape[:2]), ctx)
            est = self.head.estimate(logits, other)
            return est.masked_fill(~valid[..., None], 0.0), logits, other
        return self.head(h).masked_fill(~valid[..., None], 0.0), None, None

    def forward(self, z: Tensor, sigma: Tensor, known: Tensor, valid: Tensor, cond: Tensor | None = None) -> Tensor:
        """The clean estimate of every position.

        Args:
            z: (b, n, D) latents: noised at σ where not known, clean where known.
            sigma: (b,) noise share of each row.
            known: (b, n) bool, positions given as context (clean).
            valid: (b, n) bool, real positions (padding is masked out of attention).
            cond: optional (b, n, D) previous clean estimate (self-conditioning).

        Returns:
            (b, n, D) clean estimates (0 on padding): on the sphere for ``head: mse``, the bank
            distribution's mean (inside the ball where it is unsure) for ``head: bank``.
        """
        return self.predict(z, sigma, known, valid, cond)[0]

    # -- training ---------------------------------------------------------------------------------
    def _known(self, valid: Tensor, generator: torch.Generator | None) -> Tensor:
        """(b, n) bool, the positions given as context in training.

        A share ``infill`` of the rows knows everything outside one random span of its real
        positions; a share ``anchors`` of the rest knows each position with probability 1 − r,
        r ~ Beta(2, 2) per row; the other rows know nothing.
        """
        b, n = valid.shape
        dev = valid.device
        u = torch.rand(b, device=dev, generator=generator)
        span_rows = u < self.cfg.infill
        anchor_rows = (u >= self.cfg.infill) & (u < self.cfg.infill + self.cfg.anchors)
        lengths = valid.sum(1)  # (b,)
        span = 1 + (torch.rand(b, device=dev, generator=generator) * lengths.clamp_min(1)).long()
        start = (torch.rand(b, device=dev, generator=generator) * (lengths - span + 1).clamp_min(1)).long()
        pos = torch.arange(n, device=dev)[None]
        gap = (pos >= start[:, None]) & (pos < (start + span)[:, None])
        # r ~ Beta(2, 2) as the median of three uniforms
        r = torch.rand(b, 3, device=dev, generator=generator).median(-1).values
        holes = torch.rand(b, n, device=dev, generator=generator) < r[:, None]
        known = (span_rows[:, None] & ~gap) | (anchor_rows[:, None] & ~holes)
        return known & valid

    def draw_sigma(self, b: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
        """(b,) training noise shares: the shifted cosine schedule, or the Gumbel band on logit(σ)."""
        u = torch.rand(b, device=device, generator=generator)
        if self.cfg.noise == "cosine":
            return schedule.sigma_at(u, self.cfg.shift)
        g = self.cfg.band_loc - self.cfg.band_scale * torch.log(-torch.log(u.clamp(1e-6, 1 - 1e-6)))
        return torch.sigmoid(g).clamp(1e-4, SIGMA_TOP)

    def training_inputs(self, z0: Tensor, valid: Tensor, generator: torch.Generator | None = None,
                        classes: Tensor | None = None
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
        """One training draw for a batch of clean latent sequences: what :meth:`loss` scores.

        Long rows are cropped, a noise level drawn per row, the known positions chosen, the rest
        noised, and with probability ``self_cond`` a first estimate made without gradient.

        Returns:
            (z0, valid, zt, sigma, known, cond, classes): the clean rows and their real positions
            after the crop, the network's input, (b,) noise shares, (b, n) known positions, the
            self-conditioning estimate (or None) and ``classes`` cropped alike (or None).
        """
        z0, valid, classes = self._crop(z0.detach(), valid, generator, classes)
        b = z0.shape[0]
        sigma = self.draw_sigma(b, z0.device, generator)
        eps = torch.randn(z0.shape, device=z0.device, dtype=z0.dtype, generator=generator)
        known = self._known(valid, generator)
        zt = torch.where(known[..., None], z0, schedule.add_noise(z0, sigma, eps))
        cond = None
        if self.cfg.self_cond > 0 and float(torch.rand((), generator=generator)) < self.cfg.self_cond:
            with torch.no_grad():
                cond = self(zt, sigma, known, valid)
        return z0, valid, zt, sigma, known, cond, classes

    def loss(self, z0: Tensor, valid: Tensor, generator: torch.Generator | None = None,
             classes: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """Denoising loss of a batch of clean latent sequences.

        Args:
            z0: (b, n, D) clean latents (detached by the caller).
            valid: (b, n) bool.
            generator: source of the noise, the crops and the known positions.
            classes: (b, n) long, each position's bank class (``K``: "other") when the caller knows
                its segment's bytes (the trainer does: exact while the encoder moves between bank
                refreshes); None: the nearest entry within cosine 0.98 (:meth:`BankHead.classes`).

        Returns:
            ``head: mse``: the mean squared error per dimension over the noised real positions;
            ``head: bank``: the cross-entropy of their classes plus the squared error of m̂ on the
            out-of-bank ones; and statistics.
        """
        if isinstance(self.head, BankHead) and not self.head.ready:
            # nothing to predict yet: the trainer builds the bank when the prior starts training
            return sum((p.sum() * 0.0 for p in self.parameters()), z0.new_zeros(())), {"prior_positions": 0.0}
        z0, valid, zt, sigma, known, cond, classes = self.training_inputs(z0, valid, generator, classes)
        target = valid & ~known
        stats: dict[str, float] = {"prior_positions": float(target.sum())}
        h = self.hidden(zt, sigma, known, valid, cond)
        if isinstance(self.head, BankHead):
            self.head.require_bank()
            sig = sigma[:, None].expand(target.shape)[target]
            logits, _, mu = self.head.logits(h[target], zt[target], sig)  # (t, K + 1), (t, D)
            cls = self.head.classes(z0[target]) if classes is None else classes[target]
            ce = F.cross_entropy(logits.float(), cls)
            out_of_bank = cls == self.head.size
            err = (mu - z0[target]).pow(2).mean(-1)
            mse = (err * out_of_bank).sum() / out_of_bank.sum().clamp_min(1)
            stats["prior_other_share"] = float(out_of_bank.float().mean()) if len(cls) else 0.0
            stats["prior_top1"] = float((logits.argmax(-1) == cls).float().mean()) if len(cls) else 0.0
            return ce + mse.to(ce.dtype), stats
        err = (self.head(h) - z0).pow(2).mean(-1)  # (b, n)
        w = target.to(err.dtype)
        return (err * w).sum() / w.sum().clamp_min(1.0), stats

    def _crop(self, z0: Tensor, valid: Tensor, generator: torch.Generator | None,
              classes: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Rows longer than ``max_len`` are cut to a random window of ``max_len`` positions (``classes`` too)."""
        n = z0.shape[1]
        m = self.cfg.max_len
        if n <= m:
            return z0, valid, classes
        lengths = valid.sum(1)
        start = (torch.rand(z0.shape[0], device=z0.device, generator=generator)
                 * (lengths - m + 1).clamp_min(1)).long()  # (b,)
        idx = start[:, None] + torch.arange(m, device=z0.device)[None]  # (b, m)
        return (z0.gather(1, idx[..., None].expand(-1, -1, z0.shape[2])), valid.gather(1, idx),
                None if classes is None else classes.gather(1, idx))

    # -- sampling ---------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, b: int, n: int, *, steps: int, eta: float = 0.0, generator: torch.Generator | None = None,
               known_z: Tensor | None = None, known: Tensor | None = None, valid: Tensor | None = None,
               device: torch.device | str = "cpu", on_step: Callable[[int, Tensor], None] | None = None,
               mode: SamplerMode = "mean", temperature: float = 1.0, other_scale: float = 1.0,
               order: CommitOrder = "confidence") -> Tensor:
        """Draw (b, n, D) latent sequences, optionally with some positions given (:func:`.sampler.draw`)."""
        return draw(self, b, n, steps=steps, eta=eta, generator=generator, known_z=known_z, known=known, valid=valid,
                    device=device, on_step=on_step, mode=mode, temperature=temperature, other_scale=other_scale,
                    order=order)

    # -- held-out likelihood ----------------------------------------------------------------------
    @torch.no_grad()
    def position_log_probs(self, z0: Tensor, valid: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Log p(class | every other position clean) at one position of each row (bank head).

        The target position is pure noise (σ → 1, so its own latent adds nothing) and unknown;
        every other real position is known and clean.

        Args:
            z0: (b, n, D) clean latent rows.
            valid: (b, n) bool real positions.
            target: (b,) long, the position of each row to predict.

        Returns:
            (b, K + 1) log-probabilities and (b,) the true classes (``K`` is "other").

        Raises:
            ValueError: the prior has no bank head.
        """
        if not isinstance(self.head, BankHead):
            raise ValueError("the conditional likelihood needs the bank head (prior.head: bank)")
        b = z0.shape[0]
        rows = torch.arange(b, device=z0.device)
        known = valid.clone()
        known[rows, target] = False
        z = z0.clone()
        z[rows, target] = 0.0  # at σ → 1 the noised latent is (almost) pure noise: its mean, 0
        sigma = torch.full((b,), SIGMA_TOP, device=z0.device)
        _, logits, _ = self.predict(z, sigma, known, valid)
        assert logits is not None
        return torch.log_softmax(logits[rows, target].float(), dim=-1), self.head.classes(z0[rows, target])


@register("prior", "sequence")
class SequencePriorConfig(ComponentConfig):
    """Diffusion prior over a level's latent sequence (a vocabulary head or an MSE head)."""

    name: Literal["sequence"] = "sequence"
    head: Literal["bank", "mse"] = Field("mse", description="bank: a distribution over the level's K most "
                                         "frequent segments and an open 'other' class (cross-entropy); mse: one "
                                         "clean latent (squared error)")
    bank_size: int = Field(8192, ge=2, le=65536, description="bank head: K, the segments in the vocabulary")
    bank_every: int = Field(200, ge=0, le=1_000_000, description="bank head: rebuild the bank from the current "
                            "encoder every this many steps while the prior trains (0: only when it starts)")
    bank_refresh: int = Field(50, ge=0, le=1_000_000, description="bank head: encode the bank's segments again "
                              "with the current encoder every this many steps between rebuilds (0: never)")
    bank_texts: int = Field(2000, ge=16, le=1_000_000, description="bank head: training chunks whose segments "
                            "are counted to choose the bank")
    d_model: int = Field(256, ge=8, le=16384, description="width of the prior's encoder")
    layers: int = Field(4, ge=1, le=64)
    heads: int = Field(4, ge=1, le=256)
    ffn_mult: int = Field(4, ge=1, le=64)
    max_len: int = Field(128, ge=2, le=65536, description="longest sequence it reads; longer training rows are cut "
                         "to a random window of this many positions")
    shift: float = Field(3.0, ge=1.0, le=64.0, description="log-SNR shift of the cosine schedule (sampler steps, "
                         "and training draws with noise: cosine): > 1 puts them nearer σ = 1")
    noise: Literal["cosine", "band"] = Field("cosine", description="training noise: cosine (the shifted "
                                             "schedule) or band (logit σ ~ Gumbel(band_loc, band_scale))")
    band_loc: float = Field(3.3, ge=-10, le=15, description="noise: band: location of logit(σ)")
    band_scale: float = Field(0.85, gt=0, le=10, description="noise: band: scale of logit(σ)")
    self_cond: float = Field(0.5, ge=0, le=1, description="probability of a self-conditioned training pass")
    readout: Literal["free", "tied"] = Field("free", description="head: bank: the context's logits, a free "
                                             "(K+1) × width map (free) or ⟨q(h), B_i⟩ against the bank's own latents "
                                             "plus a bias per entry (tied: about a third of the head's cost a step)")
    lr_start: int = Field(0, ge=0, le=10**8, description="step at which the prior's parameters start their own warm-up "
                          "and cosine decay (lr 0 before); set it to where its loss ramps in")
    lr_scale: float = Field(0.25, gt=0, le=1000, description="multiplies train.lr for the prior's parameters")
    infill: float = Field(0.3, ge=0, le=1, description="share of training rows that keep everything outside "
                          "one random span clean (learns p(gap | context))")
    anchors: float = Field(0.0, ge=0, le=1, description="share of training rows that keep a random share "
                           "(Beta(2, 2)) of their positions clean as anchors")

    @model_validator(mode="after")
    def _check(self) -> SequencePriorConfig:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.infill + self.anchors > 1:
            raise ValueError(f"infill ({self.infill}) + anchors ({self.anchors}) is a share of the rows: at most 1")
        return self

    def build(self, ctx: LevelContext) -> SequencePrior:
        """The prior over ``ctx``'s latents (dimension ``n_compress × d_model``)."""
        return SequencePrior(self, ctx.n_compress * ctx.d_model, ctx.attention, ctx.max_segment)
