"""The figures of one run: training curves, boundaries over training, BOS and existence, attention bias.

* ``curves.png``: every logged loss term, one panel per level (and the total), from ``metrics.jsonl``;
  an autoregressive baseline run has one panel, its loss in bits per byte. The held-out figures of
  ``train.eval_every`` (``val.``) are drawn dashed beside the training ones, and the steps where a
  curriculum weight moves (a ``w.`` column changing) are shaded and named, so a loss that rises
  because a term ramps in is not read as a divergence;
* ``boundaries.png``: level-0 boundary F1 under the run's one boundary convention (named in the
  figure, see :func:`boundary_convention`), on training batches and held out, and the mean segment
  length of every level against the step;
* ``bos.png``: p_bos over the bytes of a few held-out sentences with each segment's existence
  curve drawn from its start (the style of the paper's Figure 2);
* ``attention.png``: the attention adjustment log(p_k / p_q) = log e_k − log e_q (k > q, 0
  otherwise) over the slots of one segment, as probabilistic attention adds it to the scores
  (the style of Figure 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zonkey.core.recipe import LossWeights
from zonkey.plot.style import figure, save

TERMS = tuple(LossWeights.model_fields)
LOG_FLOOR = math.log(1e-4)  # existence below this is drawn as this (log 0 is −inf)


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(int(r["step"]), float(r[key])) for r in rows
           if isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))]
    return [s for s, _ in pts], [v for _, v in pts]


def _levels(rows: Sequence[dict[str, Any]]) -> list[int]:
    found = {int(m.group(1)) for r in rows for k in r if (m := re.match(r"^l(\d+)\.", k))}
    return sorted(found)


def ramp_spans(rows: Sequence[dict[str, Any]]) -> list[tuple[int, int, list[str]]]:
    """The step ranges over which curriculum weights move, from the logged ``w.<term>`` columns.

    A weight that differs between two logged rows moved between their steps; a term's touching
    moves make one range, and terms whose ranges are equal share it.

    Returns:
        ``[(first step, last step, [terms]), ...]`` sorted by step, e.g. ``[(600, 900, ["l1"])]``.
    """
    groups: dict[tuple[int, int], list[str]] = {}
    for key in sorted({k for r in rows for k in r if k.startswith("w.")}):
        steps, vals = _series(rows, key)
        spans: list[list[int]] = []
        for i in range(1, len(steps)):
            if vals[i] != vals[i - 1]:
                if spans and steps[i - 1] <= spans[-1][1]:
                    spans[-1][1] = steps[i]
                else:
                    spans.append([steps[i - 1], steps[i]])
        for a, b in spans:
            groups.setdefault((a, b), []).append(key[2:])
    return [(a, b, terms) for (a, b), terms in sorted(groups.items())]


def _ramp_label(terms: list[str]) -> str:
    """``l0: diffusion, recon_dirty`` for terms of one level, else the names joined."""
    levels = {t.split(".", 1)[0] for t in terms}
    if len(levels) == 1 and all("." in t for t in terms):
        return f"{levels.pop()}: " + ", ".join(t.split(".", 1)[1] for t in terms)
    return ", ".join(terms)


RAMP_COLOURS = ("#fdd0a2", "#c7e9c0", "#dadaeb", "#fcbba1")


def _shade(ax: Any, spans: list[tuple[int, int, list[str]]]) -> None:
    """Each ramp as a band of its own colour, named at the top (labels stepped down where bands overlap)."""
    for i, (a, b, terms) in enumerate(spans):
        colour = RAMP_COLOURS[i % len(RAMP_COLOURS)]
        ax.axvspan(a, b, color=colour, alpha=0.5, lw=0, label="curriculum ramp" if i == 0 else None)
        ax.text(a, 0.98 - 0.07 * (i % 4), " " + _ramp_label(terms) + " ramps", transform=ax.get_xaxis_transform(),
                ha="left", va="top", fontsize=6, color="#7f2704")


def curves_figure(rows: Sequence[dict[str, Any]]) -> Any:
    """The figure of ``curves.png`` (see the module docstring), not yet saved."""
    levels = _levels(rows)
    panels = 1 + len(levels)
    fig, axes = figure(1, panels, width=5.0 * panels, height=3.6)
    ax = axes[0]
    for key, label in (("loss", "loss"), ("bits_per_byte", "bits per byte")):
        steps, vals = _series(rows, key)
        if steps:
            line = ax.plot(steps, vals, label=label)[0]
            vsteps, vvals = _series(rows, f"val.{key}")
            if vsteps:
                ax.plot(vsteps, vvals, ls="--", marker=".", color=line.get_color(), label=f"{label}, held out (val.)")
    ax.set_title("total (curriculum-weighted)")
    for ax, lvl in zip(axes[1:], levels, strict=True):
        for term in TERMS:
            steps, vals = _series(rows, f"l{lvl}.{term}")
            if steps and any(v != 0 for v in vals):
                line = ax.plot(steps, vals, label=term)[0]
                vsteps, vvals = _series(rows, f"val.l{lvl}.{term}")
                if vsteps:
                    ax.plot(vsteps, vvals, ls="--", color=line.get_color())
        ax.set_title(f"level {lvl}: loss terms (unweighted; dashed: held out)")
        if all(v > 0 for line in ax.get_lines() for v in line.get_ydata()) and ax.get_lines():
            ax.set_yscale("log")
    spans = ramp_spans(rows)
    for ax in axes:
        ax.set_xlabel("step")
        _shade(ax, spans)
        if ax.get_lines():
            ax.legend(fontsize=7)
    return fig


def plot_curves(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """``curves.png``: the total loss and every loss term of every level against the step, ramps shaded."""
    return save(curves_figure(rows), path)


#: the two ways a level-0 splitter can mark word edges, by the name its F1 is logged under
CONVENTIONS = {"word": "a BOS on each word's first byte", "space": "a BOS on the whitespace before each word"}


def boundary_convention(rows: Sequence[dict[str, Any]]) -> str | None:
    """The run's one boundary convention: ``word`` or ``space``, whichever it learned.

    Decided once per run, from its last measurement of both (the held-out ``val.l0.*_f1`` where
    there are any, else the training batches' ``l0.*_f1``): a splitter follows one convention, and
    its F1 under the other (near 0) says nothing about it. Ties go to ``word``.

    Returns:
        ``"word"``, ``"space"``, or None where neither F1 was logged.
    """
    for prefix in ("val.l0.", "l0."):
        both = [r for r in rows if isinstance(r.get(f"{prefix}word_f1"), (int, float))
                and isinstance(r.get(f"{prefix}space_f1"), (int, float))]
        if both:
            last = both[-1]
            return "space" if last[f"{prefix}space_f1"] > last[f"{prefix}word_f1"] else "word"
    return None


def boundaries_figure(rows: Sequence[dict[str, Any]]) -> Any:
    """The figure of ``boundaries.png`` (see the module docstring), not yet saved."""
    fig, axes = figure(1, 2, width=10.0, height=3.6)
    conv = boundary_convention(rows)
    if conv is not None:
        steps, vals = _series(rows, f"l0.{conv}_f1")
        if steps:
            axes[0].plot(steps, vals, label="training batches")
        vsteps, vvals = _series(rows, f"val.l0.{conv}_f1")
        if vsteps:
            axes[0].plot(vsteps, vvals, ls="--", marker="o", ms=3, label="held out (val.)")
        axes[0].set_ylim(0, 1.02)  # F1 over training runs from 0 to 1: the whole range is the information
        axes[0].set_title(f"level-0 boundary F1, {conv} convention:\n{CONVENTIONS[conv]}", fontsize=9)
    for lvl in _levels(rows):
        steps, vals = _series(rows, f"l{lvl}.mean_segment")
        if steps:
            axes[1].plot(steps, vals, label=f"level {lvl}")
    axes[1].set_title("mean segment length (positions)")
    for ax in axes:
        ax.set_xlabel("step")
        if ax.get_lines():
            ax.legend(fontsize=8)
    return fig


def plot_boundaries(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """``boundaries.png``: boundary F1 under the run's convention and mean segment length against the step."""
    return save(boundaries_figure(rows), path)


def heldout_sentences(docs: Sequence[bytes], n: int = 3, *, lo: int = 24, hi: int = 72) -> list[str]:
    """The first ``n`` held-out sentences of ``lo`` to ``hi`` bytes (whitespace runs made single spaces).

    Where there are fewer, the first ``hi`` bytes of the first documents make up the rest.
    """
    texts = [" ".join(d.decode("utf-8", errors="replace").split()) for d in docs]
    out = [s for t in texts for s in re.split(r"(?<=[.!?]) ", t) if lo <= len(s.encode("utf-8")) <= hi][:n]
    for t in texts:
        if len(out) >= n:
            break
        head = t.encode("utf-8")[:hi].decode("utf-8", errors="ignore").strip()
        if head and head not in out:
            out.append(head)
    return out


@torch.no_grad()
def _level0(model: Any, texts: Sequence[str]) -> Any:
    from zonkey.data import encode_texts

    batch = encode_texts(list(texts))
    return batch, model.encode(batch.tokens, batch.valid, upto=1)[0].split


def _labels(data: bytes) -> list[str]:
    return ["␣" if b == 32 else chr(b) if 32 < b < 127 else "·" for b in data]


def plot_bos(model: Any, texts: Sequence[str], path: Path) -> Path:
    """``bos.png``: p_bos per byte and each segment's existence from its start, one panel per text."""
    batch, split = _level0(model, texts)
    seg = split.segments
    fig, axes = figure(len(texts), 1, width=max(8.0, 0.16 * batch.tokens.shape[1]), height=2.3 * len(texts))
    for i, ax in enumerate(axes):
        n = int(batch.valid[i].sum())
        data = bytes(batch.tokens[i, :n].tolist())
        ax.bar(range(n), split.p_bos[i, :n].tolist(), color="#9ecae1", label="p_bos")
        for j in torch.nonzero(seg.doc == i).squeeze(1).tolist():
            start = int(seg.start[j])
            e = seg.log_existence[j].exp()
            xs = [start + t for t in range(e.shape[0]) if start + t < n]
            ax.plot(xs, e[:len(xs)].tolist(), color="#d62728", lw=1.0, alpha=0.8,
                    label="existence" if j == int(torch.nonzero(seg.doc == i)[0]) else None)
        for b in torch.nonzero(split.bos[i, :n]).squeeze(1).tolist():
            ax.axvline(b - 0.5, color="black", lw=0.6, alpha=0.5)
        ax.set_xticks(range(n))
        ax.set_xticklabels(_labels(data), fontsize=7, family="monospace")
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_ylim(0, 1.05)
        ax.legend(loc="upper right", fontsize=7)
    axes[0].set_title("level 0: BOS probability per byte and each segment's existence (lines: BOS decisions)")
    return save(fig, path)


def attention_bias(log_existence: Tensor) -> Tensor:
    """The probabilistic-attention adjustment of one segment: (m, m), log e_k − log e_q above the diagonal.

    Args:
        log_existence: (m,) the segment's log existence (−inf clipped at :data:`LOG_FLOOR`).

    Returns:
        (m, m) float, row q, column k; 0 where k <= q.
    """
    le = log_existence.float().clamp_min(LOG_FLOOR)
    m = le.shape[0]
    upper = torch.triu(torch.ones(m, m, dtype=torch.bool), diagonal=1)
    return torch.where(upper, le[None, :] - le[:, None], torch.zeros(m, m))


def plot_attention(model: Any, text: str, path: Path) -> Path:
    """``attention.png``: the adjustment log(p_k / p_q) over the slots of one segment of ``text``.

    The segment is the longest one whose existence falls below 0.5 inside its slots (its tail
    fades, so the adjustment shows); the longest one where none does.
    """
    batch, split = _level0(model, [text])
    seg = split.segments
    fades = (seg.log_existence < math.log(0.5)).any(dim=1)
    j = int(torch.argmax(seg.span.float() + 1000.0 * fades.float()))
    start, m = int(seg.start[j]), seg.log_existence.shape[1]
    bias = attention_bias(seg.log_existence[j])
    n = int(batch.valid[0].sum())
    data = bytes(batch.tokens[0, start:min(start + m, n)].tolist())
    labels = _labels(data) + [""] * (m - len(data))
    fig, axes = figure(1, 1, width=6.0, height=5.2)
    ax = axes[0]
    # existence never grows along a segment, so the adjustment is <= 0: keys past the fade are damped
    im = ax.imshow(bias.numpy(), cmap="magma", vmin=LOG_FLOOR, vmax=0.0)
    fig.colorbar(im, ax=ax, label="log p_k − log p_q")
    ax.set_xticks(range(m))
    ax.set_xticklabels(labels, family="monospace")
    ax.set_yticks(range(m))
    ax.set_yticklabels(labels, family="monospace")
    ax.set_xlabel("key slot k")
    ax.set_ylabel("query slot q")
    ax.set_title(f"attention adjustment over one segment ({int(seg.span[j])} bytes of its own)", fontsize=9)
    return save(fig, path)
