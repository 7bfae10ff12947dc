"""Sharing trained runs on the Hugging Face hub: ``hf://org/name[@revision]`` in, ``zonkey push`` out.

A pushed model is a run directory cut down to what inference reads: ``recipe.json``, the newest
checkpoint's weights (``model.safetensors``, ``ema.safetensors`` where there is one) with the
``state.json`` that records their sizes and SHA-256 (the optimizer and generator states are left
out), and a generated model card, ``README.md``, with the run's evaluation table when the run has
one. :func:`zonkey.api.load` reads such a folder like any run, so a download is loaded, and
checked against its hashes, by the same code as a local run.

``huggingface_hub`` is imported only here and only when the hub is used (the ``hub`` extra:
``pip install "zonkey[hub]"``).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zonkey.core.checkpoint.layout import CHECKPOINTS_DIR, EMA_FILE, MODEL_FILE, RECIPE_FILE, STATE_FILE
from zonkey.core.checkpoint.store import find_latest_checkpoint
from zonkey.errors import ZonkeyError
from zonkey.io import atomic_write_bytes, atomic_write_json, read_json

__all__ = ["EVAL_FILES", "HubError", "download", "is_hub_address", "model_card", "parse_address", "push", "stage"]

PREFIX = "hf://"
#: files of a run that hold an evaluation for the model card, in the order they are looked for
#: (``zonkey eval RUN --json > RUN/eval.json``; ``zonkey ablate`` writes ``eval.json`` too)
EVAL_FILES = ("eval.json",)
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_INSTALL = 'pip install "zonkey[hub]"'


class HubError(ZonkeyError):
    """A hub address that cannot be read, the hub extra missing, or a failed download or upload."""


def is_hub_address(source: str) -> bool:
    """Whether ``source`` names a model on the hub (``hf://...``) rather than a local path."""
    return source.startswith(PREFIX)


def parse_address(source: str) -> tuple[str, str | None]:
    """``hf://org/name@rev`` -> ``("org/name", "rev")``; no ``@rev`` gives None (the default branch).

    Raises:
        HubError: not ``hf://org/name`` or ``hf://org/name@revision``.
    """
    body = source[len(PREFIX):] if is_hub_address(source) else source
    repo, at, rev = body.partition("@")
    if not _REPO.match(repo) or (at and not rev):
        raise HubError(f"{source!r}: expected hf://org/name or hf://org/name@revision")
    return repo, rev or None


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise HubError(f"the hub needs the huggingface_hub package: {_INSTALL}") from None
    return huggingface_hub


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def download(source: str, *, cache_dir: str | os.PathLike[str] | None = None,
             local_files_only: bool = False) -> Path:
    """The local folder of a hub model, downloaded (or found in the hub cache) at its revision.

    Args:
        source: ``hf://org/name`` or ``hf://org/name@revision`` (a branch, tag or commit).
        cache_dir: the hub cache to use (default: the hub's own, ``HF_HUB_CACHE``).
        local_files_only: read the cache only, never the network.

    Returns:
        The snapshot folder (a run directory :func:`zonkey.api.load` reads).

    Raises:
        HubError: a malformed address, the hub extra missing, or a download that failed.
    """
    repo, revision = parse_address(source)
    hub = _hub()
    try:
        path = hub.snapshot_download(repo_id=repo, revision=revision, cache_dir=cache_dir,
                                     local_files_only=local_files_only)
    except Exception as exc:  # the hub raises many kinds: offline, not found, gated, bad revision
        raise HubError(f"{source}: cannot download: {_one_line(exc)}") from None
    return Path(path)


def _eval_result(run: Path, eval_file: Path | None) -> dict[str, Any] | None:
    paths = [eval_file] if eval_file is not None else [run / name for name in EVAL_FILES]
    for path in paths:
        if path.is_file():
            data = read_json(path)
            if isinstance(data, dict) and isinstance(data.get("eval"), dict):  # zonkey ablate's eval.json
                data = data["eval"]
            if not isinstance(data, dict):
                raise HubError(f"{path}: expected the JSON object of `zonkey eval --json`")
            return data
        if eval_file is not None:
            raise HubError(f"{path}: no such evaluation file")
    return None


def _metrics(result: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every finite number of an evaluation, one level of nesting deep, as (dotted key, value)."""
    for key, value in result.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            yield prefix + str(key), float(value)
        elif isinstance(value, dict) and not prefix:
            yield from _metrics(value, f"{key}.")


def model_card(repo: str, recipe: dict[str, Any], step: int, result: dict[str, Any] | None) -> str:
    """The README.md of a pushed model: what it is, how to load it, and its evaluation if given.

    Args:
        repo: ``org/name`` on the hub.
        recipe: the run's recipe (``recipe.json``).
        step: the training step of the weights.
        result: the run's evaluation (``zonkey eval --json``), or None.

    Returns:
        The card's Markdown, with a YAML header the hub reads.
    """
    levels = recipe.get("model", {}).get("levels", [])
    name = recipe.get("name", repo.split("/")[-1])
    lines = [
        "---", "library_name: zonkey", "tags:", "- zonkey", "- diffusion", "- byte-level", "---", "",
        f"# {repo}", "",
        f"A Zonkey hierarchical diffusion language model (recipe `{name}`, {len(levels)} level(s), "
        f"trained {step} steps), saved by `zonkey push`.", "",
        "```python", "import zonkey", "", f'model = zonkey.load("hf://{repo}")',
        'print(zonkey.sample(model, 4))', 'print(zonkey.infill(model, "The river flows through the ", " city."))',
        "```", "",
        f"From the command line: `zonkey sample hf://{repo} -n 4` (with `pip install \"zonkey[hub]\"`).", "",
    ]
    if result:
        rows = list(_metrics(result))
        if rows:
            lines += ["## Evaluation", "", "From `zonkey eval` on the run's held-out split.", "",
                      "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {v:.6g} |" for k, v in rows]
            lines.append("")
    lines += ["## Recipe", "", "```json", json.dumps(recipe, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def stage(run: str | os.PathLike[str], out: str | os.PathLike[str], *, repo: str = "org/name",
          eval_file: str | os.PathLike[str] | None = None) -> list[str]:
    """Write the files a push uploads into ``out`` (which is created).

    Args:
        run: a run directory (``recipe.json`` and a checkpoint).
        out: the folder to fill.
        repo: ``org/name`` the model card names.
        eval_file: the evaluation for the card (default: the run's ``eval.json`` if it has one).

    Returns:
        The written files, relative to ``out``, sorted.

    Raises:
        HubError: no recipe.json, no checkpoint, or an unreadable evaluation file.
    """
    run, dst = Path(run), Path(out)
    if not (run / RECIPE_FILE).is_file():
        raise HubError(f"{run}: not a run directory (no {RECIPE_FILE})")
    recipe = read_json(run / RECIPE_FILE)
    step_dir = find_latest_checkpoint(run)
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / RECIPE_FILE, dst / RECIPE_FILE)
    if step_dir is not None:
        state = read_json(step_dir / STATE_FILE)
        files = state.get("files", {}) if isinstance(state, dict) else {}
        kept = {k: v for k, v in files.items() if k in (MODEL_FILE, EMA_FILE)}
        target = dst / CHECKPOINTS_DIR / step_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for fname in kept:
            shutil.copyfile(step_dir / fname, target / fname)
        atomic_write_json(target / STATE_FILE, {**state, "files": kept})
        step = int(state.get("step", 0))
    elif (run / MODEL_FILE).is_file():  # a weights-only run
        for fname in (MODEL_FILE, EMA_FILE):
            if (run / fname).is_file():
                shutil.copyfile(run / fname, dst / fname)
        step = 0
    else:
        raise HubError(f"{run}: no checkpoint to push (train it first)")
    result = _eval_result(run, Path(eval_file) if eval_file is not None else None)
    atomic_write_bytes(dst / "README.md", model_card(repo, recipe, step, result).encode("utf-8"))
    return sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())


def push(run: str | os.PathLike[str], repo: str, *, private: bool = False, revision: str | None = None,
         eval_file: str | os.PathLike[str] | None = None, message: str | None = None,
         token: str | None = None) -> str:
    """Upload a run's recipe, newest weights and a model card to the hub repository ``repo``.

    Args:
        run: the run directory.
        repo: ``org/name``; the model repository is created if it does not exist.
        private: create it private.
        revision: the branch to commit to (default: the default branch).
        eval_file: the evaluation for the card (default: the run's ``eval.json`` if it has one).
        message: the commit message.
        token: a hub token (default: the one ``huggingface-cli login`` stored, or ``HF_TOKEN``).

    Returns:
        The URL of the commit.

    Raises:
        HubError: a malformed repository name, the hub extra missing, nothing to push, or a failed
            upload.
    """
    repo_id, _ = parse_address(repo)
    hub = _hub()
    with tempfile.TemporaryDirectory(prefix="zonkey-push-") as tmp:
        stage(run, tmp, repo=repo_id, eval_file=eval_file)
        try:
            api = hub.HfApi(token=token)
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            info = api.upload_folder(folder_path=tmp, repo_id=repo_id, repo_type="model", revision=revision,
                                     commit_message=message or f"zonkey push {Path(run).name}")
        except Exception as exc:  # network, authentication, permissions
            raise HubError(f"{repo_id}: upload failed: {_one_line(exc)}") from None
    return str(getattr(info, "commit_url", info))
