# vidxai: `make train`, `make explain`, `make test` work as the first command on a fresh clone: each one
# creates .venv (or updates it when pyproject.toml changed) before it runs. `make install` does only that.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# stamp of the last successful install; older than pyproject.toml (or missing) -> reinstall
STAMP := $(VENV)/.installed
# extra Hydra overrides, e.g. `make train ARGS="model=convlstm"`
ARGS ?=
# checkpoint for `make explain`; default: best checkpoint of the newest training run
CKPT ?= $(lastword $(sort $(wildcard outputs/train/*/checkpoints/best.ckpt)))

.PHONY: install test train explain bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip || true
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

train: $(STAMP)
	$(BIN)/python train.py $(ARGS)

explain: $(STAMP)
	@test -n "$(CKPT)" || { echo "error: no checkpoint found under outputs/train/*/checkpoints/best.ckpt: run 'make train' first or pass CKPT=path/to.ckpt" >&2; exit 2; }
	$(BIN)/python explain.py ckpt=$(CKPT) $(ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_lrp.py $(ARGS)

lint: $(STAMP)
	$(BIN)/python -m ruff check vidxai tests benchmarks train.py explain.py

clean:
	rm -rf outputs multirun wandb .pytest_cache
