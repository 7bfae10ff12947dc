"""Where a level's content is decided: denoising real latents back from noise, and samples of its prior.

For one level, the clean latents of held-out text (the deterministic encoder walk) are noised to
each σ of a sweep along the level objective's own path and run back to 0 by the level's own
sampler (``Level.decode``). Each σ row reports:

- ``char_acc``: the text decoded from those latents against the original, per document,
  1 − edit distance / input bytes (``RoundTrip.char_acc``). Level 0's slots are bytes; above, every
  slot a level keeps (existence >= 0.5) is a latent of the level below, decoded clean (σ = 0) down
  to bytes, so only the swept level is noised. At σ = 0 this is ``zonkey eval``'s
  ``roundtrip0_char_acc`` (level 0) or the level's round-trip ``char_acc`` (level >= 1);
- ``byte_acc`` (level 0): own-span bytes equal at the same slot, ``recon_acc`` of ``zonkey eval``
  at σ = 0 and ``recon_acc_noise`` above; ``slot_top1`` (levels >= 1): top-1 retrieval of each
  decoded own-span slot among the level's input vectors of its batch (``l1_recon_acc`` at σ = 0);
- ``latent_top1``: the decoded output re-compressed (``Level.compress``) retrieves its own
  original latent by cosine among all the held-out latents of that level in the evaluated batches.
  An original that ties the best cosine counts as retrieved (identical segments have identical
  latents).

The sample rows score texts generated from a level's prior alone (``sample(model, n, level=L)``:
its per-segment denoiser, and its sequence prior where it has one) with the generation metrics of
``zonkey eval`` (:func:`zonkey.core.evaluate.generation.text_row`) beside held-out text cut to the same lengths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
from torch import Tensor

from zonkey.core.contracts.outputs import DenoiseOutput
from zonkey.core.evaluate.roundtrip import RoundTrip
from zonkey.core.model.inference import decode_bytes_from_slots
from zonkey.core.model.level import Level
from zonkey.core.model.network import ZonkeyModel
from zonkey.core.nn.existence import kept_mask
from zonkey.core.nn.losses import contrastive_recon_loss
from zonkey.core.nn.sphere import to_sphere
from zonkey.data import ByteBatches
from zonkey.diagnose import DiagnosticError

#: the noise levels of the sweep (0: the clean reference row)
SIGMAS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0)
#: the existence a decoded slot needs to be kept (as ``zonkey eval``'s round trips)
KEEP = 0.5
#: cosine margin under which an original latent still ties the best match
TIE = 1e-6


@dataclass
class SigmaRow:
    """One σ of the sweep (see the module docstring); ``byte_acc`` at level 0, ``slot_top1`` above."""

    sigma: float
    char_acc: float
    latent_top1: float
    byte_acc: float | None = None
    slot_top1: float | None = None


@dataclass
class LevelDenoise:
    """The sweep and the prior samples of one level.

    Attributes:
        level: the level's index.
        latents: held-out latents of the level in the evaluated batches (the retrieval pool).
        batches: batches evaluated.
        steps: sampler steps from each σ back to 0.
        rows: one row per σ, in the order swept.
        samples: ``{"n", "steps", "rows": {name: text_row}, "examples"}`` (None: not asked for).
    """

    level: int
    latents: int
    batches: int
    steps: int
    rows: list[SigmaRow]
    samples: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view of every field."""
        return {"level": self.level, "latents": self.latents, "batches": self.batches, "steps": self.steps,
                "rows": [asdict(r) for r in self.rows], "samples": self.samples}

    def lines(self) -> list[str]:
        """The text report: the σ table, then the sample rows with two examples each."""
        second = "byte acc" if self.level == 0 else "slot top-1"
        out = [f"level {self.level}: {self.latents} held-out latents in {self.batches} batch(es), "
               f"{self.steps} sampler step(s) from σ back to 0",
               f"  {'σ':>5}  {'char acc':>8}  {second:>10}  {'latent top-1':>12}"]
        for r in self.rows:
            acc = r.byte_acc if self.level == 0 else r.slot_top1
            out.append(f"  {r.sigma:>5g}  {r.char_acc:8.4f}  {acc if acc is not None else float('nan'):10.4f}  "
                       f"{r.latent_top1:12.4f}")
        if self.samples:
            out += _sample_lines(self.level, self.samples)
        return out


def _sample_lines(level: int, samples: dict[str, Any]) -> list[str]:
    out = [f"  samples of level {level}'s prior alone (n {samples['n']}, {samples['steps']} steps):",
           f"  {'':<12}  {'valid words':>11}  {'judge bits/B':>12}  {'byte entropy':>12}  {'mean bytes':>10}"]
    for name, row in samples["rows"].items():
        bpb = row["judge_bpb"]
        out.append(f"  {name:<12}  {row['valid_word_rate']:11.3f}  {bpb if bpb is not None else float('nan'):12.2f}  "
                   f"{row['byte_entropy']:12.2f}  {row['mean_bytes']:10.1f}")
    for name, texts in samples["examples"].items():
        out += [f"  e.g. {name}: {t[:100]!r}" for t in texts[:2]]
    return out


@dataclass
class _Counts:
    """Counts of one σ over the batches."""

    rt: RoundTrip = field(default_factory=RoundTrip)
    hit: int = 0
    tot: int = 0
    latents: list[Tensor] = field(default_factory=list)  # (s, k·d) re-compressed decodings per batch


def check_levels(model: ZonkeyModel, level: int | None) -> list[int]:
    """The levels to diagnose: ``[level]``, or every level when None.

    Raises:
        DiagnosticError: the level does not exist.
    """
    n = len(model.levels)
    if level is None:
        return list(range(n))
    if not 0 <= level < n:
        raise DiagnosticError(f"--level {level}: the model has level(s) 0..{n - 1}")
    return [level]


def check_sigmas(sigmas: Sequence[float]) -> list[float]:
    """The sweep's noise levels, each checked to lie in [0, 1].

    Raises:
        DiagnosticError: none given, or one outside [0, 1].
    """
    bad = [s for s in sigmas if not 0.0 <= s <= 1.0]
    if not sigmas or bad:
        raise DiagnosticError(f"noise levels must lie in [0, 1], got {list(sigmas) or 'none'}")
    return list(sigmas)


def _bytes_down(model: ZonkeyModel, level: int, out: DenoiseOutput, doc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Decoded slots of ``level`` down to bytes, through the levels below.

    Every kept slot is a latent of the level below, decoded clean, until level 0.

    Args:
        model: the model.
        level: the level ``out`` belongs to.
        out: its decoding: slots (s, m, d) and existence (s, m).
        doc: (s,) document of each segment.

    Returns:
        Bytes (r, m0), kept slots (r, m0) bool and each row's document (r,), rows in document order.
    """
    for lvl in range(level, 0, -1):
        kept = kept_mask(out.log_existence, KEEP)
        doc = doc[:, None].expand_as(kept)[kept]
        out = _level(model, lvl - 1).decode(out.x_hat[kept])
    return decode_bytes_from_slots(out.x_hat, model.table), kept_mask(out.log_existence, KEEP), doc


def _level(model: ZonkeyModel, index: int) -> Level:
    return cast(Level, model.levels[index])


def _retrieval(pool: Tensor, queries: Tensor, chunk: int = 2048) -> float:
    """Share of ``queries`` (N, D) whose own row of ``pool`` (N, D) has the best cosine (ties count)."""
    if not pool.shape[0]:
        return 0.0
    p, q = to_sphere(pool), to_sphere(queries)
    hits = 0
    for a in range(0, q.shape[0], chunk):
        sims = q[a:a + chunk] @ p.T  # (c, N)
        own = sims[torch.arange(sims.shape[0]), torch.arange(a, a + sims.shape[0])]
        hits += int((own >= sims.max(1).values - TIE).sum())
    return hits / q.shape[0]


@torch.no_grad()
def denoise_sweep(model: ZonkeyModel, batches: ByteBatches, level: int, *, sigmas: Sequence[float] = SIGMAS,
                  steps: int | None = None, seed: int = 0, max_batches: int = 2,
                  progress: Callable[[int, int], None] | None = None) -> LevelDenoise:
    """Noise the held-out latents of ``level`` to every σ, denoise them back and score the result.

    Args:
        model: a trained model (put in eval mode).
        batches: held-out batches; the first ``max_batches`` are used.
        level: the level swept.
        sigmas: noise levels in [0, 1], in the order reported.
        steps: sampler steps from σ back to 0 (default: the recipe's ``sample.level_steps``).
        seed: seed of the noise (one generator per call: the same level gives the same rows alone or
            among others).
        max_batches: at most this many batches (>= 1).
        progress: ``progress(done, total)`` over the batches.

    Returns:
        The level's σ rows (see the module docstring).

    Raises:
        DiagnosticError: a level that does not exist, a σ outside [0, 1], steps below 1 or
            ``max_batches`` below 1.
    """
    check_levels(model, level)
    sigmas = check_sigmas(sigmas)
    steps = model.recipe.sample.level_steps if steps is None else steps
    if steps < 1 or max_batches < 1:
        raise DiagnosticError(f"steps and max_batches must be at least 1, got {steps} and {max_batches}")
    model.eval()
    device = next(model.parameters()).device
    lvl = _level(model, level)
    gen = torch.Generator(device=device).manual_seed(seed)
    counts = {s: _Counts() for s in sigmas}
    pool: list[Tensor] = []
    n_batches = min(max_batches, len(batches))
    for i in range(n_batches):
        batch = batches.batch(i).to(device)
        here = model.encode(batch.tokens, batch.valid, upto=level + 1)[level]
        seg = here.split.segments
        pool.append(here.latents)
        for s, c in counts.items():
            out = lvl.decode(here.latents, sigma=s, steps=steps, generator=gen)
            c.latents.append(lvl.compress(out.x_hat, out.log_existence))
            if level == 0:
                targets = batch.tokens[seg.doc[:, None], seg.positions]
                correct = decode_bytes_from_slots(out.x_hat, model.table) == targets
            else:
                _, correct = contrastive_recon_loss(out.x_hat, seg.doc, seg.positions, seg.own_span.float(), here.x,
                                                    here.valid)
            c.hit += int((correct & seg.own_span).sum())
            c.tot += int(seg.own_span.sum())
            c.rt.add(batch, *_bytes_down(model, level, out, seg.doc))
        if progress is not None:
            progress(i + 1, n_batches)
    z0 = torch.cat(pool) if pool else torch.zeros(0, lvl.latent_dim)
    rows = []
    for s, c in counts.items():
        acc = c.hit / max(c.tot, 1)
        top1 = _retrieval(z0, torch.cat(c.latents)) if c.latents else 0.0
        rows.append(SigmaRow(s, c.rt.char_acc, top1, byte_acc=acc if level == 0 else None,
                             slot_top1=acc if level else None))
    return LevelDenoise(level, int(z0.shape[0]), n_batches, steps, rows)


def prior_samples(model: ZonkeyModel, level: int, n: int, train: Any, heldout: Sequence[bytes | str], *,
                  seed: int = 0, steps: int | None = None) -> dict[str, Any]:
    """Score ``n`` texts sampled from ``level``'s prior alone beside held-out text of the same lengths.

    Args:
        model: a trained model.
        level: the level whose prior is sampled (lower levels decode as ``zonkey sample`` does).
        n: texts to sample (>= 1).
        train: the training split's statistics and judge (``gen_eval.TrainingText``).
        heldout: held-out documents (the ``real`` row).
        seed: seed of the sampler.
        steps: denoising steps at ``level`` (default: the recipe's ``sample.steps``).

    Returns:
        ``{"n", "steps", "rows": {name: text_row}, "examples": {name: [first texts]}}`` with the names
        ``per-segment`` (the level's own denoiser, segment by segment), ``sequence`` (its sequence prior,
        only where the level has one) and ``real`` (held-out text cut to the per-segment samples' lengths).
    """
    from zonkey.core.evaluate.generation import reference_texts, text_row
    from zonkey.core.generate.sample import sample

    steps = model.recipe.sample.steps if steps is None else steps
    drawn = {"per-segment": list(sample(model, n, level=level, seed=seed, steps=steps, per_segment=True).texts)}
    if _level(model, level).prior is not None:
        drawn["sequence"] = list(sample(model, n, level=level, seed=seed, steps=steps).texts)
    drawn["real"] = reference_texts(drawn["per-segment"], heldout, train, seed)["real"]
    return {"n": n, "steps": steps, "rows": {k: text_row(v, train) for k, v in drawn.items()},
            "examples": {k: v[:5] for k, v in drawn.items()}}
