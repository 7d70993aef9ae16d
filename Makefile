# automata-lens: every target sets itself up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0
export OMP_NUM_THREADS ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup test demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# Pin the local CPU wheel first so nothing later pulls a multi-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e ".[dev,bench,ray,pyvene,data]"
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest

demo: setup
	@if [ -f analyses/dyck_probe.py ]; then $(BIN)/python -m analyses.dyck_probe; else $(BIN)/python -m languages; fi

bench: setup
	$(BIN)/python -m benchmarks.scan_bench

clean:
	rm -rf $(VENV) outputs .pytest_cache
