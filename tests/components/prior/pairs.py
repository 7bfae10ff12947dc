"""The toy language of the prior learning tests: words in fixed pairs (word 2j is always followed by
word 2j + 1, rows start with an even word). Every word is equally frequent, so a unigram predicts a
held-out position at 1/8; given its neighbours the rule decides it."""

from __future__ import annotations

import torch


def pair_rows(b: int, g: torch.Generator) -> torch.Tensor:
    """(b, 8) word ids of ``b`` rows of the toy language."""
    first = 2 * torch.randint(0, 4, (b, 4), generator=g)
    return torch.stack([first, first + 1], -1).flatten(1)


def train_on_pairs(prior: torch.nn.Module, bank: torch.Tensor, g: torch.Generator, steps: int) -> None:
    """``steps`` AdamW steps (lr 3e-3) of the prior's own loss on batches of 32 rows."""
    opt = torch.optim.AdamW(prior.parameters(), lr=3e-3)
    for _ in range(steps):
        loss, _ = prior.loss(bank[pair_rows(32, g)], torch.ones(32, 8, dtype=torch.bool), g)
        opt.zero_grad()
        loss.backward()
        opt.step()


def held_out_positions(prior, bank: torch.Tensor, g: torch.Generator
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """64 fresh rows, one random position of each, and the prior's log p(class | the rest) there.

    Returns (words (64, 8), target (64,), log-probabilities (64, K + 1), true classes (64,)).
    """
    prior.eval()
    words = pair_rows(64, g)
    target = torch.randint(0, 8, (64,), generator=g)
    lp, cls = prior.position_log_probs(bank[words], torch.ones(64, 8, dtype=torch.bool), target)
    return words, target, lp, cls
