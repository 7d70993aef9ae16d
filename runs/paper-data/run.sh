#!/bin/bash
# The suite's medium-budget commands on the paper's stored strings (--paper-data), for the cells where our
# sampler's strings and the paper's differ most (results/medium/deviations.md).
# Usage, from the repository root: runs/paper-data/run.sh REPO [SPEC ...]
#   REPO: a clone or mirror of lacoco-lab/ssm_expressivity
#   SPEC: "LANGUAGE VARIANT SEED TARGETS" (TARGETS: correct, paper, or - for the language's own);
#         default: the runs of deviations.md
REPO=${1:?usage: runs/paper-data/run.sh PATH_TO_ssm_expressivity [SPEC ...]}
shift
SPECS=("$@")
if [ ${#SPECS[@]} -eq 0 ]; then
  SPECS=("d12 mamba-2l 0 -" "tomita3 mamba-2l 0 paper" "d12 mamba-3l 0 -" "tomita3 mamba-2l 0 correct"
         "d12 mamba-1l 0 -" "tomita3 mamba-3l 0 paper" "d4 mamba-2l 0 -" "d4 mamba-1l 0 -")
fi
for spec in "${SPECS[@]}"; do
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
