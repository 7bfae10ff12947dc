"""Training throughput: bytes of text per second and peak memory for a recipe on this machine.

    python benchmarks/train.py                       # recipes/tiny.yaml
    python benchmarks/train.py --recipe bench-proto --threads 1
    python benchmarks/train.py --recipe tiny --at-step 400 --steps 20 --set data.batch_bytes=2048
    python benchmarks/train.py --profile             # where one step's time goes, and the matmul ceiling
    python benchmarks/train.py --json
    python benchmarks/train.py --ddp 1,2 --threads 1 # data parallel: bytes/s per rank count (benchmarks/train_ddp.py)
    python benchmarks/train.py --compare-packing --threads 1   # varlen and buckets against max_segment slots

Times the trainer's own step (``Trainer.train_step``: batch, forward, backward, clip, AdamW, EMA,
the logged values) after warm-up steps, on real batches of the recipe's data, at the curriculum of
step ``--at-step`` (default: the recipe's last steps, where every term is on). Reports the median
step time, bytes/s (real bytes of text, padding excluded), the same per second of the process's CPU
time (with ``--threads 1`` on a machine that other work shares, the steadier figure: wall time
there counts the time others held the core) and the process's peak resident memory (CUDA: max
allocated).

``--profile`` adds: self CPU time by component (each denoiser pass of the mixed step apart, the
losses, attention inside every component, the optimizer and the EMA; forward and backward) and by
op for ``--profile-steps`` profiled steps, the CPU's fp32 matmul peak at 1 and 2 threads, the
step's model FLOPs and its utilisation of that peak.

``--compare-packing`` builds the recipe three times, with ``model.packing: varlen``, ``buckets``
and ``off`` (the same weights, the same batches), and times their steps alternately in one process
(the order reversed every round, so a neighbour's load falls on all alike); it prints each one's
median step, bytes/s, model FLOPs per byte and the share of slots it computed, and its step time
and FLOPs per byte against ``off``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import peak_rss_mib

from zonkey.core.recipe import load_recipe, resolve_recipe_path
from zonkey.core.train.trainer import Trainer


def _timed_steps(trainer: Trainer, start: int, n: int, cpu: list[float] | None = None,
                 reseed: bool = False) -> tuple[list[float], list[int]]:
    times, nbytes = [], []
    cuda = trainer.device.type == "cuda"
    for i in range(n):
        trainer.step = start + i
        if reseed:
            # trainers in one process share torch's global generator: each starts step s from the
            # same state, so their random choices (noise, the prior's self-conditioning) match
            torch.manual_seed(trainer.cfg.seed + trainer.step)
        if cuda:
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        _, _, b = trainer.train_step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        if cpu is not None:
            cpu.append(time.process_time() - c)
        nbytes.append(b)
    return times, nbytes


def _profile(trainer: Trainer, start: int, steps: int, threads: int) -> dict[str, Any]:
    import _profile as P

    P.label_components(trainer)
    _timed_steps(trainer, start, 1)  # the wrappers' first call
    with P.profiled(record_shapes=True) as prof:
        times, nbytes = _timed_steps(trainer, start, steps)
    att = P.attribute(prof.events())
    floor = P.matmul_floor(prof.events(), steps, threads=1)
    scale = 1.0 / steps
    flops, fbytes = 0, 0
    for i in range(steps):
        trainer.step = start + i
        box: dict[str, int] = {}

        def one() -> None:
            box["b"] = trainer.train_step()[2]  # noqa: B023

        flops += P.step_flops(one)
        fbytes += box["b"]
    peaks = {t: P.matmul_peak(t) for t in sorted({1, 2, threads})}
    return {
        "profiled_step_ms": round(1000 * statistics.mean(times), 1),
        "profiled_bytes_per_step": round(statistics.mean(nbytes), 1),
        "total_self_ms": round(att["total_ms"] * scale, 1),
        "attention_ms": {k: round(v * scale, 1) for k, v in att["attention"].items()},
        "by_component": {k: {kk: round(vv * scale, 2) for kk, vv in v.items()}
                         for k, v in P.group_scopes(att["by_scope"]).items()},
        "by_op": {k: {kk: round(vv * scale, 2) for kk, vv in v.items()} for k, v in att["by_op"].items()},
        "flops_per_byte": flops / max(fbytes, 1),
        "matmul_peak_gflops": {str(t): round(v[0], 1) for t, v in peaks.items()},
        "matmul_peak_cpu_gflops": {str(t): round(v[1], 1) for t, v in peaks.items()},
        "matmul_floor": floor,
    }


def _print_profile(p: dict[str, Any], row: dict[str, Any], top: int) -> None:
    total = p["total_self_ms"]
    print(f"\nprofile: {p['profiled_step_ms']} ms per profiled step ({total} ms of op self time), "
          f"{p['profiled_bytes_per_step']} bytes per step")
    print("\n| component | fwd ms | bwd ms | total ms | share |\n|---|---:|---:|---:|---:|")
    comps = sorted(p["by_component"].items(), key=lambda kv: -(kv[1]["fwd"] + kv[1]["bwd"]))
    rest = {"fwd": 0.0, "bwd": 0.0}
    for k, v in comps:
        t = v["fwd"] + v["bwd"]
        if t >= 0.005 * total or k.startswith("step."):
            print(f"| {k} | {v['fwd']:.1f} | {v['bwd']:.1f} | {t:.1f} | {100 * t / total:.1f}% |")
        else:
            rest = {kk: rest[kk] + v[kk] for kk in rest}
    t = rest["fwd"] + rest["bwd"]
    print(f"| (the rest, each < 0.5%) | {rest['fwd']:.1f} | {rest['bwd']:.1f} | {t:.1f} | {100 * t / total:.1f}% |")
    a = p["attention_ms"]
    at = a["fwd"] + a["bwd"]
    print(f"| (attention inside the above) | {a['fwd']:.1f} | {a['bwd']:.1f} | {at:.1f} | {100 * at / total:.1f}% |")
    print("\n| op | fwd ms | bwd ms | total ms | share |\n|---|---:|---:|---:|---:|")
    ops = sorted(p["by_op"].items(), key=lambda kv: -(kv[1]["fwd"] + kv[1]["bwd"]))
    for k, v in ops[:top]:
        t = v["fwd"] + v["bwd"]
        print(f"| {k} | {v['fwd']:.1f} | {v['bwd']:.1f} | {t:.1f} | {100 * t / total:.1f}% |")
    peak, peak_cpu = p["matmul_peak_gflops"], p["matmul_peak_cpu_gflops"]
    th = str(row["threads"])
    print("\nfp32 matmul peak (1024³, best of 5): " + ", ".join(
        f"{v} GFLOP/s at {t} thread{'s' * (t != '1')} ({peak_cpu[t]} per core-second)"
        for t, v in peak.items()))
    fpb = p["flops_per_byte"]
    print(f"model FLOPs (forward + backward): {fpb / 1e6:.2f} MFLOP per byte, {fpb * row['bytes_per_step'] / 1e9:.2f} "
          f"GFLOP per step")
    wall = fpb * row["bytes_per_s"] / 1e9
    print(f"utilisation by wall time: {wall:.2f} GFLOP/s = {100 * wall / peak[th]:.1f}% of the {th}-thread peak")
    if th == "1":
        cpu = fpb * row["bytes_per_cpu_s"] / 1e9
        print(f"utilisation by CPU time:  {cpu:.2f} GFLOP per core-second = {100 * cpu / peak_cpu[th]:.1f}% of the "
              "1-thread peak per core-second")
    _print_floor(p["matmul_floor"], row, total, p["profiled_step_ms"])


def _print_floor(f: dict[str, Any], row: dict[str, Any], total_ms: float, step_ms: float) -> None:
    """The step's floor at its own matmul shapes, and what it leaves for any speed-up."""
    print(f"\nmatrix products per step: {f['calls']:.0f} calls at {f['distinct_shapes']} distinct shapes, "
          f"{f['gflop']:.2f} GFLOP")
    print(f"  their self time in the profiled step: {f['in_step_ms']:.1f} ms = {100 * f['in_step_ms'] / total_ms:.1f}% "
          f"of its op time ({step_ms} ms a step under the profiler)")
    print(f"  the same products alone (1 thread, CPU time): {f['alone_cpu_ms']:.1f} ms, {f['alone_gflops']:.1f} "
          "GFLOP per core-second at these shapes")
    cpu_ms = 1000 * row["median_step_cpu_s"]
    bound = row["bytes_per_step"] / (f["alone_cpu_ms"] / 1000)
    print(f"  the floor: a step of nothing but these products, each as fast as alone, is {f['alone_cpu_ms']:.1f} ms of "
          f"CPU time against the measured {cpu_ms:.1f} ms: at most {cpu_ms / f['alone_cpu_ms']:.2f}x faster, "
          f"{bound:.0f} bytes per core-second")
    print("  the products that cost most alone: " + "; ".join(
        f"{op.removeprefix('aten::')} {'x'.join(map(str, a))} @ {'x'.join(map(str, b))} ×{c:.0f} ({g} GFLOP/s)"
        for op, a, b, c, g in f["largest"][:5]))


def _compare_packing(args: argparse.Namespace) -> None:
    """Every packing mode's training step, alternating in one process (``--compare-packing``)."""
    import _profile as P

    modes = ("varlen", "buckets", "off")
    recipes = {m: load_recipe(resolve_recipe_path(args.recipe), [*args.overrides, f"model.packing={m}"]) for m in modes}
    total = args.warmup + args.steps
    start = args.at_step if args.at_step is not None else max(0, recipes["off"].train.steps - total)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {m: Trainer(recipes[m], Path(tmp) / m, progress=False, log=lambda s: None) for m in modes}
        for m in modes[:-1]:
            trainers[m].model.load_state_dict(trainers["off"].model.state_dict())
        if args.threads:
            torch.set_num_threads(args.threads)
        for m in modes:
            _timed_steps(trainers[m], start, args.warmup, reseed=True)
        times: dict[str, list[float]] = {m: [] for m in modes}
        cpu: dict[str, list[float]] = {m: [] for m in modes}
        nbytes: dict[str, list[int]] = {m: [] for m in modes}
        for i in range(args.steps):
            for m in modes if i % 2 == 0 else modes[::-1]:
                t, b = _timed_steps(trainers[m], start + args.warmup + i, 1, cpu[m], reseed=True)
                times[m] += t
                nbytes[m] += b
        rows: dict[str, dict[str, Any]] = {}
        for m in modes:
            tr = trainers[m]
            flops, fbytes, share = 0, 0, {}
            for i in range(2):
                tr.step = start + total + i
                torch.manual_seed(tr.cfg.seed + tr.step)
                box: dict[str, Any] = {}

                def one(_tr: Trainer = tr, _box: dict[str, Any] = box) -> None:
                    _box["out"] = _tr.train_step()

                flops += P.step_flops(one)
                fbytes += box["out"][2]
                stats = box["out"][1]
                share.update({k.split(".")[0]: v for k, v in stats.items() if k.endswith("packed_slots")})
            rows[m] = {
                "median_step_s": statistics.median(times[m]),
                "bytes_per_step": statistics.mean(nbytes[m]),
                "bytes_per_s": sum(nbytes[m]) / sum(times[m]),
                "bytes_per_cpu_s": sum(nbytes[m]) / sum(cpu[m]),
                "mflop_per_byte": flops / max(fbytes, 1) / 1e6,
                "slots": share,
            }
    pd = rows["off"]
    for m in modes:
        r = rows[m]
        # the step ratio is total time over the same steps: the median hides a curriculum that
        # computes a level only on some steps (``every``)
        r["step_speedup"] = sum(times["off"]) / sum(times[m])
        r["cpu_speedup"] = r["bytes_per_cpu_s"] / pd["bytes_per_cpu_s"]
        r["flops_per_byte_ratio"] = pd["mflop_per_byte"] / r["mflop_per_byte"]
    summary = {"recipe": recipes["off"].name, "threads": torch.get_num_threads(), "steps": args.steps,
               "at_step": start + args.warmup, "rows": rows}
    if args.json:
        print(json.dumps(summary))
        return
    print(f"recipe {summary['recipe']}, {summary['threads']} thread(s), {args.steps} alternating steps each from step "
          f"{summary['at_step']}\n")
    print("| packing | median step s | bytes per step | bytes/s | bytes per CPU-s | MFLOP per byte | slots computed "
          "| step time against off | FLOPs per byte against off |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for m in modes:
        r = rows[m]
        slots = ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(r["slots"].items())) or "all"
        print(f"| {m} | {r['median_step_s']:.4f} | {r['bytes_per_step']:,.0f} | {r['bytes_per_s']:,.0f} | "
              f"{r['bytes_per_cpu_s']:,.0f} | {r['mflop_per_byte']:.2f} | {slots} | {r['step_speedup']:.2f}x faster | "
              f"{r['flops_per_byte_ratio']:.2f}x lower |")


def main() -> None:
    if any(a == "--ddp" or a.startswith("--ddp=") for a in sys.argv[1:]):  # data parallel: one launch per rank count
        from train_ddp import main as ddp_main

        sys.exit(ddp_main(sys.argv[1:]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="tiny")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--at-step", type=int, default=None,
                    help="curriculum step of the first warm-up step (default: the recipe's last steps)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--top-ops", type=int, default=25)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--compare-packing", action="store_true",
                    help="time model.packing buckets against off, alternating steps in one process")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare_packing:
        _compare_packing(args)
        return
    recipe = load_recipe(resolve_recipe_path(args.recipe), args.overrides)
    total = args.warmup + args.steps
    start = args.at_step if args.at_step is not None else max(0, recipe.train.steps - total)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(recipe, Path(tmp) / "run", progress=False, log=lambda s: None)
        if args.threads:
            torch.set_num_threads(args.threads)
        _timed_steps(trainer, start, args.warmup)
        cpu: list[float] = []
        times, nbytes = _timed_steps(trainer, start + args.warmup, args.steps, cpu)
        row: dict[str, Any] = {
            "recipe": recipe.name,
            "device": str(trainer.device),
            "threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in trainer.model.parameters()),
            "at_step": start + args.warmup,
            "steps": args.steps,
            "median_step_s": round(statistics.median(times), 4),
            "bytes_per_step": round(statistics.mean(nbytes), 1),
            "bytes_per_s": round(sum(nbytes) / sum(times), 1),
            # CPU time of the process: on a shared machine a steadier measure of the work than wall time
            "median_step_cpu_s": round(statistics.median(cpu), 4),
            "bytes_per_cpu_s": round(sum(nbytes) / sum(cpu), 1),
            "peak_mem_mib": round(torch.cuda.max_memory_allocated() / 2**20 if trainer.device.type == "cuda"
                                  else peak_rss_mib(), 1),
        }
        prof = _profile(trainer, start + args.warmup, args.profile_steps, row["threads"]) if args.profile else None
    if args.json:
        print(json.dumps(row if prof is None else {**row, "profile": prof}))
        return
    for k, v in row.items():
        print(f"{k:>16}: {v}")
    if prof is not None:
        _print_profile(prof, row, args.top_ops)


if __name__ == "__main__":
    main()
