# topogrow: `make test` and `make demo` each set up .venv (if missing) and then run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch that lies on this machine's disk; override for a GPU build,
# e.g. `make test TORCH_SPEC="torch==2.13.0"` with your own index.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: setup test test-fast demo bench transfer paper lint docs clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The documentation tools (the docs extra) on top of the test setup.
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP) pyproject.toml Makefile
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Skips the tests marked slow (subprocesses, torchrun, runs killed and resumed, over ~5 s).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# About 5 minutes on 2 cores: on California housing, 3 seeds, every arm trained to convergence
# under the default rule: the default strategy, the paper's td, the initial network, the
# small-initialised fixed network of the reference depth, and the reference (the depth search).
demo: $(STAMP)
	$(BIN)/topogrow compare california --seeds 3 --threads 1 --batch-size 256 --max-depth 4 \
		--strategies small-where,td,no-growth,small-init,depth-search --out results/demo --overwrite

# What the topological derivative costs (under 15 minutes on 2 cores): results/bench.json
# and a Markdown table. `make bench BENCH_ARGS=--quick` for a smoke run.
bench: $(STAMP)
	$(BIN)/topogrow bench $(BENCH_ARGS)

# Transfer learning (a few minutes each on 2 cores): results/transfer-heat, results/transfer-mnist.
transfer: $(STAMP)
	$(BIN)/topogrow transfer heat --threads 1
	$(BIN)/topogrow transfer mnist --threads 1

# The paper's table: `make paper PAPER_ARGS=--quick` (about 10 minutes), or the full budget (hours).
paper: $(STAMP)
	$(BIN)/topogrow paper --threads 1 $(PAPER_ARGS)

# The documentation site, docs/_build/html/index.html: Sphinx, warnings as errors; the gallery
# executes examples/plot_*.py (a few minutes on 2 cores, only for scripts that changed). Then
# the link check, offline: internal references only (external URLs are ignored in docs/conf.py).
docs: $(DOCS_STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	$(BIN)/sphinx-build -W --keep-going -q -b linkcheck docs docs/_build/linkcheck

lint: $(STAMP)
	$(BIN)/ruff check src tests examples

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
	rm -rf docs/_build docs/api/generated docs/auto_examples docs/sg_execution_times.rst
