"""``ddmm``: the decompress-and-denoise stack of §6.

The prompt is [noise-conditioning vector v_σ, the k latent vectors], all with existence 1, where
v_σ = (1 − σ)·v_clean + σ·v_noisy. A light decoder expands the prompt to ``max_segment`` slots:
``autoregressive`` (as in the paper: a causal decoder unrolled one slot at a time, each new slot
reading the previous outputs) or ``parallel`` (learned query slots read the prompt in one pass:
much faster on CPU) or ``linear`` (a linear map from the k latents to m slot vectors, then the
decoder layers over [prompt, slots]: the easiest for a small model to learn position binding). A
BOS head on this rough expansion gives a first existence; a multi-layer probabilistic-attention
encoder refines the slots under that existence; a final BOS head gives the existence of the output.

``slots: causal`` lets slot j read the prompt and the slots before it only (decoder and refining
encoder alike), so the first L slots of a decoding do not depend on the slots after them: the
denoiser can then decode a segment at the length its loss reads (``model.packing: buckets``) and
give exactly the first L slots of the full decoding.

Noise level convention (all of zonkey): σ ∈ [0, 1], σ = 0 is clean, z_σ = sqrt(1 − σ)·z + sqrt(σ)·ε.
"""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange, repeat
from pydantic import Field
from torch import Tensor, nn

from zonkey.core.contracts.outputs import DenoiseOutput
from zonkey.core.contracts.registry import ComponentConfig, register
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.nn.existence import float32_logits, log_existence_from_bos_logits
from zonkey.core.nn.transformer import Encoder


class DdmmDenoiser(nn.Module):
    """Prompt [v_σ, k latents] -> rough slots -> BOS head -> refining encoder -> final BOS head (§6)."""

    def __init__(self, ctx: LevelContext, cfg: DdmmDenoiserConfig) -> None:
        super().__init__()
        d, self.k, self.m = ctx.d_model, ctx.n_compress, ctx.max_segment
        self.mode = cfg.decoder
        self.causal = cfg.slots == "causal"
        # slots that read only earlier slots give the same first L slots at any length
        self.packs_slots = self.causal
        # ... and each segment can be decoded at its own length in one call (``lengths``), which
        # the one-slot-at-a-time decoder does not do
        self.packs_rows = self.causal and self.mode != "autoregressive"
        self.v_clean = nn.Parameter(torch.randn(d) * 0.02)
        self.v_noisy = nn.Parameter(torch.randn(d) * 0.02)
        self.prompt_pos = nn.Parameter(torch.randn(self.k + 1, d))
        self.slot_pos = nn.Parameter(torch.randn(self.m, d))
        self.latent_in = nn.Linear(d, d)
        # self-conditioning (used by the `flow` objective): a previous clean estimate, added to the
        # latent prompt through a zero-initialised projection so it starts as a no-op
        self.self_cond = nn.Linear(d, d)
        nn.init.zeros_(self.self_cond.weight)
        nn.init.zeros_(self.self_cond.bias)
        self.decoder = Encoder(d, ctx.heads, cfg.decoder_layers, ctx.attention, ctx.ffn_mult, ctx.dropout)
        if self.mode == "linear":
            self.expand_linear = nn.Linear(self.k * d, self.m * d)
        if self.mode == "autoregressive":
            self.start = nn.Parameter(torch.randn(d) * 0.02)
            self.feedback = nn.Linear(d, d)
        self.rough_bos = nn.Linear(d, 1)
        self.encoder = Encoder(d, ctx.heads, cfg.layers, ctx.attention, ctx.ffn_mult, ctx.dropout)
        self.bos = nn.Linear(d, 1)
        self.out = nn.Linear(d, d)

    def prompt(self, z: Tensor, sigma: Tensor, cond: Tensor | None = None) -> Tensor:
        """Z (s, k·d), sigma (s,), optional self-conditioning cond (s, k·d) -> prompt (s, k+1, d)."""
        v = (1 - sigma)[:, None] * self.v_clean + sigma[:, None] * self.v_noisy  # (s, d)
        lat = self.latent_in(rearrange(z, "s (k d) -> s k d", k=self.k))  # (s, k, d)
        if cond is not None:
            lat = lat + self.self_cond(rearrange(cond, "s (k d) -> s k d", k=self.k))
        return torch.cat([v[:, None], lat], dim=1) + self.prompt_pos  # (s, k+1, d)

    def expand(self, prompt: Tensor, slots: int | None = None, keep: Tensor | None = None) -> Tensor:
        """Prompt (s, k+1, d) -> rough slots (s, m, d), or the first ``slots`` of them.

        ``keep`` (s, k+1+slots) bool: compute only these positions of the decoder (the others come
        out 0; ``linear`` and ``parallel`` only).
        """
        s, p = prompt.shape[0], prompt.shape[1]
        n = self.m if slots is None else slots
        pos = self.slot_pos[:n]
        if self.mode == "linear":
            lat = rearrange(prompt[:, 1:], "s k d -> s (k d)")
            w, bias = self.expand_linear.weight, self.expand_linear.bias
            if n < self.m:  # slot j's rows of the map: the first n slots' vectors
                w, bias = w[: n * w.shape[0] // self.m], bias[: n * bias.shape[0] // self.m]
            slots_in = rearrange(nn.functional.linear(lat, w, bias), "s (m d) -> s m d", m=n) + pos
            h = torch.cat([prompt, slots_in], dim=1)
            return self.decoder(h, prompt.new_zeros(s, p + n), causal=self.causal, keep=keep)[:, p:]  # (s, m, d)
        if self.mode == "parallel":
            h = torch.cat([prompt, repeat(pos, "m d -> s m d", s=s)], dim=1)  # (s, k+1+m, d)
            le = prompt.new_zeros(s, p + n)
            return self.decoder(h, le, causal=self.causal, keep=keep)[:, p:]  # (s, m, d)
        # autoregressive: slot j reads the prompt and the outputs of slots < j (causal)
        inp = [self.start.expand(s, -1)[:, None] + self.slot_pos[:1]]
        outs = []
        for j in range(n):
            h = torch.cat([prompt] + inp, dim=1)  # (s, k+1+j+1, d)
            y = self.decoder(h, prompt.new_zeros(s, h.shape[1]), causal=True)[:, -1]  # (s, d)
            outs.append(y)
            if j + 1 < n:
                inp.append((self.feedback(y) + self.slot_pos[j + 1])[:, None])
        return torch.stack(outs, dim=1)  # (s, m, d)

    def forward(self, z: Tensor, sigma: Tensor, cond: Tensor | None = None, *, slots: int | None = None,
                lengths: Tensor | None = None) -> DenoiseOutput:
        """Denoise.

        Args:
            z: (s, k·d) noisy latents.
            sigma: (s,) noise levels in [0, 1] (0 clean).
            cond: (s, k·d) an optional self-conditioning estimate of the clean latents.
            slots: decode only the first ``slots`` slots (``slots: causal`` only; default m).
            lengths: (s,) decode segment i at its first ``lengths[i]`` slots only (<= ``slots``;
                ``slots: causal`` and a ``linear`` or ``parallel`` decoder). Its later slots are
                not computed: they come out 0, with BOS logits 0 and existence 0 (−inf in log space).

        Returns:
            The :class:`DenoiseOutput` with slots (s, m, d) (or (s, slots, d)).

        Raises:
            ValueError: ``slots`` or ``lengths`` given to a denoiser that cannot decode a segment
                at fewer slots.
        """
        if slots is not None and (slots < self.m and not self.causal or not 1 <= slots <= self.m):
            raise ValueError(f"the ddmm denoiser decodes {slots} of {self.m} slots only with slots: causal "
                             f"and 1 <= slots <= max_segment")
        if lengths is not None and not self.packs_rows:
            raise ValueError("the ddmm denoiser decodes each segment at its own length only with slots: causal "
                             "and a linear or parallel decoder")
        prompt = self.prompt(z, sigma, cond)
        s, p = prompt.shape[0], prompt.shape[1]
        n = self.m if slots is None else slots
        inside = keep = None
        if lengths is not None:
            inside = torch.arange(n, device=z.device)[None, :] < lengths[:, None]  # (s, n)
            keep = torch.cat([inside.new_ones(s, p), inside], dim=1)  # (s, k+1+n)
        rough = self.expand(prompt, slots, keep)  # (s, m, d)
        rough_logits = float32_logits(self.rough_bos, rough).squeeze(-1)  # (s, m)
        rough_le = log_existence_from_bos_logits(rough_logits)  # (s, m)
        le = torch.cat([rough_le.new_zeros(s, p), rough_le], dim=1)  # (s, k+1+m)
        h = self.encoder(torch.cat([prompt, rough + self.slot_pos[:n]], dim=1), le,
                         causal=self.causal, keep=keep)[:, p:]  # (s, m, d)
        logits = float32_logits(self.bos, h).squeeze(-1)  # (s, m)
        x_hat = self.out(h)
        if inside is not None:  # the slots left out: 0, BOS logit 0, existence 0
            outside = ~inside
            x_hat = x_hat.masked_fill(outside[..., None], 0.0)
            logits = logits.masked_fill(outside, 0.0)
            rough_logits = rough_logits.masked_fill(outside, 0.0)
            log_e = log_existence_from_bos_logits(logits).masked_fill(outside, float("-inf"))
        else:
            log_e = log_existence_from_bos_logits(logits)
        return DenoiseOutput(x_hat=x_hat, bos_logits=logits, log_existence=log_e, rough_bos_logits=rough_logits)


@register("denoiser", "ddmm")
class DdmmDenoiserConfig(ComponentConfig):
    """Prompt [v_σ, k latents] -> light decoder -> BOS head -> probabilistic-attention encoder (§6)."""

    name: Literal["ddmm"] = "ddmm"
    decoder: Literal["parallel", "linear", "autoregressive"] = Field(
        "parallel", description="how the prompt is expanded to m slots: learned queries (parallel), a linear map of "
        "the latents to m slots refined by the decoder layers (linear), or one slot at a time (autoregressive)")
    decoder_layers: int = Field(1, ge=1, le=64)
    layers: int = Field(2, ge=1, le=64, description="denoiser encoder layers")
    slots: Literal["bidirectional", "causal"] = Field(
        "bidirectional", description="how the slots read each other: both ways, or each only the slots before it "
        "(causal: a segment can be decoded at its own length, which model.packing: buckets needs)")

    def build(self, ctx: LevelContext) -> DdmmDenoiser:
        """The module of this config for the level that ``ctx`` describes."""
        return DdmmDenoiser(ctx, self)
