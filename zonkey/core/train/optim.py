"""The learning-rate schedule, the optimizer's parameter groups and the EMA of the weights.

A level or a sequence prior with its own schedule gets its own pair of parameter groups (with and
without weight decay); the EMA keeps a float32 shadow of every parameter for sampling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zonkey.core.recipe import LevelConfig, TrainConfig
from zonkey.io import CheckpointError

__all__ = ["EMA", "adamw", "lr_at", "param_groups"]


def lr_at(step: int, cfg: TrainConfig, start: int = 0, scale: float = 1.0) -> float:
    """Linear warm-up to ``lr`` then cosine decay to ``lr · min_lr_ratio`` at ``steps``.

    ``start``/``scale`` (a level's ``schedule.lr_start``/``schedule.lr_scale``): the same shape over steps
    ``start … steps`` (0 before ``start``), times ``scale``.
    """
    if step < start:
        return 0.0
    step, steps = step - start, cfg.steps - start
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return scale * cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(steps - cfg.warmup_steps, 1)
    frac = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return scale * cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


_GroupKey = tuple[str, int] | None


def param_groups(model: nn.Module, weight_decay: float, levels: Sequence[LevelConfig] = ()) -> list[dict[str, Any]]:
    """No weight decay on biases, norms, embeddings and learned vectors (anything 1-D or the byte table).

    ``levels`` (the recipe's level configs): a level with its own schedule (``schedule.lr_start``
    or ``schedule.lr_scale`` set) gets its own pair of groups, tagged ``level``; a level's sequence
    prior gets its own pair, tagged ``prior`` (it follows the prior's ``lr_start``/``lr_scale``);
    every other parameter (the byte table included) is in the first pair, as when no level sets
    one, so checkpoints of such recipes keep their optimizer layout.
    """
    own = {i for i, lv in enumerate(levels) if lv.schedule.is_own}
    priors = {i for i, lv in enumerate(levels) if lv.prior is not None}
    buckets: dict[_GroupKey, tuple[list[nn.Parameter], list[nn.Parameter]]] = {None: ([], [])}
    for i in sorted(own):
        buckets[("level", i)] = ([], [])
    for i in sorted(priors):
        buckets[("prior", i)] = ([], [])
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        parts = name.split(".")
        key: _GroupKey = None
        if parts[0] == "levels" and int(parts[1]) in priors and parts[2] == "prior":
            key = ("prior", int(parts[1]))
        elif parts[0] == "levels" and int(parts[1]) in own:
            key = ("level", int(parts[1]))
        decay, no_decay = buckets[key]
        (decay if p.ndim >= 2 and name != "embed" else no_decay).append(p)
    groups = []
    for key, (decay, no_decay) in buckets.items():
        tag = {} if key is None else {key[0]: key[1]}
        groups += [{"params": decay, "weight_decay": weight_decay, **tag},
                   {"params": no_decay, "weight_decay": 0.0, **tag}]
    return groups


def adamw(groups: list[dict[str, Any]], lr: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW over ``groups``, with PyTorch's fused kernel where it has one for these tensors.

    The fused kernel runs the same update as the per-tensor loop in one call per group: on CPU it
    took a tiny step's optimizer time from about 105 ms to 22 ms (one thread). Where it is missing
    (another device, an older build) the default implementation runs.
    """
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


def _shadow_copy(v: torch.Tensor) -> torch.Tensor:
    """An EMA's copy of one state tensor: float32 for floating tensors, the tensor's own dtype otherwise."""
    return (v.detach().float() if v.dtype.is_floating_point else v.detach()).clone()


class EMA:
    """Exponential moving average of the parameters (kept in float32, used for eval and sampling).

    Each parameter's average warms up from the first step it is trained, not from step 0: its decay
    is min(decay, (1 + n) / (10 + n)) with n the steps it has had a gradient so far. A level that a
    curriculum (or its ``schedule.lr_start``) brings in at step 600 would otherwise keep 0.999^600 ≈ 55% of
    its random initial weights in the average after 600 steps of training. Buffers follow the
    global step, except those a module names in its ``ema_copy`` attribute (state that is set,
    not learned, such as a prior's bank of latents): the average holds them as they are. A
    parameter counts as trained at a step when its gradient is not all zero (a part whose loss is
    still switched off gets zero gradients, not none). A module may set ``ema_decay`` to average
    its own parameters with a shorter memory (a prior that trains for a few hundred steps late in
    the run and learns fast there would otherwise be averaged over most of its training).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        # an integer buffer is a table, not a weight: kept in its own dtype (float32 rounds above 2^24)
        self.shadow = {k: _shadow_copy(v) for k, v in model.state_dict().items()}
        self.counts: dict[str, int] = {k: 0 for k, _ in model.named_parameters()}
        self.copied = {f"{name}.{b}" if name else b for name, mod in model.named_modules()
                       for b in getattr(mod, "ema_copy", ())}
        own: dict[str, float] = {}
        for name, mod in model.named_modules():
            d = getattr(mod, "ema_decay", None)
            if isinstance(d, (int, float)):
                own[f"{name}." if name else ""] = float(d)
        self.decays = {k: min((d for pre, d in own.items() if k.startswith(pre)), default=decay)
                       for k in self.shadow}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold the model's current weights into the averages after training step ``step``.

        The averages that share one decay are updated together (``torch._foreach_mul_`` and
        ``torch._foreach_add_``: the same two operations per tensor as one at a time, in fewer calls).
        """
        params = dict(model.named_parameters())
        groups: dict[float, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for k, v in model.state_dict().items():
            if not v.dtype.is_floating_point or k in self.copied:
                self.shadow[k].copy_(v)
                continue
            p = params.get(k)
            if p is None:
                n = step
            else:
                if p.grad is not None and bool(p.grad.any()):
                    self.counts[k] += 1
                n = self.counts[k] - 1
                if n < 0:  # never trained yet: the average is the weights themselves
                    self.shadow[k].copy_(v)
                    continue
            d = min(self.decays[k], (1 + n) / (10 + n))
            shadows, values = groups.setdefault(d, ([], []))
            shadows.append(self.shadow[k])
            values.append(v.detach() if v.dtype == torch.float32 else v.detach().float())
        for d, (shadows, values) in groups.items():
            torch._foreach_mul_(shadows, d)  # pyright: ignore[reportPrivateImportUsage]
            torch._foreach_add_(shadows, values, alpha=1 - d)  # pyright: ignore[reportPrivateImportUsage]

    def state(self) -> dict[str, torch.Tensor]:
        """The averaged weights by state-dict key (what a checkpoint saves as the EMA)."""
        return self.shadow

    def load(self, tensors: dict[str, torch.Tensor], counts: dict[str, int] | None = None) -> None:
        """Restore the averages from a checkpoint.

        Args:
            tensors: the saved averaged weights by state-dict key.
            counts: the per-parameter trained-step counts saved with the trainer state (older
                checkpoints have none: every parameter is then taken as trained since step 0).

        Raises:
            CheckpointError: the saved averages miss keys of the model.
        """
        missing = set(self.shadow) - set(tensors)
        if missing:
            raise CheckpointError(f"EMA state is missing keys {sorted(missing)[:5]}")
        self.shadow = {k: _shadow_copy(tensors[k]) for k in self.shadow}
        if counts is not None:
            self.counts.update({k: int(v) for k, v in counts.items() if k in self.counts})
