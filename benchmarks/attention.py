"""Benchmark the probabilistic-attention backends (§3): wall time and peak memory per call.

For each backend and shape, a fresh subprocess builds q, k, v (b, h, n, dh) and a log-existence
profile, warms up, then times forward + backward (median over repeats) and measures the peak
memory of one further call. A fresh process per (backend, shape) keeps one measurement's peak from
hiding another's. Where a backend cannot run backward on the device (FlexAttention on CPU) it is
timed forward-only and the row says so.

Peak memory is the growth over the memory held just before the measured call:
 * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``;
 * CPU (Linux): the process's peak resident set (``VmHWM``), reset through ``/proc/self/clear_refs``
   after freed heap pages are returned with ``malloc_trim``; elsewhere ``getrusage`` max RSS,
   which can only over-report (it also covers warm-up).

``sdpa-nobias`` is not a backend: it is PyTorch's ``scaled_dot_product_attention`` without any
mask (on CUDA the flash kernel), the speed ceiling a probabilistic-attention backend is compared to.

Usage::

    python benchmarks/attention.py                       # default backends and shapes, a table
    python benchmarks/attention.py --json                # one JSON object per row
    python benchmarks/attention.py --backends sdpa --shapes 64x8x36x32 --repeats 20
    python benchmarks/attention.py --device cuda --dtype bfloat16 --sweep   # n = 64 … 8192 beside sdpa-nobias
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_BACKENDS = ("reference", "sdpa", "flex")
# (b, h, n, dh): b·h = 512 at segment length 36, and b·h = 16 at sequence length 1024
DEFAULT_SHAPES = ("64x8x36x32", "2x8x1024x32")
CEILING = "sdpa-nobias"  # bias-free scaled_dot_product_attention: the speed ceiling
SWEEP_NS = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
SWEEP_TOKENS = 32768  # b · n of every sweep shape (b = SWEEP_TOKENS / n), h 8, dh 64
MIB = 1024 * 1024


# ------------------------------------------------------------------------------------------ worker


def _rss_kib(field: str) -> int | None:
    """A ``Vm*`` field of /proc/self/status in KiB (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc), so warm-up allocations do not hide the peak."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0). True on success."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _max_rss_bytes() -> int:
    scale = 1 if platform.system() == "Darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _inputs(shape: tuple[int, int, int, int], device: str, dtype: Any, requires_grad: bool):
    import torch

    b, h, n, dh = shape
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=gen, dtype=dtype).to(device).requires_grad_(requires_grad) for _ in range(3))
    # existence as a splitter makes it: Σ log(1 − p_bos), p_bos = 0.1; the second half of the batch
    # ends in a padding tail of n/8 positions (hard 0 existence)
    steps = torch.full((b, n), torch.log1p(torch.tensor(-0.1)).item(), dtype=dtype)
    steps[:, 0] = 0.0
    log_e = steps.cumsum(dim=1)
    log_e[b // 2 :, n - n // 8 :] = float("-inf")
    log_e = log_e.to(device).requires_grad_(requires_grad)
    grad_out = torch.randn(shape, generator=gen, dtype=dtype).to(device)
    return q, k, v, log_e, grad_out


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from zonkey.core.nn.attention import AttentionBackendError, probabilistic_attention

    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = args.device, getattr(torch, args.dtype)
    shape = _parse_shape(args.shape)
    cuda = device.startswith("cuda")
    row: dict[str, Any] = {
        "backend": args.backend,
        "shape": list(shape),
        "b*h": shape[0] * shape[1],
        "device": device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "note": "",
    }

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    mode = "fwd+bwd"
    q, k, v, log_e, grad_out = _inputs(shape, device, dtype, requires_grad=True)

    def step() -> None:
        for t in (q, k, v, log_e):
            t.grad = None
        if args.backend == CEILING:
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        else:
            out = probabilistic_attention(q, k, v, log_e, backend=args.backend)
        out.backward(grad_out)

    try:
        step()
    except AttentionBackendError:
        mode = "fwd only"
        row["note"] = f"no backward on {device} (AttentionBackendError): timed forward only"
        q, k, v, log_e, grad_out = _inputs(shape, device, dtype, requires_grad=False)

        def step() -> None:  # the forward-only replacement
            with torch.no_grad():
                probabilistic_attention(q, k, v, log_e, backend=args.backend)

        step()
    row["mode"] = mode

    for _ in range(args.warmup):
        step()
    sync()
    times = []
    for _ in range(args.repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    row["median_ms"] = 1e3 * statistics.median(times)
    row["min_ms"] = 1e3 * min(times)
    row["repeats"] = args.repeats

    # peak memory of one more call, over what is held just before it
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        row["peak_mib"] = (torch.cuda.max_memory_allocated() - before) / MIB
        row["memory_method"] = "cuda.max_memory_allocated"
    else:
        _trim_heap()
        rss_before = _rss_kib("VmRSS")
        if rss_before is not None and _reset_peak_rss():
            step()
            row["peak_mib"] = max(0, (_rss_kib("VmHWM") or 0) - rss_before) / 1024
            row["memory_method"] = "VmHWM growth (clear_refs)"
        else:
            rss_before_bytes = (rss_before or 0) * 1024
            step()
            row["peak_mib"] = max(0, _max_rss_bytes() - rss_before_bytes) / MIB
            row["memory_method"] = "getrusage max RSS growth (upper bound)"
    return row


# ------------------------------------------------------------------------------------------ driver


def _parse_shape(text: str) -> tuple[int, int, int, int]:
    parts = tuple(int(p) for p in text.lower().split("x"))
    if len(parts) != 4 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"shape must be BxHxNxDH with positive sizes, got {text!r}")
    return parts  # type: ignore[return-value]


def _run_one(args: argparse.Namespace, backend: str, shape: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        "--backend", backend,
        "--shape", shape,
        "--device", args.device,
        "--dtype", args.dtype,
        "--warmup", str(args.warmup),
        "--repeats", str(args.repeats),
        "--threads", str(args.threads),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"backend": backend, "shape": list(_parse_shape(shape)), "mode": "failed", "note": tail[0][:120]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(rows: list[dict[str, Any]]) -> str:
    head = ("backend", "shape (b,h,n,dh)", "b·h", "mode", "median ms", "min ms", "peak MiB", "note")
    body = []
    for r in rows:
        body.append(
            (
                r["backend"],
                "x".join(str(s) for s in r["shape"]),
                str(r.get("b*h", r["shape"][0] * r["shape"][1])),
                r.get("mode", ""),
                f"{r['median_ms']:.2f}" if "median_ms" in r else "-",
                f"{r['min_ms']:.2f}" if "min_ms" in r else "-",
                f"{r['peak_mib']:.1f}" if "peak_mib" in r else "-",
                r.get("note", ""),
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *(line(row) for row in body)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS), help="comma-separated backend names")
    parser.add_argument("--shapes", default=",".join(DEFAULT_SHAPES), help="comma-separated BxHxNxDH shapes")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per (backend, shape) subprocess")
    parser.add_argument("--json", action="store_true", help="print one JSON object per row instead of a table")
    parser.add_argument("--sweep", action="store_true",
                        help=f"shapes {SWEEP_TOKENS}/n x 8 x n x 64 for n = {', '.join(map(str, SWEEP_NS))}; "
                        f"backends reference, sdpa, flex and {CEILING} unless --backends is given")
    # internal: one measurement in this process
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        print(json.dumps(_worker(args)))
        return 0

    if args.sweep:
        args.shapes = ",".join(f"{max(1, SWEEP_TOKENS // n)}x8x{n}x64" for n in SWEEP_NS)
        if args.backends == ",".join(DEFAULT_BACKENDS):
            args.backends = ",".join((*DEFAULT_BACKENDS, CEILING))
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for s in shapes:
        _parse_shape(s)
    rows = [_run_one(args, backend.strip(), shape) for shape in shapes for backend in args.backends.split(",")]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0

    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"probabilistic attention, {args.dtype} on {args.device} ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}); median of {args.repeats} after {args.warmup} warm-up"
        + (f"; load average {load[0]:.1f}" if load else "")
    )
    print(_table(rows))
    ceiling = {tuple(r["shape"]): r["median_ms"] for r in rows if r["backend"] == CEILING and "median_ms" in r}
    ratios = [f"{r['backend']} {'x'.join(map(str, r['shape']))}: {r['median_ms'] / ceiling[tuple(r['shape'])]:.2f}x"
              for r in rows if r["backend"] != CEILING and "median_ms" in r and tuple(r["shape"]) in ceiling
              and r.get("mode") == "fwd+bwd"]
    if ratios:
        print(f"time over {CEILING} (fwd+bwd): " + "; ".join(ratios))
    methods = sorted({r["memory_method"] for r in rows if "memory_method" in r})
    if methods:
        print(f"peak memory: growth during one call over the memory held before it ({'; '.join(methods)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
