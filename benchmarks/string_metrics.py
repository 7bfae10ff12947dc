"""The round trip's string metrics on one pair of byte strings: rapidfuzz against the code it replaced.

    python benchmarks/string_metrics.py                 # an 8 KB pair, 2% of its bytes edited
    python benchmarks/string_metrics.py --bytes 2048 --edits 0.05

Times the edit distance (rapidfuzz ``Levenshtein`` against a numpy dynamic programme, one row at a
time) and the alignment (rapidfuzz's longest common subsequence against difflib's matching blocks)
on a reconstruction-like pair: a text of common words and a copy with random substitutions,
deletions and insertions. Prints each value, so equal edit distances can be checked, and the
fastest of ``--repeat`` timings of each.
"""

from __future__ import annotations

import argparse
import random
import time
from difflib import SequenceMatcher

import numpy as np

from zonkey.core.evaluate.roundtrip import aligned_matches, levenshtein

WORDS = "the of and river city flows through old light energy chemical converts into an".split()


def numpy_levenshtein(a: bytes, b: bytes) -> int:
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    bb = np.frombuffer(b, dtype=np.uint8)
    idx = np.arange(len(b) + 1)
    row = idx.copy()
    for i, ch in enumerate(a, start=1):
        c = np.empty_like(row)
        c[0] = i
        c[1:] = np.minimum(row[:-1] + (bb != ch), row[1:] + 1)
        row = np.minimum.accumulate(c - idx) + idx
    return int(row[-1])


def difflib_matches(a: bytes, b: bytes) -> int:
    return sum(blk.size for blk in SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks())


def pair(n_bytes: int, edit_rate: float, seed: int) -> tuple[bytes, bytes]:
    rng = random.Random(seed)
    ref = " ".join(rng.choice(WORDS) for _ in range(n_bytes // 3)).encode()[:n_bytes]
    out = bytearray(ref)
    for _ in range(int(edit_rate * n_bytes)):
        i = rng.randrange(len(out))
        op = rng.random()
        if op < 1 / 3:
            out[i] = rng.randrange(97, 123)
        elif op < 2 / 3:
            del out[i]
        else:
            out.insert(i, rng.randrange(97, 123))
    return bytes(out), ref


REPEAT = 3


def timed(fn, *args) -> tuple[int, float]:
    best = float("inf")
    value = 0
    for _ in range(REPEAT):
        t = time.perf_counter()
        value = fn(*args)
        best = min(best, time.perf_counter() - t)
    return value, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bytes", type=int, default=8192)
    ap.add_argument("--edits", type=float, default=0.02, help="share of bytes edited")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timings of each function; the fastest is reported")
    args = ap.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    out, ref = pair(args.bytes, args.edits, args.seed)
    old_d, t_old_d = timed(numpy_levenshtein, out, ref)
    new_d, t_new_d = timed(levenshtein, out, ref)
    old_m, t_old_m = timed(difflib_matches, out, ref)
    new_m, t_new_m = timed(aligned_matches, out, ref)
    print(f"pair: {len(out)} and {len(ref)} bytes")
    print(f"edit distance: numpy {old_d} in {t_old_d * 1e3:.1f} ms, rapidfuzz {new_d} in {t_new_d * 1e3:.2f} ms "
          f"({t_old_d / t_new_d:.0f}x)")
    print(f"alignment: difflib {old_m} in {t_old_m * 1e3:.1f} ms, rapidfuzz LCS {new_m} in {t_new_m * 1e3:.2f} ms "
          f"({t_old_m / t_new_m:.0f}x)")
    old, new = t_old_d + t_old_m, t_new_d + t_new_m
    print(f"both: {old * 1e3:.0f} ms -> {new * 1e3:.2f} ms ({old / new:.0f}x)")


if __name__ == "__main__":
    main()
