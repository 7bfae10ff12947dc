"""``zonkey sample`` and ``zonkey infill``: text from noise, and gaps filled between known text.

Thin wrappers of :func:`zonkey.api.sample_details` and :func:`zonkey.api.infill_details`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from zonkey.cli import common

GAP_MARK = re.compile(r"_{3,}")  # a run of three or more underscores marks the gap
#: samples drawn together: a larger -n is drawn in batches of this many, batch i seeded with seed + i,
#: so memory does not grow with -n
SAMPLE_BATCH = 256
#: the most samples one call draws (more is almost certainly a typo; run several calls with other seeds)
MAX_SAMPLES = 1_000_000
#: the longest gap ``--gap`` searches, in positions of the gap's level
MAX_GAP = 4096


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    except OSError as exc:
        common.fail(f"{path}: cannot write the trace: {exc.strerror or exc}", common.EXIT_USAGE)


def sample_cmd(
    ckpt: Annotated[Path, typer.Argument(help="Run directory (or checkpoint directory), or hf://org/name[@rev].")],
    n: Annotated[int, typer.Option("-n", help="Number of samples.")] = 4,
    steps: Annotated[int | None, typer.Option("--steps", callback=common.sampler_steps,
                                              help="Denoising steps at the top level (default: recipe).")] = None,
    seed: common.Seed = 0,
    level: Annotated[int | None, typer.Option("--level", help="Start from this level (default: the top).")] = None,
    segments: Annotated[int | None, typer.Option("--segments", max=common.MAX_COUNT,
                                                 help="Latents per sample at the starting level, "
                                                 "stitched in order (default: recipe sample.top_segments).")] = None,
    trace: Annotated[Path | None, typer.Option("--trace", help="Write the decoded text at every step to this JSONL file.")] = None,
    ema: Annotated[bool, typer.Option("--ema/--no-ema")] = True,
    no_verify: common.NoVerify = False,
    progress: common.Progress = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per sample: {text, bytes}.")] = False,
    sets: common.SampleSets = None,
) -> None:
    """Generate texts from noise: the top level's sampler, decoded and stitched down to bytes.

    More than 256 samples are drawn 256 at a time (batch i with seed + i) and printed batch by batch.
    """
    if n < 1:
        common.fail("-n must be at least 1", common.EXIT_USAGE)
    if n > MAX_SAMPLES:
        common.fail(f"-n {n}: at most {MAX_SAMPLES} samples per call (run several with different --seed)",
                    common.EXIT_USAGE)
    sigmas: list[float] = []
    steps_texts: list[list[str]] = []
    with common.user_errors():
        model = common.load_model(ckpt, ema, not no_verify).with_sample_settings(sets or [])
        from zonkey.api import sample_details

        for b, start in enumerate(range(0, n, SAMPLE_BATCH)):
            with common.progress_bar("sample", progress) as cb:
                try:
                    res = sample_details(model, min(SAMPLE_BATCH, n - start), steps=steps,
                                 seed=(seed + b) % (common.MAX_SEED + 1), level=level, segments=segments,
                                 trace=trace is not None, progress=cb)
                except ValueError as exc:
                    common.fail(str(exc))
            sigmas = res.sigmas
            steps_texts = [a + t for a, t in zip(steps_texts, res.trace, strict=True)] if b else res.trace
            for t in res.texts:
                if as_json:
                    common.print_json({"text": t, "bytes": len(t.encode("utf-8"))})
                else:
                    common.print_text(repr(t))
    if trace is not None:
        _write_jsonl(trace, [{"step": i + 1, "sigma": round(s, 6), "texts": t}
                             for i, (s, t) in enumerate(zip(sigmas, steps_texts, strict=True))])


def parse_gap_text(text: str | None, prefix: str | None, suffix: str | None) -> tuple[str, str]:
    """(prefix, suffix) from ``TEXT`` with one ``___`` or from ``--prefix``/``--suffix``.

    Raises:
        typer.Exit: (after a one-line error) no input, both forms, no marker, several markers, an
            empty text, or nothing around the gap.
    """
    if text is not None and (prefix is not None or suffix is not None):
        common.fail("give TEXT with ___ or --prefix/--suffix, not both", common.EXIT_USAGE)
    if text is None:
        if prefix is None and suffix is None:
            common.fail('nothing to infill: give TEXT with ___ marking the gap (e.g. "Bob is a ___ player") '
                        "or --prefix/--suffix", common.EXIT_USAGE)
        before, after = prefix or "", suffix or ""
    else:
        if not text.strip():
            common.fail("the text is empty")
        marks = GAP_MARK.findall(text)
        if not marks:
            common.fail("the text has no ___ marking the gap (or use --prefix/--suffix)", common.EXIT_USAGE)
        if len(marks) > 1:
            common.fail(f"the text has {len(marks)} gaps (___); exactly one is supported", common.EXIT_USAGE)
        before, after = GAP_MARK.split(text)
    if not before and not after:
        common.fail("nothing around the gap: the prefix and the suffix are both empty")
    return before, after


def parse_gap_range(gap: str | None) -> tuple[int, int] | None:
    """``"3"`` -> (3, 3); ``"1-4"`` or ``"1:4"`` -> (1, 4); None stays None (the recipe's range).

    Raises:
        typer.Exit: (after a one-line error) not N or LO-HI, or not 1 <= LO <= HI <= :data:`MAX_GAP`.
    """
    if gap is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:[-:]\s*(\d+)\s*)?", gap)
    if m is None:
        common.fail(f"--gap {gap!r}: expected N or LO-HI (e.g. 2 or 1-6)", common.EXIT_USAGE)
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if lo < 1 or hi < lo or hi > MAX_GAP:
        common.fail(f"--gap {gap!r}: need 1 <= LO <= HI <= {MAX_GAP}", common.EXIT_USAGE)
    return lo, hi


def infill_cmd(
    ckpt: Annotated[Path, typer.Argument(help="Run directory (or checkpoint directory), or hf://org/name[@rev].")],
    text: Annotated[str | None, typer.Argument(help='Text with one ___ marking the gap, e.g. "Bob is a ___ player in the NBA".')] = None,
    prefix: Annotated[str | None, typer.Option("--prefix", help="Text before the gap (instead of TEXT).")] = None,
    suffix: Annotated[str | None, typer.Option("--suffix", help="Text after the gap (instead of TEXT).")] = None,
    level: Annotated[int | None, typer.Option("--level", help="Level whose sequence holds the gap (default: 1 if the "
                                                  "model has it, else 0).")] = None,
    gap: Annotated[str | None, typer.Option("--gap", help="Gap lengths to search, N or LO-HI, in positions of that "
                                                "level (bytes at level 0; default: recipe).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", callback=common.sampler_steps,
                                              help="Denoising steps (default: recipe sample.infill_steps).")] = None,
    seed: common.Seed = 0,
    trace: Annotated[Path | None, typer.Option("--trace", help="Write every candidate's gap at every step to this JSONL file.")] = None,
    ema: Annotated[bool, typer.Option("--ema/--no-ema")] = True,
    no_verify: common.NoVerify = False,
    progress: common.Progress = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: {text, gap, score, gap_len, level, candidates}.")] = False,
    sets: common.SampleSets = None,
) -> None:
    """Fill a gap between a prefix and a suffix (either may be empty: a continuation or a beginning)."""
    prefix, suffix = parse_gap_text(text, prefix, suffix)
    gap_range = parse_gap_range(gap)
    with common.user_errors():
        model = common.load_model(ckpt, ema, not no_verify).with_sample_settings(sets or [])
        from zonkey.api import infill_details

        with common.progress_bar("infill", progress) as cb:
            try:
                res = infill_details(model, prefix, suffix, level=level, gap=gap_range, steps=steps, seed=seed,
                             trace=trace is not None, progress=cb)
            except ValueError as exc:
                common.fail(str(exc))
    if trace is not None:
        lens = [c.gap_len for c in res.candidates]
        _write_jsonl(trace, [{"step": i + 1, "sigma": round(s, 6), "gaps": dict(zip(map(str, lens), gaps, strict=True))}
                             for i, (s, gaps) in enumerate(zip(res.sigmas, res.trace, strict=True))])
    if as_json:
        common.print_json(res.as_dict())
    else:
        common.print_text(res.text)
        info = f"gap {res.gap!r}: {res.gap_len} position(s) at level {res.level}, score {res.score:.3f}"
        common.stderr().print(f"[dim]{escape(info)}[/dim]")
