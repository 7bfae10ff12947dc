"""Length buckets: the cover of each segment's needed slots, and putting bucketed results back in order."""

from __future__ import annotations

import itertools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zonkey.core.nn.losses import existence_bce
from zonkey.core.nn.packing import (
    MAX_BUCKETS,
    bucket_cut,
    bucket_edges,
    keep_mask,
    needed_slots,
    pad_slots,
    run_bucketed,
)


def _best_total(need: list[int], m: int, max_buckets: int) -> int:
    """The fewest slots of any cover with at most ``max_buckets`` lengths (brute force)."""
    top = max(need)
    best = None
    for k in range(0, max_buckets):
        for rest in itertools.combinations(range(1, top), k):
            edges = sorted({*rest, top})
            total = sum(min(e for e in edges if e >= n) for n in need)
            best = total if best is None else min(best, total)
    assert best is not None
    return best


@settings(max_examples=60, deadline=None)
@given(m=st.integers(2, 12), data=st.data())
def test_bucket_cut_covers_each_need_with_the_fewest_slots(m: int, data: st.DataObject) -> None:
    need = data.draw(st.lists(st.integers(1, m), min_size=1, max_size=40))
    buckets = data.draw(st.integers(1, 4))
    t = torch.tensor(need)
    cut = bucket_cut(t, m, buckets)
    assert bool((cut >= t).all()) and int(cut.max()) <= m
    assert len(set(cut.tolist())) <= buckets
    assert int(cut.sum()) == _best_total(need, m, buckets)


def test_bucket_edges_of_typical_level_zero_lengths() -> None:
    # words of 2..9 bytes plus the slot past them; the longest need is always an edge
    need = torch.tensor([3, 4, 4, 5, 6, 6, 6, 7, 7, 8, 10, 12])
    edges = bucket_edges(need, 12, MAX_BUCKETS)
    assert edges[-1] == 12 and len(edges) == MAX_BUCKETS
    assert int(bucket_cut(need, 12).sum()) < 12 * need.numel() * 0.7
    assert bucket_edges(torch.tensor([], dtype=torch.long), 12) == []


def test_needed_slots_is_span_plus_one_at_most_m() -> None:
    assert needed_slots(torch.tensor([1, 5, 11, 12]), 12).tolist() == [2, 6, 12, 12]


def test_run_bucketed_returns_rows_in_their_order() -> None:
    cut = torch.tensor([3, 1, 3, 2, 1])
    x = torch.arange(5.0)[:, None].expand(5, 4)

    def fn(rows: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_slots(x[rows, :n], 4, -1.0), torch.full((rows.numel(),), float(n))

    padded, lengths = run_bucketed(cut, fn)
    assert lengths.tolist() == [3.0, 1.0, 3.0, 2.0, 1.0]
    assert padded[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert torch.equal(padded >= 0, keep_mask(cut, 4))


def test_existence_bce_with_every_slot_kept_is_the_mean_and_drops_the_rest() -> None:
    g = torch.Generator().manual_seed(0)
    pred = -torch.rand(6, 5, generator=g).cumsum(1)
    target = -torch.rand(6, 5, generator=g).cumsum(1)
    full = existence_bce(pred, target)
    keep = torch.ones(6, 5, dtype=torch.bool)
    assert torch.allclose(existence_bce(pred, target, keep), full)
    keep[:, 3:] = False
    part = existence_bce(pred[:, :3], target[:, :3]) * 3 / 5  # the same slots, divided by all 30
    assert torch.allclose(existence_bce(pred, target, keep), part)
