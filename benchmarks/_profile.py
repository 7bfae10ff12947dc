"""Where one training step spends its time, and how close it comes to the CPU's matmul peak.

Used by ``benchmarks/train.py --profile``. Four measurements:

* ``label_components`` wraps the model's components (splitter, compressor, each denoiser pass of
  the objective, the losses, the prior, the attention calls) and the trainer's phases (batch,
  zero_grad, backward, clip, optimizer, EMA) in ``torch.profiler.record_function`` scopes, in place
  on one trainer. Nothing the step computes changes: the wrappers only name what runs.
* ``attribute`` turns one profiled step into self CPU time per scope and per op. Backward ops carry
  the sequence number of the forward op that recorded them, so their time goes to the scope that
  ran that forward op (``fwd`` and ``bwd`` are reported apart).
* ``matmul_peak`` times large fp32 matrix products (the CPU's own ceiling, GFLOP/s), and
  ``step_flops`` counts the step's model FLOPs (matmuls, attention, convolutions; forward and
  backward) with ``torch.utils.flop_counter``.
* ``matmul_calls`` and ``time_alone`` give the step's floor at its own shapes: every matrix product
  the profiled step ran (forward and backward, with its operand shapes), each timed again alone on
  fresh operands. Their sum is what the step would cost if nothing but its matmuls took time and
  each ran as fast as it does by itself: no rewrite that keeps the model's products can beat it.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.autograd.profiler import record_function

PREFIX = "z:"
BWD_ROOT = "autograd::engine::evaluate_function: "


def _wrap(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        with record_function(PREFIX + name):
            return fn(*args, **kwargs)

    return inner


def _wrap_attr(obj: Any, attr: str, name: str) -> None:
    setattr(obj, attr, _wrap(getattr(obj, attr), name))


class _PassNames:
    """Names the denoiser passes of one objective call in the order the mixed step makes them."""

    ORDER = ("clean", "dirty", "light")

    def __init__(self) -> None:
        self.inside = False
        self.count = 0

    def next(self) -> str:
        i = self.count
        self.count += 1
        return self.ORDER[i] if i < len(self.ORDER) else f"pass{i}"


def label_components(trainer: Any) -> None:
    """Wrap every component of ``trainer``'s model and the trainer's phases in named scopes."""
    import zonkey.components.objective.ddmm as ddmm_obj
    import zonkey.core.model.level_losses as losses_mod

    model = trainer.model
    for i, lv in enumerate(model.levels):
        pre = f"l{i}."
        names = _PassNames()
        obj_forward = lv.objective.forward

        def objective(*a: Any, _f: Callable[..., Any] = obj_forward, _n: _PassNames = names, **k: Any) -> Any:
            _n.inside, _n.count = True, 0
            try:
                return _f(*a, **k)
            finally:
                _n.inside = False

        lv.objective.forward = objective
        # the level's calls, not the modules': with length buckets one pass runs the module once per bucket
        den_forward = lv.denoise

        def denoiser(*a: Any, _f: Callable[..., Any] = den_forward, _n: _PassNames = names, _p: str = pre,
                     **k: Any) -> Any:
            tag = _n.next() if _n.inside else "decode"
            with record_function(f"{PREFIX}{_p}denoiser[{tag}]"):
                return _f(*a, **k)

        lv.denoise = denoiser  # type: ignore[method-assign]
        comp_forward = lv.compress

        def compressor(*a: Any, _f: Callable[..., Any] = comp_forward, _n: _PassNames = names, _p: str = pre,
                       **k: Any) -> Any:
            tag = "recompress" if _n.inside else "encode"
            with record_function(f"{PREFIX}{_p}compressor[{tag}]"):
                return _f(*a, **k)

        lv.compress = compressor  # type: ignore[method-assign]
        _wrap_attr(lv.splitter, "forward", pre + "splitter")
        _wrap_attr(lv, "mlm_loss", pre + "loss.mlm")
        if lv.stitcher is not None:
            _wrap_attr(lv.stitcher, "forward", pre + "stitcher")
        if lv.prior is not None:
            _wrap_attr(lv.prior, "loss", pre + "prior")
        _wrap_attr(lv, "losses", pre + "losses")
    for mod in model.modules():
        if type(mod).__name__ == "AttentionBackend":
            _wrap_attr(mod, "forward", "attention")
            if hasattr(mod, "local"):  # the sliding-window form
                _wrap_attr(mod, "local", "attention")
    for fn in ("token_loss", "contrastive_recon_loss", "existence_bce", "collapse_loss"):
        setattr(losses_mod, fn, _wrap(getattr(losses_mod, fn), "loss." + fn.removesuffix("_loss")))
    for fn in ("contrastive_atanh", "false_negatives"):
        setattr(ddmm_obj, fn, _wrap(getattr(ddmm_obj, fn), "loss.ddmm_" + fn))
    model._decode_term = _wrap(model._decode_term, "loss.decode_term")
    _wrap_attr(model, "forward", "forward")
    _wrap_attr(trainer.batches, "batch", "step.batch")
    _wrap_attr(trainer.optimizer, "zero_grad", "step.zero_grad")
    _wrap_attr(trainer.optimizer, "step", "step.optimizer")
    _wrap_attr(trainer.ema, "update", "step.ema")
    torch.nn.utils.clip_grad_norm_ = _wrap(torch.nn.utils.clip_grad_norm_, "step.clip")  # the trainer looks it up per call


def _scope(ev: Any) -> list[str]:
    """The ``z:`` scopes enclosing a forward event, outermost first."""
    out = []
    e = ev
    while e is not None:
        if e.name.startswith(PREFIX):
            out.append(e.name[len(PREFIX):])
        e = e.cpu_parent
    return out[::-1]


def attribute(events: Any) -> dict[str, Any]:
    """Self CPU time (ms) of one profiled step by scope and by op, forward and backward apart.

    Returns:
        ``{"by_scope": {scope_path: {"fwd": ms, "bwd": ms}}, "by_op": {op: {"fwd": ms, "bwd": ms}},
        "total_ms": ms, "attention": {"fwd": ms, "bwd": ms}}``.
    """
    evs = list(events)
    seq_scope: dict[int, list[str]] = {}
    roots: dict[int, Any] = {}
    for e in evs:
        r = e
        while r.cpu_parent is not None:
            r = r.cpu_parent
        roots[id(e)] = r
        if not r.name.startswith(BWD_ROOT) and e.sequence_nr >= 0 and e.sequence_nr not in seq_scope:
            seq_scope[e.sequence_nr] = _scope(e)
    by_scope: dict[str, dict[str, float]] = defaultdict(lambda: {"fwd": 0.0, "bwd": 0.0})
    by_op: dict[str, dict[str, float]] = defaultdict(lambda: {"fwd": 0.0, "bwd": 0.0})
    attention = {"fwd": 0.0, "bwd": 0.0}
    total = 0.0
    for e in evs:
        ms = e.self_cpu_time_total / 1000.0
        if ms <= 0:
            continue
        r = roots[id(e)]
        if r.name.startswith(BWD_ROOT):
            kind = "bwd"
            sc = seq_scope.get(r.sequence_nr)
            if sc is None:
                sc = ["backward." + ("accumulate_grad" if "AccumulateGrad" in r.name else "unmatched")]
        else:
            kind = "fwd"
            sc = _scope(e) or ["(outside scopes)"]
        total += ms
        path = "/".join(s for s in sc if s != "attention")
        by_scope[path][kind] += ms
        if "attention" in sc:
            attention[kind] += ms
        if not e.name.startswith(PREFIX) and not e.name.startswith(BWD_ROOT):
            by_op[e.name][kind] += ms
        elif e.name.startswith(BWD_ROOT) or e.name.startswith(PREFIX):
            by_op["(python / autograd engine)"][kind] += ms
    return {"by_scope": dict(by_scope), "by_op": dict(by_op), "total_ms": total, "attention": attention}


def group_scopes(by_scope: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Scope paths folded to the component that owns them (the innermost named component).

    ``forward/l0.losses/l0.denoiser[clean]`` -> ``l0.denoiser[clean]``; a path with no component
    below ``forward`` is ``model (other)``.
    """
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"fwd": 0.0, "bwd": 0.0})
    for path, t in by_scope.items():
        parts = path.split("/")
        inner = [p for p in parts if p not in ("forward",) and not p.endswith(".losses")]
        if "loss.decode_term" in inner:
            # the decode term of level l >= 1: level l's decoded slots through level l-1's denoiser and loss
            rest = inner[inner.index("loss.decode_term") + 1:]
            key = "decode term: " + (rest[-1] if rest else "other")
            out[key]["fwd"] += t["fwd"]
            out[key]["bwd"] += t["bwd"]
            continue
        # a loss term computed inside a component (the DDMM loss inside the objective) is the loss
        losses = [p for p in inner if ".loss." in p or p.startswith("loss.")]
        if losses:
            key = losses[-1]
            lv = next((p.split(".")[0] for p in parts if p.startswith("l") and "." in p and p[1].isdigit()), "")
            key = key if key.startswith("l") and key[1:2].isdigit() else (f"{lv}.{key}" if lv else key)
        elif inner:
            key = inner[-1]
        elif parts and parts[-1].endswith(".losses"):
            key = parts[-1].removesuffix(".losses") + ".losses (other)"
        elif parts == ["forward"]:
            key = "model (other)"
        else:
            key = path
        out[key]["fwd"] += t["fwd"]
        out[key]["bwd"] += t["bwd"]
    return dict(out)


def matmul_peak(threads: int, n: int = 1024, repeats: int = 5) -> tuple[float, float]:
    """fp32 GFLOP/s of an (n, n) @ (n, n) product at ``threads``: (best by wall time, best per core-second).

    The second divides by the process's CPU time (all threads together): on a machine other work
    shares, it leaves out the time the product waited for a core.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):
            a @ b
        wall = cpu = float("inf")
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            a @ b
            wall = min(wall, time.perf_counter() - t)
            cpu = min(cpu, time.process_time() - c)
        return 2 * n**3 / wall / 1e9, 2 * n**3 / cpu / 1e9
    finally:
        torch.set_num_threads(old)


def step_flops(run_step: Callable[[], Any]) -> int:
    """Model FLOPs of one call of ``run_step`` (forward and backward), as torch's flop counter counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run_step()
    return int(counter.get_total_flops())


@contextlib.contextmanager
def profiled(record_shapes: bool = False) -> Iterator[Any]:
    """A CPU ``torch.profiler`` session (operand shapes recorded when asked); yields the profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=record_shapes) as prof:
        yield prof


# the leaf matrix-product ops: the function that runs one, and which of its inputs are the two
# factors (``addmm`` / ``baddbmm`` take the added term first)
_PRODUCTS: dict[str, tuple[Callable[..., torch.Tensor], tuple[int, int]]] = {
    "aten::mm": (torch.mm, (0, 1)),
    "aten::addmm": (torch.addmm, (1, 2)),
    "aten::bmm": (torch.bmm, (0, 1)),
    "aten::baddbmm": (torch.baddbmm, (1, 2)),
}

Shapes = tuple[tuple[int, ...], ...]


def product_flops(op: str, shapes: Shapes) -> int:
    """FLOPs of one matrix-product call (2·m·k·n, times the batch for ``bmm``), from its operand shapes.

    Raises:
        ValueError: ``op`` is not a product op, or its factor shapes do not multiply.
    """
    if op not in _PRODUCTS:
        raise ValueError(f"not a matrix-product op: {op}")
    i, j = _PRODUCTS[op][1]
    a, b = shapes[i], shapes[j]
    if len(a) != len(b) or len(a) not in (2, 3) or a[-1] != b[-2] or (len(a) == 3 and a[0] != b[0]):
        raise ValueError(f"{op}: factors {a} and {b} do not multiply")
    batch = a[0] if len(a) == 3 else 1
    return 2 * batch * a[-2] * a[-1] * b[-1]


def matmul_calls(events: Any) -> dict[tuple[str, Shapes], dict[str, float]]:
    """The profiled matrix products grouped by (op, operand shapes): call count, self ms, FLOPs.

    Needs a profile taken with ``record_shapes``. An op is counted where it ran (forward or
    backward); composite ops (``linear``, ``matmul``) are left to the leaf products they call.
    """
    out: dict[tuple[str, Shapes], dict[str, float]] = {}
    for e in events:
        if e.name not in _PRODUCTS:
            continue
        shapes: Shapes = tuple(tuple(int(d) for d in s) for s in e.input_shapes)
        key = (e.name, shapes)
        row = out.setdefault(key, {"calls": 0, "self_ms": 0.0, "flops": 0})
        row["calls"] += 1
        row["self_ms"] += e.self_cpu_time_total / 1000.0
        row["flops"] += product_flops(e.name, shapes)
    return out


def time_alone(op: str, shapes: Shapes, threads: int = 1, min_s: float = 0.002, rounds: int = 3) -> float:
    """CPU seconds of one call of the product ``op`` at ``shapes`` run by itself (best of ``rounds``).

    Each round repeats the call until ``min_s`` of CPU time has passed, so small products are timed
    over many calls. CPU time, not wall time: on a shared machine it leaves out the waits for a core.
    """
    fn, (_, last) = _PRODUCTS[op]
    args = [torch.randn(s) for s in shapes[:last + 1]]  # fresh contiguous operands, the added term too
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            for _ in range(2):
                fn(*args)
            best = float("inf")
            for _ in range(rounds):
                n, c = 0, time.process_time()
                while True:
                    fn(*args)
                    n += 1
                    spent = time.process_time() - c
                    if spent >= min_s:
                        break
                best = min(best, spent / n)
        return best
    finally:
        torch.set_num_threads(old)


def matmul_floor(events: Any, steps: int, threads: int = 1) -> dict[str, Any]:
    """The profiled steps' matrix products, per step: their time in the step and alone at the same shapes.

    Returns:
        ``{"calls", "distinct_shapes", "gflop", "in_step_ms", "alone_cpu_ms", "alone_gflops",
        "largest": [(op, factor a shape, factor b shape, calls, alone GFLOP/s), ...]}``, every count
        and time per step.
    """
    calls = matmul_calls(events)
    alone_s = 0.0
    rows = []
    for (op, shapes), r in calls.items():
        t = time_alone(op, shapes, threads)
        alone_s += t * r["calls"]
        rows.append((op, shapes, r, t))
    flops = sum(r["flops"] for _, _, r, _ in rows)
    rows.sort(key=lambda x: -x[3] * x[2]["calls"])
    return {
        "calls": sum(r["calls"] for _, _, r, _ in rows) / steps,
        "distinct_shapes": len(rows),
        "gflop": flops / steps / 1e9,
        "in_step_ms": sum(r["self_ms"] for _, _, r, _ in rows) / steps,
        "alone_cpu_ms": 1000.0 * alone_s / steps,
        "alone_gflops": flops / max(alone_s, 1e-12) / 1e9,
        # (op, first factor's shape, second factor's shape, calls per step, GFLOP/s alone)
        "largest": [[op, *(list(shapes[i]) for i in _PRODUCTS[op][1]), r["calls"] / steps,
                     round(r["flops"] / r["calls"] / max(t, 1e-12) / 1e9, 1)] for op, shapes, r, t in rows[:8]],
    }


def median_ms(values: list[float]) -> float:
    """Median in milliseconds of values in seconds."""
    return 1000.0 * statistics.median(values)
