"""The cheap held-out pass of ``train.eval_every``: figures of a fixed held-out slice while training.

Every ``eval_every`` steps (and at the last step) the trainer scores the first ``train.eval_batches``
batches of the held-out split (the same batches every time, so the figures of two steps compare)
and logs, each key prefixed ``val.`` so that no held-out figure is read as a training one:

* ``val.loss``: the model's total loss on that slice, under the step's curriculum weights (the
  training ``loss`` beside it is the same sum over training batches);
* ``val.l{i}.{term}``: every unweighted loss term of every level the curriculum runs, the sequence
  prior's ``prior`` among them where a level has one;
* ``val.l0.recon_acc``: bytes of each segment's own span decoded exactly from its clean latent
  (t = 0); ``val.l{i}.recon_acc`` (i >= 1): top-1 retrieval of each level-(i-1) latent from level
  i's clean decoding among the slice's;
* ``val.l0.word_f1`` and ``val.l0.space_f1``: the deterministic (p_bos > 0.5) level-0 boundaries
  against word starts and against the whitespace before them; ``val.l{i}.mean_segment``.

The pass reads only the model (``zonkey.core.model``) and its building blocks (``zonkey.core.nn``),
never ``zonkey.core.evaluate``: it is a short subset of ``zonkey eval`` that costs about one forward
pass per held-out batch. It runs on the training weights in eval mode under ``torch.no_grad``, its
noise comes from its own seeded generator and torch's global generator is restored afterwards, so a
run with validation trains to the same weights, bit for bit, as one without.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zonkey.core.model.inference import decode_bytes_from_slots
from zonkey.core.model.network import ZonkeyModel
from zonkey.core.nn.boundaries import BoundaryCounter, gold_boundaries
from zonkey.core.nn.losses import contrastive_recon_loss
from zonkey.data import Batch, Corpus

PREFIX = "val."


def heldout_slice(corpus: Corpus, *, seed: int, batch_bytes: int, n: int) -> list[Batch]:
    """The first ``n`` batches of the held-out split (fewer where it has fewer).

    Args:
        corpus: a loaded corpus (``zonkey.data.load_corpus``).
        seed: the batches' seed (the run's).
        batch_bytes: bytes per batch (the recipe's).
        n: batches wanted.

    Returns:
        the batches, on the CPU; empty where the held-out split is.
    """
    batches = corpus.batches("heldout", seed=seed, batch_bytes=batch_bytes)
    return [batches.batch(i) for i in range(min(n, len(batches)))]


class _Sums:
    """Running sums of a pass over several batches."""

    def __init__(self) -> None:
        self.loss = 0.0
        self.terms: dict[str, float] = {}
        self.stats: dict[str, float] = {}
        self.hit: dict[int, int] = {}
        self.tot: dict[int, int] = {}
        self.boundary = BoundaryCounter()
        self.n = 0

    def add_counts(self, level: int, hit: int, tot: int) -> None:
        self.hit[level] = self.hit.get(level, 0) + hit
        self.tot[level] = self.tot.get(level, 0) + tot


@torch.no_grad()
def validate(model: ZonkeyModel, batches: Sequence[Batch], *, scales: dict[str, float], seed: int,
             device: torch.device) -> dict[str, float]:
    """The ``val.*`` figures of ``batches`` (see the module docstring).

    The model is left in eval mode; the caller puts it back in training mode.

    Args:
        model: the model being trained (not its DDP wrapper: nothing here is a collective).
        batches: the fixed held-out slice.
        scales: the step's curriculum multipliers (levels weighed 0 with all above them are not run).
        seed: seed of the pass's own generator (its noise is the same at every step).
        device: where the model lives.

    Returns:
        ``{"val.loss": ..., "val.l0.token": ..., "val.l0.recon_acc": ..., ...}``; empty without batches.
    """
    if not batches:
        return {}
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the training streams are put back as they were
        model.eval()
        gen = torch.Generator(device=device).manual_seed(seed)
        sums = _Sums()
        for cpu_batch in batches:
            batch = cpu_batch.to(device)
            _add_batch(model, batch, scales, gen, sums)
    return _result(sums)


def _add_batch(model: ZonkeyModel, batch: Batch, scales: dict[str, float], gen: torch.Generator,
               sums: _Sums) -> None:
    out = model(batch.tokens, batch.valid, generator=gen, scales=scales)
    sums.n += 1
    sums.loss += float(out.loss)
    for k, v in out.terms.items():
        sums.terms[k] = sums.terms.get(k, 0.0) + float(v)
    for k, v in out.stats.items():
        if k.endswith(".mean_segment"):
            sums.stats[k] = sums.stats.get(k, 0.0) + v
    # reconstruction at t = 0 and boundaries from the deterministic walk of the levels that ran
    passes = model.encode(batch.tokens, batch.valid, upto=max(len(out.levels), 1))
    p0 = passes[0]
    seg = p0.split.segments
    dec = model.levels[0].decode(p0.latents)
    pred = decode_bytes_from_slots(dec.x_hat, model.table)
    targets = batch.tokens[seg.doc[:, None], seg.positions]
    own = seg.own_span
    sums.add_counts(0, int(((pred == targets) & own).sum()), int(own.sum()))
    bos = p0.split.bos & batch.valid
    bos[:, 0] = False
    for name, gold in gold_boundaries(batch.tokens, batch.valid).items():
        sums.boundary.add(name, bos, gold)
    for p in passes[1:]:
        seg = p.split.segments
        dec = model.levels[p.index].decode(p.latents)
        _, correct = contrastive_recon_loss(dec.x_hat, seg.doc, seg.positions, seg.own_span.float(), p.x, p.valid)
        sums.add_counts(p.index, int((correct & seg.own_span).sum()), int(seg.own_span.sum()))


def _result(sums: _Sums) -> dict[str, float]:
    res = {f"{PREFIX}loss": sums.loss / sums.n}
    res.update({f"{PREFIX}{k}": v / sums.n for k, v in sums.terms.items()})
    res.update({f"{PREFIX}{k}": v / sums.n for k, v in sums.stats.items()})
    res.update({f"{PREFIX}l{i}.recon_acc": sums.hit[i] / max(sums.tot[i], 1) for i in sorted(sums.hit)})
    res.update({f"{PREFIX}l0.{name}_f1": v["f1"] for name, v in sums.boundary.result().items()})
    return res
