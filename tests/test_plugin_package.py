"""docs/plugins.md as a real package: its code and pyproject entry point, installed as a
distribution on sys.path, are found by a fresh interpreter from `Recipe.load` alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"


def _block(text: str, after: str, lang: str) -> str:
    start = text.index(after)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(text, start)
    assert m is not None, f"no {lang} block after {after!r} in {DOC}"
    return m.group(1)


def _install(site: Path) -> None:
    """What pip leaves for the package: the module and a dist-info with its entry points."""
    text = DOC.read_text(encoding="utf-8")
    code = _block(text, "`zonkey_sharp/__init__.py`:", "python")
    pyproject = _block(text, "`pyproject.toml`:", "toml")
    name = re.search(r'^name = "(.+)"$', pyproject, re.M).group(1)
    version = re.search(r'^version = "(.+)"$', pyproject, re.M).group(1)
    group, entries = re.search(r'\[project\.entry-points\."(.+)"\]\n((?:.+=.+\n?)+)', pyproject).groups()
    (site / "zonkey_sharp").mkdir(parents=True)
    (site / "zonkey_sharp" / "__init__.py").write_text(code)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n" + entries.replace('"', ""))


def test_the_documented_plugin_is_known_wherever_a_recipe_is_loaded(tmp_path):
    _install(tmp_path / "site")
    script = """
import torch
from zonkey import Recipe
from zonkey.core.contracts.registry import registry

recipe = Recipe.load("tiny", ["model.attention.name=sharp", "model.attention.temperature=1.0"])
assert recipe.model.attention.name == "sharp", recipe.model.attention
sharp = recipe.model.attention.build()
reference = registry("attention").entry("reference").config_cls().build()
q, k, v = (torch.randn(2, 2, 5, 4) for _ in range(3))
log_e = torch.log(torch.rand(2, 5).clamp_min(0.1))
assert torch.allclose(sharp(q, k, v, log_e), reference(q, k, v, log_e), atol=1e-5)
print("ok", type(recipe.model.attention).__module__)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["ok", "zonkey_sharp"]


def test_without_the_package_the_name_is_unknown(tmp_path):
    script = "from zonkey import Recipe\nRecipe.load('tiny', ['model.attention.name=sharp'])"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                         cwd=tmp_path)
    assert res.returncode != 0 and "sharp" in res.stderr
