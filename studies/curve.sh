#!/bin/bash
# The training curve behind studies/decide_cpu.toml: final test top-1 against epochs, each run
# with its own cosine schedule (the recipe every arm uses), baseline head, seed 0, lr 0.05,
# batch 128, one thread, at low priority. The table in docs/RESULTS.md ("Training length") came
# from this loop (the lead's /work/notes session script) on the full training set.
#
#   studies/curve.sh [OUT] [LIMIT_TRAIN]     # OUT default runs/curve; LIMIT_TRAIN: a seeded subset
#
# Each run writes OUT/<backbone>-e<epochs>/result.json (top1, history with seconds per epoch);
# a rerun skips finished runs (headstrong train resumes).
set -euo pipefail
H=${HEADSTRONG:-.venv/bin/headstrong}
OUT=${1:-runs/curve}
LIMIT=${2:-}
extra=()
if [ -n "$LIMIT" ]; then extra=(--limit-train "$LIMIT"); OUT="$OUT-n$LIMIT"; fi
for spec in "cnn-small 1" "cnn-small 2" "cnn-small 4" "cnn-small 8" "cnn-small 12" \
            "resnet8-w16 1" "resnet8-w16 2" "resnet8-w16 4" "resnet8-w16 8"; do
  set -- $spec
  start=$(date +%s)
  nice -n 19 "$H" train --out "$OUT/$1-e$2" --backbone "$1" --head baseline --epochs "$2" --lr 0.05 \
    --threads 1 --no-progress --device cpu "${extra[@]}"
  echo "$1 $2 wall $(( $(date +%s) - start ))s"
done
