#!/usr/bin/env bash
# The CPU reproduction of the paper's VGG16 table (docs/results.md): for each cell
# (granularity, cost, budget) and seed, train.py runs the ppo_lag pipeline (search, extraction,
# fine-tuning, test) and evaluate.py --compare prunes the same base model to the same budget
# with every other method, with the same search steps and the same fine-tuning. Cells already
# done are skipped, so an interrupted sweep goes on where it stopped, in this session or the
# next: the base model is trained with portable numerics (train.py --base-numerics portable,
# prune_env/numerics.py), so another machine trains the same one; with BASE_NUMERICS=default
# (7x faster per VGG16 epoch on the Intel build machine) each session trains its own, and
# results_table.py pairs the methods of each cell on that cell's base. results_table.py
# gathers the folders into tables and plots (with RESULTS: after every cell).
#
#   PRUNE_ENV_DATA=~/data bash benchmarks/reproduce_cpu.sh
#
# Environment: STEPS (search env steps per method, default 8000), SEEDS ("0 1 2"), CELLS
# (granularity:cost:budget items, default the issue-16 sweep "channel:params:0.1
# channel:params:0.2 channel:flops:0.3 weight:params:0.1"), ENV (VGG16Prune-v0), OUT
# (runs/reproduce_cpu), PYTHON (python), BASE_NUMERICS (portable; "default" is faster but
# machine-bound), CHANNEL_METHODS and WEIGHT_METHODS (what evaluate.py --compare runs in
# channel and weight cells), EXTRA (more train.py options, e.g. "--preset paper"),
# RESULTS (a committed results folder: a cell already in RESULTS/cells is skipped, and each
# cell finished here is added to it by results_table.py, so a sweep spread over sessions
# resumes from the repository), COMMIT (1: git-commit RESULTS after every cell).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-8000}
SEEDS=${SEEDS:-"0 1 2"}
CELLS=${CELLS:-"channel:params:0.1 channel:params:0.2 channel:flops:0.3 weight:params:0.1"}
ENV=${ENV:-VGG16Prune-v0}
OUT=${OUT:-runs/reproduce_cpu}
PYTHON=${PYTHON:-python}
BASE_NUMERICS=${BASE_NUMERICS:-portable}
EXTRA=${EXTRA:-}
RESULTS=${RESULTS:-}
COMMIT=${COMMIT:-0}
# tp_global is torch-pruning's channel pruner: it has no weight-granularity form
CHANNEL_METHODS=${CHANNEL_METHODS:-ppo_pid_lag,amc,random_search,magnitude_global,tp_global,uniform}
WEIGHT_METHODS=${WEIGHT_METHODS:-ppo_pid_lag,amc,random_search,magnitude_global,uniform}

# One RESULTS folder holds one sweep: its settings are recorded on first use, and a run with
# other settings is refused (its cells would be skipped by name, or mixed into the tables).
if [ -n "$RESULTS" ]; then
  settings="ENV=$ENV STEPS=$STEPS BASE_NUMERICS=$BASE_NUMERICS EXTRA=$EXTRA"
  if [ -f "$RESULTS/sweep_settings.txt" ] && [ "$(cat "$RESULTS/sweep_settings.txt")" != "$settings" ]; then
    echo "RESULTS $RESULTS holds a sweep run with '$(cat "$RESULTS/sweep_settings.txt")'," \
         "not '$settings': use another RESULTS folder" >&2
    exit 2
  fi
  mkdir -p "$RESULTS"
  echo "$settings" > "$RESULTS/sweep_settings.txt"
fi

add_results() {  # the finished cells of OUT into RESULTS (tables, plots, small files)
  if ! $PYTHON benchmarks/results_table.py "$OUT" --out "$RESULTS" > "$OUT/results_table.log" 2>&1; then
    echo "== results_table.py failed (see $OUT/results_table.log); the sweep goes on" >&2
    return 0
  fi
  if [ "$COMMIT" = 1 ] && [ -n "$(git status --porcelain -- "$RESULTS")" ]; then
    git add -- "$RESULTS" && git commit -q -m "sweep $(basename "$RESULTS"): $1" -- "$RESULTS" \
      || echo "== git commit failed; the cells are in $RESULTS, commit them by hand" >&2
  fi
}

# Cell by cell, every seed of a cell before the next cell: a cell with all its seeds gives a
# verdict (results_table.py needs 3), seeds spread thinly over cells give none.
for spec in $CELLS; do
  for seed in $SEEDS; do
    IFS=: read -r granularity cost budget <<< "$spec"
    if [ -z "$budget" ]; then
      echo "CELLS item '$spec' is not granularity:cost:budget" >&2
      exit 2
    fi
    # params cells keep the folder names of earlier sweeps, so that they resume
    if [ "$cost" = params ]; then tag=""; else tag="_${cost}"; fi
    methods=$CHANNEL_METHODS
    if [ "$granularity" = weight ]; then methods=$WEIGHT_METHODS; fi
    name="${ENV}_${granularity}${tag}_b${budget}_s${seed}"
    cell="$OUT/$name"
    if [ -n "$RESULTS" ] && [ -f "$RESULTS/cells/$name/compare.json" ]; then
      echo "== $name: committed in $RESULTS, skipped"
      continue
    fi
    if [ -f "$cell/done" ]; then
      echo "== $cell: done, skipped"
      continue
    fi
    echo "== $cell: ppo_lag ($(date +%T))"
    run=$(ls -d "$cell/${ENV}__ppo_lag__${seed}__"* 2>/dev/null | head -n 1 || true)
    if [ -z "$run" ] || [ ! -f "$run/report.json" ]; then
      rm -rf "$cell"
      # shellcheck disable=SC2086
      $PYTHON train.py --env "$ENV" --algo ppo_lag --budget "$budget" --cost "$cost" \
        --granularity "$granularity" --seed "$seed" --total-timesteps "$STEPS" \
        --base-numerics "$BASE_NUMERICS" --out "$cell" --no-progress $EXTRA
      run=$(ls -d "$cell/${ENV}__ppo_lag__${seed}__"* | head -n 1)
    fi
    echo "== $cell: $methods ($(date +%T))"
    $PYTHON evaluate.py "$run" --compare "$methods" --no-progress
    touch "$cell/done"
    if [ -n "$RESULTS" ]; then add_results "$name"; fi
  done
done
# cells finished in OUT by an earlier, interrupted run of this script are added too
if [ -n "$RESULTS" ] && ls "$OUT"/*/done > /dev/null 2>&1; then add_results "cells of $OUT"; fi
echo "== all cells done ($(date +%T))"
