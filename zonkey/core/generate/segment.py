"""The per-segment strategy: the paper's §9.1 and §9.2 loops over one level's own denoiser.

Used where the starting level has no sequence prior, or when it is asked for (``per_segment``).
The latents of a sample drawn this way are independent of each other: nothing here models their
order.

**Sampling (§9.1).** At the starting level every sample is ``segments`` latents drawn from N(0, I)
on the sphere, denoised together over T steps with a linear schedule σ_max → σ_min, each step being the level objective's
own sampler step (decompress conditioned on σ, denoise, predict existence, re-compress weighted by
existence). The final decoded slots are truncated where existence < ε and the segments of a
sample are joined by the level's stitcher (hard concatenation when the level has none). Going
down, every stitched vector is a latent of the level below; all of them, across samples, are
decoded in one batch with a short loop of their own (noised to ``level_sigma`` and denoised back in
``level_steps`` steps), truncated, stitched, and so on. At level 0 the stitched vectors become bytes
through the tied embedding table.

Length is set by existence alone: no end token. Truncation is hard: the stitcher sees existence 1
on the kept slots and 0 after the cut, so the stitched length is exactly the sum of kept lengths.
All randomness comes from one seeded generator, so a seed gives the same texts (tracing does not
draw from it).

**Infilling (§9.2).** Infilling happens at one level L (default: level 1 when the model has one,
else level 0). Level L's *sequence* is its input vectors: bytes (through the tied table) at L = 0, the
clean latents of level L−1 in BOS order at L ≥ 1. Prefix and suffix are encoded separately up to
that sequence (deterministic splits, compression with the splitter's existence), and a document
``[prefix vectors, g gap vectors, suffix vectors]`` is built for every gap length g of the searched
range (``sample.infill_gap`` positions at L ≥ 1, where a position is one level-(L−1) segment, about
a word at L = 1; ``sample.infill_gap_bytes`` at L = 0).

The document is covered by *windows*: level-L segments of ``max_segment`` slots, each holding
``span`` document positions (default: all of them). A document that fits in one window is one
window starting at its first position (the paper's setting: prefix, gap and suffix in one level-L
segment). A longer one gets every window that overlaps the gap (stride 1), so each gap position is
seen together with the context on both sides. Every window slot inside the document has
existence 1 and every slot past its end existence 0 (prefix-only = continuation:
the text ends after the gap; suffix-only = a beginning).

Each window starts as a latent drawn from the prior and is denoised over T steps with the level
objective's own sampler step, whose denoiser is wrapped so that after every decode

1. the gap vectors of the document are the existence-weighted average of every window's estimate
   at that position (overlapping windows blended as the stitcher's weighted accumulation does),
2. the prefix and suffix slots are reset to their known vectors, exactly (``torch.where``), and the
   existence is forced as above,

and the objective then re-compresses these clamped slots with that existence (§9.2 steps 1-3).
Context therefore reaches the gap through the latents of the windows that contain both. At the end
the gap vectors are decoded to bytes: at L = 0 through the tied table (g bytes), at L ≥ 1 by
descending like the sampler (each gap vector is a level-(L−1) latent: short denoising loop,
truncation at ε, stitching, down to bytes).

All gap lengths of all (prefix, suffix) pairs run in one batch. The kept candidate maximises the
**context agreement** score: decode each window's final latent once more at σ = 0 without any
clamping and average, over the slots whose answer is known, e·cos(x̂, x) on prefix/suffix slots
(the model's own reconstruction of the known vector, weighted by its predicted existence there) and
1 − e on slots past the document's end (the model agrees the text ends). A gap whose content and
length let the latent explain its surroundings scores near 1; the score lies in [−1, 1].

With one level this is byte-level inpainting inside overlapping level-0 segments: a 1-level model
has no level whose slots are whole words, so the gap length is searched in bytes and the context it
sees is the few bytes that share a segment with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from zonkey.core.contracts.outputs import DenoiseOutput, InfillResult, SampleResult
from zonkey.core.generate.descent import ProgressFn, decode_down, descend
from zonkey.core.model.hierarchy import latents_to_sequence
from zonkey.core.model.inference import encode_to_level
from zonkey.core.model.level import Level
from zonkey.core.model.network import ZonkeyModel
from zonkey.core.nn.existence import NEG_INF
from zonkey.core.nn.sphere import to_sphere

__all__ = ["default_level", "infill_per_segment", "sample_per_segment"]


def default_level(model: ZonkeyModel) -> int:
    """Level 1 when the model has it (its slots are level-0 segments: word-like), else level 0."""
    return min(1, len(model.levels) - 1)


def _texts(pieces: list[bytes]) -> list[str]:
    return [p.decode("utf-8", errors="replace") for p in pieces]


@torch.no_grad()
def sample_per_segment(model: ZonkeyModel, n: int, *, level: int, steps: int, segments: int, epsilon: float,
                       generator: torch.Generator, trace: bool = False,
                       progress: ProgressFn | None = None) -> SampleResult:
    """``n`` texts, each ``segments`` independent latents of ``level`` denoised and decoded to bytes.

    Args:
        model: the model.
        n: texts.
        level: the level whose latents are drawn.
        steps: denoising steps at that level.
        segments: latents per text, stitched in order.
        epsilon: the truncation threshold.
        generator: the one source of noise.
        trace: record, at every step, the texts decoded from the current estimate (clean decodes
            down the levels, no noise drawn: tracing does not change the result).
        progress: called as ``progress(done, total)`` after every step.

    Returns:
        the texts, their byte lengths and raw bytes, and the trace if asked for.
    """
    cfg = model.recipe.sample
    device = next(model.parameters()).device
    lvl = model.levels[level]
    doc = torch.arange(n, device=device).repeat_interleave(segments)  # (s,) sample of each top latent
    z = lvl.objective.prior(n * segments, lvl.latent_dim, device=device, generator=generator)  # (s, k·d)
    sigmas = torch.linspace(cfg.sigma_max, cfg.sigma_min, steps + 1).tolist()
    traces: list[list[str]] = []
    for i, (a, b) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
        z, out = lvl.objective.step(z, a, b, lvl.denoise, lvl.compress)
        if trace:
            pieces = decode_down(model, level, out.x_hat, out.log_existence, doc, n, steps=0, sigma=0.0,
                                 epsilon=epsilon, generator=None)
            traces.append(_texts(pieces))
        if progress is not None:
            progress(i + 1, steps)
    out = lvl.denoise(z, z.new_zeros(z.shape[0]))
    pieces = decode_down(model, level, out.x_hat, out.log_existence, doc, n, steps=cfg.level_steps,
                         sigma=cfg.level_sigma, epsilon=epsilon, generator=generator)
    return SampleResult(texts=_texts(pieces), lengths=[len(p) for p in pieces], trace=traces,
                        sigmas=sigmas[:-1] if trace else [], raw=pieces)


@dataclass
class _Windows:
    """Every candidate document laid end to end (T positions) and the windows cut from them (R)."""

    known: Tensor  # (T, d) prefix/suffix vectors; gap rows hold the current estimate
    is_gap: Tensor  # (T,) bool
    doc_of: Tensor  # (T,) long candidate of each position
    idx: Tensor  # (R, m) long position of each window slot (clamped into its document)
    exists: Tensor  # (R, m) bool slot inside its document and inside the window's span
    past: Tensor  # (R, m) bool slot inside the span but past the document's end (scored: the text ends)
    cand: Tensor  # (R,) long candidate of each window


def _windows(docs: list[tuple[Tensor, int, Tensor]], m: int, generator: torch.Generator,
             span: int | None = None) -> _Windows:
    """The candidate documents laid end to end and the windows cut from them.

    ``docs`` holds per candidate (prefix (p, d), gap length g, suffix (q, d)); each window holds
    ``span`` (<= m, default m) document positions, its later slots have existence 0.
    """
    span = m if span is None else max(1, min(span, m))
    known, is_gap, doc_of = [], [], []
    base_l, st_l, len_l, cand_l = [], [], [], []
    base = 0
    for c, (pre, g, suf) in enumerate(docs):
        p, n = pre.shape[0], pre.shape[0] + g + suf.shape[0]
        noise = to_sphere(torch.randn(g, pre.shape[1], generator=generator, device=pre.device))
        known.append(torch.cat([pre, noise, suf]))
        pos = torch.arange(n)
        is_gap.append((pos >= p) & (pos < p + g))
        doc_of.append(torch.full((n,), c))
        starts = [0] if n <= span else list(range(max(0, p - span + 1), p + g))
        base_l += [base] * len(starts)
        st_l += starts
        len_l += [n] * len(starts)
        cand_l += [c] * len(starts)
        base += n
    device = docs[0][0].device
    rel = torch.tensor(st_l)[:, None] + torch.arange(m)[None, :]  # (R, m)
    length = torch.tensor(len_l)[:, None]
    in_span = (torch.arange(m) < span)[None, :]
    return _Windows(
        known=torch.cat(known),
        is_gap=torch.cat(is_gap).to(device),
        doc_of=torch.cat(doc_of).to(device),
        idx=(torch.tensor(base_l)[:, None] + torch.minimum(rel, length - 1)).to(device),
        exists=((rel < length) & in_span).to(device),
        past=((rel >= length) & in_span).to(device),
        cand=torch.tensor(cand_l).to(device),
    )


class _Clamp:
    """The level's denoiser with the gap blended across windows and the context clamped (§9.2)."""

    def __init__(self, level: Level, w: _Windows) -> None:
        self.level, self.w = level, w
        self.cur = w.known  # (T, d) current document estimate
        self.raw: DenoiseOutput | None = None  # the last unclamped denoiser output
        self.log_existence = torch.zeros(w.exists.shape, device=w.known.device).masked_fill(~w.exists, NEG_INF)

    def __call__(self, z: Tensor, sigma: Tensor, cond: Tensor | None = None) -> DenoiseOutput:
        w = self.w
        out = self.level.denoise(z, sigma, cond)
        self.raw = out
        weight = (out.log_existence.exp().clamp_min(1e-4) * w.exists)  # (R, m)
        sel = w.exists
        num = torch.zeros_like(self.cur).index_add(0, w.idx[sel], (to_sphere(out.x_hat) * weight[..., None])[sel])
        den = torch.zeros(self.cur.shape[0], device=z.device).index_add(0, w.idx[sel], weight[sel])
        blend = to_sphere(num / den.clamp_min(1e-12)[:, None])  # (T, d)
        self.cur = torch.where((w.is_gap & (den > 0))[:, None], blend, w.known)  # context: exactly the known vectors
        x = self.cur[w.idx] * w.exists[..., None]  # (R, m, d)
        return DenoiseOutput(x, out.bos_logits, self.log_existence, out.rough_bos_logits)


def _scores(clamp: _Clamp) -> Tensor:
    """(C,) context agreement of every candidate (see the module docstring)."""
    w, raw = clamp.w, clamp.raw
    assert raw is not None
    ctx = w.exists & ~w.is_gap[w.idx]  # (R, m)
    past = w.past
    cos = F.cosine_similarity(raw.x_hat, w.known[w.idx], dim=-1)  # (R, m)
    e = raw.log_existence.exp()
    agree = torch.where(ctx, e * cos, torch.zeros_like(cos)) + torch.where(past, 1 - e, torch.zeros_like(e))
    n_cand = int(w.doc_of.max()) + 1
    num = torch.zeros(n_cand, device=cos.device).index_add(0, w.cand, agree.sum(1))
    den = torch.zeros(n_cand, device=cos.device).index_add(0, w.cand, (ctx | past).sum(1).to(cos.dtype))
    return num / den.clamp_min(1)


def _gap_text(model: ZonkeyModel, level: int, clamp: _Clamp, *, steps: int, sigma: float, epsilon: float,
              generator: torch.Generator | None) -> list[bytes]:
    """Bytes of every candidate's current gap (one batched descent)."""
    w = clamp.w
    n_cand = int(w.doc_of.max()) + 1
    seq = latents_to_sequence(clamp.cur[w.is_gap], w.doc_of[w.is_gap], n_cand)
    return descend(model, level, seq.x, seq.valid, steps=steps, sigma=sigma, epsilon=epsilon, generator=generator)


@torch.no_grad()
def infill_per_segment(model: ZonkeyModel, pairs: Sequence[tuple[str, str]], *, level: int, gaps: Sequence[int],
                       steps: int, epsilon: float, generator: torch.Generator, span: int | None = None,
                       trace: bool = False, progress: ProgressFn | None = None) -> list[InfillResult]:
    """Fill the gap of every (prefix, suffix) pair in ``level``'s sequence; all in one batch.

    Args:
        model: the model.
        pairs: (prefix, suffix) texts, not both empty; one of the two may be empty.
        level: the level whose sequence holds the gap (its positions: bytes at level 0, latents of
            the level below above it).
        gaps: the gap lengths searched, in positions of that sequence.
        steps: denoising steps.
        epsilon: truncation threshold when descending from level >= 1.
        generator: the one source of noise.
        span: document positions per window (default: the level's ``max_segment``).
        trace: record the decoded gap of every candidate at every step.
        progress: called as ``progress(done, total)`` after every step.

    Returns:
        one result per pair, in order: the candidate of the best context agreement.
    """
    cfg = model.recipe.sample
    device = model.table.device
    lengths = list(gaps)
    enc = encode_to_level(model, [p for p, _ in pairs] + [s for _, s in pairs], level)
    pre, suf = enc[: len(pairs)], enc[len(pairs):]
    cands = [(i, g) for i in range(len(pairs)) for g in lengths]
    lvl = model.levels[level]
    w = _windows([(pre[i], g, suf[i]) for i, g in cands], lvl.cfg.max_segment, generator, span)
    clamp = _Clamp(lvl, w)
    z = lvl.objective.prior(w.cand.shape[0], lvl.latent_dim, device=device, generator=generator)  # (R, k·d)
    sigmas = torch.linspace(cfg.sigma_max, cfg.sigma_min, steps + 1).tolist()
    traces: list[list[str]] = []
    for t, (a, b) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
        z, _ = lvl.objective.step(z, a, b, clamp, lvl.compress)
        if trace:
            decoded = _gap_text(model, level, clamp, steps=0, sigma=0.0, epsilon=epsilon, generator=None)
            traces.append([g.decode("utf-8", errors="replace") for g in decoded])
        if progress is not None:
            progress(t + 1, steps)
    clamp(z, z.new_zeros(z.shape[0]))  # final clean decode: the gap estimate and the unclamped output
    scores = _scores(clamp).tolist()
    decoded = _gap_text(model, level, clamp, steps=cfg.level_steps, sigma=cfg.level_sigma, epsilon=epsilon,
                        generator=generator)
    results = []
    per = len(lengths)
    for i, (p, s) in enumerate(pairs):
        rows = range(i * per, (i + 1) * per)
        best = max(rows, key=lambda c: scores[c])
        text = decoded[best].decode("utf-8", errors="replace")
        cand_info = [{"gap_len": cands[c][1], "gap": decoded[c].decode("utf-8", errors="replace"),
                      "bytes": len(decoded[c]), "score": round(scores[c], 6)} for c in rows]
        results.append(InfillResult(
            text=p + text + s, gap=text, score=scores[best], gap_len=cands[best][1], level=level,
            candidates=cand_info, prefix_vectors=pre[i], suffix_vectors=suf[i],
            slots=clamp.cur[w.doc_of == best], raw=decoded[best],
            trace=[[step[c] for c in rows] for step in traces], sigmas=sigmas[:-1] if trace else [],
        ))
    return results
