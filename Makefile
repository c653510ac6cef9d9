# vidxai: `make install` once, then `make train`, `make explain`, `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# extra Hydra overrides, e.g. `make train ARGS="model=convlstm"`
ARGS ?=
# checkpoint for `make explain`; default: best checkpoint of the newest training run
CKPT ?= $(lastword $(sort $(wildcard outputs/train/*/checkpoints/best.ckpt)))

.PHONY: install test train explain bench bench-data lint rule-configs clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"

test:
	$(BIN)/python -m pytest

train:
	$(BIN)/python train.py $(ARGS)

explain:
	@test -n "$(CKPT)" || { echo "error: no checkpoint found under outputs/train/*/checkpoints/best.ckpt: run 'make train' first or pass CKPT=path/to.ckpt" >&2; exit 2; }
	$(BIN)/python explain.py ckpt=$(CKPT) $(ARGS)

# bench = LRP speed + the data path and training throughput (quick); `make bench-data` is the full data run.
# DECORD2=/path (pip install --target /path decord2) also measures decord2 next to decord.
DECORD2 ?=
bench:
	$(BIN)/python benchmarks/bench_lrp.py $(ARGS)
	$(BIN)/python benchmarks/bench_data.py --quick $(if $(DECORD2),--decord2-path $(DECORD2))

bench-data:
	$(BIN)/python benchmarks/bench_data.py $(if $(DECORD2),--decord2-path $(DECORD2)) $(ARGS)

lint:
	$(BIN)/python -m ruff check vidxai tests benchmarks train.py explain.py

# conf/rule/*.yaml from the rule registry (vidxai.xai.RULES); tests/test_rule_configs.py checks them
rule-configs:
	$(BIN)/python -m vidxai.pipelines.rule_configs

clean:
	rm -rf outputs multirun wandb .pytest_cache
