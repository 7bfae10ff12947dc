"""The figures of one run: training curves, boundaries over training, BOS and existence, attention bias.

* ``curves.png``: every logged loss term, one panel per level (and the total), from ``metrics.jsonl``;
  an autoregressive baseline run has one panel, its loss in bits per byte;
* ``boundaries.png``: word-start and space F1 of the training batches and the mean segment length of
  every level against the step;
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


def plot_curves(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """``curves.png``: the total loss and every loss term of every level against the step."""
    levels = _levels(rows)
    panels = 1 + len(levels)
    fig, axes = figure(1, panels, width=5.0 * panels, height=3.6)
    ax = axes[0]
    for key, label in (("loss", "loss"), ("bits_per_byte", "bits per byte")):
        steps, vals = _series(rows, key)
        if steps:
            ax.plot(steps, vals, label=label)
    ax.set_title("total")
    for ax, lvl in zip(axes[1:], levels, strict=True):
        for term in TERMS:
            steps, vals = _series(rows, f"l{lvl}.{term}")
            if steps and any(v != 0 for v in vals):
                ax.plot(steps, vals, label=term)
        ax.set_title(f"level {lvl}: loss terms (unweighted)")
        if all(v > 0 for line in ax.get_lines() for v in line.get_ydata()) and ax.get_lines():
            ax.set_yscale("log")
    for ax in axes:
        ax.set_xlabel("step")
        if ax.get_lines():
            ax.legend(fontsize=7)
    return save(fig, path)


def plot_boundaries(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """``boundaries.png``: boundary F1 (training batches) and mean segment length against the step."""
    fig, axes = figure(1, 2, width=10.0, height=3.6)
    for key, label in (("l0.word_f1", "word-start F1"), ("l0.space_f1", "space F1")):
        steps, vals = _series(rows, key)
        if steps:
            axes[0].plot(steps, vals, label=label)
    axes[0].set_ylim(0, 1)
    axes[0].set_title("level 0 boundaries vs word edges")
    for lvl in _levels(rows):
        steps, vals = _series(rows, f"l{lvl}.mean_segment")
        if steps:
            axes[1].plot(steps, vals, label=f"level {lvl}")
    axes[1].set_title("mean segment length (positions)")
    for ax in axes:
        ax.set_xlabel("step")
        if ax.get_lines():
            ax.legend(fontsize=8)
    return save(fig, path)


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
