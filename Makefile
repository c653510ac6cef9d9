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

.PHONY: install test train explain results bench bench-data bench-cache lint rule-configs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip || true
	@# decord2 replaces the unmaintained decord (same `import decord`): drop an old decord of an earlier install
	$(BIN)/python -m pip uninstall --quiet --yes decord 2>/dev/null || true
	$(BIN)/python -m pip install -e ".[dev]"
	@# LXT (AttnLRP) is a test oracle: only its pure-torch module is used, so none of its heavy dependencies
	$(BIN)/python -m pip install --no-deps "lxt==2.1"
	touch $(STAMP)

# the whole suite, one pytest-xdist worker per core (tests that mostly wait on the processes they start overlap);
# `pytest -n 0` or `pytest -p no:xdist` runs it in one process. PYTEST_ARGS: more options, e.g. --durations=25
PYTEST_ARGS ?=
test: $(STAMP)
	$(BIN)/python -m pytest -n auto $(PYTEST_ARGS)

train: $(STAMP)
	$(BIN)/python train.py $(ARGS)

explain: $(STAMP)
	@test -n "$(CKPT)" || { echo "error: no checkpoint found under outputs/train/*/checkpoints/best.ckpt: run 'make train' first or pass CKPT=path/to.ckpt" >&2; exit 2; }
	$(BIN)/python explain.py ckpt=$(CKPT) $(ARGS)

# every recipe (conf/model/*.yaml on the default data, conf/experiment/events_*.yaml) trained, evaluated
# (evaluate=true) and profiled on its test split -> docs/results.md; finished steps under outputs/results/ are
# reused. RESULTS_ARGS: --only 'events_*', train overrides, explain.<key>=<value> for explain.py, e.g.
# make results RESULTS_ARGS="trainer.max_epochs=1 explain.limit=4"; RESULTS_ARGS="--steps train" trains only
RESULTS_ARGS ?=
results: $(STAMP)
	$(BIN)/python -m vidxai.pipelines.results $(RESULTS_ARGS)

# bench = LRP speed + the data path and training throughput (quick) + the feature cache (2 epochs); `make
# bench-data` is the full data run. Every script takes --smoke (seconds; tests/test_benchmarks.py runs these lines so).
# DECORD2=/path (pip install --target /path decord2) also measures decord2 next to decord.
DECORD2 ?=
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_lrp.py $(ARGS)
	$(BIN)/python benchmarks/bench_data.py --quick $(if $(DECORD2),--decord2-path $(DECORD2))
	$(BIN)/python benchmarks/bench_cache.py --epochs 2

# frozen-encoder feature cache: epoch time without / with data.feature_cache (feature_cache_speedup)
bench-cache:
	$(BIN)/python benchmarks/bench_cache.py $(ARGS)

bench-data: $(STAMP)
	$(BIN)/python benchmarks/bench_data.py $(if $(DECORD2),--decord2-path $(DECORD2)) $(ARGS)

lint: $(STAMP)
	$(BIN)/python -m ruff check vidxai tests benchmarks train.py explain.py

# conf/rule/*.yaml from the rule registry (vidxai.xai.RULES); tests/test_rule_configs.py checks them
rule-configs: $(STAMP)
	$(BIN)/python -m vidxai.pipelines.rule_configs

clean:
	rm -rf outputs multirun wandb .pytest_cache
