"""``context``: a sequence prior whose posterior is a context model times each position's own likelihood.

For a position i with noised latent z_i and clean segment w, Bayes' rule splits the denoiser's
posterior into two factors:

    log p(w | z_i, others) = log p(w | others) + log p(z_i | w) + const.

The second factor is exact and free: √(1−σ)/σ·⟨z_i, B_w⟩ for a bank entry (:mod:`.heads`). This
prior learns only the first, and makes the network's structure say so: the context vector g_i of
position i is computed from every position *except* i (a window of its neighbours, each through
its own offset's map, and the mean of the whole row), and only then is i's own noised latent
added. Because g_i never sees position i, every position of a row is a training target in the
same pass, with its neighbours clean (the situation of infilling and of the held-out pseudo-
likelihood) or noised at the row's σ (the situation of sampling from noise) or a mix of both.
The transformer prior (``sequence``) must hide a position to score it, so it trains on the noised
share of a row only; this one scores every position of every row: a dense target for every
latent it reads, which is what a CPU budget of a few thousand steps needs.

Known (clean) neighbours also enter through a learned embedding of their bank class, so each
segment of the vocabulary has a free context vector of its own (not only a linear map of its
latent, which is set by its spelling).

Sampling, infilling and the held-out likelihood use :class:`~.sequence.SequencePrior`'s: this class
changes how the hidden state is computed and how a batch is scored.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from zonkey.components.prior.heads import BankHead
from zonkey.components.prior.sequence import SIGMA_TOP, SequencePrior, SequencePriorConfig
from zonkey.core.contracts.registry import register
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.nn import schedule
from zonkey.core.nn.transformer import FeedForward


class ContextPrior(SequencePrior):
    """Vocabulary-headed prior whose context at a position excludes that position (module docstring)."""

    cfg: ContextPriorConfig

    def __init__(self, cfg: ContextPriorConfig, dim: int, attention: nn.Module | None, max_bytes: int = 64) -> None:
        super().__init__(cfg, dim, attention, max_bytes)
        w = cfg.d_model
        k = cfg.window
        del self.encoder, self.pos  # the transformer's parts; this prior mixes through its window
        # a learned input vector per bank class, read at known (clean) positions; "other" last
        self.embed = nn.Embedding(cfg.bank_size + 1, w)
        nn.init.normal_(self.embed.weight, std=0.02)
        # what a neighbour outside the row reads as: left of its start, right of its end
        self.edge = nn.Parameter(torch.randn(2, w) * 0.02)
        self.norm_in = nn.LayerNorm(w)
        # one map per offset −k..−1, +1..+k (the centre is left out): one linear layer over the window
        self.window = nn.Linear(2 * k * w, w)
        self.bag = nn.Linear(w, w)  # the mean of the rest of the row (topic)
        # the position's own noised latent and noise level join after the context is formed
        self.self_in = nn.Linear(dim, w)
        self.blocks = nn.ModuleList(FeedForward(w, cfg.ffn_mult) for _ in range(cfg.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(w) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(w)
        self.norm_ctx = nn.LayerNorm(w)
        self.ema_decay = cfg.ema_decay  # the trainer's weight average keeps a shorter memory of this prior

    # -- the network ------------------------------------------------------------------------------
    def _inputs(self, ctx_z: Tensor, known: Tensor, valid: Tensor, t: Tensor, cond: Tensor | None,
                cls: Tensor | None) -> Tensor:
        """(b, n, w) what each position shows its neighbours."""
        head = self.head
        assert isinstance(head, BankHead)
        e = self.inp(ctx_z) + t[:, None] + known[..., None].to(ctx_z.dtype) * self.known_flag
        if bool(known.any()):
            c = head.classes(ctx_z[known]) if cls is None else cls[known]
            e = e.index_put((known,), e[known] + self.embed(c))
        if cond is not None:
            e = e + self.cond_in(cond.masked_fill(known[..., None], 0.0))
        e = self.norm_in(e)
        return torch.where(valid[..., None], e, self.edge[1])

    def _context(self, e: Tensor, valid: Tensor) -> Tensor:
        """(b, n, w) the context vector of every position from the others' inputs ``e``."""
        b, n, w = e.shape
        k = self.cfg.window
        padded = torch.cat([self.edge[0].expand(b, k, w), e, self.edge[1].expand(b, k, w)], dim=1)
        win = padded.unfold(1, 2 * k + 1, 1)  # (b, n, w, 2k + 1)
        win = torch.cat([win[..., :k], win[..., k + 1:]], dim=-1)  # the centre left out
        g = self.window(win.transpose(-1, -2).reshape(b, n, 2 * k * w))
        v = valid[..., None].to(e.dtype)
        total = (e * v).sum(1, keepdim=True)
        count = v.sum(1, keepdim=True)
        rest = (total - e * v) / (count - v).clamp_min(1.0)  # the row's mean without the position itself
        return g + self.bag(rest)

    def hidden_split(self, ctx_z: Tensor, self_z: Tensor, sigma: Tensor, known: Tensor, valid: Tensor,
                     cond: Tensor | None = None, cls: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The hidden states, and the context vectors alone, when neighbours show ``ctx_z``.

        Each position reads its own ``self_z``; its context vector comes from the other positions only.
        Returns (b, n, w) hidden states and (b, n, w) context vectors.

        Args:
            ctx_z: (b, n, D) what each position shows the others: clean where ``known``, noised elsewhere.
            self_z: (b, n, D) each position's own noised latent (its own input only).
            sigma: (b,) the noise share of the rows' unknown positions.
            known: (b, n) bool, positions whose ``ctx_z`` is clean.
            valid: (b, n) bool, real positions.
            cond: optional (b, n, D) previous clean estimate (self-conditioning), read at unknown positions.
            cls: optional (b, n) bank classes of the clean latents (read where ``known``; computed
                from ``ctx_z`` when not given).
        """
        t = self.time(self._time_features(sigma))  # (b, w)
        g = self._context(self._inputs(ctx_z, known, valid, t, cond, cls), valid)
        h = g + self.self_in(self_z) + t[:, None]
        for norm, block in zip(self.norms, self.blocks, strict=True):
            h = h + block(norm(h))
        return self.norm_out(h), self.norm_ctx(g)

    def hidden(self, z: Tensor, sigma: Tensor, known: Tensor, valid: Tensor, cond: Tensor | None = None) -> Tensor:
        """As :meth:`SequencePrior.hidden`: each position reads its own input and shows it to the others."""
        return self.hidden_split(z, z, sigma, known, valid, cond)[0]

    def features(self, z: Tensor, sigma: Tensor, known: Tensor, valid: Tensor, cond: Tensor | None = None
                 ) -> tuple[Tensor, Tensor | None]:
        """The hidden states and the context vectors ("other"'s mean is read from the context alone)."""
        return self.hidden_split(z, z, sigma, known, valid, cond)

    @torch.no_grad()
    def row_log_likelihood(self, z: Tensor, valid: Tensor) -> Tensor:
        """(b,) the pseudo-log-likelihood of each row: Σ_i log p(class_i | every other position clean).

        One pass: every position shows its clean latent to the others and reads pure noise itself
        (σ → 1, where its own likelihood term vanishes), so its distribution is its context's alone.
        """
        head = self.head
        assert isinstance(head, BankHead)
        head.require_bank()
        sigma = torch.full((z.shape[0],), SIGMA_TOP, device=z.device)
        h, g = self.hidden_split(z, torch.zeros_like(z), sigma, valid, valid)
        logits, _, _ = head.logits(h[valid], torch.zeros_like(z[valid]), sigma[:, None].expand(valid.shape)[valid],
                                   g[valid])
        lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, head.classes(z[valid])[:, None])[:, 0]
        out = torch.zeros(valid.shape, device=z.device)
        out[valid] = lp
        return out.sum(1)

    # -- training ---------------------------------------------------------------------------------
    def loss(self, z0: Tensor, valid: Tensor, generator: torch.Generator | None = None,
             classes: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy of every real position's class given the others, and m̂'s error off the bank.

        Each row draws σ (``noise``; a share ``top`` of the rows at pure noise, the masked-model
        case) and one of three contexts: a share ``clean_rows`` shows every neighbour clean, a
        share ``anchors`` a random share of them clean, the rest all noised at σ (as sampling
        from noise sees them), with self-conditioning on a first estimate with probability
        ``self_cond``. Every position reads its own latent noised at σ. ``classes``: as
        :meth:`SequencePrior.loss`.
        """
        head = self.head
        assert isinstance(head, BankHead)
        if not head.ready:
            return sum((p.sum() * 0.0 for p in self.parameters()), z0.new_zeros(())), {"prior_positions": 0.0}
        z0, valid, classes = self._crop(z0.detach(), valid, generator, classes)
        b, n = valid.shape
        dev = z0.device
        sigma = self.draw_sigma(b, dev, generator)
        top = torch.rand(b, device=dev, generator=generator) < self.cfg.top
        sigma = torch.where(top, torch.full_like(sigma, 1 - 1e-4), sigma)
        eps = torch.randn(z0.shape, device=dev, dtype=z0.dtype, generator=generator)
        zt = schedule.add_noise(z0, sigma, eps)
        u = torch.rand(b, device=dev, generator=generator)
        clean_rows = u < self.cfg.clean_rows
        anchor_rows = (u >= self.cfg.clean_rows) & (u < self.cfg.clean_rows + self.cfg.anchors)
        r = torch.rand(b, 3, device=dev, generator=generator).median(-1).values  # Beta(2, 2)
        holes = torch.rand(b, n, device=dev, generator=generator) < r[:, None]
        known = (clean_rows[:, None] | (anchor_rows[:, None] & ~holes)) & valid
        ctx_z = torch.where(known[..., None], z0, zt)
        if classes is None:
            classes = head.classes(z0)
        classes = classes.masked_fill(~valid, 0)  # (b, n), once for the inputs and the targets
        cond = None
        noisy = valid.any(1) & ~clean_rows  # rows with unknown positions: self-conditioning applies there
        if (self.cfg.self_cond > 0 and bool(noisy.any())
                and float(torch.rand((), generator=generator)) < self.cfg.self_cond):
            with torch.no_grad():
                first, g1 = self.hidden_split(ctx_z[noisy], ctx_z[noisy], sigma[noisy], known[noisy], valid[noisy],
                                              None, classes[noisy])
                lg, oth, _ = head.logits(first, ctx_z[noisy], sigma[noisy][:, None].expand(first.shape[:2]), g1)
                cond = torch.zeros_like(z0)
                cond[noisy] = head.estimate(lg, oth).masked_fill(~valid[noisy][..., None], 0.0)
        h, g = self.hidden_split(ctx_z, zt, sigma, known, valid, cond, classes)
        sig = sigma[:, None].expand(b, n)[valid]
        logits, _, mu = head.logits(h[valid], zt[valid], sig, g[valid])
        cls = classes[valid]
        ce = F.cross_entropy(logits.float(), cls)
        off = cls == head.size
        err = (mu - z0[valid]).pow(2).mean(-1)
        mse = (err * off).sum() / off.sum().clamp_min(1)
        stats = {"prior_positions": float(valid.sum()),
                 "prior_other_share": float(off.float().mean()) if len(cls) else 0.0,
                 "prior_top1": float((logits.argmax(-1) == cls).float().mean()) if len(cls) else 0.0}
        return ce + mse.to(ce.dtype), stats


@register("prior", "context")
class ContextPriorConfig(SequencePriorConfig):
    """A vocabulary-headed prior whose context at a position is read from the other positions only."""

    name: Literal["context"] = "context"  # type: ignore[assignment]
    head: Literal["bank"] = Field("bank", description="always bank: the context factor is a distribution "
                                  "over the level's vocabulary")
    d_model: int = Field(256, ge=8, le=16384, description="width of the context vectors")
    layers: int = Field(2, ge=0, le=64, description="position-wise MLP blocks after the context is formed")
    heads: int = Field(1, ge=1, le=256, description="unused (kept for the shared schema)")
    window: int = Field(3, ge=1, le=64, description="neighbours read on each side, each through its own map")
    noise: Literal["cosine", "band"] = Field("band", description="training noise of each row: cosine (the shifted "
                                             "schedule) or band (logit σ ~ Gumbel(band_loc, band_scale))")
    top: float = Field(0.25, ge=0, le=1, description="share of rows whose own latents are pure noise (σ → 1)")
    clean_rows: float = Field(0.5, ge=0, le=1, description="share of rows whose neighbours are all clean")
    anchors: float = Field(0.2, ge=0, le=1, description="share of rows that show a random share (Beta(2, 2)) of "
                           "their positions clean; the other rows show every position noised")
    infill: float = Field(0.0, ge=0, le=0, description="unused: every position is a target in every row")
    bank_every: int = Field(0, ge=0, le=1_000_000, description="rebuild (recount) the bank every this many steps "
                            "while the prior trains (0: only when it starts; bank_refresh keeps its latents current)")
    ema_decay: float = Field(0.98, ge=0, lt=1, description="decay of the weight average of this prior's parameters "
                             "(eval and sampling read the average)")
    lr_scale: float = Field(1.0, gt=0, le=1000, description="multiplies train.lr for the prior's parameters")

    def build(self, ctx: LevelContext) -> ContextPrior:
        """The prior over ``ctx``'s latents (dimension ``n_compress × d_model``)."""
        if self.clean_rows + self.anchors > 1:
            raise ValueError(f"clean_rows ({self.clean_rows}) + anchors ({self.anchors}) is a share of the rows: "
                             "at most 1")
        return ContextPrior(self, ctx.n_compress * ctx.d_model, ctx.attention, ctx.max_segment)
