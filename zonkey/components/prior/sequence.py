"""``sequence``: a diffusion prior over the *sequence* of one level's latents (§9.1, §9.2).

The per-segment denoiser of a level turns one latent into its segment; nothing in it models which
latents follow each other. This prior does: a bidirectional probabilistic-attention encoder over a
document's latents of that level (b, n, D), trained to predict the clean latents from noised ones
(x0 prediction, mean squared error per position on the sphere), at noise levels drawn from a
cosine schedule shifted toward σ = 1 (``zonkey.core.nn.schedule``), with self-conditioning. Part of
the rows keep a random span of positions clean ("known", existence 1) while the rest is noised, so
the same network learns p(gap | context) and infills without being told how. Samples of the whole
hierarchy are sequences drawn from it and decoded down the levels.

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

from zonkey.core.contracts.registry import ComponentConfig, register
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.nn import schedule
from zonkey.core.nn.existence import NEG_INF
from zonkey.core.nn.sphere import to_sphere
from zonkey.core.nn.transformer import Encoder

N_FREQ = 32  # Fourier features of the log-SNR
MIX_FLOOR = 0.05  # share of a mixture's responsibility spread evenly over its candidates
MIX_WEIGHT_LOSS = 0.1  # weight of the mixture weights' cross-entropy beside the candidates' error
SCATTER_RATE = (0.05, 0.5)  # range of the per-row share of unknown positions in scattered infill rows


class SequencePrior(nn.Module):
    """x0-predicting denoiser over (b, n, D) latent sequences with known-position conditioning."""

    freqs: Tensor  # (N_FREQ,) frequencies of the log-SNR features

    def __init__(self, cfg: SequencePriorConfig, dim: int, attention: nn.Module | None) -> None:
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
        k = max(cfg.mixture, 1)
        self.out = nn.Linear(w, k * dim)
        # mixture weights of the K candidate estimates (absent for the single-estimate prior)
        self.mix = nn.Linear(w, cfg.mixture) if cfg.mixture else None
        self._memory: list[tuple[Tensor, Tensor]] = []  # the last batches' (z0, valid), newest first
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(1000.0), N_FREQ)) / 8.0,
                             persistent=False)

    def _time_features(self, sigma: Tensor) -> Tensor:
        a = schedule.log_snr(sigma)[:, None] * self.freqs  # (b, N_FREQ)
        return torch.cat([a.sin(), a.cos()], dim=-1)  # (b, 2·N_FREQ)

    def components(self, z: Tensor, sigma: Tensor, known: Tensor, valid: Tensor,
                   cond: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The candidate clean estimates of every position and their log weights.

        Args:
            z: (b, n, D) latents: noised at σ where not known, clean where known.
            sigma: (b,) noise share of each row.
            known: (b, n) bool, positions given as context (clean).
            valid: (b, n) bool, real positions (padding is masked out of attention).
            cond: optional (b, n, D) previous clean estimate (self-conditioning).

        Returns:
            (b, n, K, D) candidate estimates (K = ``mixture``, or 1), on the sphere with
            ``sphere_out``, 0 on padding; and their (b, n, K) log weights, or None without a mixture.
        """
        b, n, _ = z.shape
        if n > self.cfg.max_len:
            raise ValueError(f"sequence of {n} positions is longer than the prior's max_len ({self.cfg.max_len})")
        h = self.inp(z) + self.pos[:n] + self.time(self._time_features(sigma))[:, None]
        h = h + known[..., None].to(h.dtype) * self.known_flag
        if cond is not None:
            h = h + self.cond_in(cond)
        le = torch.zeros(valid.shape, dtype=torch.float32, device=z.device).masked_fill(~valid, NEG_INF)
        h = self.encoder(h, le)
        means = self.out(h).view(b, n, -1, self.dim)
        if self.cfg.sphere_out:
            means = to_sphere(means)
        means = means.masked_fill(~valid[..., None, None], 0.0)
        logw = F.log_softmax(self.mix(h).float(), dim=-1) if self.mix is not None else None
        return means, logw

    def forward(self, z: Tensor, sigma: Tensor, known: Tensor, valid: Tensor, cond: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """The clean estimate of every position.

        Args:
            z: (b, n, D) latents: noised at σ where not known, clean where known.
            sigma: (b,) noise share of each row.
            known: (b, n) bool, positions given as context (clean).
            valid: (b, n) bool, real positions (padding is masked out of attention).
            cond: optional (b, n, D) previous clean estimate (self-conditioning).
            generator: with a mixture, the estimate is one candidate drawn by its weight from this
                generator; without one (None), the weighted mean of the candidates.

        Returns:
            (b, n, D) clean estimates (on the sphere with ``sphere_out``; 0 on padding).
        """
        means, logw = self.components(z, sigma, known, valid, cond)
        if logw is None:
            return means[:, :, 0]
        if generator is None:
            est = (logw.exp()[..., None].to(means.dtype) * means).sum(2)
            est = to_sphere(est) if self.cfg.sphere_out else est
            return est.masked_fill(~valid[..., None], 0.0)
        u = torch.rand(logw.shape[:-1], device=z.device, generator=generator)[..., None]
        pick = (logw.exp().cumsum(-1) < u).sum(-1, keepdim=True).clamp_max(logw.shape[-1] - 1)  # (b, n, 1)
        return means.gather(2, pick[..., None].expand(-1, -1, 1, self.dim))[:, :, 0]

    # -- training ---------------------------------------------------------------------------------
    def _known_spans(self, valid: Tensor, generator: torch.Generator | None) -> Tensor:
        """(b, n) bool, the positions given as context in training.

        For a share ``infill`` of the rows, everything outside one random span of each row's real
        positions is known; other rows have nothing known.
        """
        b, n = valid.shape
        dev = valid.device
        lengths = valid.sum(1)  # (b,)
        rows = torch.rand(b, device=dev, generator=generator) < self.cfg.infill
        span = 1 + (torch.rand(b, device=dev, generator=generator) * lengths.clamp_min(1)).long()
        start = (torch.rand(b, device=dev, generator=generator) * (lengths - span + 1).clamp_min(1)).long()
        pos = torch.arange(n, device=dev)[None]
        gap = (pos >= start[:, None]) & (pos < (start + span)[:, None])
        if self.cfg.scatter > 0:
            # scattered rows: every position is unknown with the row's own rate, so one row holds
            # many short gaps between clean neighbours (the one-word infill's situation)
            scattered = torch.rand(b, device=dev, generator=generator) < self.cfg.scatter
            rate = SCATTER_RATE[0] + (SCATTER_RATE[1] - SCATTER_RATE[0]) * torch.rand(b, 1, device=dev, generator=generator)
            holes = torch.rand(b, n, device=dev, generator=generator) < rate
            gap = torch.where(scattered[:, None], holes, gap)
        return rows[:, None] & valid & ~gap

    def training_inputs(self, z0: Tensor, valid: Tensor, generator: torch.Generator | None = None
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """One training draw for a batch of clean latent sequences: what :meth:`loss` scores.

        The remembered rows are added (``memory``), long rows cropped, a noise level drawn per row,
        the known positions chosen (``infill``, ``scatter``), the rest noised, and with probability
        ``self_cond`` a first estimate made without gradient.

        Returns:
            (z0, valid, zt, sigma, known, cond): the clean rows and their real positions after
            memory and crop, the network's input, (b,) noise shares, (b, n) known positions and
            the self-conditioning estimate (or None).
        """
        z0, valid = self._with_memory(z0.detach(), valid)
        z0, valid = self._crop(z0, valid, generator)
        b = z0.shape[0]
        sigma = schedule.sigma_at(torch.rand(b, device=z0.device, generator=generator), self.cfg.shift)
        eps = torch.randn(z0.shape, device=z0.device, dtype=z0.dtype, generator=generator)
        known = self._known_spans(valid, generator)
        zt = torch.where(known[..., None], z0, schedule.add_noise(z0, sigma, eps))
        cond = None
        if self.cfg.self_cond > 0 and float(torch.rand((), generator=generator)) < self.cfg.self_cond:
            draw = None
            if self.mix is not None:
                draw = generator if generator is not None else torch.Generator(device=z0.device).manual_seed(0)
            with torch.no_grad():
                cond = self(zt, sigma, known, valid, generator=draw)
        return z0, valid, zt, sigma, known, cond

    def loss(self, z0: Tensor, valid: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """Denoising loss of a batch of clean latent sequences.

        Args:
            z0: (b, n, D) clean latents (detached by the caller).
            valid: (b, n) bool.
            generator: source of the noise, the crops and the known spans.

        Returns:
            the mean squared error per dimension over the noised real positions (with a mixture:
            the candidates' responsibility-weighted error plus the weights' cross-entropy), and
            statistics.
        """
        z0, valid, zt, sigma, known, cond = self.training_inputs(z0, valid, generator)
        means, logw = self.components(zt, sigma, known, valid, cond)
        w = (valid & ~known).to(z0.dtype)
        err = (means - z0[:, :, None]).pow(2).mean(-1)  # (b, n, K)
        stats: dict[str, float] = {"prior_positions": float(w.sum())}
        if logw is None:
            per = err[:, :, 0]
        else:
            per, weight_ce, used = self._mixture_terms(err, logw)
            per = per + MIX_WEIGHT_LOSS * weight_ce
            stats["prior_mixture_used"] = used
        loss = (per * w).sum() / w.sum().clamp_min(1.0)
        return loss, stats

    def _mixture_terms(self, err: Tensor, logw: Tensor) -> tuple[Tensor, Tensor, float]:
        """Per-position losses of the mixture: responsibility-weighted error and weight cross-entropy.

        Each candidate's responsibility for the clean latent is softmax(log w − err / τ), detached,
        with a floor of ``MIX_FLOOR / K`` so that no candidate stops learning; the candidates move
        toward the latents they are responsible for, and the weights learn to predict the
        responsibilities.

        Returns:
            (b, n) weighted errors, (b, n) cross-entropies, and the share of candidates that are
            some position's most responsible one (a collapse shows as a share near 1/K).
        """
        k = err.shape[-1]
        with torch.no_grad():
            resp = torch.softmax(logw - err.float() / self.cfg.mixture_temp, dim=-1)
            resp = (1 - MIX_FLOOR) * resp + MIX_FLOOR / k
            used = float(torch.zeros(k).index_fill_(0, resp.argmax(-1).flatten().unique().cpu(), 1.0).mean())
        return (resp.to(err.dtype) * err).sum(-1), -(resp * logw).sum(-1).to(err.dtype), used

    def _with_memory(self, z0: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """The batch's rows and the rows of the last ``memory`` batches, padded to one length.

        The remembered latents are a few optimizer steps old; the encoder moves little in that
        time, and the prior sees ``memory + 1`` times the rows for the cost of its own passes only.
        The memory is not saved in checkpoints: a resumed run starts with it empty.
        """
        if self.cfg.memory == 0 or not self.training:
            return z0, valid
        past = self._memory
        self._memory = ([(z0, valid)] + past)[: self.cfg.memory]
        if not past:
            return z0, valid
        rows = [(z0, valid)] + past
        n = max(v.shape[1] for _, v in rows)
        zs = [F.pad(z, (0, 0, 0, n - z.shape[1])) for z, _ in rows]
        vs = [F.pad(v, (0, n - v.shape[1])) for _, v in rows]
        return torch.cat(zs), torch.cat(vs)

    def _crop(self, z0: Tensor, valid: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Rows longer than ``max_len`` are cut to a random window of ``max_len`` positions."""
        n = z0.shape[1]
        m = self.cfg.max_len
        if n <= m:
            return z0, valid
        lengths = valid.sum(1)
        start = (torch.rand(z0.shape[0], device=z0.device, generator=generator)
                 * (lengths - m + 1).clamp_min(1)).long()  # (b,)
        idx = start[:, None] + torch.arange(m, device=z0.device)[None]  # (b, m)
        return z0.gather(1, idx[..., None].expand(-1, -1, z0.shape[2])), valid.gather(1, idx)

    # -- sampling ---------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, b: int, n: int, *, steps: int, eta: float = 0.0, generator: torch.Generator | None = None,
               known_z: Tensor | None = None, known: Tensor | None = None, valid: Tensor | None = None,
               device: torch.device | str = "cpu", on_step: Callable[[int, Tensor], None] | None = None,
               guidance: float = 1.0, project_below: float = 0.0, mean_below: float = 0.0) -> Tensor:
        """Draw latent sequences, optionally with some positions given.

        Args:
            b: rows.
            n: positions.
            steps: sampler steps (u from 1 to 0, shifted schedule).
            eta: 0 deterministic steps, 1 ancestral (fresh noise each step).
            generator: source of the noise.
            known_z: (b, n, D) clean latents at the known positions (ignored elsewhere).
            known: (b, n) bool, the given positions.
            valid: (b, n) bool real positions (default all).
            device: where the latents are drawn.
            on_step: called as ``on_step(i, estimate)`` after every step with the clean estimate
                (b, n, D), known positions filled in.
            guidance: context guidance where positions are known: the estimate is
                ``u + guidance · (c − u)``, c with the known positions given, u with nothing given
                (every position as the trajectory has it). 1 is the plain conditional estimate;
                > 1 pushes the unknown positions toward what the context implies beyond the
                prior's marginal. Rows without known positions are unaffected.
            project_below: for a prior trained with ``sphere_out: false``, estimates at steps whose
                σ is at most this are put on the sphere (0: only the last one; 1: every one, as
                ``sphere_out: true`` does).
            mean_below: for a mixture prior, at steps whose σ is at most this the estimate is the
                weighted mean of the candidates instead of a draw (0: a draw at every step).

        Returns:
            (b, n, D) latents on the sphere; known positions are exactly ``known_z``.
        """
        shape = (b, n, self.dim)
        if known is None:
            known = torch.zeros(b, n, dtype=torch.bool, device=device)
        if valid is None:
            valid = torch.ones(b, n, dtype=torch.bool, device=device)
        base = known_z if known_z is not None else torch.zeros(shape, device=device)
        z = torch.randn(shape, device=device, generator=generator)
        sig = schedule.sampler_sigmas(steps, self.cfg.shift)
        cond = None
        cond_u = None
        guided = guidance != 1.0 and bool(known.any())
        if guided and self.mix is not None:
            raise ValueError("context guidance needs a single-estimate prior (mixture: 0); this prior has "
                             f"mixture {self.cfg.mixture}")
        draw = generator if self.mix is not None else None
        if self.mix is not None and draw is None:
            draw = torch.Generator(device=device).manual_seed(0)
        nothing = torch.zeros_like(known)
        z_hat = z
        for i, (s, s_next) in enumerate(zip(sig[:-1], sig[1:], strict=True)):
            inp = torch.where(known[..., None], base, z)
            sigma = torch.full((b,), s, device=device)
            z_hat = self(inp, sigma, known, valid, cond, generator=draw if s > mean_below else None)
            cond = z_hat
            if guided:
                z_u = self(z, sigma, nothing, valid, cond_u)
                cond_u = z_u
                mix = z_u + guidance * (z_hat - z_u)
                if self.cfg.sphere_out:
                    mix = to_sphere(mix)
                z_hat = torch.where(known.any(1)[:, None, None], mix, z_hat)
            if not self.cfg.sphere_out and s <= project_below:
                z_hat = to_sphere(z_hat)
            if on_step is not None:
                on_step(i, torch.where(known[..., None], base, z_hat))
            z = schedule.step(z, z_hat, s, s_next, eta=eta, generator=generator)
        return torch.where(known[..., None], base, to_sphere(z_hat))


@register("prior", "sequence")
class SequencePriorConfig(ComponentConfig):
    """Diffusion prior over a level's latent sequence (x0 prediction, shifted cosine schedule)."""

    name: Literal["sequence"] = "sequence"
    d_model: int = Field(256, ge=8, description="width of the prior's encoder")
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    ffn_mult: int = Field(4, ge=1)
    max_len: int = Field(128, ge=2, description="longest sequence it reads; longer training rows are cut "
                         "to a random window of this many positions")
    shift: float = Field(3.0, ge=1.0, le=64.0, description="log-SNR shift of the cosine schedule (training "
                         "draws and sampler steps): > 1 puts them nearer σ = 1, where a latent of many "
                         "dimensions is decided")
    self_cond: float = Field(0.5, ge=0, le=1, description="probability of a self-conditioned training pass")
    lr_start: int = Field(0, ge=0, description="step at which the prior's parameters start their own warm-up "
                          "and cosine decay (lr 0 before); set it to where its loss ramps in")
    lr_scale: float = Field(0.25, gt=0, description="multiplies train.lr for the prior's parameters")
    infill: float = Field(0.3, ge=0, le=1, description="share of training rows that keep everything outside "
                          "one random span clean (learns p(gap | context))")
    sphere_out: bool = Field(True, description="put every clean estimate on the sphere; off, the estimate is the "
                             "unconstrained posterior-mean prediction (inside the ball where it is unsure) and only "
                             "the sample's last estimate is put on the sphere")
    memory: int = Field(0, ge=0, le=64, description="the prior also trains on the latent rows of this many "
                        "previous batches (a few steps old): more rows per step for the cost of its own passes")
    scatter: float = Field(0.0, ge=0, le=1, description="share of the infill rows whose unknown positions are "
                           "scattered (each unknown with a per-row probability in [0.05, 0.5]) instead of one span")

    mixture: int = Field(0, ge=0, le=256, description="0: one clean estimate per position (mean squared error, "
                         "the posterior mean); K >= 2: K candidate estimates with weights, trained as a "
                         "mixture, and the sampler draws one candidate per position at every step")
    mixture_temp: float = Field(0.05, gt=0, le=10, description="mixture: temperature τ of the responsibilities "
                                "softmax(log w − mean squared error / τ); smaller is closer to winner-takes-all")

    @model_validator(mode="after")
    def _heads(self) -> SequencePriorConfig:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.mixture == 1:
            raise ValueError("mixture must be 0 (a single estimate) or at least 2 candidates")
        return self

    def build(self, ctx: LevelContext) -> SequencePrior:
        """The prior over ``ctx``'s latents (dimension ``n_compress × d_model``)."""
        return SequencePrior(self, ctx.n_compress * ctx.d_model, ctx.attention)
