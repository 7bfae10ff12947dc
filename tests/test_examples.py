"""The scripts under examples/ run as documented: the quickstart trains on a .txt file and uses the
model; examples/api.py (the README's API, which `make lint` type-checks) runs on that run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from zonkey.data import wiki_sample_path

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_quickstart_then_the_api_example_on_its_run(tmp_path):
    entries = json.loads(wiki_sample_path().read_text(encoding="utf-8"))
    lines = [e["extract"].replace("\n", " ") for e in list(entries.values())[:300]
             if isinstance(e, dict) and e.get("extract")]
    text = tmp_path / "mine.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")

    res = _run([str(ROOT / "examples" / "quickstart.py"), str(text), "--steps", "1", "--out", "run"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "trained 1 steps" in out and "split:" in out and out.count("sample:") == 3
    assert "infill:   'The river flows through the " in out and "held-out: recon_acc" in out
    assert (tmp_path / "run" / "recipe.json").is_file()

    res = _run([str(ROOT / "examples" / "api.py"), "run"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("recipe tiny: 2 level(s)")
