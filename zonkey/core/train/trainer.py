"""The training loop.

AdamW with warm-up and cosine decay, gradient clipping, EMA weights, atomic safetensors
checkpoints, exact resume, and a progress bar.

Determinism: the batch of step ``i`` is a pure function of (data config, seed, i); all other
randomness (BOS sampling, noise, dropout) draws from torch's global generator, whose state is saved
in every checkpoint. So on CPU, N steps straight and N/2 + resume + N/2 give identical weights.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zonkey.core import checkpoint as ckpt
from zonkey.core.checkpoint.layout import step_name
from zonkey.core.checkpoint.runlock import RunLock
from zonkey.core.model.network import ZonkeyModel, build_model
from zonkey.core.nn.losses import byte_balance_weights
from zonkey.core.recipe import BALANCE_CAP, Recipe, recipe_to_dict
from zonkey.core.train import distributed, runsafety
from zonkey.core.train.accumulate import add_values, micro_batches
from zonkey.core.train.banks import refresh_banks
from zonkey.core.train.fit_text import fit_to_training_text
from zonkey.core.train.loggers import RowLogger, format_row, format_validation, open_loggers
from zonkey.core.train.optim import EMA, adamw, lr_at, param_groups
from zonkey.core.train.progress import TrainProgress, TrainResult, resolve_device
from zonkey.core.train.validation import heldout_slice, validate
from zonkey.data import ByteBatches, byte_counts, load_corpus
from zonkey.errors import TrainingError


# an optimizer group pair's tag: ("level", i) or ("prior", i); None for the shared first pair
class Trainer:
    """Trains a recipe into a run directory.

    Args:
        recipe: a validated recipe.
        run_dir: where checkpoints, ``recipe.json`` and ``metrics.jsonl`` go.
        resume: continue from the newest checkpoint in ``run_dir`` (the recipe must match).
        progress: show a progress bar (default: when stderr is a terminal; else log lines).
        log: where log lines go (default: stderr).
        verify: on resume, check the checkpoint's files against their recorded SHA-256.
        restart: a fresh run into a folder that holds a run's files deletes them first (else refused).

    The run directory is locked (:class:`RunLock`) from here until :meth:`fit` returns.
    """

    def __init__(self, recipe: Recipe, run_dir: str | Path, *, resume: bool = False, progress: bool | None = None,
                 log: Callable[[str], None] | None = None, verify: bool = True, restart: bool = False) -> None:
        self.recipe = recipe
        self.verify = verify
        self.cfg = recipe.train
        self.run_dir = Path(run_dir)
        # under torchrun: a process group, this rank's device; only rank 0 logs and writes
        self.dist = distributed.setup(self.cfg.device)
        self.main = self.dist is None or self.dist.main
        self.log = (log or (lambda s: print(s, file=sys.stderr, flush=True))) if self.main else (lambda s: None)
        self.progress = (sys.stderr.isatty() if progress is None else progress) and self.main
        self.lock = RunLock(self.run_dir, "zonkey train")
        if self.main:  # before any slow work: a second writer hears at once
            self.lock.acquire()  # one writer per run; the OS releases it if this process dies
            runsafety.refuse_links(self.run_dir)
        self.device = self.dist.device if self.dist is not None else resolve_device(self.cfg.device)
        self.autocast = self.cfg.precision == "bf16" and self.device.type == "cuda"
        if self.cfg.precision == "bf16" and not self.autocast:
            self.log(f"note: train.precision bf16 applies on CUDA only; this {self.device.type} run trains in float32")
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        torch.manual_seed(self.cfg.seed)
        runsafety.seed_host_generators(self.cfg.seed)  # saved in every checkpoint: identical runs, identical files
        self.model: ZonkeyModel = build_model(recipe).to(self.device)
        self.optimizer = adamw(param_groups(self.model, self.cfg.weight_decay, recipe.model.levels), self.cfg.lr,
                               self.cfg.betas)
        self.ema = EMA(self.model, self.cfg.ema_decay)
        self.corpus = load_corpus(recipe.data)
        self.batches: ByteBatches = self.corpus.batches("train", seed=self.cfg.seed, batch_bytes=recipe.data.batch_bytes)
        self.step = 0
        self.skipped = 0
        self.nonfinite_run = 0
        self.bytes_seen = 0
        self._saved_step: int | None = None  # the step of the newest checkpoint this run has
        if resume:
            self._resume()
        else:
            self._start_fresh(restart)
            # rule-based parts counted on the training text (their tables are buffers, saved with the model)
            if fit_to_training_text(self.model.levels, self.corpus.train, self.run_dir if self.main else None,
                                    self.log):
                self.ema = EMA(self.model, self.cfg.ema_decay)  # its copy of the buffers: the fitted ones
        alpha = recipe.model.byte_loss.balance
        if alpha:
            counts = byte_counts(self.corpus.documents("train"))
            w = byte_balance_weights(counts, alpha, BALANCE_CAP)
            self.model.levels[0].byte_weights.copy_(w.to(self.device))
            self.log(f"byte_loss.balance {alpha:g}: byte weights from {int(counts.sum()):,} training bytes "
                     f"(space {float(w[32]):.2f}, 'e' {float(w[101]):.2f}, largest {float(w.max()):.1f})")
        for i, lv in enumerate(recipe.model.levels):
            if lv.schedule.lr_start >= self.cfg.steps:
                # allowed (a short smoke run of a long recipe), but never silent
                self.log(f"note: model.levels.{i}.schedule.lr_start is {lv.schedule.lr_start} "
                         f">= train.steps {self.cfg.steps}: "
                         f"level {i}'s parameters will not train in this run")
        self.net: torch.nn.Module = self.model  # what a step calls: the model, or the model under DDP
        self.ddp: Any = None
        self.loggers: list[RowLogger] = []  # train.loggers' sinks besides metrics.jsonl, open while fit() runs
        # the fixed held-out slice of train.eval_every (rank 0 scores it; the other ranks wait at the next step)
        self.val_batches = (heldout_slice(self.corpus, seed=self.cfg.seed, batch_bytes=recipe.data.batch_bytes,
                                          n=self.cfg.eval_batches) if self.cfg.eval_every and self.main else [])
        if self.cfg.eval_every and self.main and not self.val_batches:
            self.log("note: train.eval_every is set but the held-out split has no batch; no validation in this run")
        if self.dist is not None:
            if not resume and not self.dist.main:
                torch.manual_seed(distributed.rank_seed(self.cfg.seed, self.dist.rank))
            self.net = distributed.wrap_model(self.model, self.dist)
            self.ddp = self.net  # its no_sync() spans the micro-batches of a step (train.grad_accum)
            self.log(f"data parallel: {self.dist.world} ranks on {self.device.type}, each {1 / self.dist.world:.3g} "
                     "of every batch's rows")

    # -- run directory ------------------------------------------------------------------------
    def _start_fresh(self, restart: bool) -> None:
        if not self.main:
            return
        for p in runsafety.prepare_fresh(self.run_dir, restart):
            self.log(f"--restart: deleted {p}")
        ckpt.write_recipe_json(self.run_dir, recipe_to_dict(self.recipe))
        runsafety.truncate_metrics(self.run_dir, 0)  # an empty metrics.jsonl

    def _resume(self) -> None:
        saved = ckpt.read_recipe_json(self.run_dir)
        mine = recipe_to_dict(self.recipe)
        strip = lambda d: {k: v for k, v in d.items() if k not in ("zonkey_version", "schema_version", "train")}
        if strip(saved) != strip(mine):
            raise TrainingError(f"{self.run_dir}/recipe.json differs from the recipe given (outside `train`); "
                                "resume with the same recipe")
        c = ckpt.load_checkpoint(self.run_dir, verify=self.verify)
        ckpt.load_state_strict(self.model, c.model, str(c.dir))
        if c.ema is not None:
            counts = c.state.get("ema_counts")
            if counts is None:  # a checkpoint from before per-parameter counts: trained since step 0
                counts = {k: int(c.state["step"]) for k in self.ema.counts}
            self.ema.load(c.ema, counts)
        if c.optimizer is not None:
            ckpt.optimizer_from_tensors(self.optimizer, *c.optimizer)
        st = c.state
        if self.dist is not None and c.rng:
            dev = f"torch.cuda.{self.device.index}"  # this rank's own device, never every device's
            ckpt.set_rng_state({k: v for k, v in c.rng.items() if not k.startswith(("rank", "torch.cuda.")) or k == dev})
            if not self.dist.main and not distributed.restore_rank_rng(self.dist, c.rng, st.get("world"),
                                                                        self.cfg.seed, int(st["step"])):
                self.log(f"rank {self.dist.rank}: the checkpoint was saved by {st.get('world', 1)} ranks; "
                         "fresh generator for this rank")
        elif c.rng:
            ckpt.set_rng_state(c.rng)
        self.step = int(st["step"])
        self.skipped = int(st.get("skipped", 0))
        self.nonfinite_run = int(st.get("nonfinite_run", 0))
        self.bytes_seen = int(st.get("bytes_seen", 0))
        self._saved_step = self.step
        if self.main and (dropped := runsafety.truncate_metrics(self.run_dir, self.step)):
            self.log(f"metrics.jsonl: dropped {dropped} rows logged after step {self.step} (they are logged again)")
        self.log(f"resumed {self.run_dir} at step {self.step}")

    def save(self) -> Path:
        """Write a checkpoint of the current step (weights, EMA, optimizer, trainer state, recipe).

        Returns:
            The checkpoint's directory.
        """
        state = {"step": self.step, "skipped": self.skipped, "nonfinite_run": self.nonfinite_run,
                 "bytes_seen": self.bytes_seen, "ema_counts": dict(self.ema.counts),
                 "world": self.dist.world if self.dist is not None else 1}
        others = distributed.gather_rng(self.dist)  # a collective: every rank takes part, rank 0 writes
        self._saved_step = self.step
        if not self.main:
            return self.run_dir / ckpt.CHECKPOINTS_DIR / step_name(self.step)
        return ckpt.save_checkpoint(self.run_dir, step=self.step, model=self.model, ema=self.ema.state(),
                                    optimizer=self.optimizer, state=state, recipe=recipe_to_dict(self.recipe),
                                    rng_extra=others, keep=self.cfg.keep_last)

    def _write_metrics(self, row: dict[str, Any]) -> None:
        if self.main:
            runsafety.append_metrics(self.run_dir, row)

    def _stop_requested(self, signals: runsafety.StopSignals) -> bool:
        """Whether a signal asked to stop; under data parallelism, whether any rank's did (all agree)."""
        asked = signals.signum is not None
        if self.dist is not None:
            flag = torch.tensor([float(asked)], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            asked = bool(flag.item())
            if asked and signals.signum is None:
                signals.signum = 15
        return asked

    # -- one step -----------------------------------------------------------------------------
    def train_step(self) -> tuple[float | None, dict[str, float], int]:
        """One optimisation step. Returns (loss or None if skipped, logged values, bytes in batch).

        With ``train.grad_accum`` N > 1 the step's batch (this rank's rows of it under DDP) is cut
        into N row slices (rows j::N); each slice's loss is weighted by its share of the rows and its
        gradient added to the others' before one clipped optimizer step, so the update is the one a
        single pass over the whole batch would give, at about 1/N of its activation memory.
        """
        self.model.train()
        refresh_banks(self.model, self.step, self.corpus.train, self.log)
        batch = self.batches.batch(self.step)
        global_bytes, weight = batch.num_bytes, 1.0
        if self.dist is not None:  # this rank's rows of the step's batch; the loss weighted by their share
            batch, weight = distributed.shard_batch(batch, self.dist.rank, self.dist.world)
        lr = lr_at(self.step, self.cfg)
        # levels on their own schedule (their groups are tagged by param_groups): one value each
        levels = self.recipe.model.levels
        level_lr = {i: lr_at(self.step, self.cfg, levels[i].schedule.lr_start, levels[i].schedule.lr_scale)
                    for i in {g["level"] for g in self.optimizer.param_groups if "level" in g}}
        prior_lr = {i: lr_at(self.step, self.cfg, levels[i].prior.lr_start, levels[i].prior.lr_scale)
                    for i in {g["prior"] for g in self.optimizer.param_groups if "prior" in g}}
        for g in self.optimizer.param_groups:
            g["lr"] = level_lr[g["level"]] if "level" in g else prior_lr[g["prior"]] if "prior" in g else lr
        scales = self.cfg.scales(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        micro = micro_batches(batch, self.cfg.grad_accum)
        values: dict[str, float] = {}
        schedule = {"lr": lr, **{f"lr.l{i}": v for i, v in level_lr.items()},
                    **{f"lr.l{i}.prior": v for i, v in prior_lr.items()}, **{f"w.{k}": v for k, v in scales.items()}}
        mean_loss = 0.0
        for j, (part, share) in enumerate(micro):
            part = part.to(self.device)
            last = j == len(micro) - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext():
                with torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext():
                    out = self.net(part.tokens, part.valid, scales=scales)
                w = weight * share
                loss = out.loss if w == 1.0 else out.loss * w
                if j == 0:
                    self._last_split = (part.tokens, part.valid, out.levels[0].split.p_bos.detach()) if out.levels else None
                add_values(values, {k: float(v.detach()) for k, v in out.terms.items()}, share)
                add_values(values, out.stats, share)
                part_loss, finite = distributed.agree_loss(loss, self.dist)  # every rank skips, or none does
                if not finite:
                    self.optimizer.zero_grad(set_to_none=True)  # the slices before it added theirs
                    values.update(schedule)
                    self._skip_nonfinite("loss", [k for k, v in values.items() if not math.isfinite(v)])
                    return None, values, global_bytes
                mean_loss += part_loss
                loss.backward()
                del out, loss
        values.update(schedule)
        gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        values["grad_norm"] = float(gn)
        if not torch.isfinite(gn):  # clipping by an infinite norm would write NaN into the weights
            self.optimizer.zero_grad(set_to_none=True)
            self._skip_nonfinite("gradient", ["grad_norm"])
            return None, values, global_bytes
        self.optimizer.step()
        self.ema.update(self.model, self.step)
        self.nonfinite_run = 0
        return mean_loss, values, global_bytes

    def _skip_nonfinite(self, what: str, bad: list[str]) -> None:
        """Count and log a skipped step; stop once ``train.max_nonfinite`` come in a row.

        Raises:
            TrainingError: the limit is reached (the message says where the last good checkpoint is).
        """
        self.nonfinite_run += 1
        self.skipped += 1
        self.log(f"step {self.step}: non-finite {what} ({', '.join(bad) or 'total'}); step skipped "
                 f"({self.nonfinite_run} in a row)")
        if self.nonfinite_run >= self.cfg.max_nonfinite:
            last = ckpt.find_latest_checkpoint(self.run_dir)
            where = f"the last good checkpoint is {last}" if last is not None else "no checkpoint was saved"
            raise TrainingError(
                f"{self.nonfinite_run} non-finite losses in a row at step {self.step} (terms: {', '.join(bad)}); "
                f"stopping (train.max_nonfinite is {self.cfg.max_nonfinite}). Lower train.lr or check the data; {where}"
            )

    def _boundary_values(self) -> dict[str, float]:
        """Level-0 boundary statistics of the last training batch against word edges.

        Logged as ``l0.space_f1``, ``l0.word_f1``, ``l0.p_bos_edge`` and ``l0.p_bos_other``
        (measurement only: the model never sees them).
        """
        last = getattr(self, "_last_split", None)
        if last is None:
            return {}
        from zonkey.core.nn.boundaries import boundary_stats

        tokens, valid, p_bos = last
        return {f"l0.{k}": v for k, v in boundary_stats(p_bos, tokens, valid).items()}

    # -- held-out validation and loggers --------------------------------------------------------
    def _validation_due(self, end: int) -> bool:
        """Whether the step just taken ends with the held-out pass (every ``train.eval_every`` and the last)."""
        every = self.cfg.eval_every
        return bool(every and self.val_batches and (self.step % every == 0 or self.step == end))

    def _validation_values(self) -> dict[str, float]:
        """The ``val.*`` figures of the fixed held-out slice, and ``eval_s``, the seconds they took."""
        t = time.perf_counter()
        res = validate(self.model, self.val_batches, scales=self.cfg.scales(self.step - 1, gated=False), seed=self.cfg.seed,
                       device=self.device)
        self.model.train()
        res["eval_s"] = time.perf_counter() - t
        return res

    def _open_loggers(self) -> list[RowLogger]:
        if not self.main:
            return []
        return open_loggers(self.cfg.loggers, self.run_dir, recipe_to_dict(self.recipe), self.run_dir.name)

    def _send_to_loggers(self, row: dict[str, Any]) -> None:
        for lg in self.loggers:
            lg.log(self.step, row)

    def _close_loggers(self) -> None:
        for lg in self.loggers:
            lg.close()
        self.loggers = []

    # -- loop ---------------------------------------------------------------------------------
    def fit(self, stop_at: int | None = None) -> TrainResult:
        """Train until ``train.steps`` (or ``stop_at``, for tests of resume)."""
        end = min(self.cfg.steps, stop_at) if stop_at is not None else self.cfg.steps
        t0 = time.perf_counter()
        start_bytes = self.bytes_seen
        last = float("nan")
        window: list[float] = []
        # each training figure's latest value since the last logged row: a level or term that a
        # curriculum computes only every N steps still shows its last value in every row
        recent: dict[str, float] = {}
        bar = TrainProgress(end, self.step, enabled=self.progress)
        if self.main:
            self.lock.acquire()  # held since __init__; taken again when fit runs a second time
        self.loggers = self._open_loggers()
        signals = runsafety.StopSignals()
        try:
            signals.__enter__()
            while self.step < end:
                loss, values, nbytes = self.train_step()
                recent.update(values)
                self.bytes_seen += nbytes
                self.step += 1
                if loss is not None:
                    last = loss
                    window.append(loss)
                elapsed = time.perf_counter() - t0
                bps = (self.bytes_seen - start_bytes) / max(elapsed, 1e-9)
                bar.update(self.step, loss=last, bps=bps, acc=values.get("l0.train_byte_acc"))
                validating = self._validation_due(end)
                if self.step % self.cfg.log_every == 0 or self.step == end or validating:
                    recent.update(self._boundary_values())
                    if validating:
                        recent.update(self._validation_values())
                    row = {"step": self.step, "loss": (sum(window) / len(window)) if window else None,
                           "bytes_per_s": bps, "elapsed_s": elapsed, **recent}
                    self._write_metrics(row)
                    self._send_to_loggers(row)
                    if not self.progress:
                        self.log(format_row(row, end, self.cfg.ramping(self.step - 1)))
                    elif validating:
                        self.log(format_validation(row))
                    window = []
                    recent = {}
                if self.cfg.save_every and self.step % self.cfg.save_every == 0 and self.step < end:
                    self.save()
                if self._stop_requested(signals):
                    break
            bar.close()
            if self._saved_step != self.step:
                self.save()
        finally:
            signals.__exit__(None, None, None)
            bar.close()
            self._close_loggers()
            self.lock.release()
        if signals.signum is not None:
            self.log(runsafety.interrupted_message(self.run_dir, self.step, signals.signum))
        seconds = time.perf_counter() - t0
        return TrainResult(self.run_dir, self.step, last, self.skipped, self.bytes_seen - start_bytes, seconds,
                           {"bytes_per_s": (self.bytes_seen - start_bytes) / max(seconds, 1e-9)},
                           interrupted=signals.signum)


def train(recipe: Recipe, run_dir: str | Path, *, resume: bool = False, progress: bool | None = None,
          stop_at: int | None = None, verify: bool = True, restart: bool = False) -> TrainResult:
    """Train ``recipe`` into ``run_dir`` (library entry point of ``zonkey train``; see :class:`Trainer`)."""
    trainer = Trainer(recipe, run_dir, resume=resume, progress=progress, verify=verify, restart=restart)
    result = trainer.fit(stop_at=stop_at)
    distributed.teardown(trainer.dist)  # not on an error: torchrun stops the other ranks then
    return result
