#!/bin/bash
# The suite's medium-budget commands on the paper's stored strings (--paper-data), for the cells where our
# sampler's strings and the paper's differ most (results/medium/deviations.md). Usage: run.sh REPO
# (a clone or mirror of lacoco-lab/ssm_expressivity). Run from the repository root.
REPO=${1:?usage: runs/paper-data/run.sh PATH_TO_ssm_expressivity}
for spec in "d12 mamba-2l 0 -" "tomita3 mamba-2l 0 paper" "d12 mamba-3l 0 -" "tomita3 mamba-2l 0 correct" "d12 mamba-1l 0 -" "tomita3 mamba-3l 0 paper"; do
  set -- $spec
  cmd=$(.venv/bin/python -m trained_models.suite --budget medium --seeds 3 --models $2 --languages $1 --print-runs | sed -n "$(( $3 + 1 ))p")
  extra="--paper-data $REPO"; tag=""
  if [ "$4" != "-" ]; then extra="$extra --targets $4"; tag="-$4"; fi
  out=runs/paper-data/medium/$1/$2$tag.seed$3
  mkdir -p runs/paper-data/medium/$1
  cmd="$(echo "$cmd" | sed "s#--out [^ ]*#--out $out#") $extra"
  echo "[paper-data] $cmd"
  OMP_NUM_THREADS=1 nice -n 5 .venv/bin/$cmd > $out.log 2>&1 || echo "failed: $spec"
done
