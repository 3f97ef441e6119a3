#!/usr/bin/env bash
# The CPU reproduction of the paper's VGG16 table (docs/results.md): for each seed, granularity
# and params budget, train.py runs the ppo_lag pipeline (search, extraction, fine-tuning, test)
# and evaluate.py --compare prunes the same base model to the same budget with every other
# method, with the same search steps and the same fine-tuning. Cells already done are skipped,
# so an interrupted sweep goes on where it stopped. benchmarks/results_table.py then gathers
# the folders into tables and plots.
#
#   PRUNE_ENV_DATA=~/data bash benchmarks/reproduce_cpu.sh
#
# Environment: STEPS (search env steps per method, default 8000), SEEDS ("0 1"),
# GRANULARITIES ("channel weight"), BUDGETS ("0.1 0.2"), ENV (VGG16Prune-v0), OUT
# (runs/reproduce_cpu), PYTHON (python), EXTRA (more train.py options, e.g. "--preset paper").
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-8000}
SEEDS=${SEEDS:-"0 1"}
GRANULARITIES=${GRANULARITIES:-"channel weight"}
BUDGETS=${BUDGETS:-"0.1 0.2"}
ENV=${ENV:-VGG16Prune-v0}
OUT=${OUT:-runs/reproduce_cpu}
PYTHON=${PYTHON:-python}
EXTRA=${EXTRA:-}
METHODS=ppo_pid_lag,amc,random_search,magnitude_global,uniform

for seed in $SEEDS; do
  for granularity in $GRANULARITIES; do
    for budget in $BUDGETS; do
      cell="$OUT/${ENV}_${granularity}_b${budget}_s${seed}"
      if [ -f "$cell/done" ]; then
        echo "== $cell: done, skipped"
        continue
      fi
      echo "== $cell: ppo_lag ($(date +%T))"
      run=$(ls -d "$cell/${ENV}__ppo_lag__${seed}__"* 2>/dev/null | head -n 1 || true)
      if [ -z "$run" ] || [ ! -f "$run/report.json" ]; then
        rm -rf "$cell"
        # shellcheck disable=SC2086
        $PYTHON train.py --env "$ENV" --algo ppo_lag --budget "$budget" \
          --granularity "$granularity" --seed "$seed" --total-timesteps "$STEPS" \
          --out "$cell" --no-progress $EXTRA
        run=$(ls -d "$cell/${ENV}__ppo_lag__${seed}__"* | head -n 1)
      fi
      echo "== $cell: $METHODS ($(date +%T))"
      $PYTHON evaluate.py "$run" --compare "$METHODS" --no-progress
      touch "$cell/done"
    done
  done
done
echo "== all cells done ($(date +%T))"
