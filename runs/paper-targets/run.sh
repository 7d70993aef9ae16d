#!/bin/bash
# Tomita 3 on the original repository's targets: the suite's medium-budget commands plus --targets paper.
cd /work/main
for spec in "mamba-2l 0" "mamba-3l 0" "mamba-1l 0" "mamba-signed-2l 0" "mamba-2l 1" "mamba-2l 2" "mamba-3l 1" "mamba-3l 2"; do
  set -- $spec
  cmd=$(.venv/bin/python -m trained_models.suite --budget medium --seeds 3 --models $1 --languages tomita3 --print-runs | sed -n "$(( $2 + 1 ))p")
  out=runs/paper-targets/medium/tomita3/$1.seed$2
  cmd=$(echo "$cmd" | sed "s#--out [^ ]*#--out $out#")
  echo "[paper-targets] $cmd --targets paper"
  OMP_NUM_THREADS=1 nice -n 5 .venv/bin/$cmd --targets paper > $out.log 2>&1 || echo "failed: $1 $2"
  tail -1 $out.log
done
