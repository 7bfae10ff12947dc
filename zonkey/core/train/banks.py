"""Keeping a vocabulary-headed prior's bank in step with the encoder while training.

A sequence prior with ``head: bank`` predicts a distribution over level 0's most frequent
segments (:mod:`zonkey.core.model.bank`). Its bank is built from the encoder when the prior starts
training (``prior.lr_start``) and rebuilt every ``prior.bank_every`` steps after that (0: never
again). A rebuild counts the segments of a fixed sample of training chunks (``prior.bank_texts``,
the same chunks every time) and compresses the K most frequent. Between rebuilds, since the
encoder's latents still move, the same segments (kept with the head) are compressed again every
``prior.bank_refresh`` steps: one small forward pass (about 2 s for 8,192 segments on one CPU
thread), where a rebuild's counting takes 30-100 s. Neither draws randomness, and the bank and
its segments are saved with the model, so runs still reproduce and resume exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from zonkey.core.model.bank import build_bank
from zonkey.core.model.network import ZonkeyModel


def bank_due(step: int, lr_start: int, every: int, filled: bool) -> bool:
    """Whether a prior's bank is (re)built before training step ``step`` (0-based).

    At ``lr_start`` (or at the first step after it with an empty bank, as in a run resumed from
    before the bank existed), then every ``every`` steps after it. Before ``lr_start`` the prior does
    not train and its loss is 0 while its bank is empty.
    """
    if step < lr_start:
        return False
    if not filled or step == lr_start:
        return True
    return every > 0 and (step - lr_start) % every == 0


def refresh_due(step: int, lr_start: int, every: int) -> bool:
    """Whether the bank's latents are encoded again before step ``step`` (after ``lr_start``, every ``every``)."""
    return every > 0 and step > lr_start and (step - lr_start) % every == 0


def bank_texts(chunks: Sequence[bytes], n: int) -> list[str]:
    """``n`` training chunks spread evenly over the split (the same ones every call), as text."""
    if not chunks:
        return []
    stride = max(len(chunks) // n, 1)
    return [c.decode("utf-8", errors="replace") for c in chunks[::stride][:n]]


def refresh_banks(model: ZonkeyModel, step: int, chunks: Sequence[bytes], log: Callable[[str], None]) -> None:
    """(Re)build the bank of every level-0 prior with a bank head that is due at ``step``.

    Args:
        model: the model being trained (its mode is restored afterwards).
        step: the training step about to run.
        chunks: the training split's chunks.
        log: where a line about each rebuild goes.
    """
    for i, level in enumerate(model.levels):
        prior = level.prior
        head = prior.bank if prior is not None else None
        if prior is None or head is None:
            continue
        if i != 0:
            raise ValueError(f"model.levels.{i}.prior.head: bank is built from level 0's segments; use it on level 0")
        cfg = prior.cfg
        if not bank_due(step, cfg.lr_start, cfg.bank_every, head.ready):
            if refresh_due(step, cfg.lr_start, cfg.bank_refresh):
                was_training = model.training
                try:
                    model.eval()
                    model.encode_banks()
                finally:
                    model.train(was_training)
            continue
        t0 = time.perf_counter()
        was_training = model.training
        try:
            bank = build_bank(model, bank_texts(chunks, cfg.bank_texts), head.size)
        finally:
            model.train(was_training)
        head.set_bank(bank.latents, bank.log_freq, bank.other_log_freq, bank.strings)
        log(f"step {step}: level-{i} prior bank of {len(bank.strings)} segments (coverage {bank.coverage:.3f} of "
            f"{bank.counted:,} counted), {time.perf_counter() - t0:.1f} s")
