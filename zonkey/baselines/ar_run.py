"""Training the autoregressive byte baseline into its own run directory.

It is trained on the same data as a recipe, in the same batches (the recipe's ``data`` section,
byte budget and seed), with the recipe's optimiser settings and step count, or for a wall-clock
budget. Layout of its run directory::

    RUN/baseline.json             what was trained: {kind: ar, name, recipe, model, data, train, seconds}
    RUN/checkpoints/step-N/       model.safetensors, optimizer.safetensors, rng.safetensors, state.json
    RUN/LATEST, RUN/model.safetensors
    RUN/metrics.jsonl             loss, bits per byte of the training batch, lr, bytes/s

The checkpoints are the project's own (:mod:`zonkey.core.checkpoint`): safetensors + JSON, atomic.
``baseline.json`` instead of ``recipe.json`` tells ``zonkey eval`` which kind of run it reads.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zonkey.baselines.ar_model import ARConfig, ByteTransformer, shift_inputs
from zonkey.core import checkpoint as ckpt
from zonkey.core.checkpoint.runlock import RunLock
from zonkey.core.recipe import DataConfig, Recipe, TrainConfig
from zonkey.core.train import runsafety
from zonkey.core.train.optim import lr_at
from zonkey.data import load_corpus
from zonkey.io import CheckpointError, atomic_write_json, inside, read_json
from zonkey.version import __version__

AR_FILE = "baseline.json"
FORMAT_VERSION = 1


class ARRun(BaseModel):
    """What an autoregressive baseline run trains: its size, the recipe's data and training settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["ar"] = "ar"
    format_version: int = FORMAT_VERSION
    name: str = "ar"
    recipe: str = Field(default="", description="the recipe it was trained beside")
    model: ARConfig = ARConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    seconds: float | None = Field(default=None, gt=0, description="wall-clock budget of the training "
                                   "(null: train.steps alone)")

    @classmethod
    def from_recipe(cls, recipe: Recipe, *, model: ARConfig | None = None, steps: int | None = None,
                    seconds: float | None = None) -> ARRun:
        """The baseline of ``recipe``: its data, its optimiser settings and steps (or ``steps``).

        ``model.context`` is set to the recipe's ``max_doc_bytes + 1`` (every chunk and its start token).
        """
        size = (model or ARConfig()).model_copy(update={"context": recipe.data.max_doc_bytes + 1})
        train = recipe.train.model_copy(update={"curriculum": [], **({"steps": steps} if steps else {})})
        return cls(name=f"{recipe.name}-ar", recipe=recipe.name, model=ARConfig.model_validate(size.model_dump()),
                   data=recipe.data, train=train, seconds=seconds)


def run_dir_of(path: str | Path) -> Path:
    """The run directory of an autoregressive run or of one of its step directories."""
    p = Path(path)
    return ckpt.run_dir_of(p) if not (p / AR_FILE).is_file() else p


def is_ar_run(path: str | Path) -> bool:
    """Whether ``path`` (a run or step directory) holds an autoregressive baseline run."""
    return (run_dir_of(path) / AR_FILE).is_file()


def read_ar_run(path: str | Path) -> ARRun:
    """The saved :class:`ARRun` of a run directory.

    Raises:
        CheckpointError: a missing, unreadable or invalid ``baseline.json`` (the message names it).
    """
    run = run_dir_of(path)
    f = run / AR_FILE
    if not f.is_file():
        raise CheckpointError(f"{f}: missing file (not an autoregressive baseline run)")
    inside(run, f, str(run))
    data = read_json(f)
    version = data.get("format_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(f"{f}: format_version {version} is newer than this zonkey reads")
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "zonkey_version"}
    try:
        return ARRun.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise CheckpointError(f"{f}: {where}: {first['msg']}") from None


def load_ar_model(path: str | Path, device: str | torch.device = "cpu", *,
                  verify: bool = True) -> tuple[ByteTransformer, ARRun]:
    """The trained byte transformer of a run (or step) directory, in eval mode, and its run config.

    ``verify`` checks the checkpoint's files against their recorded SHA-256.

    Raises:
        CheckpointError: no baseline.json, no checkpoint, corrupt files or weights that do not match.
    """
    run = read_ar_run(path)
    model = ByteTransformer(run.model)
    c = ckpt.load_checkpoint(path, include_optimizer=False, verify=verify)
    ckpt.load_state_strict(model, c.model, c.dir / ckpt.MODEL_FILE)
    return model.to(device).eval(), run


@dataclass
class ARResult:
    """What a finished baseline training reports."""

    run_dir: Path
    step: int
    last_loss: float
    seconds: float
    bytes_per_s: float
    finished: bool


class ARTrainer:
    """Trains an :class:`ARRun` into a run directory (resumable, like ``zonkey train``).

    Args:
        run: what to train.
        run_dir: where it goes.
        resume: continue the run in ``run_dir`` from its newest checkpoint (the config must match).
        log: where log lines go (default: stderr).

    Raises:
        CheckpointError: ``run_dir`` holds a run already (without ``resume``), or a different one.
    """

    def __init__(self, run: ARRun, run_dir: str | Path, *, resume: bool = False,
                 log: Callable[[str], None] | None = None) -> None:
        self.run = run
        self.run_dir = Path(run_dir)
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        cfg = run.train
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                                   else "cpu" if cfg.device == "auto" else cfg.device)
        self.model = ByteTransformer(run.model).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=cfg.betas,
                                           weight_decay=cfg.weight_decay)
        self.corpus = load_corpus(run.data)
        self.batches = self.corpus.batches("train", seed=cfg.seed, batch_bytes=run.data.batch_bytes)
        doc = np.asarray(self.corpus.train_doc)
        self.ends = torch.from_numpy(np.r_[doc[1:] != doc[:-1], True])  # (chunks,) the chunk ends its document
        self.step, self.bytes_seen, self.seconds_done = 0, 0, 0.0
        self.lock = RunLock(self.run_dir, "zonkey baseline ar").acquire()  # one writer per run
        runsafety.refuse_links(self.run_dir)
        if resume:
            self._resume()
        else:
            if (self.run_dir / ckpt.LATEST_FILE).exists() or (self.run_dir / ckpt.MODEL_FILE).exists():
                raise CheckpointError(f"{self.run_dir} already holds a run; pass --resume to continue it "
                                      "or choose another --out")
            atomic_write_json(self.run_dir / AR_FILE, {**json.loads(run.model_dump_json()),
                                                        "zonkey_version": __version__})
            runsafety.truncate_metrics(self.run_dir, 0)  # empty, replaced (never written through a link)

    def _resume(self) -> None:
        saved = read_ar_run(self.run_dir)
        strip = lambda r: r.model_dump(exclude={"train", "seconds"})
        if strip(saved) != strip(self.run):
            raise CheckpointError(f"{self.run_dir}/{AR_FILE} differs from the baseline asked for (outside `train`); "
                                  "resume with the same recipe and sizes")
        c = ckpt.load_checkpoint(self.run_dir)
        ckpt.load_state_strict(self.model, c.model, c.dir / ckpt.MODEL_FILE)
        if c.optimizer is not None:
            ckpt.optimizer_from_tensors(self.optimizer, *c.optimizer)
        if c.rng:
            ckpt.set_rng_state(c.rng)
        self.step = int(c.state.get("step", c.step))
        self.bytes_seen = int(c.state.get("bytes_seen", 0))
        self.seconds_done = float(c.state.get("seconds", 0.0))
        runsafety.truncate_metrics(self.run_dir, self.step)  # rows after the checkpoint are logged again
        self.log(f"resumed {self.run_dir} at step {self.step}")

    @property
    def finished(self) -> bool:
        """Whether the step count or the time budget is used up."""
        budget = self.run.seconds
        return self.step >= self.run.train.steps or (budget is not None and self.seconds_done >= budget)

    def save(self) -> Path:
        """A checkpoint of the current step (weights, optimizer, generators, trainer state)."""
        state = {"step": self.step, "bytes_seen": self.bytes_seen, "seconds": self.seconds_done,
                 "finished": self.finished}
        return ckpt.save_checkpoint(self.run_dir, step=self.step, model=self.model, ema=None,
                                    optimizer=self.optimizer, state=state)

    def train_step(self) -> tuple[float, int]:
        """One optimisation step: (loss in nats per scored target, real bytes in the batch)."""
        self.model.train()
        batch = self.batches.batch(self.step)
        assert batch.chunk_index is not None
        inputs, targets = shift_inputs(batch.tokens, batch.valid, self.ends[batch.chunk_index])
        inputs, targets = inputs.to(self.device), targets.to(self.device)
        for g in self.optimizer.param_groups:
            g["lr"] = lr_at(self.step, self.run.train)
        logits = self.model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.run.train.grad_clip)
        self.optimizer.step()
        return float(loss.detach()), batch.num_bytes

    def fit(self) -> ARResult:
        """Train until the steps or the time budget are used up; a checkpoint at the end."""
        cfg = self.run.train
        t0 = time.perf_counter()
        start_bytes, start_seconds = self.bytes_seen, self.seconds_done
        last, window = float("nan"), []
        while not self.finished:
            loss, nbytes = self.train_step()
            self.step += 1
            self.bytes_seen += nbytes
            self.seconds_done = start_seconds + time.perf_counter() - t0
            last = loss
            window.append(loss)
            if self.step % cfg.log_every == 0 or self.finished:
                elapsed = time.perf_counter() - t0
                mean = sum(window) / len(window)
                row = {"step": self.step, "loss": mean, "bits_per_byte": mean / math.log(2),
                       "lr": lr_at(self.step - 1, cfg),
                       "bytes_per_s": (self.bytes_seen - start_bytes) / max(elapsed, 1e-9), "elapsed_s": elapsed}
                runsafety.append_metrics(self.run_dir, row)
                self.log(f"step {self.step}/{cfg.steps} loss={mean:.4f} ({row['bits_per_byte']:.3f} bits) "
                         f"{row['bytes_per_s']:.0f} B/s")
                window = []
            if cfg.save_every and self.step % cfg.save_every == 0 and not self.finished:
                self.save()
        self.save()
        self.lock.release()
        seconds = time.perf_counter() - t0
        return ARResult(self.run_dir, self.step, last, seconds, (self.bytes_seen - start_bytes) / max(seconds, 1e-9),
                        self.finished)


def train_ar(run: ARRun, run_dir: str | Path, *, resume: bool = False,
             log: Callable[[str], None] | None = None) -> ARResult:
    """Train the baseline ``run`` into ``run_dir`` (library entry point of ``zonkey baseline ar``)."""
    return ARTrainer(run, run_dir, resume=resume, log=log).fit()
