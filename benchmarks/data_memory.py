"""Peak memory of reading, chunking and batching a local text corpus, against its size.

    python benchmarks/data_memory.py --sizes 20MB,2GB          # writes the files under --dir, then deletes them
    python benchmarks/data_memory.py --sizes 2GB --batches 200 --keep

For each size a text file of that many bytes is written (one document per line, about 2 KB each,
sentences of the bundled Wikipedia sample with a running number, so every document is distinct),
then a fresh Python process loads it as ``data.source`` (the ``datasets`` conversion to Arrow in a
temporary cache included), builds the train batches and reads the first ``--batches`` of them.
Reported per size: the process's peak resident memory (``ru_maxrss``: it counts the pages of the
memory-mapped Arrow files that the process has touched, which are the kernel's page cache, shared
and dropped under memory pressure), the peak of its anonymous (private) resident memory, sampled
every 20 ms, which is what the corpus costs in RAM, both after ``import torch, zonkey.data`` as the
baseline, the corpus's documents and chunks, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, os, resource, sys, threading, time
import torch  # imported by training anyway: part of the baseline
from zonkey.core.recipe import DataConfig
from zonkey.data import load_corpus

def status_mb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")

peak_anon = [0.0]
done = threading.Event()
def watch():
    while not done.is_set():
        peak_anon[0] = max(peak_anon[0], status_mb("RssAnon"))
        time.sleep(0.02)
threading.Thread(target=watch, daemon=True).start()

path, n_batches = sys.argv[1], int(sys.argv[2])
base, base_anon = status_mb("VmRSS"), status_mb("RssAnon")
t = time.perf_counter()
corpus = load_corpus(DataConfig(source=path, max_doc_bytes=512, batch_bytes=8192), cache=False)
loaded = time.perf_counter() - t
batches = corpus.batches("train", seed=0)
real = 0
for step in range(n_batches):
    real += batches.batch(step).num_bytes
done.set()
peak_anon[0] = max(peak_anon[0], status_mb("RssAnon"))
print(json.dumps({"base_rss_mb": base, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "base_anon_mb": base_anon, "peak_anon_mb": peak_anon[0], "end_anon_mb": status_mb("RssAnon"),
                  "end_file_mb": status_mb("RssFile"), "docs": corpus.stats.n_docs, "chunks": corpus.stats.n_chunks,
                  "bytes": corpus.stats.n_bytes, "batches": n_batches, "batch_bytes": real,
                  "load_s": loaded, "total_s": time.perf_counter() - t}))
"""


def parse_size(text: str) -> int:
    units = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
    for unit, mult in units.items():
        if text.upper().endswith(unit):
            return int(float(text[: -len(unit)]) * mult)
    return int(text)


def sentences() -> list[str]:
    from zonkey.data import wiki_sample_path

    entries = json.loads(wiki_sample_path().read_text(encoding="utf-8"))
    out = [e["extract"].replace("\n", " ") for e in entries.values() if isinstance(e, dict) and e.get("extract")]
    return [s for s in out if s.strip()]


def write_corpus(path: Path, size: int, pool: list[str]) -> None:
    written = i = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size:
            doc = f"{i} " + " ".join(pool[(i * 7 + k) % len(pool)] for k in range(3))[:2000]
            data = doc + "\n"
            f.write(data)
            written += len(data.encode("utf-8"))
            i += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20MB,2GB")
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--dir", default=None, help="where the corpus files go (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the corpus files")
    args = ap.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="zonkey-data-memory-"))
    root.mkdir(parents=True, exist_ok=True)
    pool = sentences()
    rows = []
    try:
        for text in args.sizes.split(","):
            path = root / f"corpus-{text}.txt"
            t = time.perf_counter()
            write_corpus(path, parse_size(text), pool)
            written = time.perf_counter() - t
            with tempfile.TemporaryDirectory(prefix="hf-cache-", dir=root) as cache:
                env = {**os.environ, "HF_DATASETS_CACHE": cache, "OMP_NUM_THREADS": "1"}
                res = subprocess.run([sys.executable, "-c", CHILD, str(path), str(args.batches)], env=env,
                                     capture_output=True, text=True, check=False)
            if res.returncode != 0:
                sys.exit(f"{path}: the measurement failed:\n{res.stderr[-2000:]}")
            row = {"size": text, "file_bytes": path.stat().st_size, "write_s": written,
                   **json.loads(res.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(f"{text:>6}: file {row['file_bytes'] / 2**20:,.0f} MiB, {row['docs']:,} docs, {row['chunks']:,} chunks; "
                  f"RSS after imports {row['base_rss_mb']:.0f} MiB, peak {row['peak_rss_mb']:.0f} MiB; anonymous "
                  f"{row['base_anon_mb']:.0f} MiB after imports, peak {row['peak_anon_mb']:.0f} MiB "
                  f"(load {row['load_s']:.0f} s, {row['batches']} batches, total {row['total_s']:.0f} s)",
                  flush=True)
            if not args.keep:
                path.unlink()
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
