"""The recipe sections outside the model: ``data``, ``train`` (with its curriculum), ``sample``.

Also the per-level loss weights, which the curriculum names.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

#: the most training steps a recipe may ask for
MAX_TRAIN_STEPS = 100_000_000
#: the most denoising steps of one sampler call (``sample.steps``, ``level_steps``, ``infill_steps``, ``--steps``)
MAX_SAMPLE_STEPS = 100_000
#: the fastest a sampler step runs (the micro model on one CPU core): the pre-flight estimates' rate
SAMPLE_STEP_SECONDS = 0.004
#: the most gap positions one infill draws in its batch (all gap lengths of the range together)
MAX_INFILL_POSITIONS = 65_536
#: the longest text a recipe cuts into one document, and the largest byte budget of one batch
MAX_DOC_BYTES = 1 << 20
MAX_BATCH_BYTES = 1 << 28


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:,.0f} {unit}"
    return f"{seconds:.0f} s"


def check_sample_steps(name: str, value: int) -> int:
    """``value`` if within 1 .. :data:`MAX_SAMPLE_STEPS`, else a message with the time it would take.

    The recipe's fields and the ``--steps`` flags share it, so both give the same message
    (``name``: what to put first, e.g. ``"--steps "``; the recipe's error names the field itself).

    Raises:
        ValueError: out of range (pydantic turns it into the recipe's one-line error).
    """
    if value < 1:
        raise ValueError(f"{name}must be at least 1, got {value:,}")
    if value > MAX_SAMPLE_STEPS:
        raise ValueError(f"{name}{value:,} steps would take about {_duration(value * SAMPLE_STEP_SECONDS)} per "
                         f"sampler call; the limit is {MAX_SAMPLE_STEPS:,}")
    return value


def check_gap_range(name: str, gap: tuple[int, int], low: int) -> tuple[int, int]:
    """A gap range ``(lo, hi)`` with ``low <= lo <= hi``, its gaps together within the limit.

    All gap lengths of the range are drawn in one batch, so together they may hold at most
    :data:`MAX_INFILL_POSITIONS` positions.

    Raises:
        ValueError: out of order, below ``low``, or past the limit (with the size it would have).
    """
    lo, hi = gap
    if lo < low or hi < lo:
        raise ValueError(f"{name}must be [lo, hi] with {low} <= lo <= hi, got [{lo}, {hi}]")
    total = (lo + hi) * (hi - lo + 1) // 2
    if total > MAX_INFILL_POSITIONS:
        raise ValueError(f"{name}[{lo:,}, {hi:,}] would draw {total:,} gap positions in one batch; the limit is "
                         f"{MAX_INFILL_POSITIONS:,} (e.g. [1, {_widest(lo)}])")
    return gap


def _widest(lo: int) -> int:
    hi = lo
    while (lo + hi + 1) * (hi + 2 - lo) // 2 <= MAX_INFILL_POSITIONS:
        hi += 1
    return hi


class Strict(BaseModel):
    """Base of every recipe section: unknown keys fail, values are immutable, numbers are finite."""

    # an infinite learning rate or width validated and trained to NaN weights without an error
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False)


class DataConfig(Strict):
    """Where the text comes from and how it is cut into batches."""

    source: str = Field(default="wiki", description="'wiki' (bundled Wikipedia sample), a local .txt/.jsonl/.parquet "
                        "file or folder, or 'hf:<dataset>[:<config>][@<revision>]' (needs a network); never empty")
    text_column: str = Field(default="text", description="column holding the text (jsonl/parquet/hub)")
    split: str = Field(default="train", description="split of a hub dataset")
    max_doc_bytes: int = Field(default=1024, ge=8, le=MAX_DOC_BYTES,
                               description="documents are chunked to at most this many bytes")
    batch_bytes: int = Field(default=4096, ge=8, le=MAX_BATCH_BYTES, description="byte budget of one batch")
    heldout_fraction: float = Field(default=0.05, gt=0.0, lt=1.0, description="documents held out (by hash) for eval")
    max_docs: int | None = Field(default=None, ge=1, le=10**12,
                                 description="use at most this many documents (after the split)")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("is empty; give 'wiki', a .txt/.jsonl/.parquet file or folder, or 'hf:<name>' "
                             "(an empty path would read the working directory)")
        return v

    @model_validator(mode="after")
    def _budget(self) -> DataConfig:
        if self.batch_bytes < self.max_doc_bytes:
            raise ValueError(f"batch_bytes ({self.batch_bytes}) must be >= max_doc_bytes ({self.max_doc_bytes})")
        return self


class LossWeights(Strict):
    """Weight of every loss term of a level: the level loss is the weighted sum, never a mean."""

    token: float = Field(default=1.0, ge=0, description="level 0: byte cross-entropy with 2·atanh(cos) logits")
    recon_clean: float = Field(default=1.0, ge=0,
                               description="contrastive reconstruction after light noise (level >= 1)")
    recon_dirty: float = Field(default=0.5, ge=0, description="reconstruction after heavy noise (both levels)")
    diffusion: float = Field(default=1.0, ge=0, description="the objective's own loss (DDMM mixed step, flow, plain)")
    bos: float = Field(default=1.0, ge=0, description="denoiser BOS/existence BCE against the splitter's existence")
    avg_bos: float = Field(default=1.0, ge=0,
                           description="penalty on the average BOS probability above the target rate")
    long: float = Field(default=10.0, ge=0, description="long-segment probability penalty")
    short: float = Field(default=10.0, ge=0, description="short-segment probability penalty")
    collapse: float = Field(default=0.1, ge=0, description="cosine penalty between latents of different documents")
    mlm: float = Field(default=0.0, ge=0, description="masked prediction (off at level 0 by default)")
    decode: float = Field(default=0.0, ge=0, description="level >= 1: its decoded slots, read as latents of the level "
                          "below and decoded by that level's denoiser, must give back the level below's own targets "
                          "(bytes at level 0) and lengths; trains the round trip directly (not in the paper)")
    stitch_offset: float = Field(default=0.1, ge=0, description="stitcher offset regression")
    stitch_overlap: float = Field(default=0.1, ge=0, description="stitcher overlap reconstruction")
    prior: float = Field(default=1.0, ge=0, description="the level's sequence prior (when it has one): denoising "
                         "loss of its latent sequences, which are detached (the prior does not reshape them)")


class Ramp(Strict):
    """One curriculum entry (§8).

    The weight multiplier of ``term`` is ``low`` (default 0) before ``start``, moves linearly to
    ``high`` (default 1) at ``end`` and stays there. ``term`` is a level (``l1``: that level's whole
    loss) or one loss term of a level (``l0.diffusion``, any field of ``losses``). ``low``/``high``
    other than 0/1 re-weight a term that is on throughout, e.g.
    ``{term: l0.avg_bos, start: 600, end: 900, low: 1, high: 2.5}``.
    """

    term: str = Field(..., pattern=r"^l\d+(\.[a-z_]+)?$")
    start: int = Field(default=0, ge=0)
    end: int = Field(default=0, ge=0)
    low: float = Field(default=0.0, ge=0, description="multiplier before start")
    high: float = Field(default=1.0, ge=0, description="multiplier from end on")
    every: int = Field(default=1, ge=1, le=10**6, description="the term is on only at steps divisible by this "
                       "(multiplier 0 at the others): a level on every 2nd step costs half its time, and its "
                       "parameters take an optimizer step only when it is on")

    @model_validator(mode="after")
    def _order(self) -> Ramp:
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) must be >= start ({self.start})")
        if "." in self.term and self.term.split(".", 1)[1] not in LossWeights.model_fields:
            term = self.term.split(".", 1)[1]
            raise ValueError(f"unknown loss term {term!r}; terms: {', '.join(LossWeights.model_fields)}")
        return self

    @property
    def level(self) -> int:
        """The level the term belongs to (``l1.bos`` -> 1)."""
        return int(self.term[1:].split(".", 1)[0])

    def factor(self, step: int, gated: bool = True) -> float:
        """The multiplier at ``step`` (``gated`` False: as if the term were on every step)."""
        if gated and step % self.every:
            return 0.0
        if step < self.start:
            return self.low
        if step >= self.end:
            return self.high
        return self.low + (self.high - self.low) * (step - self.start) / max(self.end - self.start, 1)


class TrainConfig(Strict):
    """Optimisation and bookkeeping."""

    steps: int = Field(default=1000, ge=1, le=MAX_TRAIN_STEPS)
    lr: float = Field(default=1e-3, gt=0, le=10)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="cosine decay ends at lr × this")
    warmup_steps: int = Field(default=100, ge=0, le=MAX_TRAIN_STEPS)
    weight_decay: float = Field(default=0.01, ge=0, le=100)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(default=1.0, gt=0, le=1e9)
    ema_decay: float = Field(default=0.999, ge=0, lt=1)
    seed: int = Field(default=0, ge=-(2**63), le=2**63 - 1, description="what torch's generator takes")
    log_every: int = Field(default=10, ge=1, le=MAX_TRAIN_STEPS)
    eval_every: int = Field(default=0, ge=0, le=MAX_TRAIN_STEPS, description="every this many steps (and at the "
                            "last step) a cheap held-out pass logs val.* figures (losses, t-0 reconstruction, boundary "
                            "F1) on a fixed held-out slice; 0: none while training (`zonkey eval` scores the finished run)")
    eval_batches: int = Field(default=2, ge=1, le=1000, description="held-out batches of that pass (the first ones "
                              "of the held-out split, the same every time)")
    grad_accum: int = Field(default=1, ge=1, le=1024, description="micro-batches per optimizer step: each step's "
                            "batch (data.batch_bytes) is cut into this many row slices whose gradients add up to the "
                            "whole batch's, so the memory of a forward pass is about 1/grad_accum of it")
    loggers: tuple[Literal["jsonl", "tensorboard", "wandb"], ...] = Field(
        default=("jsonl",), description="where the logged rows go besides the log line: jsonl (RUN/metrics.jsonl, "
        "always written), tensorboard (RUN/tensorboard, needs `pip install -e .[tensorboard]`), wandb (needs the "
        "wandb package; WANDB_MODE=offline keeps it on disk)")
    save_every: int = Field(default=0, ge=0, le=MAX_TRAIN_STEPS, description="0: save only at the end")
    keep_last: int = Field(default=2, ge=1, le=1000, description="checkpoints kept in checkpoints/ (the newest "
                           "ones; older ones are deleted after each save)")
    max_nonfinite: int = Field(default=5, ge=1, le=1_000_000, description="stop after this many non-finite losses in a row")
    device: str = Field(default="auto", description="'auto', 'cpu' or 'cuda[:i]'")
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32", description="bf16: the forward pass under bfloat16 autocast on CUDA (float32 on CPU, with a "
        "note); existence math stays float32 either way")
    threads: int = Field(default=0, ge=0, le=1024, description="torch CPU threads, 0 = torch's default")
    curriculum: list[Ramp] = Field(default_factory=list, description="per-level / per-term weight ramps (§8)")

    @model_validator(mode="after")
    def _loggers(self) -> TrainConfig:
        if len(set(self.loggers)) != len(self.loggers):
            raise ValueError(f"loggers {list(self.loggers)}: each logger at most once")
        return self

    def ramping(self, step: int) -> dict[str, float]:
        """The curriculum entries whose multiplier is moving at ``step`` (start <= step < end).

        Returns:
            ``{"l1": 0.33, ...}``: the multiplier of every ramping term (entries naming one term multiply).
        """
        moving = {r.term for r in self.curriculum if r.start <= step < r.end}
        return {t: v for t, v in self.scales(step, gated=False).items() if t in moving}

    def scales(self, step: int, gated: bool = True) -> dict[str, float]:
        """Curriculum multipliers at ``step``.

        ``gated`` False leaves out the entries' ``every`` (a held-out pass scores every level that
        has started, whichever step it falls on).

        Returns:
            ``{"l1": 0.5, "l0.diffusion": 1.0, ...}``: entries naming the same term multiply.
        """
        out: dict[str, float] = {}
        for r in self.curriculum:
            out[r.term] = out.get(r.term, 1.0) * r.factor(step, gated)
        return out


class SampleConfig(Strict):
    """Generation and infilling defaults."""

    steps: int = Field(default=30, description="denoising steps at the top level (1 to 100,000)")
    level_steps: int = Field(default=4, description="denoising steps when decoding a lower level (1 to 100,000)")
    sigma_max: float = Field(default=1.0, gt=0, le=1)
    sigma_min: float = Field(default=0.0, ge=0, lt=1)
    epsilon: float = Field(default=0.1, gt=0, lt=1, description="truncate where existence < epsilon")
    top_segments: int = Field(default=8, ge=1, le=4096, description="top-level sequence length generated from noise")
    infill_gap: tuple[int, int] = Field(default=(1, 4), description="range of gap lengths searched when infilling "
                                        "(all of them together at most 65,536 positions)")
    level_sigma: float = Field(default=0.1, ge=0, lt=1,
                               description="noise level each lower level's decoding starts from "
                               "(a short denoising loop of level_steps steps back to 0)")
    infill_gap_bytes: tuple[int, int] = Field(default=(1, 12), description="range of gap lengths (bytes) searched when "
                                              "infilling at level 0 (infill_gap counts positions of levels >= 1; "
                                              "all of them together at most 65,536 bytes)")
    infill_steps: int = Field(default=10, description="denoising steps of an infill (all gap lengths in one batch; "
                              "1 to 100,000)")
    length: int = Field(default=32, ge=1, le=4096, description="latents per sample drawn by a level's sequence "
                        "prior (about one word each at level 0)")
    eta: float = Field(default=0.0, ge=0, le=1, description="sequence prior sampler: 0 deterministic steps, "
                       "1 ancestral (fresh noise each step)")
    mode: Literal["mean", "draw", "commit"] = Field(
        default="mean", description="sequence prior sampler with a vocabulary head: mean (the distribution's "
        "expectation each step, its argmax at the end), draw (an entry drawn each step) or commit (mean, and the "
        "most confident positions fixed to a drawn entry as the steps go)")
    temperature: float = Field(default=1.0, gt=0, le=100, description="temperature of the draws (mode draw, commit)")
    commit_order: Literal["confidence", "random"] = Field(
        default="confidence", description="mode commit: which positions are fixed first, the most confident "
        "(their drawn entry's probability) or a random order (the masked model's ancestral order)")
    other_scale: float = Field(default=1.0, gt=0, le=1, description="sequence prior with a vocabulary head: "
                               "multiplies the probability of its 'other' class (segments outside the bank) while "
                               "sampling; 1 as the model says, below 1 fewer of them (never 0: the vocabulary stays open)")
    @field_validator("steps", "level_steps", "infill_steps")
    @classmethod
    def _steps(cls, v: int, info: ValidationInfo) -> int:
        return check_sample_steps("", v)

    @field_validator("infill_gap", "infill_gap_bytes")
    @classmethod
    def _gaps(cls, v: tuple[int, int], info: ValidationInfo) -> tuple[int, int]:
        return check_gap_range("", v, 0 if info.field_name == "infill_gap" else 1)
