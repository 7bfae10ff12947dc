"""The training benchmark's packing comparison (``benchmarks/train.py --compare-packing``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_compare_packing_prints_every_mode_and_packed_modes_compute_less() -> None:
    """One alternating step of each mode on a small tiny batch (level 1 on, no prior): both packed
    modes compute fewer slots and fewer FLOPs per byte than the padded path, on the same bytes."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train.py"), "--recipe", "tiny", "--compare-packing",
           "--threads", "1", "--steps", "1", "--warmup", "1", "--at-step", "700", "--json",
           "--set", "model.levels.0.prior=null", "--set", "data.batch_bytes=1024"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT, check=True)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    rows = summary["rows"]
    assert set(rows) == {"varlen", "buckets", "off"}
    assert len({r["bytes_per_step"] for r in rows.values()}) == 1  # the same batches
    assert rows["off"]["slots"] == {} and rows["off"]["flops_per_byte_ratio"] == 1.0
    for mode in ("varlen", "buckets"):
        r = rows[mode]
        assert set(r["slots"]) == {"l0", "l1"} and max(r["slots"].values()) < 0.8, (mode, r["slots"])
        assert r["flops_per_byte_ratio"] > 1.15, (mode, r["flops_per_byte_ratio"])
        assert r["step_speedup"] > 0 and r["bytes_per_s"] > 0
    # varlen computes each segment at its need, buckets round it up to a bucket
    assert rows["varlen"]["slots"]["l0"] <= rows["buckets"]["slots"]["l0"]
