#!/usr/bin/env bash
# The whole bank-head screen on one run, one experiment at a time, 1 thread:
#   tools/bank_screen_run.sh RUN DIR [BUDGET_S]
# extract -> bank (K 8192, 16384) -> baselines -> reference texts -> MSE arm -> bank arms (cosine,
# Gumbel) -> anchors on the better schedule -> the best bank arm again on seed 1.
set -euo pipefail
RUN=$1; DIR=$2; BUDGET=${3:-420}
export OMP_NUM_THREADS=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PYTHONPATH="$ROOT"  # the checkout's own zonkey
PY=${PY:-/work/main/.venv/bin/python}
S="$PY tools/bank_screen.py"
[ -f "$DIR/heldout.safetensors" ] || $S extract "$RUN" --dir "$DIR" --chunks 6000 --heldout 600
[ -f "$DIR/bank-16384.json" ] || $S bank --dir "$DIR" --ks 8192 16384
[ -f "$DIR/baselines-8192.json" ] || $S baselines --dir "$DIR" --k 8192
[ -f "$DIR/baselines-16384.json" ] || $S baselines --dir "$DIR" --k 16384
[ -f "$DIR/refs.json" ] || $S refs "$RUN" --dir "$DIR" --k 8192
arm() { local tag=$1; shift; [ -f "$DIR/result-$tag.json" ] || $S train "$RUN" --dir "$DIR" --k 8192 --budget "$BUDGET" --tag "$tag" ${EXTRA:-} "$@"; }
arm mse --arm mse
arm bank-cos --arm bank --schedule cosine
arm bank-gum --arm bank --schedule gumbel
best_sched=$($PY -c "
import json,sys
r={t:json.load(open('$DIR/result-bank-'+t+'.json'))['single']['top1'] for t in ('cos','gum')}
print('cosine' if r['cos']>r['gum'] else 'gumbel')")
arm bank-anch --arm bank --schedule "$best_sched" --anchors 0.5
best=$($PY -c "
import json
r={t:json.load(open('$DIR/result-'+t+'.json')) for t in ('bank-cos','bank-gum','bank-anch')}
t=max(r,key=lambda t:r[t]['single']['top1']); x=r[t]
print(x['schedule'], x['anchors'])")
set -- $best
arm bank-best-s1 --arm bank --schedule "$1" --anchors "$2" --seed 1
$S table --dir "$DIR"
